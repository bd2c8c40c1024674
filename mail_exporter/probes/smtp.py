"""SMTP probe (RFC 5321, 3207, 4954, 7628): banner, EHLO, STARTTLS, AUTH PLAIN, LOGIN,
XOAUTH2 or OAUTHBEARER, QUIT.

Replies are read by reply code, so multi-line replies work whatever the line
count or the wording; a 4xx or 5xx reply fails the probe at once. The security
checks a module asks for (:mod:`.smtp_posture`) come last, before QUIT.

An OAuth2 login (:mod:`.oauth2_sasl`) sends its message as AUTH's initial response
when the command fits RFC 5321's 512-octet command line, as RFC 4954 4 requires (an
opaque token of Google's does; a JWT of Microsoft's, 1 to 3 KB, does not), and else
after the server's empty 334 challenge, which Microsoft and Google both document.
"""

from __future__ import annotations

import base64
import functools
import re
import socket
from typing import Final

from mail_exporter.config.probes import OAUTH2_MECHANISMS, SMTPModule
from mail_exporter.printable import printable
from mail_exporter.probes.oauth2_sasl import Reply, SessionSteps, fits, probe_login
from mail_exporter.probes.result import FailureReason, Phase
from mail_exporter.probes.session import MAX_REPLY_LINES, ProbeFailure, Session
from mail_exporter.probes.smtp_posture import check_posture

_REPLY_LINE = re.compile(r"([2-5]\d\d)([ -]|$)(.*)")
MAX_COMMAND_OCTETS: Final = 512
"""RFC 5321 4.5.3.1.4: the longest command line, CRLF included."""


async def read_reply(session: Session) -> tuple[int, list[str]]:
    """A whole reply: its code and the text of each line."""
    code: str | None = None
    texts: list[str] = []
    while len(texts) < MAX_REPLY_LINES:
        line = await session.read_line()
        match = _REPLY_LINE.fullmatch(line)
        if match is None or (code is not None and match.group(1) != code):
            raise ProbeFailure(FailureReason.PROTOCOL, f"malformed SMTP reply: {printable(line)!r}")
        code = match.group(1)
        texts.append(match.group(3))
        if match.group(2) != "-":
            return int(code), texts
    raise ProbeFailure(FailureReason.PROTOCOL, f"reply longer than {MAX_REPLY_LINES} lines")


async def command(
    session: Session, line: str, expect: int, reason: FailureReason, shown: str | None = None
) -> list[str]:
    """Send a command; fail with ``reason`` unless the reply code is ``expect``."""
    await session.write_line(line, shown)
    code, texts = await read_reply(session)
    if code != expect:
        raise ProbeFailure(reason, f"{code} {printable(' '.join(texts))}")
    return texts


async def ask(session: Session, line: str) -> tuple[int, str]:
    """Send a command; its reply's code and text, whatever the code."""
    await session.write_line(line)
    code, texts = await read_reply(session)
    return code, printable(" ".join(texts))


async def _ehlo(session: Session, name: str) -> dict[str, str]:
    """EHLO (HELO for servers that refuse it); extension keywords mapped to their parameters."""
    with session.timed(Phase.CAPABILITIES):
        await session.write_line(f"EHLO {name}")
        code, texts = await read_reply(session)
        if code >= 500:
            await command(session, f"HELO {name}", 250, FailureReason.REJECTED)
            return {}
        if code != 250:
            raise ProbeFailure(FailureReason.REJECTED, f"EHLO: {code} {printable(' '.join(texts))}")
    extensions: dict[str, str] = {}
    for text in texts[1:]:
        keyword, _, parameters = text.upper().partition(" ")
        # "AUTH=PLAIN LOGIN" is the form servers add for clients older than RFC 4954 (a
        # keyword has no "="); some send only that one. The standard line wins where both are.
        keyword, old_style, first = keyword.partition("=")
        if old_style:
            extensions.setdefault(keyword, f"{first} {parameters}".strip())
        else:
            extensions[keyword] = parameters
    return extensions


async def _login(session: Session, extensions: dict[str, str]) -> str:
    """Log in with the module's mechanism (``auto`` resolved); the one it used."""
    auth = session.module.auth
    assert auth is not None
    offered = set(extensions.get("AUTH", "").split())
    if "AUTH" not in extensions:
        raise ProbeFailure(FailureReason.AUTH, "server does not offer AUTH on this connection")
    mechanism = auth.mechanism.upper()
    if mechanism == "AUTO":
        mechanism = "PLAIN" if "PLAIN" in offered or "LOGIN" not in offered else "LOGIN"
    if mechanism not in offered:
        raise ProbeFailure(FailureReason.AUTH, f"server does not offer AUTH {mechanism}")
    with session.timed(Phase.AUTH):
        if auth.mechanism in OAUTH2_MECHANISMS:
            line_fits = functools.partial(fits, mechanism, limit=MAX_COMMAND_OCTETS)
            steps = SessionSteps(session, "AUTH", functools.partial(_sasl_reply, session))
            await probe_login(session, steps, line_fits)
        elif mechanism == "PLAIN":
            token = base64.b64encode(f"\0{auth.username}\0{auth.password}".encode()).decode()
            await command(
                session, f"AUTH PLAIN {token}", 235, FailureReason.AUTH, "AUTH PLAIN ****"
            )
        else:
            await command(session, "AUTH LOGIN", 334, FailureReason.AUTH)
            user = base64.b64encode(auth.username.encode()).decode()
            await command(session, user, 334, FailureReason.AUTH, "**** (user name)")
            secret = base64.b64encode(auth.password.encode()).decode()
            await command(session, secret, 235, FailureReason.AUTH, "**** (password)")
    return mechanism.lower()


async def _sasl_reply(session: Session) -> Reply:
    """The reply to a SASL step: 334 a challenge, 235 accepted, anything else refused."""
    code, texts = await read_reply(session)
    if code == 334:
        return Reply(challenge=texts[0].strip())
    return Reply(accepted=code == 235, text=f"{code} {printable(' '.join(texts))}")


async def probe_smtp(session: Session) -> None:
    """Run an SMTP session on a connected (and, for implicit TLS, encrypted) session."""
    module = session.module
    assert isinstance(module, SMTPModule), "run_probe picks the probe by the module's protocol"
    ehlo_name = module.smtp.ehlo_name or socket.getfqdn()
    with session.timed(Phase.BANNER):
        try:
            code, texts = await read_reply(session)
        except ProbeFailure as failure:
            raise ProbeFailure(FailureReason.BANNER, failure.detail) from None
        farewell = functools.partial(command, session, "QUIT", 221, FailureReason.PROTOCOL)
        if code != 220:
            if code >= 500:  # RFC 5321 3.1: after a 554 greeting the server waits for QUIT
                session.farewell = farewell
            raise ProbeFailure(FailureReason.BANNER, f"{code} {printable(' '.join(texts))}")
    session.farewell = farewell
    extensions = await _ehlo(session, ehlo_name)
    if await session.negotiate_starttls(
        "STARTTLS",
        offered="STARTTLS" in extensions,
        login_offered="AUTH" in extensions,
        request=lambda: command(session, "STARTTLS", 220, FailureReason.STARTTLS_UNAVAILABLE),
    ):
        extensions = await _ehlo(session, ehlo_name)
    if module.auth is not None:
        session.result.auth_mechanism = await _login(session, extensions)
    if await check_posture(session, module.smtp, functools.partial(ask, session)):
        await session.quit()
