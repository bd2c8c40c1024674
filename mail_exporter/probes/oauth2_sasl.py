"""XOAUTH2 and OAUTHBEARER (RFC 7628): the client's message, and one exchange for every
protocol.

A login with an OAuth2 access token sends one SASL message, base64 as every SASL step:

- XOAUTH2 (Google's and Microsoft's): ``user=USER\\x01auth=Bearer TOKEN\\x01\\x01``;
- OAUTHBEARER (RFC 7628 3.1): the GS2 header ``n,a=USER,`` (``=`` and ``,`` in the user
  name escaped as ``=3D`` and ``=2C``, RFC 5801), then ``\\x01host=HOST\\x01port=PORT``
  (where the client connected) and ``\\x01auth=Bearer TOKEN\\x01\\x01``.

:func:`oauth2_login` runs the exchange over a :class:`SaslChannel`, which each protocol
(SMTP ``AUTH``, IMAP ``AUTHENTICATE``, POP3 ``AUTH``; the probes' own sessions, and
aiosmtplib and aioimaplib in the round trip) implements in a few lines. The message goes
as the command's initial response where the protocol lets it (the protocol decides:
SMTP and POP3 by their line limits, IMAP by SASL-IR), else after the server's empty
challenge. A server that refuses the token does not say so at once: it sends an error
challenge, base64 JSON such as ``{"status":"401","schemes":"bearer","scope":"mail"}``
(XOAUTH2; Dovecot, Gmail) or ``{"status":"invalid_token"}`` (Dovecot's OAUTHBEARER),
and waits for the client to end the exchange: with an empty response for XOAUTH2, with
``\\x01`` for OAUTHBEARER (RFC 7628 3.2.3). Only then comes the final failure (535,
``NO``, ``-ERR``), whose text the failure detail shows with the JSON's ``status`` and
``scope`` (:func:`error_detail`: decoded within bounds, printable, cut short). A server
that still asks for more is cancelled with ``*``; one that asks on after that is out of
step (a probe fails with ``protocol`` then, and says no goodbye). The exchange takes at
most four steps, each bounded by the caller's deadline.

The probes log in through :func:`probe_login`, which gets the token from the session's
broker (reason ``token`` when it cannot) and turns a refusal into reason ``auth``.

The token is a secret: a channel masks every line that holds it (the session log shows
``AUTH XOAUTH2 ****``), and nothing here puts it into a failure detail.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol

from mail_exporter.printable import printable
from mail_exporter.probes.access_token import session_token
from mail_exporter.probes.result import FailureReason
from mail_exporter.probes.session import ProbeFailure, Session

CANCEL: Final = {"xoauth2": "", "oauthbearer": base64.b64encode(b"\x01").decode()}
"""What answers an error challenge, by mechanism: what makes the server send its final
failure (Google's XOAUTH2 documentation: an empty response; RFC 7628 3.2.3: ``%x01``)."""
MAX_CHALLENGE_CHARACTERS: Final = 4096
"""Longest error challenge read as JSON (base64); a real one is under 200 characters."""
MAX_FIELD_CHARACTERS: Final = 100
"""Longest ``status`` or ``scope`` shown from an error challenge."""


@dataclass(frozen=True)
class Reply:
    """What a server answered to one step: a challenge (SMTP 334, IMAP and POP3 ``+``)
    with its base64 text, or a final answer, accepted or not, as shown in a failure."""

    challenge: str | None = None
    accepted: bool = False
    text: str = ""


class SaslChannel(Protocol):
    """One protocol's way of carrying SASL steps; each method returns the server's reply."""

    async def begin(self, mechanism: str, initial: str | None) -> Reply:
        """Send the protocol's command for ``mechanism`` (upper case), with ``initial`` as
        its initial response unless None; ``initial`` holds the token: masked wherever
        the command is logged."""

    async def respond(self, line: str, secret: bool) -> Reply:
        """Send one response line (base64, or empty), masked in logs when ``secret``."""

    async def cancel(self) -> Reply:
        """Cancel the exchange (``*``)."""


class LoginRefused(Exception):
    """The server refused the login: ``detail`` says how (its final answer, and the
    status of its error challenge when it sent one). Not ``in_step`` when the server
    never gave a final answer: the conversation has no next command to take."""

    def __init__(self, detail: str, in_step: bool = True) -> None:
        super().__init__(detail)
        self.detail = detail
        self.in_step = in_step


def fits(mechanism: str, message: str, limit: int) -> bool:
    """Whether ``AUTH MECHANISM MESSAGE`` with its CRLF is at most ``limit`` octets."""
    return len(f"AUTH {mechanism} {message}\r\n") <= limit


def client_message(mechanism: str, user: str, token: str, host: str, port: int) -> str:
    """The base64 SASL message that logs ``user`` in with ``token`` by ``mechanism``
    (``xoauth2`` or ``oauthbearer``); ``host`` and ``port`` are where the client connected."""
    if mechanism == "xoauth2":
        message = f"user={user}\x01auth=Bearer {token}\x01\x01"
    else:
        authzid = user.replace("=", "=3D").replace(",", "=2C")
        message = f"n,a={authzid},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"
    return base64.b64encode(message.encode()).decode()


def error_detail(challenge: str) -> str:
    """What an error challenge says: ``status 401, scope mail`` from its JSON, or why it
    says nothing readable."""
    if len(challenge) > MAX_CHALLENGE_CHARACTERS:
        return f"an error challenge over {MAX_CHALLENGE_CHARACTERS} characters"
    try:
        decoded = json.loads(base64.b64decode(challenge, validate=True))
    except (binascii.Error, ValueError, RecursionError):
        return f"an error challenge that is no base64 JSON: {printable(challenge, 40)!r}"
    if not isinstance(decoded, dict):
        return "an error challenge that is no JSON object"
    fields = [
        f"{name} {printable(str(decoded[name]), MAX_FIELD_CHARACTERS)}"
        for name in ("status", "scope")
        if isinstance(decoded.get(name), str | int) and not isinstance(decoded.get(name), bool)
    ]
    return ", ".join(fields) if fields else "an error challenge without a status"


async def oauth2_login(channel: SaslChannel, mechanism: str, message: str, initial: bool) -> None:
    """Log in over ``channel`` with ``mechanism`` and its ``message`` (from
    :func:`client_message`), as the initial response when ``initial``; raises
    :class:`LoginRefused` when the server refuses."""
    reply = await channel.begin(mechanism.upper(), message if initial else None)
    if not initial and reply.challenge is not None:  # the server's empty challenge
        reply = await channel.respond(message, secret=True)
    if reply.challenge is None:
        if reply.accepted:
            return
        raise LoginRefused(reply.text)
    said = error_detail(reply.challenge)
    reply = await channel.respond(CANCEL[mechanism], secret=False)
    if reply.challenge is not None:  # still asking: RFC 4954 4, 9051 6.2.2, 5034 4
        reply = await channel.cancel()
    if reply.accepted:  # the server's word is final, whatever its challenge said
        return
    if reply.challenge is not None:
        detail = f"the server went on asking after the exchange was cancelled ({said})"
        raise LoginRefused(detail, in_step=False)
    raise LoginRefused(f"{reply.text} (the server's error: {said})")


class SessionSteps:
    """A :class:`SaslChannel` over a probe's session: ``VERB MECHANISM [initial]``, then a
    line per step, each masked in the session log when it holds the token; ``read`` reads
    the protocol's reply to each."""

    def __init__(self, session: Session, verb: str, read: Callable[[], Awaitable[Reply]]) -> None:
        self._session = session
        self._verb = verb
        self._read = read

    async def begin(self, mechanism: str, initial: str | None) -> Reply:
        command = f"{self._verb} {mechanism}"
        if initial is None:
            return await self._step(command, None)
        return await self._step(f"{command} {initial}", f"{command} ****")

    async def respond(self, line: str, secret: bool) -> Reply:
        return await self._step(line, "****" if secret else None)

    async def cancel(self) -> Reply:
        return await self._step("*", None)

    async def _step(self, line: str, shown: str | None) -> Reply:
        await self._session.write_line(line, shown)
        return await self._read()


async def probe_login(session: Session, steps: SaslChannel, initial: Callable[[str], bool]) -> None:
    """Log the probe's session in with its module's token over ``steps``, the message as
    the initial response when ``initial(message)`` says so; ProbeFailure otherwise."""
    auth = session.module.auth
    assert auth is not None
    token = await session_token(session)
    host, port = session.address.host, session.address.port
    message = client_message(auth.mechanism, auth.username, token, host, port)
    try:
        await oauth2_login(steps, auth.mechanism, message, initial(message))
    except LoginRefused as refused:
        reason = FailureReason.AUTH if refused.in_step else FailureReason.PROTOCOL
        raise ProbeFailure(reason, refused.detail) from None
