"""No password shows anywhere: a scan of every page and the debug log after probes that used one.

A real exporter logs in to the real Dovecot and Postfix with the right password (IMAP
LOGIN, POP3 and SMTP AUTH PLAIN) and with a wrong one, on its schedule and through
/probe. Then every page, the /probe debug output, /config, a failed reload's error
and the whole stderr log at debug level are searched for each password, in clear and
in the base64 forms SASL sends, and for the web config's basic auth password and hash.
So are the secrets of OAuth2 token sources the config names (client secret, refresh token,
private keys, a token file's token), and the access tokens the exporter gets: it logs in
to a Dovecot and Postfix that take tokens (XOAUTH2 and OAUTHBEARER, one token revoked on
the way so that its refusal shows too), and every access token the token server issued,
and each SASL message that carried one, is searched for.

And no page is an oracle: a scripted server that says a configured password gets its
words back as it said them, while the probe's own login line stays masked.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import textwrap
import time
from pathlib import Path

import bcrypt
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mail_exporter.config.probes import ModuleConfig
from mail_exporter.config.root import parse_config
from mail_exporter.config.roundtrip import RoundTripReceive
from mail_exporter.exporter import Exporter
from mail_exporter.probes import ProbeMemory
from mail_exporter.roundtrip.imap_mailbox import ImapMailbox, cleanup_folder
from mail_exporter.roundtrip.outcome import RoundTripFailure, Stage
from mail_exporter.targets import parse_address
from mail_exporter.web import make_app
from tests.realservers.dovecot import Dovecot
from tests.realservers.oauth import TokenServer, new_app_certificate, new_service_account
from tests.realservers.pki import PKI
from tests.realservers.postfix import Postfix
from tests.scripted import scripted_server, send, server_context
from tests.served import Served, basic, get, served_exporter
from tests.test_probe_allowlist import LoginRecorder, recorder_modules
from tests.test_web import sample

WRONG_PASSWORD = "Wr0ng-pa55word-7731"
BASIC_PASSWORD = "scrape-secret-9137"
BASIC_HASH = bcrypt.hashpw(BASIC_PASSWORD.encode(), bcrypt.gensalt(4)).decode()
AUTH = basic("prometheus", BASIC_PASSWORD)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def forbidden(user: str, password: str) -> list[str]:
    """The forms a password could leak in: as is, SASL PLAIN, LOGIN and HTTP Basic tokens."""
    return [password, b64(f"\0{user}\0{password}"), b64(password)]


OAUTH2_SECRETS = {
    "client.secret": "oauth-client-s3cret-4417",
    "refresh.token": "1//oauth-refresh-s3cret-9921",
    "access.token": "oauth-access-s3cret-5530",
}


def oauth2_sources(directory: Path) -> tuple[str, list[str]]:
    """Modules with every kind of token source (no target uses them), and the secrets they
    read: what must never show."""
    for name, content in OAUTH2_SECRETS.items():
        (directory / name).write_text(content + "\n")
    app = new_app_certificate(directory, "app")
    account = directory / "account.json"
    new_service_account(account, "probe@project.iam.gserviceaccount.com")
    keys = [app.private_key_file.read_text(), json.loads(account.read_text())["private_key"]]
    url = "https://login.example.com/tenant/oauth2/v2.0/token"
    sources = {
        "secret": f"client_credentials: {{token_url: '{url}', client_id: app, scope: s, "
        f"client_secret_file: {directory / 'client.secret'}}}",
        "certificate": f"client_credentials: {{token_url: '{url}', client_id: app, scope: s, "
        f"certificate_file: {app.certificate_file}, private_key_file: {app.private_key_file}}}",
        "refresh": f"refresh_token: {{token_url: '{url}', client_id: app, "
        f"refresh_token_file: {directory / 'refresh.token'}}}",
        "google": f"jwt_bearer: {{token_url: '{url}', service_account_file: {account}, scope: s}}",
        "file": f"token_file: {directory / 'access.token'}",
    }
    modules = "".join(
        f"  oauth2_{name}:\n    {{protocol: imap, tls: implicit, auth: {{username: u, "
        f"mechanism: xoauth2, oauth2: {{{source}}}}}}}\n"
        for name, source in sources.items()
    )
    # A key as a whole, and each of its base64 lines, which a partial dump would show.
    lines = [line for key in keys for line in key.splitlines() if "-----" not in line]
    return modules, [*OAUTH2_SECRETS.values(), *(key.strip() for key in keys), *lines]


LIVE_CLIENTS = {
    "secrets-app": "live-client-s3cret-6610",
    "secrets-revoked": "live-client-s3cret-7720",
}
LIVE_TARGETS = {  # target: module, the token server's client, the server's port attribute
    "oauth_submit": ("oauth2_submission", "secrets-app", "submission_port"),
    "oauth_store": ("oauth2_imaps", "secrets-app", "imaps_port"),
    "oauth_pop": ("oauth2_pop3s", "refresh", "pop3s_port"),
    "oauth_revoked": ("oauth2_revoked", "secrets-revoked", "imaps_port"),
}


def live_oauth2(
    directory: Path, server: TokenServer, dovecot: Dovecot, postfix: Postfix, pki: PKI
) -> tuple[str, str, str]:
    """Modules that log in with tokens from ``server``, their targets, and the refresh
    token the POP3 module starts with."""
    sources = {}
    for client, secret in LIVE_CLIENTS.items():
        server.add_client(client, dovecot.user, secret=secret)
        path = directory / f"{client}.secret"
        path.write_text(secret + "\n")
        sources[client] = (
            f"client_credentials: {{token_url: '{server.token_url}', client_id: {client}, "
            f"scope: mail, client_secret_file: {path}}}"
        )
    server.add_client("delegated", dovecot.user)
    refresh = server.add_refresh_token("delegated", dovecot.user)
    (directory / "live.refresh").write_text(refresh + "\n")
    sources["refresh"] = (
        f"refresh_token: {{token_url: '{server.token_url}', client_id: delegated, "
        f"refresh_token_file: {directory / 'live.refresh'}}}"
    )
    kinds = {"oauth2_submission": ("smtp", "starttls", "xoauth2"),
             "oauth2_imaps": ("imap", "implicit", "oauthbearer"),
             "oauth2_pop3s": ("pop3", "implicit", "oauthbearer"),
             "oauth2_revoked": ("imap", "implicit", "xoauth2")}  # fmt: skip
    modules = targets = ""
    for target, (module, client, port) in LIVE_TARGETS.items():
        protocol, tls, mechanism = kinds[module]
        modules += (
            f"  {module}:\n    {{protocol: {protocol}, tls: {tls}, timeout: 5s, "
            f"tls_config: {{ca_file: {pki.ca_file}}}, auth: {{username: {dovecot.user}, "
            f"mechanism: {mechanism}, oauth2: {{{sources[client]}}}}}}}\n"
        )
        instance = postfix if port == "submission_port" else dovecot
        address = f"localhost:{getattr(instance, port)}"
        targets += f"  - {{name: {target}, address: '{address}', module: {module}}}\n"
    return modules, targets, refresh


def sasl_messages(user: str, token: str, addresses: list[str]) -> list[str]:
    """The base64 forms a token travels in: alone, and in each SASL message that carries it
    (XOAUTH2; OAUTHBEARER to each address the targets name)."""
    messages = [f"user={user}\x01auth=Bearer {token}\x01\x01"]
    for address in addresses:
        host, _, port = address.rpartition(":")
        messages.append(f"n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01")
    return [token, b64(token), *(b64(message) for message in messages)]


_OAUTH2_LOGIN = re.compile(r" C: (?:\S+ AUTHENTICATE|AUTH) (?:XOAUTH2|OAUTHBEARER) (?!\*\*\*\*$)\S")


def unmasked_logins(text: str) -> list[str]:
    """Session log lines that send an OAuth2 login's message unmasked: the log cuts long
    lines short, so such a line would show a token's first characters, not the whole."""
    return [line for line in text.splitlines() if _OAUTH2_LOGIN.search(line)]


def write_config(
    path: Path,
    pki: PKI,
    dovecot: Dovecot,
    postfix: Postfix,
    secret: Path,
    oauth2: str,
    oauth2_targets: str,
) -> Path:
    tls = f"tls_config: {{ca_file: {pki.ca_file}}}"
    auth = f"username: {dovecot.user}, password_file: {secret}"
    path.write_text(
        textwrap.dedent(
            f"""\
            global: {{interval: 2s}}
            modules:
              imaps:
                {{protocol: imap, tls: implicit, timeout: 5s, {tls}, auth: {{{auth}}}}}
              pop3s:
                {{protocol: pop3, tls: implicit, timeout: 5s, {tls},
                  auth: {{{auth}, mechanism: plain}}}}
              submission:
                {{protocol: smtp, tls: starttls, timeout: 5s, {tls},
                  auth: {{{auth}, mechanism: plain}}}}
              imaps_wrong:
                {{protocol: imap, tls: implicit, timeout: 5s, {tls},
                  auth: {{username: {dovecot.user}, password_env: MAIL_TEST_WRONG_PASSWORD}}}}
            targets:
              - {{name: store, address: "localhost:{dovecot.imaps_port}", module: imaps}}
              - {{name: pop, address: "localhost:{dovecot.pop3s_port}", module: pop3s}}
              - {{name: submit, address: "localhost:{postfix.submission_port}", module: submission}}
              - {{name: wrong, address: "localhost:{dovecot.imaps_port}", module: imaps_wrong}}
            """
        ).replace("modules:\n", "modules:\n" + oauth2, 1)
        + oauth2_targets
    )
    return path


def wait_for_every_target(served: Served) -> str:
    wanted = ('target="store"', 'target="pop"', 'target="submit"', 'target="wrong"',
              *(f'target="{target}"' for target in LIVE_TARGETS))  # fmt: skip
    for _ in range(100):
        metrics = get(served.port, "/metrics", headers=AUTH).body
        lines = [line for line in metrics.splitlines() if line.startswith("mail_probe_success{")]
        if all(any(target in line for line in lines) for target in wanted):
            return metrics
        time.sleep(0.2)
    raise AssertionError(f"scheduled probes did not all report:\n{served.stderr()}")


def wait_for_refusal(served: Served, target: str) -> str:
    """The metrics once ``target``'s probe has failed with reason auth."""
    labels = {"target": target, "module": LIVE_TARGETS[target][0], "protocol": "imap"}
    for _ in range(100):
        metrics = get(served.port, "/metrics", headers=AUTH).body
        if sample(metrics, "mail_probe_failures_total", labels, reason="auth"):
            return metrics
        time.sleep(0.2)
    raise AssertionError(f"{target} did not fail:\n{served.stderr()}")


def pages(served: Served, probes: dict[str, str]) -> dict[str, str]:
    """Every page a person or Prometheus can read, by name; /probe of each module with
    its target in ``probes``."""
    shown = {
        name: get(served.port, path, headers=AUTH).body
        for name, path in {
            "status page": "/",
            "config": "/config",
            "ready": "/-/ready",
        }.items()
    }
    for module, target in probes.items():
        for debug in ("true", "false"):
            path = f"/probe?module={module}&target={target}&debug={debug}"
            shown[f"/probe {module} debug={debug}"] = get(served.port, path, headers=AUTH).body
    shown["unauthorized"] = get(served.port, "/", headers=basic("prometheus", "guess")).body
    return shown


def test_no_secret_anywhere(
    tmp_path: Path,
    pki: PKI,
    dovecot: Dovecot,
    postfix: Postfix,
    token_server: TokenServer,
    token_dovecot: Dovecot,
    token_postfix: Postfix,
) -> None:
    secret = tmp_path / "probe.pass"
    secret.write_text(dovecot.password + "\n")
    oauth2_modules, oauth2_leaks = oauth2_sources(tmp_path)
    live_modules, live_targets, first_refresh = live_oauth2(
        tmp_path, token_server, token_dovecot, token_postfix, pki
    )
    config = write_config(
        tmp_path / "config.yml", pki, dovecot, postfix, secret,
        oauth2_modules + live_modules, live_targets,
    )  # fmt: skip
    probes = {
        "imaps": f"localhost:{dovecot.imaps_port}",
        "pop3s": f"localhost:{dovecot.pop3s_port}",
        "submission": f"localhost:{postfix.submission_port}",
        "imaps_wrong": f"localhost:{dovecot.imaps_port}",
    }
    for module, _, port in LIVE_TARGETS.values():
        instance = token_postfix if port == "submission_port" else token_dovecot
        probes[module] = f"localhost:{getattr(instance, port)}"
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users: {{prometheus: '{BASIC_HASH}'}}\n")
    with served_exporter(
        tmp_path,
        config,
        "--web.config.file", str(web), "--log.level", "debug",
        env={"MAIL_TEST_WRONG_PASSWORD": WRONG_PASSWORD},
    ) as served:  # fmt: skip
        wait_for_every_target(served)
        issued_before = list(token_server.issued)
        for token, issued in list(token_server.issued.items()):
            if issued.client_id == "secrets-revoked":
                token_server.revoke(token)  # the exporter keeps it: its next login is refused
        shown = {"metrics": wait_for_refusal(served, "oauth_revoked"), **pages(served, probes)}
        # A password written into the config by mistake is refused without being echoed.
        config.write_text(
            config.read_text()
            .replace(f"password_file: {secret}", f"password: {dovecot.password}")
            .replace(
                "scope: s, client_secret_file:",
                f"client_secret: {WRONG_PASSWORD}, scope: s, client_secret_file:",
            )
        )
        shown["failed reload"] = get(served.port, "/-/reload", headers=AUTH, method="POST").body
    shown["stderr log"] = served.stderr()

    # The probes really used the passwords, and these texts are where they would show.
    for target, module, protocol, success in (
        ("store", "imaps", "imap", 1.0),
        ("pop", "pop3s", "pop3", 1.0),
        ("submit", "submission", "smtp", 1.0),
        ("wrong", "imaps_wrong", "imap", 0.0),
    ):
        labels = {"target": target, "module": module, "protocol": protocol}
        assert sample(shown["metrics"], "mail_probe_success", labels) == success
    for target, (module, _, port) in LIVE_TARGETS.items():
        protocol = "smtp" if port == "submission_port" else port.split("s_")[0]
        labels = {"target": target, "module": module, "protocol": protocol}
        assert sample(shown["metrics"], "mail_probe_success", labels) == (target != "oauth_revoked")
    for module in ("imaps", "pop3s", "submission", "oauth2_submission", "oauth2_pop3s"):
        assert "Verdict: SUCCESS" in shown[f"/probe {module} debug=true"]
    assert "Verdict: FAILED in auth (auth)" in shown["/probe imaps_wrong debug=true"]
    refused = "(the server's error: status 401, scope mail)"
    assert refused in shown["/probe oauth2_revoked debug=true"]
    assert "status 401, scope mail)" in shown["status page"]
    assert "C: a2 AUTHENTICATE OAUTHBEARER ****" in shown["/probe oauth2_imaps debug=true"]
    assert "auth:" in shown["status page"]  # the wrong password's failure, shown
    assert f"password_file: {secret}" in shown["config"]
    assert "password_env: MAIL_TEST_WRONG_PASSWORD" in shown["config"]
    assert "passwords never go in the config" in shown["failed reload"]
    assert "secrets never go in the config" in shown["failed reload"]
    assert f"refresh_token_file: {tmp_path / 'refresh.token'}" in shown["config"]
    assert 'mail_oauth2_token_fetches_total{source="oauth2_secret"} 0.0' in shown["metrics"]
    assert "level=debug" in shown["stderr log"]
    assert "target wrong failed in auth" in shown["stderr log"]

    addresses = list(probes.values())
    access_tokens = {*issued_before, *token_server.issued}  # the revoked ones too
    assert len(access_tokens) >= 3  # the client's, the refresh token's and the revoked one
    live = [first_refresh, *token_server.refresh_tokens, *LIVE_CLIENTS.values()]
    leaks = [
        *(leak for t in access_tokens for leak in sasl_messages(dovecot.user, t, addresses)),
        *live,
        *forbidden(dovecot.user, dovecot.password),
        *forbidden(dovecot.user, WRONG_PASSWORD),
        BASIC_PASSWORD,
        AUTH["Authorization"].split(" ")[1],
        BASIC_HASH,
        *oauth2_leaks,
    ]
    found = [(name, leak) for name, text in shown.items() for leak in leaks if leak in text]
    assert found == []
    assert [line for text in shown.values() for line in unmasked_logins(text)] == []


def test_shown_config_is_the_running_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOWN_PASSWORD", "shown-secret-1")
    config = tmp_path / "config.yml"
    config.write_text(
        textwrap.dedent(
            """\
            global: {interval: 90s, scrape_timeout_offset: 250ms}
            modules:
              submission: {protocol: smtp, tls: starttls}
              imaps:
                protocol: imap
                tls: implicit
                auth: {username: probe@example.com, password_env: SHOWN_PASSWORD}
            roundtrip:
              - name: loop
                send: {address: "mail.example.com:587", module: submission, from: a@example.com, to: b@example.com}
                receive: {address: "mail.example.com:993", module: imaps}
            probe:
              allowed_targets: ["*.example.com", 192.0.2.0/24]
            """
        )
    )
    exporter = Exporter(config, {})
    shown = exporter.shown_config()
    assert shown.startswith(f"# Running config from {config}, loaded ")
    assert "interval: 90s" in shown and "scrape_timeout_offset: 250ms" in shown
    assert "from: a@example.com" in shown and "password_env: SHOWN_PASSWORD" in shown
    assert "shown-secret-1" not in shown
    assert parse_config(shown).model_dump() == exporter.config.model_dump()


async def test_server_text_is_shown_as_said(
    tmp_path: Path, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/probe?debug=true is no password oracle: a server's words come back verbatim, even
    when they hold a configured password, while the exporter's own AUTH line is masked
    where it is written."""
    own, other = "own-secret-5521", "other-secret-8832"
    monkeypatch.setenv("ORACLE_OWN_PASSWORD", own)
    monkeypatch.setenv("ORACLE_OTHER_PASSWORD", other)
    server = LoginRecorder(replies_mention=other)
    context = server_context(pki.server_cert, pki.server_key)
    async with scripted_server(server, context) as address:
        config = tmp_path / "config.yml"
        config.write_text(
            recorder_modules(pki, "ORACLE_OWN_PASSWORD")
            + textwrap.dedent(
                f"""\
                  mailbox:
                    {{protocol: imap, tls: implicit, auth: {{username: x, password_env: ORACLE_OTHER_PASSWORD}}}}
                targets:
                  - {{name: guessed, address: "{address}", module: login}}
                """
            )
        )
        client: TestClient[object, object] = TestClient(TestServer(make_app(Exporter(config, {}))))
        await client.start_server()
        try:
            shown = {}
            for module in ("plain", "login"):
                params = {"module": module, "target": address, "debug": "true"}
                response = await client.get("/probe", params=params)
                assert response.status == 200
                shown[module] = await response.text()
            shown["config"] = await (await client.get("/config")).text()
        finally:
            await client.close()
    assert f"S: 220 recorder {other} ready" in shown["plain"]
    assert "Verdict: SUCCESS" in shown["login"]
    assert "C: AUTH PLAIN ****" in shown["login"]
    assert f"S: 235 2.7.0 accepted {other}" in shown["login"]
    assert server.logins == ["AUTH PLAIN " + b64(f"\0probe\0{own}")]  # really sent
    assert "password_env: ORACLE_OTHER_PASSWORD" in shown["config"]
    assert other not in shown["config"]
    for text in shown.values():
        assert "<secret>" not in text
        assert [leak for leak in forbidden("probe", own) if leak in text] == []


@pytest.mark.parametrize("mechanism", ["auto", "plain", "xoauth2"])
async def test_a_confused_imap_server_gets_no_secret_into_the_log(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    mechanism: str,
) -> None:
    """A tagged answer under another tag ends the session (aioimaplib would write the
    pending command's text into the error it raises, and asyncio log it): the round
    trip's mailbox login (LOGIN, AUTHENTICATE PLAIN, XOAUTH2) keeps its secret out of
    what is logged."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        capabilities = "IMAP4rev1 SASL-IR AUTH=PLAIN AUTH=XOAUTH2"
        await send(writer, f"* OK [CAPABILITY {capabilities}] confused")
        while raw := await reader.readline():
            tag, verb = raw.decode().split()[:2]
            if verb == "CAPABILITY":
                await send(writer, f"* CAPABILITY {capabilities}", f"{tag} OK")
            else:  # a login: answered under a tag aioimaplib could have used
                await send(writer, "ZZ9 OK not your tag")

    password, token = "confused-pa55word", "confused-access-t0ken"
    monkeypatch.setenv("CONFUSED_PASSWORD", password)
    (tmp_path / "access.token").write_text(token + "\n")
    auth: dict[str, object] = {"username": "probe", "mechanism": mechanism}
    if mechanism == "xoauth2":
        auth["oauth2"] = {"token_file": str(tmp_path / "access.token")}
    else:
        auth["password_env"] = "CONFUSED_PASSWORD"
    module = ModuleConfig.model_validate(
        {"protocol": "imap", "tls": "none", "allow_plaintext_auth": True, "timeout": "2s",
         "auth": auth}
    )  # fmt: skip
    async with scripted_server(handler) as address:
        receive = RoundTripReceive(address=address, module="m")
        with caplog.at_level(logging.DEBUG), pytest.raises(RoundTripFailure) as failed:
            await ImapMailbox.open(
                parse_address(address), module, receive, cleanup_folder(receive), ProbeMemory()
            )
    assert failed.value.stage is Stage.RECEIVE
    assert "the server sent a line out of turn: ZZ9 OK not your tag" in caplog.text
    leaks = [
        *forbidden("probe", password),
        token,
        b64(f"user=probe\x01auth=Bearer {token}\x01\x01"),
    ]
    assert [leak for leak in leaks if leak in caplog.text] == []
