"""No password shows anywhere: a scan of every page and the debug log after probes that used one.

A real exporter logs in to the real Dovecot and Postfix with the right password (IMAP
LOGIN, POP3 and SMTP AUTH PLAIN) and with a wrong one, on its schedule and through
/probe. Then every page, the /probe debug output, /config, a failed reload's error
and the whole stderr log at debug level are searched for each password, in clear and
in the base64 forms SASL sends, and for the web config's basic auth password and hash.
So are the secrets of OAuth2 token sources the config names (client secret, refresh token,
private keys, a token file's token).

And no page is an oracle: a scripted server that says a configured password gets its
words back as it said them, while the probe's own login line stays masked.
"""

from __future__ import annotations

import base64
import json
import textwrap
import time
from pathlib import Path

import bcrypt
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mail_exporter.config.root import parse_config
from mail_exporter.exporter import Exporter
from mail_exporter.web import make_app
from tests.realservers.dovecot import Dovecot
from tests.realservers.oauth import new_app_certificate, new_service_account
from tests.realservers.pki import PKI
from tests.realservers.postfix import Postfix
from tests.scripted import scripted_server, server_context
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


def write_config(
    path: Path, pki: PKI, dovecot: Dovecot, postfix: Postfix, secret: Path, oauth2: str
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
    )
    return path


def wait_for_every_target(served: Served) -> str:
    wanted = ('target="store"', 'target="pop"', 'target="submit"', 'target="wrong"')
    for _ in range(100):
        metrics = get(served.port, "/metrics", headers=AUTH).body
        lines = [line for line in metrics.splitlines() if line.startswith("mail_probe_success{")]
        if all(any(target in line for line in lines) for target in wanted):
            return metrics
        time.sleep(0.2)
    raise AssertionError(f"scheduled probes did not all report:\n{served.stderr()}")


def pages(served: Served, dovecot: Dovecot, postfix: Postfix) -> dict[str, str]:
    """Every page a person or Prometheus can read, by name."""
    shown = {
        name: get(served.port, path, headers=AUTH).body
        for name, path in {
            "status page": "/",
            "config": "/config",
            "ready": "/-/ready",
        }.items()
    }
    for module, port in (
        ("imaps", dovecot.imaps_port),
        ("pop3s", dovecot.pop3s_port),
        ("submission", postfix.submission_port),
        ("imaps_wrong", dovecot.imaps_port),
    ):
        for debug in ("true", "false"):
            path = f"/probe?module={module}&target=localhost:{port}&debug={debug}"
            shown[f"/probe {module} debug={debug}"] = get(served.port, path, headers=AUTH).body
    shown["unauthorized"] = get(served.port, "/", headers=basic("prometheus", "guess")).body
    return shown


def test_no_secret_anywhere(tmp_path: Path, pki: PKI, dovecot: Dovecot, postfix: Postfix) -> None:
    secret = tmp_path / "probe.pass"
    secret.write_text(dovecot.password + "\n")
    oauth2_modules, oauth2_leaks = oauth2_sources(tmp_path)
    config = write_config(tmp_path / "config.yml", pki, dovecot, postfix, secret, oauth2_modules)
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users: {{prometheus: '{BASIC_HASH}'}}\n")
    with served_exporter(
        tmp_path,
        config,
        "--web.config.file", str(web), "--log.level", "debug",
        env={"MAIL_TEST_WRONG_PASSWORD": WRONG_PASSWORD},
    ) as served:  # fmt: skip
        shown = {"metrics": wait_for_every_target(served), **pages(served, dovecot, postfix)}
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
    for module in ("imaps", "pop3s", "submission"):
        assert "Verdict: SUCCESS" in shown[f"/probe {module} debug=true"]
    assert "Verdict: FAILED in auth (auth)" in shown["/probe imaps_wrong debug=true"]
    assert "auth:" in shown["status page"]  # the wrong password's failure, shown
    assert f"password_file: {secret}" in shown["config"]
    assert "password_env: MAIL_TEST_WRONG_PASSWORD" in shown["config"]
    assert "passwords never go in the config" in shown["failed reload"]
    assert "secrets never go in the config" in shown["failed reload"]
    assert f"refresh_token_file: {tmp_path / 'refresh.token'}" in shown["config"]
    assert 'mail_oauth2_token_fetches_total{source="oauth2_secret"} 0.0' in shown["metrics"]
    assert "level=debug" in shown["stderr log"]
    assert "target wrong failed in auth" in shown["stderr log"]

    leaks = [
        *forbidden(dovecot.user, dovecot.password),
        *forbidden(dovecot.user, WRONG_PASSWORD),
        BASIC_PASSWORD,
        AUTH["Authorization"].split(" ")[1],
        BASIC_HASH,
        *oauth2_leaks,
    ]
    found = [(name, leak) for name, text in shown.items() for leak in leaks if leak in text]
    assert found == []


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
