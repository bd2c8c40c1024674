"""Connecting, securing and logging in to an IMAP server with aioimaplib, as a module says.

One place for what every reader of a mailbox does before its first command: the round
trip's mailbox (:mod:`mail_exporter.roundtrip.imap_mailbox`) and the reports collector
(:mod:`mail_exporter.collectors.reports.mailbox`).

- **Connecting** as the probes connect (:mod:`mail_exporter.roundtrip.connection`):
  implicit TLS or STARTTLS, the certificate verified against ``tls_config`` before
  anything else is sent, no login without TLS unless the module allows it
  (:func:`~mail_exporter.probes.session.plaintext_refusal`); CAPABILITY again after
  STARTTLS (RFC 3501: forget what was said before TLS).
- **Login**: ``mechanism: auto`` uses LOGIN unless the server advertises LOGINDISABLED,
  then AUTHENTICATE PLAIN, which needs SASL-IR. The password or SASL message is sent
  beside aioimaplib's command, never in it (:func:`with_secret`): aioimaplib puts a
  command's text into errors that asyncio logs. XOAUTH2 and OAUTHBEARER log in with the
  token source's access token as the IMAP probe does
  (:mod:`~mail_exporter.probes.oauth2_sasl`): the message with the command under SASL-IR,
  else after the server's ``+``, which aioimaplib hands to the pending command's
  ``flush`` (:class:`_Authenticate` passes it on).

A step that cannot go on raises :class:`ImapLoginFailure`, which says whether the login
itself failed (refused, no token) or what came before it; the callers bound the time and
turn it into their own failure (the round trip's stages, the collector's error).

- **Bounded reading** (:class:`BoundedProtocol`): aioimaplib keeps a line without CRLF
  whole and joins every new chunk to it (memory without bound, time quadratic in the
  line), reads a literal of any announced size into memory, keeps every untagged line a
  server sends during a command, and parses a chunk's lines by recursion, one level a
  line (a chunk of a thousand short lines ends in RecursionError). The protocol used
  here frames the data itself and hands aioimaplib one line, or one literal's bytes, at
  a time; a line over :data:`MAX_LINE_BYTES`, a literal announced over the session's
  ``max_literal``, a response over ``max_response`` bytes or :data:`MAX_RESPONSE_LINES`
  lines ends the session at once: the connection is dropped and the pending commands
  fail with :class:`ServerViolation`, which says what the server did. A connection the
  server closes fails them too (aioimaplib would leave them waiting for the step's time
  limit), and so does it the wait for the greeting. A greeting other than OK or
  PREAUTH ends the session with what it said (aioimaplib raises in a task of its own,
  and the greeting is waited for until the time limit); lines after the greeting are no
  greetings (aioimaplib sends CAPABILITY for each line until the first answer).
  CAPABILITY answers are read as ASCII, at most :data:`MAX_CAPABILITIES` words of their
  first 64 KiB (aioimaplib decodes them as UTF-8, raising on other bytes, and keeps
  every word). A line aioimaplib cannot take (a tag not sent, bytes that are no UTF-8
  where it decodes) ends the session with that line, where asyncio would log
  aioimaplib's traceback and drop the connection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from typing import Any

import aioimaplib

from mail_exporter import tls_facts
from mail_exporter.config.probes import OAUTH2_MECHANISMS, AuthConfig, ModuleConfig
from mail_exporter.printable import printable
from mail_exporter.probes import ProbeMemory
from mail_exporter.probes.access_token import access_token_for, token_deadline
from mail_exporter.probes.oauth2_sasl import LoginRefused, Reply, client_message, oauth2_login
from mail_exporter.probes.session import ProbeFailure, plaintext_refusal
from mail_exporter.roundtrip.connection import certificate_problem, open_socket, server_name
from mail_exporter.targets import Address

LOGOUT_SECONDS = 2.0
"""Most a LOGOUT is waited for when a session ends; the connection closes after it anyway."""
MIB = 1024 * 1024
MAX_LINE_BYTES = 8 * MIB
"""Longest line taken from a server: a SEARCH answer of some million UIDs."""
MAX_LITERAL_BYTES = MIB
"""Default bound of one literal (header fields; the reports collector reads whole
messages and sets its own)."""
MAX_RESPONSE_BYTES = 32 * MIB
"""Default bound of what a server sends between two of our commands."""
MAX_CAPABILITIES = 200
"""Most capabilities kept (real servers name some 40)."""
MAX_CAPABILITY_BYTES = 64 * 1024
MAX_RESPONSE_LINES = 10_000
"""Most lines a server sends between two of our commands (FETCH answers name at most
a hundred messages; an endless stream of untagged lines ends here)."""

logger = logging.getLogger(__name__)
# aioimaplib reports routine untagged responses (EXISTS, RECENT) at INFO, and every
# untagged line no command waits for: a server could fill the log.
logging.getLogger("aioimaplib").setLevel(logging.WARNING)


class ImapLoginFailure(Exception):
    """Connecting or logging in failed; ``login`` when the login itself did."""

    def __init__(self, detail: str, login: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.login = login


class ServerViolation(aioimaplib.AioImapException):  # type: ignore[misc]  # untyped
    """The server sent more than a session takes; the message says what."""


class BoundedProtocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]  # untyped
    """aioimaplib's client protocol, fed within bounds (see the module's docstring)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        max_literal: int = MAX_LITERAL_BYTES,
        max_response: int = MAX_RESPONSE_BYTES,
    ) -> None:
        super().__init__(loop)
        self.max_literal = max_literal
        self.max_response = max_response
        self.violation: str | None = None
        self._buffer = bytearray()
        self._scanned = 0  # the buffer holds no CRLF before this
        self._literal_left = 0
        self._bytes = self._lines = 0  # since our last command
        self.closed: asyncio.Future[None] = loop.create_future()
        self._greeted = False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.violation is None:
            self._fail_pending("the server closed the connection")
        if not self.closed.done():
            self.closed.set_result(None)
        super().connection_lost(exc)

    def send(self, line: str, scrub: str | None = None) -> None:
        self._bytes = self._lines = 0
        super().send(line, scrub=scrub)

    def data_received(self, data: bytes) -> None:
        if self.violation is not None:
            return
        self._bytes += len(data)
        if self._bytes > self.max_response:
            self._refuse(f"the server sent more than {self.max_response} bytes in one answer")
            return
        buffer = self._buffer
        buffer += data
        while buffer and self.violation is None:
            if self._literal_left:
                piece = bytes(buffer[: self._literal_left])
                del buffer[: len(piece)]
                self._literal_left -= len(piece)
                super().data_received(piece)
                continue
            end = buffer.find(b"\r\n", self._scanned)
            if end < 0:
                if len(buffer) > MAX_LINE_BYTES:
                    self._refuse(f"the server sent a line longer than {MAX_LINE_BYTES} bytes")
                self._scanned = max(0, len(buffer) - 1)
                return
            line = bytes(buffer[: end + 2])
            del buffer[: end + 2]
            self._scanned = 0
            self._lines += 1
            if self._lines > MAX_RESPONSE_LINES:
                self._refuse(f"the server sent more than {MAX_RESPONSE_LINES} lines in one answer")
                return
            literal = aioimaplib.literal_data_re.match(line[:-2])  # as aioimaplib reads it
            if literal:
                digits = literal.group("size")  # a thousand digits are no int to make
                if len(digits) > len(str(self.max_literal)) or int(digits) > self.max_literal:
                    size = printable(digits, 20)
                    self._refuse(f"the server announced a literal of {size} bytes")
                    return
                self._literal_left = int(digits)
            try:
                super().data_received(line)
            except (aioimaplib.AioImapException, ValueError):  # asyncio would log a traceback
                self._refuse(f"the server sent a line out of turn: {printable(line[:-2], 80)}")

    def _refuse(self, reason: str) -> None:
        """Drop the connection and fail every pending command with ``reason``."""
        self.violation = reason
        self._buffer.clear()
        logger.warning("IMAP session ended: %s", reason)
        self._fail_pending(reason)
        if self.transport is not None:
            self.transport.abort()

    def _fail_pending(self, reason: str) -> None:
        pending = [self.pending_sync_command, *self.pending_async_commands.values()]
        for command in pending:
            if command is not None:
                command._exception = ServerViolation(reason)  # as aioimaplib's own timeout
                command.close(reason.encode(), "BAD")

    async def welcome(self, command: bytes) -> None:
        """The greeting; aioimaplib calls this for every line before the state changes,
        and each would send CAPABILITY: only the first line is the greeting."""
        if self._greeted:
            return
        self._greeted = True
        if b"PREAUTH" not in command and b"OK" not in command:
            self._refuse(f"the server's greeting: {printable(command)}")
            return
        with contextlib.suppress(aioimaplib.AioImapException):  # the session's end says why
            await super().welcome(command)

    async def capability(self) -> None:
        command = aioimaplib.Command("CAPABILITY", self.new_tag(), loop=self.loop)
        lines = (await self.execute(command)).lines
        first = bytes(lines[0][:MAX_CAPABILITY_BYTES]) if lines else b""
        self.capabilities = set(first.decode("ascii", "replace").split()[:MAX_CAPABILITIES])

    async def greeted(self) -> None:
        """Wait for the greeting and the capabilities; ServerViolation when the
        connection ends first."""
        greeting = asyncio.ensure_future(self.wait("AUTH|NONAUTH"))
        try:
            await asyncio.wait({greeting, self.closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            greeting.cancel()
        if not greeting.done() or greeting.cancelled():
            raise ServerViolation(self.violation or "the server closed the connection")


def response_text(response: Any) -> str:
    """The printable text of an aioimaplib response's last line (the tagged completion)."""
    lines = response.lines
    return printable(bytes(lines[-1])) if lines else ""


def capabilities(protocol: Any) -> set[str]:
    return {str(word).upper() for word in protocol.capabilities}


def connection_open(protocol: Any) -> bool:
    transport = protocol.transport
    return transport is not None and not transport.is_closing()


async def _execute(protocol: Any, command: Any, what: str, login: bool = False) -> Any:
    if not connection_open(protocol):
        raise ImapLoginFailure(f"{what}: connection lost", login)
    response = await command
    if response.result != "OK":
        raise ImapLoginFailure(f"{what}: {response.result} {response_text(response)}", login)
    return response


def _verify(ssl_object: Any, address: Address, module: ModuleConfig) -> None:
    problem = certificate_problem(ssl_object, address, module)
    if problem is not None:
        raise ImapLoginFailure(problem)


async def connect(protocol: Any, address: Address, module: ModuleConfig) -> None:
    """Connect ``protocol`` (a fresh ``IMAP4ClientProtocol``) to ``address``, secured as
    ``module`` says, up to the greeting and the capabilities."""
    loop = asyncio.get_running_loop()
    sock = await open_socket(address, module)
    context = tls_facts.client_context() if module.tls == "implicit" else None
    transport, _ = await loop.create_connection(
        lambda: protocol,
        sock=sock,
        ssl=context,
        server_hostname=server_name(address, module) if context else None,
    )
    if context is not None:
        _verify(transport.get_extra_info("ssl_object"), address, module)
    await protocol.greeted()
    if module.tls == "starttls":
        await _starttls(protocol, address, module)


async def logout_and_close(protocol: Any) -> None:
    """LOGOUT when the connection is still open, waiting at most ``LOGOUT_SECONDS`` for
    it and ignoring its failure, then close the connection in any case."""
    transport = protocol.transport
    if transport is None:
        return
    try:
        if not transport.is_closing():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(LOGOUT_SECONDS):
                    await protocol.logout()
    finally:
        transport.close()


async def _starttls(protocol: Any, address: Address, module: ModuleConfig) -> None:
    if "STARTTLS" not in capabilities(protocol):
        refusal = plaintext_refusal(module, "STARTTLS")
        if refusal is not None:
            raise ImapLoginFailure(refusal)
        return
    command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
    await _execute(protocol, protocol.execute(command), "STARTTLS")
    transport = await protocol.loop.start_tls(
        protocol.transport,
        protocol,
        tls_facts.client_context(),
        server_hostname=server_name(address, module),
    )
    protocol.transport = transport
    _verify(transport.get_extra_info("ssl_object"), address, module)
    await protocol.capability()  # RFC 3501: forget what was said before TLS


async def login(
    protocol: Any, auth: AuthConfig, address: Address, memory: ProbeMemory, step_seconds: float
) -> None:
    """Log in as ``auth`` says; an OAuth2 login's token comes from ``memory``'s broker,
    waited for most of ``step_seconds`` (the step's time limit) at most."""
    if protocol.state == aioimaplib.AUTH:  # PREAUTH greeting
        return
    offered = capabilities(protocol)
    mechanism = auth.mechanism
    if mechanism == "auto":
        mechanism = "plain" if "LOGINDISABLED" in offered else "login"
    if mechanism in OAUTH2_MECHANISMS:
        await _authenticate_oauth2(protocol, auth, address, memory, step_seconds)
    elif mechanism == "login":
        if "LOGINDISABLED" in offered:
            raise ImapLoginFailure("server advertises LOGINDISABLED", login=True)
        user = aioimaplib.quoted(auth.username)
        command = aioimaplib.Command("LOGIN", protocol.new_tag(), user, loop=protocol.loop)
        sent = with_secret(protocol, command, aioimaplib.quoted(auth.password))
        await _execute(protocol, sent, "login refused", login=True)
    else:
        await _authenticate_plain(protocol, auth)
    protocol.state = aioimaplib.AUTH
    await protocol.capability()


async def _authenticate_plain(protocol: Any, auth: AuthConfig) -> None:
    if not {"AUTH=PLAIN", "SASL-IR"} <= capabilities(protocol):
        raise ImapLoginFailure("server does not offer AUTHENTICATE PLAIN with SASL-IR", login=True)
    token = base64.b64encode(f"\0{auth.username}\0{auth.password}".encode()).decode()
    command = aioimaplib.Command("AUTHENTICATE", protocol.new_tag(), "PLAIN", loop=protocol.loop)
    await _execute(protocol, with_secret(protocol, command, token), "login refused", login=True)


async def _authenticate_oauth2(
    protocol: Any, auth: AuthConfig, address: Address, memory: ProbeMemory, step_seconds: float
) -> None:
    wanted = f"AUTH={auth.mechanism.upper()}"
    if wanted not in capabilities(protocol):
        raise ImapLoginFailure(f"server does not offer {wanted}", login=True)
    deadline = token_deadline(asyncio.get_running_loop().time() + step_seconds)
    try:
        token = await access_token_for(auth, memory, deadline)
    except ProbeFailure as failure:
        raise ImapLoginFailure(f"no access token: {failure.detail}", login=True) from None
    message = client_message(auth.mechanism, auth.username, token, address.host, address.port)
    steps = _SaslSteps(protocol)
    try:
        await oauth2_login(steps, auth.mechanism, message, "SASL-IR" in capabilities(protocol))
    except LoginRefused as refused:
        raise ImapLoginFailure(f"login refused: {refused.detail}", login=True) from None
    finally:
        steps.close()


def with_secret(protocol: Any, command: Any, secret: str | None) -> asyncio.Future[Any]:
    """Send the sync ``command`` with ``secret`` (a password, a SASL message) as its last
    argument; its response, once complete.

    aioimaplib writes a command's text into its debug log and into the ``Abort`` that a
    tagged answer under another tag raises, which asyncio logs: the secret goes on the
    wire but never into the command. Registered as ``execute`` registers a sync command;
    at the login nothing else is pending."""
    assert protocol.pending_sync_command is None, "the login is the only command in flight"
    protocol.pending_sync_command = command
    protocol.send(str(command) if secret is None else f"{command} {secret}", scrub=secret)

    async def completed() -> Any:
        await command.wait()
        return command.response

    return asyncio.ensure_future(completed())


class _Authenticate(aioimaplib.Command):  # type: ignore[misc]  # aioimaplib is untyped
    """AUTHENTICATE, whose ``+`` challenges aioimaplib appends to its response; ``flush``,
    which it calls after a continuation and after every chunk it reads, puts each new one
    into :attr:`challenges` for the exchange, once."""

    def __init__(self, tag: str, mechanism: str, loop: Any) -> None:
        super().__init__("AUTHENTICATE", tag, mechanism, loop=loop)
        self.challenges: asyncio.Queue[bytes] = asyncio.Queue()
        self._seen = 0

    def flush(self) -> None:
        lines = self.response.lines
        for line in lines[self._seen :]:
            if bytes(line).startswith(b"+"):
                self.challenges.put_nowait(bytes(line))
        self._seen = len(lines)


class _SaslSteps:
    """SASL over aioimaplib: one AUTHENTICATE running while its challenges are answered."""

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol
        self._command: _Authenticate | None = None
        self._done: asyncio.Future[Any] | None = None

    async def begin(self, mechanism: str, initial: str | None) -> Reply:
        protocol = self._protocol
        self._command = _Authenticate(protocol.new_tag(), mechanism, protocol.loop)
        self._done = with_secret(protocol, self._command, initial)
        return await self._reply()

    async def respond(self, line: str, secret: bool) -> Reply:
        self._protocol.send(line, scrub=line if secret else None)
        return await self._reply()

    async def cancel(self) -> Reply:
        return await self.respond("*", secret=False)

    async def _reply(self) -> Reply:
        assert self._command is not None and self._done is not None
        challenge = asyncio.ensure_future(self._command.challenges.get())
        try:
            await asyncio.wait({self._done, challenge}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            challenge.cancel()
        if challenge.done() and not challenge.cancelled():
            return Reply(challenge=challenge.result().decode("ascii", "replace")[1:].strip())
        response = self._done.result()
        text = f"{response.result} {response_text(response)}"
        return Reply(accepted=response.result == "OK", text=text)

    def close(self) -> None:
        """Stop waiting for the command, if the exchange ended before it did."""
        if self._done is not None and not self._done.done():
            self._done.cancel()
