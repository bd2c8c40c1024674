"""The round trip's TLS and logins: never a password in cleartext unless the module says so,
and server names as the probes take them (a trailing dot is the same name)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mail_exporter.config.probes import ModuleConfig
from mail_exporter.config.roundtrip import RoundTripReceive
from mail_exporter.probes import ProbeMemory
from mail_exporter.roundtrip.imap_mailbox import ImapMailbox, cleanup_folder
from mail_exporter.roundtrip.message import build_message
from mail_exporter.roundtrip.outcome import RoundTripFailure, Stage
from mail_exporter.roundtrip.pop3_mailbox import Pop3Mailbox
from mail_exporter.roundtrip.send import submit
from mail_exporter.targets import parse_address
from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import PKI
from tests.realservers.postfix import Postfix
from tests.scripted import Handler, scripted_server, send, server_context

PASSWORD_VARIABLE = "ROUNDTRIP_TLS_PASSWORD"
SENDER = "probe@test.local"


@pytest.fixture(autouse=True)
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_VARIABLE, "secret")


def login_module(protocol: str, **settings: Any) -> ModuleConfig:
    """A module that logs in and takes STARTTLS when offered (``require_tls: false``)."""
    auth = {"username": SENDER, "password_env": PASSWORD_VARIABLE}
    return ModuleConfig.model_validate(
        {"protocol": protocol, "tls": "starttls", "require_tls": False, "auth": auth, **settings}
    )


def smtp_submission(heard: list[str], extensions: list[str]) -> Handler:
    """An SMTP server that offers ``extensions`` (STARTTLS is not among them) and takes
    every message; the verbs it heard go into ``heard``."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await send(writer, "220 mx.test ESMTP")
        while line := (await reader.readline()).decode().strip():
            verb = line.split()[0].upper()
            heard.append(verb)
            if verb == "EHLO":
                await send(writer, "250-mx.test", *(f"250-{e}" for e in extensions), "250 8BITMIME")
            elif verb == "AUTH":
                await send(writer, "235 2.7.0 Authentication successful")
            elif verb == "DATA":
                await send(writer, "354 go ahead")
                while (await reader.readline()).rstrip(b"\r\n") != b".":
                    pass
                await send(writer, "250 2.0.0 queued")
            elif verb == "QUIT":
                await send(writer, "221 2.0.0 bye")
                return
            else:
                await send(writer, "250 2.0.0 ok")

    return handler


async def submit_to(address: str, module: ModuleConfig) -> None:
    message = build_message("tls", SENDER, SENDER, "token", time.time())
    await submit(parse_address(address), module, message, SENDER, SENDER, ProbeMemory())


async def test_sender_withholds_the_login_without_starttls() -> None:
    heard: list[str] = []
    async with scripted_server(smtp_submission(heard, ["AUTH PLAIN LOGIN"])) as address:
        with pytest.raises(RoundTripFailure) as refused:
            await submit_to(address, login_module("smtp"))
    assert refused.value.stage is Stage.SEND
    assert "allow_plaintext_auth" in refused.value.detail
    assert heard == ["EHLO"]  # no AUTH, and no message either


async def test_sender_logs_in_without_tls_when_the_module_allows_it() -> None:
    heard: list[str] = []
    async with scripted_server(smtp_submission(heard, ["AUTH PLAIN LOGIN"])) as address:
        await submit_to(address, login_module("smtp", allow_plaintext_auth=True))
    assert heard == ["EHLO", "AUTH", "MAIL", "RCPT", "DATA", "QUIT"]


async def test_imap_receiver_withholds_the_login_without_starttls() -> None:
    heard: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await send(writer, "* OK ready")
        while line := (await reader.readline()).decode().strip():
            tag, verb, *_ = line.split()
            heard.append(verb.upper())
            if verb.upper() == "CAPABILITY":
                await send(writer, "* CAPABILITY IMAP4rev1 AUTH=PLAIN", f"{tag} OK done")
            else:
                await send(writer, "* BYE bye", f"{tag} OK done")
                return

    async with scripted_server(handler) as address:
        receive = RoundTripReceive(address=address, module="m")
        with pytest.raises(RoundTripFailure) as refused:
            await ImapMailbox.open(
                parse_address(address),
                login_module("imap"),
                receive,
                cleanup_folder(receive),
                ProbeMemory(),
            )
    assert refused.value.stage is Stage.RECEIVE
    assert "allow_plaintext_auth" in refused.value.detail
    assert "LOGIN" not in heard and "AUTHENTICATE" not in heard


async def test_pop3_receiver_withholds_the_login_without_stls() -> None:
    heard: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await send(writer, "+OK ready")
        while line := (await reader.readline()).decode().strip():
            heard.append(line.split()[0].upper())
            await send(writer, *(["+OK", "USER", "."] if heard[-1] == "CAPA" else ["+OK"]))

    async with scripted_server(handler) as address:
        with pytest.raises(RoundTripFailure) as refused:
            await Pop3Mailbox.open(parse_address(address), login_module("pop3"), {}, ProbeMemory())
    assert refused.value.stage is Stage.RECEIVE
    assert "allow_plaintext_auth" in refused.value.detail
    assert "USER" not in heard and "PASS" not in heard and "AUTH" not in heard


async def test_sender_takes_a_server_name_with_a_trailing_dot(pki: PKI) -> None:
    seen: list[str | None] = []
    context = server_context(pki.server_cert, pki.server_key)
    context.sni_callback = lambda connection, name, ctx: seen.append(name)
    tls_config = {"ca_file": str(pki.ca_file), "server_name": "localhost."}
    module = ModuleConfig.model_validate(
        {"protocol": "smtp", "tls": "implicit", "tls_config": tls_config}
    )
    heard: list[str] = []
    async with scripted_server(smtp_submission(heard, []), context) as address:
        await submit_to(address, module)
    assert seen == ["localhost"]  # RFC 6066 3: SNI carries no trailing dot
    assert heard[-1] == "QUIT"


class CleartextSubmission(Postfix):
    """Postfix whose submission port offers AUTH and no STARTTLS, as a stripping attacker
    on the path would show it."""

    def _master_cf(self) -> str:
        return (
            super()
            ._master_cf()
            .replace("-o smtpd_tls_security_level=encrypt", "-o smtpd_tls_security_level=none", 1)
            .replace("-o smtpd_tls_auth_only=yes", "-o smtpd_tls_auth_only=no", 1)
        )


@pytest.fixture
def cleartext_submission(
    tmp_path_factory: pytest.TempPathFactory, pki: PKI, dovecot: Dovecot
) -> Iterator[Postfix]:
    server = CleartextSubmission(
        tmp_path_factory.mktemp("postfix"),
        pki.server_cert,
        pki.server_key,
        dovecot_auth_port=dovecot.auth_port,
        dovecot_lmtp_port=dovecot.lmtp_port,
    )
    server.start()
    yield server
    server.stop()


async def disconnect_lines(postfix: Postfix, count: int) -> list[str]:
    """The first ``count`` of smtpd's "disconnect from" lines (with the commands it got)."""
    for _ in range(100):
        lines = [
            line
            for line in postfix.log_path.read_text(errors="replace").splitlines()
            # with ehlo=: not the readiness check's connection, which only says QUIT
            if "/submission/smtpd" in line and " disconnect from " in line and " ehlo=" in line
        ]
        if len(lines) >= count:
            return lines[:count]
        await asyncio.sleep(0.1)
    pytest.fail(f"Postfix logged fewer than {count} disconnects:\n{postfix.log_path.read_text()}")


@pytest.mark.integration
async def test_sender_withholds_the_login_from_real_postfix_without_starttls(
    cleartext_submission: Postfix, dovecot: Dovecot, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_VARIABLE, dovecot.password)
    address = f"127.0.0.1:{cleartext_submission.submission_port}"
    tls_config = {"ca_file": str(pki.ca_file)}
    with pytest.raises(RoundTripFailure) as refused:
        await submit_to(address, login_module("smtp", tls_config=tls_config))
    assert refused.value.stage is Stage.SEND
    # The same module allowed to: the login goes out (which shows the server offered it).
    allowed = login_module("smtp", tls_config=tls_config, allow_plaintext_auth=True)
    await submit_to(address, allowed)
    withheld, sent = await disconnect_lines(cleartext_submission, 2)
    assert "auth=" not in withheld and "ehlo=1" in withheld, withheld
    assert "auth=1" in sent, sent
