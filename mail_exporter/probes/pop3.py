"""POP3 probe (RFC 1939, 2449, 2595, 5034, 7628): greeting, CAPA, STLS, USER/PASS or AUTH
(PLAIN, XOAUTH2, OAUTHBEARER), QUIT.

After STLS the capabilities are asked for again (RFC 2595 4: the list from before TLS
is discarded; a server that refuses plaintext logins lists ``USER`` only once TLS is
up). The login checks its mechanism against that list, as SMTP and IMAP do, so the
password is not sent to a server that said it would not take it; a server without
CAPA lists nothing and is tried anyway.

An OAuth2 login sends its message as AUTH's initial response when the command fits
RFC 2449's 255-octet command line, as RFC 5034 4 requires (a JWT does not), and else
after the server's ``+``.
"""

from __future__ import annotations

import base64
import functools
from typing import Final

from mail_exporter.config.probes import OAUTH2_MECHANISMS
from mail_exporter.printable import printable
from mail_exporter.probes.oauth2_sasl import Reply, SessionSteps, fits, probe_login
from mail_exporter.probes.result import FailureReason, Phase
from mail_exporter.probes.session import MAX_REPLY_LINES, ProbeFailure, Session

MAX_COMMAND_OCTETS: Final = 255
"""RFC 2449 4: the longest command line, CRLF included."""


async def command(
    session: Session, line: str, reason: FailureReason, shown: str | None = None
) -> str:
    """Send a command; its ``+OK`` text, or a failure with ``reason`` on ``-ERR``."""
    await session.write_line(line, shown)
    response = await session.read_line()
    if response.startswith("+OK") or response.startswith("+ "):
        return response
    if response.startswith("-ERR"):
        raise ProbeFailure(reason, printable(response))
    raise ProbeFailure(FailureReason.PROTOCOL, f"unexpected response {printable(response)!r}")


async def _capabilities(session: Session) -> set[str]:
    """CAPA's list (RFC 2449); an old server without CAPA has none."""
    with session.timed(Phase.CAPABILITIES):
        await session.write_line("CAPA")
        first = await session.read_line()
        if first.startswith("-ERR"):
            return set()
        if not first.startswith("+OK"):
            raise ProbeFailure(FailureReason.PROTOCOL, f"unexpected response {printable(first)!r}")
        capabilities: set[str] = set()
        for _ in range(MAX_REPLY_LINES):
            line = await session.read_line()
            if line == ".":
                return capabilities
            words = line.upper().split()
            if words:
                capabilities.add(words[0])
                capabilities.update(f"{words[0]}={word}" for word in words[1:])
    raise ProbeFailure(FailureReason.PROTOCOL, f"CAPA longer than {MAX_REPLY_LINES} lines")


async def _login(session: Session, capabilities: set[str]) -> str:
    """Log in with the module's mechanism; the one it used (``auto`` is ``user``)."""
    auth = session.module.auth
    assert auth is not None
    if auth.mechanism in OAUTH2_MECHANISMS:
        mechanism = auth.mechanism.upper()
        if capabilities and f"SASL={mechanism}" not in capabilities:
            raise ProbeFailure(FailureReason.AUTH, f"server does not offer AUTH {mechanism}")
        with session.timed(Phase.AUTH):
            line_fits = functools.partial(fits, mechanism, limit=MAX_COMMAND_OCTETS)
            steps = SessionSteps(session, "AUTH", functools.partial(_sasl_reply, session))
            await probe_login(session, steps, line_fits)
        return auth.mechanism
    wanted = "SASL=PLAIN" if auth.mechanism == "plain" else "USER"
    if capabilities and wanted not in capabilities:
        command_name = "AUTH PLAIN" if auth.mechanism == "plain" else "USER"
        raise ProbeFailure(FailureReason.AUTH, f"server does not offer {command_name}")
    with session.timed(Phase.AUTH):
        if auth.mechanism == "plain":
            token = base64.b64encode(f"\0{auth.username}\0{auth.password}".encode()).decode()
            await command(session, f"AUTH PLAIN {token}", FailureReason.AUTH, "AUTH PLAIN ****")
        else:
            await command(session, f"USER {auth.username}", FailureReason.AUTH)
            await command(session, f"PASS {auth.password}", FailureReason.AUTH, "PASS ****")
    return "plain" if auth.mechanism == "plain" else "user"


async def _sasl_reply(session: Session) -> Reply:
    """The reply to a SASL step: ``+`` a challenge, ``+OK`` accepted, ``-ERR`` refused."""
    response = await session.read_line()
    if response.startswith("+OK"):
        return Reply(accepted=True)
    if response == "+" or response.startswith("+ "):
        return Reply(challenge=response[1:].strip())
    if response.startswith("-ERR"):
        return Reply(text=printable(response))
    raise ProbeFailure(FailureReason.PROTOCOL, f"unexpected response {printable(response)!r}")


async def open_pop3(session: Session) -> None:
    """Greeting, CAPA, STLS and login on a connected (for implicit TLS, encrypted) session.

    Leaves the session in the TRANSACTION state when the module logs in; the round trip
    reads the maildrop from there.
    """
    module = session.module
    with session.timed(Phase.BANNER):
        try:
            greeting = await session.read_line()
        except ProbeFailure as failure:
            raise ProbeFailure(FailureReason.BANNER, failure.detail) from None
        if not greeting.startswith("+OK"):
            raise ProbeFailure(FailureReason.BANNER, printable(greeting))
    session.farewell = functools.partial(command, session, "QUIT", FailureReason.PROTOCOL)
    capabilities = await _capabilities(session)
    if await session.negotiate_starttls(
        "STLS",
        offered="STLS" in capabilities,
        login_offered="USER" in capabilities or "SASL" in capabilities,
        request=lambda: command(session, "STLS", FailureReason.STARTTLS_UNAVAILABLE),
    ):
        capabilities = await _capabilities(session)
    if module.auth is not None:
        session.result.auth_mechanism = await _login(session, capabilities)


async def probe_pop3(session: Session) -> None:
    """Run a POP3 session on a connected (and, for implicit TLS, encrypted) session."""
    await open_pop3(session)
    await session.quit()
