"""OAuth2 token sources and the token broker, end to end against a real token server.

Every source fetches from :class:`tests.realservers.oauth.TokenServer` on loopback (or
runs a real program, reads a real file), and what it gets is checked there: the server
says whether a token is one it issued, for whom, and the introspection endpoint Dovecot
calls says the same over HTTP. Hostile answers (a hang, 2 MiB, a redirect, HTML, an
error that quotes the secret) and hostile helpers (a failing, chatty or hanging command)
end in a TokenError with a reason from the fixed set, within the caller's deadline.
"""

from __future__ import annotations

import asyncio
import imaplib
import logging
import os
import socket
import ssl
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mail_exporter.config.oauth2 import OAuth2Config
from mail_exporter.config.probes import AuthConfig
from mail_exporter.logs import redact, redact_learned, setup_logging
from mail_exporter.oauth2.broker import TokenBroker
from mail_exporter.oauth2.endpoint import request_token
from mail_exporter.oauth2.token import TokenError, TokenFailure
from mail_exporter.probes import ProbeMemory
from mail_exporter.probes.access_token import access_token_for
from mail_exporter.probes.result import FailureReason
from mail_exporter.probes.session import ProbeFailure
from tests.conftest import _require_binary
from tests.realservers.dovecot import Dovecot
from tests.realservers.oauth import (
    TokenServer,
    jwt_header,
    new_app_certificate,
    new_service_account,
    secret_file,
)
from tests.realservers.pki import PKI, new_rsa_key, write_key

USER = "probe@test.local"
SCOPE = "https://outlook.office365.com/.default"
BOUND = 20.0
"""Hang guard for anything that should end at once or by a short deadline."""


@pytest.fixture
def server() -> Iterator[TokenServer]:
    with TokenServer() as running:
        yield running


def deadline(seconds: float = BOUND) -> float:
    return asyncio.get_running_loop().time() + seconds


def client_secret_source(server: TokenServer, tmp_path: Path, secret: str) -> OAuth2Config:
    server.add_client("app", USER, secret="s3cret-client-value")
    return OAuth2Config.model_validate(
        {"client_credentials": {
            "token_url": server.token_url, "client_id": "app", "scope": SCOPE,
            "client_secret_file": str(secret_file(tmp_path, "client.secret", secret)),
        }}
    )  # fmt: skip


def samples(broker: TokenBroker) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample the broker renders, by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in broker.collect()
        for sample in family.samples
    }


def sample(broker: TokenBroker, name: str, **labels: str) -> float | None:
    return samples(broker).get((name, tuple(sorted(labels.items()))))


async def introspect(server: TokenServer, token: str) -> dict[str, Any]:
    """What Dovecot's passdb oauth2 (introspection_mode = post) hears about ``token``."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(server.introspection_url, data={"token": token}) as response,
    ):
        answer = await response.json()
    assert isinstance(answer, dict)
    return answer


# --- each source, end to end ----------------------------------------------------------


async def test_client_secret_gets_a_token_that_is_kept_until_near_expiry(
    server: TokenServer, tmp_path: Path
) -> None:
    source = client_secret_source(server, tmp_path, "s3cret-client-value")
    broker = TokenBroker()
    token = await broker.token(source, deadline())
    assert (await introspect(server, token.value))["username"] == USER
    assert token.expires_at == pytest.approx(time.time() + 3600, abs=60)
    assert await broker.token(source, deadline()) == token  # kept: one request in all
    assert server.requests == {"client_credentials": 1}
    assert sample(broker, "mail_oauth2_token_fetches_total", source="client_credentials") == 1
    expiry = sample(
        broker, "mail_oauth2_token_expiry_timestamp_seconds", source="client_credentials"
    )
    assert expiry == token.expires_at


async def test_certificate_client_assertion(server: TokenServer, tmp_path: Path) -> None:
    """A client assertion signed with the certificate's key, verified by the server with the
    certificate it has registered (named by x5t#S256); a fresh one (new jti) per fetch."""
    app = new_app_certificate(tmp_path, "probe-app")
    server.add_client("app", USER, certificate=app.certificate)
    server.lifetime = 30  # shorter than the margin: every request fetches
    source = OAuth2Config.model_validate(
        {"client_credentials": {
            "token_url": server.token_url, "client_id": "app", "scope": SCOPE,
            "certificate_file": str(app.certificate_file),
            "private_key_file": str(app.private_key_file),
        }}
    )  # fmt: skip
    broker = TokenBroker()
    first = await broker.token(source, deadline())
    second = await broker.token(source, deadline())  # a replayed jti would be refused
    assert first != second
    assert (await introspect(server, second.value))["username"] == USER
    assert server.requests == {"client_credentials": 2}

    other = new_app_certificate(tmp_path, "other-app")
    server.add_client("app", USER, certificate=other.certificate)
    with pytest.raises(TokenError) as refused:
        await broker.token(source, deadline())
    assert refused.value.reason is TokenFailure.DENIED
    assert "invalid_client: x5t#S256 names no registered certificate" in refused.value.detail


async def test_rotated_refresh_token_is_written_back_atomically(
    server: TokenServer, tmp_path: Path
) -> None:
    """Each refresh returns a new refresh token and refuses the old one from then on: the
    new one replaces the file's (a new file renamed over it, through a symbolic link, the
    mode kept, nothing left beside it) and serves the next fetch."""
    server.lifetime = 30  # every request fetches, and so rotates
    initial = server.add_refresh_token("mail-app", USER)
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    stored = secret_file(secrets_dir, "refresh.token", initial)
    stored.chmod(0o640)
    link = tmp_path / "refresh.link"
    link.symlink_to(stored)
    inode = stored.stat().st_ino
    source = OAuth2Config.model_validate(
        {"refresh_token": {"token_url": server.token_url, "client_id": "mail-app",
                           "refresh_token_file": str(link)}}
    )  # fmt: skip
    broker = TokenBroker()
    token = await broker.token(source, deadline())
    assert (await introspect(server, token.value))["username"] == USER

    rotated = stored.read_text().strip()
    assert rotated != initial and rotated in server.refresh_tokens
    assert link.is_symlink() and sorted(p.name for p in secrets_dir.iterdir()) == ["refresh.token"]
    assert stored.stat().st_ino != inode  # renamed over, never rewritten in place
    assert stat.S_IMODE(stored.stat().st_mode) == 0o640
    assert rotated in broker.secrets()

    with pytest.raises(TokenError) as refused:  # the old one is spent
        await request_token(server.token_url, {"grant_type": "refresh_token",
                                               "refresh_token": initial, "client_id": "mail-app"})  # fmt: skip
    assert refused.value.reason is TokenFailure.DENIED
    assert "invalid_grant: AADSTS70000" in refused.value.detail

    await broker.token(source, deadline())  # with the rotated one
    assert stored.read_text().strip() not in (initial, rotated)
    assert server.requests == {"refresh_token": 3}


async def test_refresh_token_put_in_the_file_is_taken_without_a_reload(
    server: TokenServer, tmp_path: Path
) -> None:
    server.lifetime = 30
    stored = secret_file(tmp_path, "refresh.token", server.add_refresh_token("mail-app", USER))
    source = OAuth2Config.model_validate(
        {"refresh_token": {"token_url": server.token_url, "client_id": "mail-app",
                           "refresh_token_file": str(stored)}}
    )  # fmt: skip
    broker = TokenBroker()
    await broker.token(source, deadline())
    server.refresh_tokens.clear()  # every token revoked; the user consents again
    stored.write_text(server.add_refresh_token("mail-app", "other@test.local") + "\n")
    token = await broker.token(source, deadline())
    assert (await introspect(server, token.value))["username"] == "other@test.local"


async def test_a_rotated_refresh_token_that_cannot_be_written_is_kept_in_memory(
    server: TokenServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its directory gone after the config was read: the new refresh token serves the next
    fetches from memory, and the failure to keep it is logged without it."""
    server.lifetime = 30
    gone = tmp_path / "gone"
    gone.mkdir()
    stored = secret_file(gone, "refresh.token", server.add_refresh_token("mail-app", USER))
    source = OAuth2Config.model_validate(
        {"refresh_token": {"token_url": server.token_url, "client_id": "mail-app",
                           "refresh_token_file": str(stored)}}
    )  # fmt: skip
    stored.unlink()
    gone.rmdir()
    broker = TokenBroker()
    with caplog.at_level(logging.ERROR, logger="mail_exporter.oauth2.sources"):
        await broker.token(source, deadline())
        token = await broker.token(source, deadline())  # with the rotated one, from memory
    assert (await introspect(server, token.value))["username"] == USER
    [rotated] = server.refresh_tokens
    assert rotated in broker.secrets()
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2 and all(
        f"cannot write the new refresh token to {stored}" in m for m in messages
    )
    assert not any(rotated in message for message in messages)


async def test_jwt_bearer_with_a_service_account_acts_as_the_subject(
    server: TokenServer, tmp_path: Path
) -> None:
    email = "probe@project.iam.gserviceaccount.com"
    account = tmp_path / "service-account.json"
    server.add_issuer(email, new_service_account(account, email))
    source = OAuth2Config.model_validate(
        {"jwt_bearer": {"token_url": server.token_url, "service_account_file": str(account),
                        "subject": USER, "scope": "https://mail.google.com/"}}
    )  # fmt: skip
    token = await TokenBroker().token(source, deadline())
    assert (await introspect(server, token.value))["username"] == USER
    assert server.requests == {"urn:ietf:params:oauth:grant-type:jwt-bearer": 1}


async def test_jwt_bearer_with_an_issuer_key_and_no_subject(
    server: TokenServer, tmp_path: Path
) -> None:
    key = new_rsa_key()
    server.add_issuer("monitoring", key.public_key())
    source = OAuth2Config.model_validate(
        {"jwt_bearer": {"token_url": server.token_url, "issuer": "monitoring", "scope": "mail",
                        "private_key_file": str(write_key(tmp_path / "k.pem", key))}}
    )  # fmt: skip
    token = await TokenBroker().token(source, deadline())
    assert (await introspect(server, token.value))["username"] == "monitoring"

    server.add_issuer("monitoring", new_rsa_key().public_key())  # a key the server does not know
    with pytest.raises(TokenError) as refused:
        await TokenBroker().token(source, deadline())
    assert refused.value.detail.endswith("invalid_grant: assertion signature does not verify")


async def test_an_expiring_token_is_fetched_again_and_jwt_tokens_pass(
    server: TokenServer, tmp_path: Path
) -> None:
    """A token is kept until 60 s before it expires: one of 61 s for about a second."""
    server.lifetime, server.jwt_access_tokens = 61, True
    source = client_secret_source(server, tmp_path, "s3cret-client-value")
    broker = TokenBroker()
    first = await broker.token(source, deadline())
    assert jwt_header(first.value)["alg"] == "RS256"
    await asyncio.sleep(1.5)
    second = await broker.token(source, deadline())
    assert second != first and second.expires_at > first.expires_at
    assert (await introspect(server, second.value))["active"] is True
    server.revoke(second.value)
    assert await introspect(server, second.value) == {"active": False}


@pytest.fixture
def oauth2_dovecot(tmp_path: Path, pki: PKI, server: TokenServer) -> Iterator[Dovecot]:
    """A real Dovecot whose passdb oauth2 asks ``server`` about the tokens it is given."""
    _require_binary("dovecot")
    dovecot = Dovecot(
        tmp_path / "dovecot", pki.server_cert, pki.server_key, server.introspection_url
    )
    dovecot.start()
    yield dovecot
    dovecot.stop()


def imap_login(dovecot: Dovecot, pki: PKI, mechanism: str, user: str, token: str) -> str:
    """An IMAPS AUTHENTICATE with an access token (RFC 7628 and Google's XOAUTH2): the
    server's answer, or the error it gave."""
    if mechanism == "XOAUTH2":
        message = f"user={user}\x01auth=Bearer {token}\x01\x01"
    else:
        message = f"n,a={user},\x01auth=Bearer {token}\x01\x01"
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    client = imaplib.IMAP4_SSL("127.0.0.1", dovecot.imaps_port, ssl_context=context, timeout=BOUND)
    try:
        status, _ = client.authenticate(mechanism, lambda _: message.encode())
        return str(status)
    except imaplib.IMAP4.error as error:
        return str(error)
    finally:
        client.shutdown()


async def test_dovecot_takes_the_tokens_the_server_issued(
    server: TokenServer, oauth2_dovecot: Dovecot, pki: PKI, tmp_path: Path
) -> None:
    """The token server is what Dovecot 2.3's passdb oauth2 can ask: a token it issued
    logs the user in with XOAUTH2 and OAUTHBEARER; another user, or the token revoked, not."""
    user = oauth2_dovecot.user
    server.add_client("app", user, secret="s3cret-client-value")
    source = OAuth2Config.model_validate(
        {"client_credentials": {
            "token_url": server.token_url, "client_id": "app", "scope": SCOPE,
            "client_secret_file": str(secret_file(tmp_path, "client.secret", "s3cret-client-value")),
        }}
    )  # fmt: skip
    token = (await TokenBroker().token(source, deadline())).value
    refused = "[AUTHENTICATIONFAILED] Authentication failed."
    for mechanism, login_user, expected in (
        ("XOAUTH2", user, "OK"),
        ("OAUTHBEARER", user, "OK"),
        ("XOAUTH2", "other@test.local", refused),
    ):
        said = await asyncio.to_thread(
            imap_login, oauth2_dovecot, pki, mechanism, login_user, token
        )
        assert (mechanism, login_user, said) == (mechanism, login_user, expected)
    server.revoke(token)
    said = await asyncio.to_thread(imap_login, oauth2_dovecot, pki, "XOAUTH2", user, token)
    assert said == refused


# --- failures -------------------------------------------------------------------------


async def test_a_hanging_token_server_ends_within_the_deadline(
    server: TokenServer, tmp_path: Path
) -> None:
    """Callers stop at their deadlines; the fetch they shared goes on to its own bound, and
    only then counts as a failure."""
    server.misbehave = "hang"
    source = client_secret_source(server, tmp_path, "s3cret-client-value")
    broker = TokenBroker(fetch_seconds=3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(
        broker.token(source, loop.time() + 1), broker.token(source, loop.time() + 1.5),
        return_exceptions=True,
    )  # fmt: skip
    assert loop.time() - started < BOUND
    for result in results:
        assert isinstance(result, TokenError) and result.reason is TokenFailure.TIMEOUT
        assert "no token from token source client_credentials" in result.detail
    assert server.requests == {"client_credentials": 1}
    failures = "mail_oauth2_token_fetch_failures_total"
    for _ in range(int(BOUND * 10)):
        if sample(broker, failures, source="client_credentials", reason="timeout"):
            break
        await asyncio.sleep(0.1)
    assert sample(broker, failures, source="client_credentials", reason="timeout") == 1
    assert sample(broker, failures, source="client_credentials", reason="http") == 0


async def test_error_json_is_shown_without_the_secret(server: TokenServer, tmp_path: Path) -> None:
    """The server's error and its description are shown, printable and bounded, with the
    secret it quoted cut out; the failure is counted and not kept."""
    source = client_secret_source(server, tmp_path, "wr0ng-secret+/=")
    broker = TokenBroker()
    for attempt in (1, 2):
        with pytest.raises(TokenError) as refused:
            await broker.token(source, deadline())
        detail = refused.value.detail
        assert refused.value.reason is TokenFailure.DENIED
        assert detail == (
            f"{server.token_url} refused (HTTP 401): invalid_client: "
            "Invalid client secret provided: <redacted> is not it"
        )
        assert sample(broker, "mail_oauth2_token_fetch_failures_total",
                      source="client_credentials", reason="denied") == attempt  # fmt: skip
    assert server.requests == {"client_credentials": 2}


@pytest.mark.parametrize(
    ("misbehaviour", "reason", "said"),
    [
        ("oversize", TokenFailure.INVALID_RESPONSE, "sent more than 1 MiB"),
        ("redirect", TokenFailure.HTTP, "answered HTTP 302 (redirects are not followed)"),
        ("html", TokenFailure.INVALID_RESPONSE, "answered 200 without a JSON object"),
        ("deep", TokenFailure.INVALID_RESPONSE, "answered 200 without a JSON object"),
        ("mac", TokenFailure.INVALID_RESPONSE, "gave a token of type mac, not Bearer"),
        (
            "line_break",
            TokenFailure.INVALID_RESPONSE,
            "gave a token with characters a bearer token cannot have (letters, digits and -._~+/ only)",
        ),
        ("bad_expiry", TokenFailure.INVALID_RESPONSE, "gave an expires_in that is no number"),
    ],
)
async def test_answers_that_hold_no_token(
    server: TokenServer, tmp_path: Path, misbehaviour: Any, reason: TokenFailure, said: str
) -> None:
    server.misbehave = misbehaviour
    source = client_secret_source(server, tmp_path, "s3cret-client-value")
    with pytest.raises(TokenError) as failed:
        await TokenBroker().token(source, deadline())
    assert failed.value.reason is reason
    assert failed.value.detail == f"{server.token_url} {said}"


async def test_a_token_server_that_is_down(tmp_path: Path) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # closed again: nothing listens there
    source = OAuth2Config.model_validate(
        {"client_credentials": {
            "token_url": f"http://127.0.0.1:{port}/token", "client_id": "app", "scope": SCOPE,
            "client_secret_file": str(secret_file(tmp_path, "s", "x"))}}
    )  # fmt: skip
    with pytest.raises(TokenError) as failed:
        await TokenBroker().token(source, deadline())
    assert failed.value.reason is TokenFailure.HTTP
    assert failed.value.detail.startswith(f"cannot reach http://127.0.0.1:{port}/token: ")


# --- token_command and token_file -----------------------------------------------------


def command_source(tmp_path: Path, script: str) -> OAuth2Config:
    program = tmp_path / "helper.py"
    program.write_text(script)
    return OAuth2Config.model_validate({"token_command": [sys.executable, str(program)]})


async def test_token_command_prints_json_or_a_bare_token(tmp_path: Path) -> None:
    printed = command_source(
        tmp_path,
        'import json; print(json.dumps({"access_token": "cmd-token.1", "expires_in": 1200}))',
    )
    token = await TokenBroker().token(printed, deadline())
    assert token.value == "cmd-token.1"
    assert token.expires_at == pytest.approx(time.time() + 1200, abs=60)
    bare = command_source(tmp_path, 'print("bare-token_2")')
    token = await TokenBroker().token(bare, deadline())
    assert token.value == "bare-token_2"
    assert token.expires_at == pytest.approx(time.time() + 300, abs=60)  # taken to live 5 min


@pytest.mark.parametrize(
    ("script", "said"),
    [
        (
            'import sys; print("leaked-token"); sys.stderr.write("helper: not logged in\\nmore\\n"); sys.exit(3)',
            "exited with status 3: helper: not logged in",
        ),
        ('print("x" * 100_000)', "printed more than 64 KiB"),
        (
            'print("two words")',
            "gave a token with characters a bearer token cannot have (letters, digits and -._~+/ only)",
        ),
        ('print("{not json")', "printed JSON that does not parse"),
        ('print("{\\"a\\": " + "[" * 60_000)', "printed JSON that does not parse"),
        ('print("{}")', "printed JSON without an access_token"),
    ],
    ids=["failure", "oversize", "not a token", "bad JSON", "deep JSON", "JSON without a token"],
)
async def test_token_command_failures(tmp_path: Path, script: str, said: str) -> None:
    source = command_source(tmp_path, script)
    broker = TokenBroker()
    with pytest.raises(TokenError) as failed:
        await broker.token(source, deadline())
    assert failed.value.reason is TokenFailure.COMMAND
    assert failed.value.detail == f"token_command {sys.executable} {said}"
    assert sample(broker, "mail_oauth2_token_fetch_failures_total",
                  source="token_command", reason="command") == 1  # fmt: skip


async def test_a_program_that_does_not_exist(tmp_path: Path) -> None:
    source = OAuth2Config.model_validate({"token_command": [str(tmp_path / "missing")]})
    with pytest.raises(TokenError) as failed:
        await TokenBroker().token(source, deadline())
    assert (
        failed.value.detail
        == f"token_command {tmp_path / 'missing'} cannot run: No such file or directory"
    )


async def test_a_hanging_token_command_is_killed_with_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    source = command_source(
        tmp_path,
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(60)\n",
    )
    broker = TokenBroker(fetch_seconds=2)
    started = time.monotonic()
    with pytest.raises(TokenError) as failed:
        await broker.token(source, deadline())
    assert time.monotonic() - started < BOUND
    assert failed.value.reason is TokenFailure.TIMEOUT
    assert failed.value.detail == "token_command: no token within 2s"
    for pid in map(int, pids.read_text().split()):
        for _ in range(int(BOUND * 10)):
            if not _alive(pid):
                break
            await asyncio.sleep(0.1)
        assert not _alive(pid), f"process {pid} outlived the fetch"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return status != "Z"


async def test_token_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    stored = secret_file(tmp_path, "access.token", "file-token-A")
    source = OAuth2Config.model_validate({"token_file": str(stored)})
    broker = TokenBroker()
    assert (await broker.token(source, deadline())).value == "file-token-A"
    assert (await broker.token(source, deadline())).value == "file-token-A"
    assert sample(broker, "mail_oauth2_token_fetches_total", source="token_file") == 1
    assert sample(broker, "mail_oauth2_token_expiry_timestamp_seconds", source="token_file") is None

    replacement = secret_file(tmp_path, "access.token.new", "file-token-B")
    replacement.replace(stored)  # as a helper swaps it in
    assert (await broker.token(source, deadline())).value == "file-token-B"
    stored.write_text("file-token-C\n")  # or rewrites it in place
    assert (await broker.token(source, deadline())).value == "file-token-C"
    assert sample(broker, "mail_oauth2_token_fetches_total", source="token_file") == 3

    stored.unlink()
    with pytest.raises(TokenError) as failed:
        await broker.token(source, deadline())
    assert failed.value.reason is TokenFailure.FILE
    assert (
        failed.value.detail
        == f"token_file {str(stored)!r} cannot be read: No such file or directory"
    )


# --- sharing, metrics, secrets --------------------------------------------------------


async def test_concurrent_requests_share_one_fetch(server: TokenServer, tmp_path: Path) -> None:
    source = client_secret_source(server, tmp_path, "s3cret-client-value")
    broker = TokenBroker()
    tokens = await asyncio.gather(*(broker.token(source, deadline()) for _ in range(25)))
    assert len(set(tokens)) == 1
    assert server.requests == {"client_credentials": 1}

    server.misbehave = "html"
    failing = OAuth2Config.model_validate(
        {"client_credentials": {**source.model_dump()["client_credentials"], "scope": "other"}}
    )
    results = await asyncio.gather(
        *(broker.token(failing, deadline()) for _ in range(25)), return_exceptions=True
    )
    assert all(isinstance(result, TokenError) for result in results)
    assert server.requests == {"client_credentials": 2}
    with pytest.raises(TokenError):  # not kept: fetched again
        await broker.token(failing, deadline())
    assert server.requests == {"client_credentials": 3}


async def test_metrics_name_each_source_after_its_module(
    server: TokenServer, tmp_path: Path
) -> None:
    """apply() keeps the running config's sources, each counted from the start at 0."""
    source = client_secret_source(server, tmp_path, "s3cret-client-value")
    source.named("m365_imap")
    stale = OAuth2Config.model_validate({"token_command": ["true"]})
    broker = TokenBroker()
    broker.apply([stale])
    broker.apply([source])
    assert samples(broker) == {
        ("mail_oauth2_token_fetches_total", (("source", "m365_imap"),)): 0.0,
        **{
            ("mail_oauth2_token_fetch_failures_total",
             (("reason", reason.value), ("source", "m365_imap"))): 0.0
            for reason in TokenFailure
        },
    }  # fmt: skip
    token = await broker.token(source, deadline())
    assert sample(broker, "mail_oauth2_token_expiry_timestamp_seconds", source="m365_imap") == (
        token.expires_at
    )


async def test_learned_tokens_are_redacted_from_the_log(
    server: TokenServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    broker = TokenBroker()
    try:
        setup_logging("debug", "logfmt")
        redact_learned(broker.secrets)
        token = await broker.token(
            client_secret_source(server, tmp_path, "s3cret-client-value"), deadline()
        )
        logging.getLogger("mail_exporter.test").warning("server said: 535 %s rejected", token.value)
    finally:
        root.handlers[:], root.level = handlers, level
        redact([])
        redact_learned(tuple)
    line = capsys.readouterr().err
    assert token.value not in line and "535 <redacted> rejected" in line


async def test_access_token_for_a_probe(server: TokenServer, tmp_path: Path) -> None:
    """A probe gets the token's value, or stops with reason ``token`` and the source's word."""
    source = client_secret_source(server, tmp_path, "s3cret-client-value")
    auth = AuthConfig.model_validate(
        {"username": USER, "mechanism": "xoauth2", "oauth2": source.model_dump(exclude_none=True)}
    )
    memory = ProbeMemory()
    value = await access_token_for(auth, memory, deadline())
    assert server.active(value) is not None
    server.misbehave = "html"
    refused = AuthConfig.model_validate(
        {"username": USER, "mechanism": "oauthbearer",
         "oauth2": {"client_credentials": {**source.model_dump()["client_credentials"], "scope": "x"}}}
    )  # fmt: skip
    with pytest.raises(ProbeFailure) as failed:
        await access_token_for(refused, memory, deadline())
    assert failed.value.reason is FailureReason.TOKEN
    assert failed.value.detail == f"{server.token_url} answered 200 without a JSON object"
