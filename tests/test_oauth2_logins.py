"""XOAUTH2 and OAUTHBEARER logins against a real Dovecot and a real Postfix, with tokens
from a real token server.

Dovecot (``auth_mechanisms = plain login xoauth2 oauthbearer``) checks each token with
its ``passdb oauth2`` at :class:`tests.realservers.oauth.TokenServer`'s introspection
endpoint; Postfix's submission authenticates through that Dovecot. The probes
(scheduled and /probe, which name the mechanism in ``mail_probe_auth_mechanism_info``)
and both legs of the round trip log in with each mechanism and with client-credentials
and refresh-token sources; a revoked or expired token is refused with Dovecot's error
challenge, whose status the failure shows; a token server that hangs costs the probe its
``token`` reason, within the probe's timeout. The token never shows in a session log.

A scripted server plays what Dovecot never sends: error challenges that are no JSON or
too long, and a server that goes on asking after the exchange is cancelled.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mail_exporter.config.oauth2 import OAuth2Config
from mail_exporter.config.probes import ModuleConfig
from mail_exporter.config.root import parse_config
from mail_exporter.config.roundtrip import RoundTripReceive
from mail_exporter.exporter import Exporter
from mail_exporter.oauth2.broker import TokenBroker
from mail_exporter.probes import FailureReason, Phase, ProbeMemory, ProbeResult, run_probe
from mail_exporter.roundtrip.imap_mailbox import ImapMailbox, cleanup_folder
from mail_exporter.roundtrip.outcome import RoundTripFailure, Stage
from mail_exporter.roundtrip.runner import RouteRunner
from mail_exporter.targets import parse_address
from mail_exporter.web import make_app
from tests.conftest import _require_binary
from tests.realservers.dovecot import Dovecot
from tests.realservers.oauth import TokenServer, new_service_account, secret_file
from tests.realservers.pki import PKI
from tests.realservers.postfix import Postfix
from tests.scripted import scripted_server, send
from tests.test_roundtrip_real_servers import RestrictedDovecot, route_messages
from tests.test_web import sample, wait_for_results, write_config

pytestmark = pytest.mark.integration

USER = "probe@test.local"
SCOPE = "https://outlook.office365.com/.default"
CLIENT_SECRET = "oauth-login-client-s3cret"
BOUND = 30.0
"""Hang guard for waits that end at once when things work."""


def client_credentials(server: TokenServer, directory: Path) -> dict[str, Any]:
    server.add_client("app", USER, secret=CLIENT_SECRET)
    secret = secret_file(directory, "client.secret", CLIENT_SECRET)
    return {"client_credentials": {
        "token_url": server.token_url, "client_id": "app", "scope": SCOPE,
        "client_secret_file": str(secret),
    }}  # fmt: skip


def refresh_token(server: TokenServer, directory: Path) -> dict[str, Any]:
    server.add_client("delegated", USER)
    token = secret_file(directory, "refresh.token", server.add_refresh_token("delegated", USER))
    return {"refresh_token": {
        "token_url": server.token_url, "client_id": "delegated", "refresh_token_file": str(token),
    }}  # fmt: skip


def jwt_bearer(server: TokenServer, directory: Path) -> dict[str, Any]:
    """Google's domain-wide delegation: a service account's assertion acting as USER."""
    email = "probe@project.iam.gserviceaccount.com"
    account = directory / "service-account.json"
    server.add_issuer(email, new_service_account(account, email))
    return {"jwt_bearer": {
        "token_url": server.token_url, "service_account_file": str(account), "subject": USER,
        "scope": "https://mail.google.com/",
    }}  # fmt: skip


def issued_token(server: TokenServer) -> str:
    """An access token the server issued for USER, as a site's own token helper holds it."""
    server.add_client("helper", USER, secret=CLIENT_SECRET)
    form = {"grant_type": "client_credentials", "client_id": "helper",
            "client_secret": CLIENT_SECRET, "scope": SCOPE}  # fmt: skip
    with urllib.request.urlopen(server.token_url, urlencode(form).encode(), BOUND) as answer:
        return str(json.load(answer)["access_token"])


def token_file(server: TokenServer, directory: Path) -> dict[str, Any]:
    return {"token_file": str(secret_file(directory, "access.token", issued_token(server)))}


def token_command(server: TokenServer, directory: Path) -> dict[str, Any]:
    held = secret_file(directory, "helper.token", issued_token(server))
    return {"token_command": [sys.executable, "-c", f"print(open({str(held)!r}).read().strip())"]}


SOURCES = {
    "client_credentials": client_credentials,
    "refresh_token": refresh_token,
    "jwt_bearer": jwt_bearer,
    "token_file": token_file,
    "token_command": token_command,
}


def oauth2_module(
    pki: PKI, protocol: str, tls: str, mechanism: str, source: dict[str, Any], timeout: str = "10s"
) -> ModuleConfig:
    return ModuleConfig.model_validate(
        {"protocol": protocol, "tls": tls, "timeout": timeout,
         "tls_config": {"ca_file": str(pki.ca_file)},
         "auth": {"username": USER, "mechanism": mechanism, "oauth2": source}}
    )  # fmt: skip


async def probe(port: int, module: ModuleConfig, memory: ProbeMemory) -> ProbeResult:
    address = parse_address(f"127.0.0.1:{port}")
    return await run_probe(address, module, module.timeout_seconds, memory)


def client_lines(result: ProbeResult) -> list[str]:
    return [line.split(" C: ", 1)[1] for line in result.log if " C: " in line]


def assert_no_token(shown: str, memory: ProbeMemory) -> None:
    """Neither a token the broker holds nor its base64 forms in ``shown``."""
    for token in memory.tokens.secrets():
        for leak in (token, base64.b64encode(token.encode()).decode()):
            assert leak not in shown


# (protocol, tls, server, port attribute, the login command as the session log shows it)
PROTOCOLS = [
    ("smtp", "starttls", "postfix", "submission_port", "AUTH {} ****"),
    ("imap", "implicit", "dovecot", "imaps_port", "a2 AUTHENTICATE {} ****"),
    ("pop3", "starttls", "dovecot", "pop3_port", "AUTH {} ****"),
]


def port_of(case: tuple[str, ...], dovecot: Dovecot, postfix: Postfix) -> int:
    return int(getattr(postfix if case[2] == "postfix" else dovecot, case[3]))


@pytest.mark.parametrize("source", sorted(SOURCES))
@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
@pytest.mark.parametrize("case", PROTOCOLS, ids=[case[0] for case in PROTOCOLS])
async def test_probes_log_in_with_a_token(
    token_server: TokenServer,
    token_dovecot: Dovecot,
    token_postfix: Postfix,
    pki: PKI,
    tmp_path: Path,
    case: tuple[str, ...],
    mechanism: str,
    source: str,
) -> None:
    """Each protocol and mechanism logs in with the source's token, sent as the initial
    response (an opaque token fits every command line), masked in the session log."""
    memory = ProbeMemory()
    module = oauth2_module(
        pki, case[0], case[1], mechanism, SOURCES[source](token_server, tmp_path)
    )
    result = await probe(port_of(case, token_dovecot, token_postfix), module, memory)
    assert result.success, "\n".join(result.log)
    assert Phase.AUTH in result.phases
    assert case[4].format(mechanism.upper()) in client_lines(result)
    assert_no_token("\n".join(result.log), memory)
    assert len(memory.tokens.secrets()) >= 1  # the token really came from the broker


@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
@pytest.mark.parametrize(
    "case", [PROTOCOLS[0], PROTOCOLS[2]], ids=[PROTOCOLS[0][0], PROTOCOLS[2][0]]
)
async def test_a_long_token_goes_after_the_servers_challenge(
    token_server: TokenServer,
    token_dovecot: Dovecot,
    token_postfix: Postfix,
    pki: PKI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: tuple[str, ...],
    mechanism: str,
) -> None:
    """A JWT access token, as Microsoft's are, makes AUTH longer than SMTP's 512 and POP3's
    255 octets: the message follows the server's empty challenge instead."""
    monkeypatch.setattr(token_server, "jwt_access_tokens", True)
    memory = ProbeMemory()
    module = oauth2_module(
        pki, case[0], case[1], mechanism, client_credentials(token_server, tmp_path)
    )
    result = await probe(port_of(case, token_dovecot, token_postfix), module, memory)
    assert result.success, "\n".join(result.log)
    said = client_lines(result)
    login = said.index(f"AUTH {mechanism.upper()}")
    assert said[login + 1] == "****"
    assert_no_token("\n".join(result.log), memory)


@pytest.fixture(scope="module")
def dovecot_without_sasl_ir(
    tmp_path_factory: pytest.TempPathFactory, pki: PKI, token_server: TokenServer
) -> Iterator[Dovecot]:
    """A Dovecot that does not list SASL-IR before the login."""
    _require_binary("dovecot")
    dovecot = RestrictedDovecot(
        tmp_path_factory.mktemp("dovecot"),
        pki.server_cert,
        pki.server_key,
        "IMAP4rev1 LITERAL+ ID ENABLE IDLE UIDPLUS",
        token_server.introspection_url,
    )
    dovecot.start()
    yield dovecot
    dovecot.stop()


@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
async def test_imap_without_sasl_ir_answers_the_continuation(
    token_server: TokenServer,
    dovecot_without_sasl_ir: Dovecot,
    pki: PKI,
    tmp_path: Path,
    mechanism: str,
) -> None:
    """The probe and the round trip's mailbox (aioimaplib) alike send AUTHENTICATE alone
    and the message after the server's ``+``."""
    memory = ProbeMemory()
    module = oauth2_module(
        pki, "imap", "implicit", mechanism, client_credentials(token_server, tmp_path)
    )
    result = await probe(dovecot_without_sasl_ir.imaps_port, module, memory)
    assert result.success, "\n".join(result.log)
    said = client_lines(result)
    assert said[said.index(f"a2 AUTHENTICATE {mechanism.upper()}") + 1] == "****"
    address = f"127.0.0.1:{dovecot_without_sasl_ir.imaps_port}"
    receive = RoundTripReceive(address=address, module="m")
    mailbox = await ImapMailbox.open(
        parse_address(address), module, receive, cleanup_folder(receive), memory
    )
    await mailbox.close()


# --- refusals -------------------------------------------------------------------------

STATUS = {"xoauth2": "status 401, scope mail", "oauthbearer": "status invalid_token"}
"""What Dovecot 2.3's error challenge says of a token its passdb finds inactive."""


@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
@pytest.mark.parametrize("case", PROTOCOLS, ids=[case[0] for case in PROTOCOLS])
async def test_a_revoked_token_fails_with_the_servers_status(
    token_server: TokenServer,
    token_dovecot: Dovecot,
    token_postfix: Postfix,
    pki: PKI,
    tmp_path: Path,
    case: tuple[str, ...],
    mechanism: str,
) -> None:
    """The server's error challenge is answered as the mechanism requires (empty for
    XOAUTH2, ``\\x01`` for OAUTHBEARER), its final failure read, and the status shown."""
    memory = ProbeMemory()
    module = oauth2_module(
        pki, case[0], case[1], mechanism, client_credentials(token_server, tmp_path)
    )
    port = port_of(case, token_dovecot, token_postfix)
    assert (await probe(port, module, memory)).success
    (token,) = memory.tokens.secrets()
    token_server.revoke(token)  # the broker keeps it: the next probe sends it again
    result = await probe(port, module, memory)
    assert result.failure is not None, "\n".join(result.log)
    assert (result.failure.phase, result.failure.reason) == (Phase.AUTH, FailureReason.AUTH)
    assert result.failure.detail.endswith(f"(the server's error: {STATUS[mechanism]})")
    cancel = {"xoauth2": "", "oauthbearer": "AQ=="}[mechanism]
    said = client_lines(result)
    assert said[said.index(case[4].format(mechanism.upper())) + 1] == cancel
    assert said[-1].endswith(("QUIT", "LOGOUT"))  # the conversation stayed in step
    assert_no_token("\n".join(result.log) + result.failure.detail, memory)


async def test_an_expired_token_fails_with_the_servers_status(
    token_server: TokenServer,
    token_dovecot: Dovecot,
    pki: PKI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A token a helper left in ``token_file`` after it expired is refused by the server."""
    monkeypatch.setattr(token_server, "lifetime", 1.0)
    source = OAuth2Config.model_validate(client_credentials(token_server, tmp_path))
    token = await TokenBroker().token(source, asyncio.get_running_loop().time() + BOUND)
    file = secret_file(tmp_path, "access.token", token.value)
    for _ in range(int(BOUND * 10)):
        if token_server.active(token.value) is None:
            break
        await asyncio.sleep(0.1)
    module = oauth2_module(pki, "imap", "implicit", "xoauth2", {"token_file": str(file)})
    result = await probe(token_dovecot.imaps_port, module, ProbeMemory())
    assert result.failure is not None and result.failure.reason is FailureReason.AUTH
    assert "(the server's error: status 401, scope mail)" in result.failure.detail
    assert token.value not in "\n".join(result.log)


async def test_a_hanging_token_server_ends_the_probe_in_time_with_reason_token(
    token_server: TokenServer,
    token_dovecot: Dovecot,
    pki: PKI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(token_server, "misbehave", "hang")
    memory = ProbeMemory(tokens=TokenBroker(fetch_seconds=5))
    module = oauth2_module(
        pki, "imap", "implicit", "oauthbearer", client_credentials(token_server, tmp_path), "3s"
    )
    started = time.monotonic()
    result = await probe(token_dovecot.imaps_port, module, memory)
    assert time.monotonic() - started < 3.0 + 1.0  # the probe's timeout, and its goodbye
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (Phase.AUTH, FailureReason.TOKEN)
    assert "no token from token source client_credentials" in result.failure.detail
    assert not any("AUTHENTICATE" in line for line in client_lines(result))
    await ended_fetch(memory)


async def ended_fetch(memory: ProbeMemory) -> None:
    """Wait for the fetch the broker goes on with after the probe gave up."""
    for _ in range(int(BOUND * 10)):
        failures = [
            sample.value
            for family in memory.tokens.collect()
            for sample in family.samples
            if sample.name == "mail_oauth2_token_fetch_failures_total"
            and sample.labels["reason"] == "timeout"
        ]
        if failures and failures[0] == 1:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the token fetch did not end")


# --- the round trip -------------------------------------------------------------------


def oauth2_route(
    pki: PKI, name: str, send: str, receive: str, send_auth: str, receive_module: str
) -> RouteRunner:
    config = parse_config(
        f"""
modules:
  send: {{protocol: smtp, tls: starttls, timeout: 5s, tls_config: {{ca_file: {pki.ca_file}}},
          auth: {send_auth}}}
  receive: {receive_module}
roundtrip:
  - name: {name}
    timeout: 10s
    send: {{address: "{send}", module: send, from: {USER}, to: {USER}}}
    receive: {{address: "{receive}", module: receive}}
"""
    )
    route = config.roundtrip[0]
    memory = ProbeMemory()
    return RouteRunner(route, config.modules["send"], config.modules["receive"], memory)


def flow_auth(mechanism: str, source: dict[str, Any]) -> str:
    return f"{{username: {USER}, mechanism: {mechanism}, oauth2: {source}}}"


@pytest.mark.parametrize(
    ("protocol", "port", "mechanism"),
    [("imap", "imaps_port", "oauthbearer"), ("pop3", "pop3s_port", "xoauth2")],
)
async def test_round_trip_submits_and_reads_with_tokens(
    token_server: TokenServer,
    token_dovecot: Dovecot,
    token_postfix: Postfix,
    pki: PKI,
    tmp_path: Path,
    protocol: str,
    port: str,
    mechanism: str,
) -> None:
    """SMTP submission with XOAUTH2 (client credentials), the mailbox with another
    mechanism and source (a refresh token); the message found and deleted."""
    name = f"oauth2-{protocol}"
    receive = (
        f"{{protocol: {protocol}, tls: implicit, timeout: 5s, "
        f"tls_config: {{ca_file: {pki.ca_file}}}, "
        f"auth: {flow_auth(mechanism, refresh_token(token_server, tmp_path))}}}"
    )
    runner = oauth2_route(
        pki,
        name,
        f"127.0.0.1:{token_postfix.submission_port}",
        f"127.0.0.1:{getattr(token_dovecot, port)}",
        flow_auth("xoauth2", client_credentials(token_server, tmp_path)),
        receive,
    )
    outcome = await runner.run_once()
    assert outcome.success, outcome
    assert not outcome.cleanup_failed
    assert route_messages(token_dovecot, name) == []
    assert len(runner.memory.tokens.secrets()) >= 3  # two access tokens, a refresh token


async def test_round_trip_token_failures_are_login_failures(
    token_server: TokenServer,
    token_dovecot: Dovecot,
    token_postfix: Postfix,
    pki: PKI,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No token for the mailbox is ``receive_auth`` (nothing is sent); a revoked one for
    the submission is ``send_auth``, with the server's status in the log."""
    wrong = client_credentials(token_server, tmp_path)
    wrong["client_credentials"]["client_secret_file"] = str(
        secret_file(tmp_path, "wrong.secret", "not-the-secret")
    )
    imaps = f"{{protocol: imap, tls: implicit, timeout: 5s, tls_config: {{ca_file: {pki.ca_file}}}, auth: {{}}}}"
    runner = oauth2_route(
        pki,
        "oauth2-denied",
        f"127.0.0.1:{token_postfix.submission_port}",
        f"127.0.0.1:{token_dovecot.imaps_port}",
        flow_auth("xoauth2", client_credentials(token_server, tmp_path)),
        imaps.replace("auth: {}", f"auth: {flow_auth('xoauth2', wrong)}"),
    )
    outcome = await runner.run_once()
    assert outcome.failure is Stage.RECEIVE_AUTH
    assert route_messages(token_dovecot, "oauth2-denied") == []

    sender = oauth2_route(
        pki,
        "oauth2-revoked",
        f"127.0.0.1:{token_postfix.submission_port}",
        f"127.0.0.1:{token_dovecot.imaps_port}",
        flow_auth("oauthbearer", client_credentials(token_server, tmp_path)),
        imaps.replace(
            "auth: {}", f"auth: {flow_auth('xoauth2', refresh_token(token_server, tmp_path))}"
        ),
    )
    assert (await sender.run_once()).success
    for token in sender.memory.tokens.secrets():
        issued = token_server.active(token)
        if issued is not None and issued.grant == "client_credentials":
            token_server.revoke(token)  # the submission's; the mailbox's stays good
    with caplog.at_level(logging.WARNING, "mail_exporter.roundtrip"):
        assert (await sender.run_once()).failure is Stage.SEND_AUTH
    assert "(the server's error: status invalid_token)" in caplog.text


# --- what Dovecot never says ----------------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


CONTROL_CHARACTERS = json.dumps({"status": "4\x010\n1", "scope": "\x1b[2J"})
OVERSIZED = json.dumps({"status": "x" * 4000})


@pytest.mark.parametrize(
    ("challenges", "reason", "said"),
    [
        (
            ["334 not*base64"],
            "auth",
            "the server's error: an error challenge that is no base64 JSON",
        ),
        (
            [f"334 {b64(CONTROL_CHARACTERS)}"],
            "auth",
            "the server's error: status 4\\x010\\n1, scope \\x1b[2J)",
        ),
        (
            [f"334 {b64('[1]')}"],
            "auth",
            "the server's error: an error challenge that is no JSON object",
        ),
        ([f"334 {b64(OVERSIZED)}"], "auth", "an error challenge over 4096"),
        (
            ["334 e30=", "334 e30="],
            "auth",
            "501 5.7.0 cancelled (the server's error: an error challenge without a status)",
        ),
        (
            ["334 e30=", "334 e30=", "334 e30="],
            "protocol",
            "went on asking after the exchange was cancelled",
        ),
    ],
    ids=["no-base64", "control-characters", "no-object", "oversized", "cancelled", "asks-on"],
)
async def test_error_challenges_dovecot_never_sends(
    tmp_path: Path, challenges: list[str], reason: str, said: str
) -> None:
    """Whatever the challenge, the client answers it once, cancels with ``*`` if the server
    still asks, and fails with reason auth and the server's words made printable; a server
    that asks on after that is out of step (reason protocol, no goodbye)."""
    heard: list[str] = []
    replies = iter([*challenges, "501 5.7.0 cancelled"])

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await send(writer, "220 scripted")
        while raw := await reader.readline():
            line = raw.decode().rstrip("\r\n")
            heard.append(line)
            if line.startswith("EHLO"):
                await send(writer, "250-scripted", "250 AUTH XOAUTH2")
            elif line == "QUIT":
                await send(writer, "221 bye")
                return
            else:
                await send(writer, next(replies, "502 what"))

    token = secret_file(tmp_path, "access.token", "scripted-access-t0ken")
    module = ModuleConfig.model_validate(
        {"protocol": "smtp", "tls": "none", "allow_plaintext_auth": True, "timeout": "5s",
         "auth": {"username": USER, "mechanism": "xoauth2", "oauth2": {"token_file": str(token)}}}
    )  # fmt: skip
    async with scripted_server(handler) as address:
        result = await run_probe(parse_address(address), module, 5.0)
    assert result.failure is not None, "\n".join(result.log)
    assert (result.failure.reason.value, result.failure.detail) == (reason, ANY)
    assert said in result.failure.detail
    cancel = ["*"] if len(challenges) > 1 else []
    goodbye = ["QUIT"] if reason == "auth" else []
    assert heard[1:] == [heard[1], "", *cancel, *goodbye]
    assert heard[1].startswith("AUTH XOAUTH2 ")
    assert "scripted-access-t0ken" not in "\n".join(result.log)


# --- the mechanism, as a metric ---------------------------------------------------------


async def test_probes_name_the_mechanism_they_logged_in_with(
    token_server: TokenServer,
    token_dovecot: Dovecot,
    token_postfix: Postfix,
    pki: PKI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``mail_probe_auth_mechanism_info`` from scheduled probes and /probe: the mechanism
    the server accepted (``auto`` resolved), none for a login that failed."""
    monkeypatch.setenv("MECHANISM_TEST_PASSWORD", token_dovecot.password)
    monkeypatch.setenv("MECHANISM_TEST_WRONG", "not-the-password")
    tls = f"tls_config: {{ca_file: {pki.ca_file}}}"
    password = f"username: {USER}, password_env: MECHANISM_TEST_PASSWORD"
    config = write_config(
        tmp_path / "config.yml",
        f"""\
        global: {{interval: 1s}}
        modules:
          submission:
            {{protocol: smtp, tls: starttls, {tls},
              auth: {flow_auth("xoauth2", client_credentials(token_server, tmp_path))}}}
          imaps:
            {{protocol: imap, tls: implicit, {tls},
              auth: {flow_auth("oauthbearer", refresh_token(token_server, tmp_path))}}}
          pop3s: {{protocol: pop3, tls: implicit, {tls}, auth: {{{password}}}}}
          wrong:
            {{protocol: imap, tls: implicit, {tls},
              auth: {{username: {USER}, password_env: MECHANISM_TEST_WRONG}}}}
        targets:
          - {{name: submit, address: "127.0.0.1:{token_postfix.submission_port}", module: submission}}
          - {{name: store, address: "127.0.0.1:{token_dovecot.imaps_port}", module: imaps}}
          - {{name: pop, address: "127.0.0.1:{token_dovecot.pop3s_port}", module: pop3s}}
          - {{name: wrong, address: "127.0.0.1:{token_dovecot.imaps_port}", module: wrong}}
        """,
    )
    exporter = Exporter(config, {})
    client: TestClient[object, object] = TestClient(TestServer(make_app(exporter)))
    await client.start_server()
    exporter.start()
    try:
        await wait_for_results(exporter, 4)
        metrics = await (await client.get("/metrics")).text()
        address = f"127.0.0.1:{token_postfix.submission_port}"
        params = {"module": "submission", "target": address}
        shown = await (await client.get("/probe", params=params)).text()
        report = await (await client.get("/probe", params={**params, "debug": "true"})).text()
    finally:
        exporter.stop()
        await client.close()
    for target, module, protocol, mechanism in (
        ("submit", "submission", "smtp", "xoauth2"),
        ("store", "imaps", "imap", "oauthbearer"),
        ("pop", "pop3s", "pop3", "user"),
    ):
        labels = {"target": target, "module": module, "protocol": protocol}
        assert sample(metrics, "mail_probe_success", labels) == 1
        assert sample(metrics, "mail_probe_auth_mechanism_info", labels, mechanism=mechanism) == 1
    assert 'target="wrong"' in metrics
    assert 'mail_probe_auth_mechanism_info{target="wrong"' not in metrics
    assert sample(shown, "mail_probe_success", protocol="smtp") == 1
    info = {"protocol": "smtp", "mechanism": "xoauth2"}
    assert sample(shown, "mail_probe_auth_mechanism_info", info) == 1
    assert "Logged in with:       xoauth2" in report and "C: AUTH XOAUTH2 ****" in report


async def test_no_token_is_fetched_or_sent_without_tls(
    token_server: TokenServer, tmp_path: Path
) -> None:
    """A server that does not offer STARTTLS, to a module that may go on without it: the
    login is withheld before the token source is asked."""
    heard: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await send(writer, "220 no tls here")
        while raw := await reader.readline():
            heard.append(raw.decode().split(" ")[0].strip())
            if heard[-1] == "QUIT":
                await send(writer, "221 bye")
                return
            await send(writer, "250-plain", "250 AUTH XOAUTH2 OAUTHBEARER")

    module = ModuleConfig.model_validate(
        {"protocol": "smtp", "tls": "starttls", "require_tls": False, "timeout": "5s",
         "auth": {"username": USER, "mechanism": "oauthbearer",
                  "oauth2": client_credentials(token_server, tmp_path)}}
    )  # fmt: skip
    requests = sum(token_server.requests.values())
    async with scripted_server(handler) as address:
        result = await run_probe(parse_address(address), module, 5.0)
    assert result.failure is not None
    assert result.failure.reason is FailureReason.STARTTLS_UNAVAILABLE
    assert "password or access token is not sent without TLS" in result.failure.detail
    assert heard == ["EHLO", "QUIT"]
    assert sum(token_server.requests.values()) == requests


async def test_the_round_trips_imap_login_answers_each_challenge_once(tmp_path: Path) -> None:
    """aioimaplib announces a continuation, and then every chunk it reads: the mailbox's
    AUTHENTICATE answers the error challenge once and reads the final NO, with no ``*``."""
    heard: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        capabilities = "IMAP4rev1 SASL-IR AUTH=XOAUTH2"
        await send(writer, f"* OK [CAPABILITY {capabilities}] ready")
        tag = ""
        while raw := await reader.readline():
            line = raw.decode().rstrip("\r\n")
            heard.append(line.split(" ")[1] if " " in line else line)
            if heard[-1] == "CAPABILITY":
                await send(writer, f"* CAPABILITY {capabilities}", f"{line.split()[0]} OK")
            elif heard[-1] == "AUTHENTICATE":
                tag = line.split()[0]
                await send(writer, f"+ {b64(json.dumps({'status': '401', 'scope': 'mail'}))}")
            elif line == "":
                await send(writer, f"{tag} NO [AUTHENTICATIONFAILED] no")
            else:
                await send(writer, "* BYE", f"{line.split()[0]} OK")
                return

    token = secret_file(tmp_path, "access.token", "scripted-access-t0ken")
    module = ModuleConfig.model_validate(
        {"protocol": "imap", "tls": "none", "allow_plaintext_auth": True, "timeout": "3s",
         "auth": {"username": USER, "mechanism": "xoauth2", "oauth2": {"token_file": str(token)}}}
    )  # fmt: skip
    async with scripted_server(handler) as address:
        receive = RoundTripReceive(address=address, module="m")
        with pytest.raises(RoundTripFailure) as refused:
            await ImapMailbox.open(
                parse_address(address), module, receive, cleanup_folder(receive), ProbeMemory()
            )
        await asyncio.sleep(0.2)  # anything else the client would have sent
    assert refused.value.stage is Stage.RECEIVE_AUTH
    assert refused.value.detail.endswith("(the server's error: status 401, scope mail)")
    assert heard == ["CAPABILITY", "AUTHENTICATE", "", "LOGOUT"]
