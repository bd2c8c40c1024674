"""IMAP probe (RFC 9051/3501, 2595, 4959, 7628).

Greeting, CAPABILITY, STARTTLS, LOGIN or AUTHENTICATE (PLAIN, XOAUTH2, OAUTHBEARER), the
configured mailboxes' checks (:mod:`.imap_mailboxes`), LOGOUT.

Commands are tagged; untagged responses are collected until the tagged one,
and a NO or BAD fails the probe at once. AUTHENTICATE sends its first message with the
command when the server lists SASL-IR (RFC 4959), else after the server's ``+``.
"""

from __future__ import annotations

import base64
import functools

from mail_exporter.config.probes import OAUTH2_MECHANISMS, IMAPModule
from mail_exporter.printable import printable
from mail_exporter.probes.imap_mailboxes import check_mailboxes
from mail_exporter.probes.oauth2_sasl import Reply, SessionSteps, probe_login
from mail_exporter.probes.result import FailureReason, Phase
from mail_exporter.probes.session import MAX_REPLY_LINES, ProbeFailure, Session


class _Tags:
    """Command tags a1, a2, …"""

    def __init__(self) -> None:
        self._count = 0

    def next(self) -> str:
        self._count += 1
        return f"a{self._count}"


async def _responses(session: Session, tag: str, reason: FailureReason) -> list[str]:
    """Untagged lines until ``tag``'s completion (or a ``+`` continuation, returned alone)."""
    untagged: list[str] = []
    while len(untagged) < MAX_REPLY_LINES:
        response = await session.read_line()
        if response.startswith(f"{tag} "):
            status, _, text = response[len(tag) + 1 :].partition(" ")
            if status.upper() != "OK":
                raise ProbeFailure(reason, f"{status} {printable(text)}")
            return untagged
        if response.startswith("+"):
            return [response]
        if not response.startswith("* "):
            raise ProbeFailure(
                FailureReason.PROTOCOL, f"unexpected response {printable(response)!r}"
            )
        untagged.append(response[2:])
    raise ProbeFailure(FailureReason.PROTOCOL, f"more than {MAX_REPLY_LINES} untagged responses")


async def _command(
    session: Session, tags: _Tags, line: str, reason: FailureReason, shown: str | None = None
) -> list[str]:
    """Send a tagged command; the untagged lines on OK, a failure with ``reason`` otherwise."""
    tag = tags.next()
    await session.write_line(f"{tag} {line}", f"{tag} {shown}" if shown else None)
    return await _responses(session, tag, reason)


async def _capabilities(session: Session, tags: _Tags) -> set[str]:
    with session.timed(Phase.CAPABILITIES):
        lines = await _command(session, tags, "CAPABILITY", FailureReason.REJECTED)
    for line in lines:
        if line.upper().startswith("CAPABILITY "):
            return set(line.upper().split()[1:])
    raise ProbeFailure(FailureReason.PROTOCOL, "no CAPABILITY response")


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def _login(session: Session, tags: _Tags, capabilities: set[str]) -> str:
    """Log in with the module's mechanism (``auto`` resolved); the one it used."""
    auth = session.module.auth
    assert auth is not None
    mechanism = auth.mechanism
    if mechanism == "auto":
        mechanism = "login" if "LOGINDISABLED" not in capabilities else "plain"
    with session.timed(Phase.AUTH):
        if mechanism in OAUTH2_MECHANISMS:
            wanted = f"AUTH={mechanism.upper()}"
            if wanted not in capabilities:
                raise ProbeFailure(FailureReason.AUTH, f"server does not offer {wanted}")
            sasl_ir = "SASL-IR" in capabilities
            tag = tags.next()
            read = functools.partial(_sasl_reply, session, tag)
            steps = SessionSteps(session, f"{tag} AUTHENTICATE", read)
            await probe_login(session, steps, lambda _: sasl_ir)
            return mechanism
        if mechanism == "login":
            if "LOGINDISABLED" in capabilities:
                raise ProbeFailure(FailureReason.AUTH, "server advertises LOGINDISABLED")
            await _command(
                session,
                tags,
                f"LOGIN {_quoted(auth.username)} {_quoted(auth.password)}",
                FailureReason.AUTH,
                f"LOGIN {_quoted(auth.username)} ****",
            )
            return mechanism
        if "AUTH=PLAIN" not in capabilities:
            raise ProbeFailure(FailureReason.AUTH, "server does not offer AUTHENTICATE PLAIN")
        token = base64.b64encode(f"\0{auth.username}\0{auth.password}".encode()).decode()
        if "SASL-IR" in capabilities:
            await _command(
                session,
                tags,
                f"AUTHENTICATE PLAIN {token}",
                FailureReason.AUTH,
                "AUTHENTICATE PLAIN ****",
            )
            return mechanism
        tag = tags.next()
        await session.write_line(f"{tag} AUTHENTICATE PLAIN")
        continuation = await _responses(session, tag, FailureReason.AUTH)
        if not continuation or not continuation[0].startswith("+"):
            raise ProbeFailure(FailureReason.PROTOCOL, "no continuation for AUTHENTICATE")
        await session.write_line(token, "****")
        final = await _responses(session, tag, FailureReason.AUTH)
        if final and final[0].startswith("+"):
            # Cancel the exchange (RFC 9051 6.2.2: "*", answered BAD), so that the LOGOUT
            # that follows the failure is read as a command, not as more SASL data.
            await session.write_line("*")
            try:
                await _responses(session, tag, FailureReason.AUTH)
            except ProbeFailure as cancelled:
                if cancelled.reason is not FailureReason.AUTH:
                    raise
            raise ProbeFailure(FailureReason.AUTH, "server asked for more than the PLAIN response")
    return mechanism


async def _sasl_reply(session: Session, tag: str) -> Reply:
    """The reply to a step of AUTHENTICATE ``tag``: ``+`` a challenge, else its completion."""
    try:
        lines = await _responses(session, tag, FailureReason.AUTH)
    except ProbeFailure as refused:
        if refused.reason is not FailureReason.AUTH:
            raise
        return Reply(text=refused.detail)
    if lines and lines[0].startswith("+"):
        return Reply(challenge=lines[0][1:].strip())
    return Reply(accepted=True)


async def probe_imap(session: Session) -> None:
    """Run an IMAP session on a connected (and, for implicit TLS, encrypted) session."""
    module = session.module
    tags = _Tags()
    with session.timed(Phase.BANNER):
        try:
            greeting = await session.read_line()
        except ProbeFailure as failure:
            raise ProbeFailure(FailureReason.BANNER, failure.detail) from None
        if not greeting.upper().startswith(("* OK", "* PREAUTH")):
            raise ProbeFailure(FailureReason.BANNER, printable(greeting))
    session.farewell = functools.partial(_command, session, tags, "LOGOUT", FailureReason.PROTOCOL)
    capabilities = await _capabilities(session, tags)
    if await session.negotiate_starttls(
        "STARTTLS",
        offered="STARTTLS" in capabilities,
        login_offered="LOGINDISABLED" not in capabilities,
        request=lambda: _command(session, tags, "STARTTLS", FailureReason.STARTTLS_UNAVAILABLE),
    ):
        capabilities = await _capabilities(session, tags)
    if module.auth is not None:
        session.result.auth_mechanism = await _login(session, tags, capabilities)
    if isinstance(module, IMAPModule) and module.imap.mailboxes:
        # A server may list more after the login (RFC 9051 7.2.2 allows either).
        capabilities = await _capabilities(session, tags)
        command = functools.partial(_command, session, tags, reason=FailureReason.REJECTED)
        await check_mailboxes(session, command, module.imap.mailboxes, capabilities)
    await session.quit()
