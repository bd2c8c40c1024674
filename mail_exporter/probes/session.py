"""One probe's connection: resolve, connect, TLS, bounded line I/O and phase timing.

Protocol modules (``smtp``, ``imap``, ``pop3``) speak through a
:class:`Session` and raise :class:`ProbeFailure` to stop; the runner in
:mod:`mail_exporter.probes` turns both into a :class:`ProbeResult`.  Every read
is bounded in line length and count, so nothing a server sends can grow memory
without bound, and the caller's deadline bounds time. Every entry of the session
log and every failure detail is escaped (:func:`printable`): they quote the server.

A password (or an OAuth2 access token) is never sent without TLS unless the module says
so (``allow_plaintext_auth``): with ``tls: starttls`` and ``require_tls: false``, a server
that does not offer STARTTLS (or whose offer was stripped on the way) is still probed
without a login, and a module that logs in fails there with ``starttls_unavailable``
(:func:`plaintext_refusal`) rather than sending its password in cleartext.

The connection is an asyncio protocol (:class:`Channel`), not a StreamReader and
StreamWriter: a reply line is cut from the received bytes in place, with no coroutine
per line and no wait for a drain that has nothing to wait for (docs/benchmarks.md,
section 2, has what it saves). It keeps StreamReader's bounds: a line longer than
:data:`MAX_LINE_BYTES` fails the probe, and reading from the socket pauses while more
than twice that waits unread.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, cast

from mail_exporter import tls_facts
from mail_exporter.config.probes import ModuleConfig
from mail_exporter.printable import printable
from mail_exporter.probes.result import Failure, FailureReason, Phase, ProbeResult
from mail_exporter.targets import Address

if TYPE_CHECKING:  # the package imports the protocols, which import this module
    from mail_exporter.probes import ProbeMemory

MAX_LINE_BYTES = 8192
"""Longest reply line accepted; RFC 5321 allows 512, real servers stay far below 8 KiB."""
MAX_REPLY_LINES = 256
"""Most lines in one multi-line reply or one CAPABILITY/CAPA listing."""


_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class ProbeFailure(Exception):
    """Raised inside a probe to stop it with a reason from the fixed set."""

    def __init__(self, reason: FailureReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def plaintext_refusal(module: ModuleConfig, verb: str) -> str | None:
    """Why a session must stop when the server does not offer ``verb`` (STARTTLS, STLS),
    or ``None`` when it may go on without TLS."""
    if module.starttls_required:
        return f"server does not offer {verb}"
    if module.auth is not None and not module.allow_plaintext_auth:
        return (
            f"server does not offer {verb}: login withheld, the password or access token "
            "is not sent without TLS (allow_plaintext_auth: true would send it)"
        )
    return None


NOT_VERIFYING_BECAUSE = {
    True: "opportunistic TLS (STARTTLS not required, no login): senders deliver whatever "
    "the certificate, so it is reported, not failed",
    False: "tls_config.insecure_skip_verify: true reports the certificate without failing",
}
"""Why a probe goes on past a certificate that does not verify, by whether its module is
opportunistic (:attr:`ModuleConfig.opportunistic`)."""


Farewell = Callable[[], Awaitable[object]]
"""A protocol's goodbye (SMTP and POP3 ``QUIT``, IMAP ``LOGOUT``): sends it, checks the answer."""


class Channel(asyncio.Protocol):
    """The bytes a connection received, bounded, and the way to send; TLS or not.

    It reads as :class:`asyncio.StreamReader` does, so that what a server can do to a
    probe stays the same: an error the connection ended with is raised before any
    buffered data is returned, and reading pauses above ``2 * MAX_LINE_BYTES`` unread
    bytes until someone waits for more.
    """

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.eof = False
        self.error: BaseException | None = None
        """What the connection ended with (``connection_lost``), raised to the next reader."""
        self.over_ssl = False
        self._lost = False
        self._reading_paused = False
        self._writing_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        # Fetched once: before Python 3.12, each get_running_loop() is a getpid() system call.
        self.loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > 2 * MAX_LINE_BYTES and not self._reading_paused:
            self._reading_paused = True
            if self.transport is not None:  # None in a TLS handshake: see read_through
                self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        # Half-open TCP, as a stream keeps it: a goodbye may still be sent. Under TLS the
        # return value does nothing (asyncio warns), so the close follows.
        return not self.over_ssl

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = self._lost = True
        self.error = exc
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def read_through(self, transport: asyncio.Transport) -> None:
        """Read from ``transport`` (TLS, after a handshake), paused if reading is.

        Data that came decrypted with the server's last handshake flight is delivered
        before ``start_tls`` returns, while no transport is ours: the plaintext one under
        TLS then belongs to asyncio, and a pause left on it would never be lifted by a
        resume of the TLS one, so the pause waits for this one.
        """
        self.transport = transport
        if self._reading_paused:
            transport.pause_reading()

    def consumed(self) -> None:
        """Resume reading once the unread bytes are under the line limit again."""
        if self._reading_paused and len(self.buffer) <= MAX_LINE_BYTES:
            self._reading_paused = False
            assert self.transport is not None
            self.transport.resume_reading()

    async def wait(self) -> None:
        """Until more bytes, the end of the stream or the loss of the connection."""
        if self._reading_paused:  # whoever waits wants more than what is unread
            self._reading_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def readexactly(self, count: int) -> bytes:
        """``count`` bytes; raises ``asyncio.IncompleteReadError`` at the end of the stream."""
        while len(self.buffer) < count or self.error is not None:
            if self.error is not None:
                raise self.error
            if self.eof:
                partial = bytes(self.buffer)
                self.buffer.clear()
                raise asyncio.IncompleteReadError(partial, count)
            await self.wait()
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        self.consumed()
        return data

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def drain(self) -> None:
        """Until the transport takes more; raises when the connection is lost."""
        if self.error is not None:
            raise self.error
        if self._lost:
            raise ConnectionResetError("Connection lost")
        if self._writing_paused:
            self._drained = self.loop.create_future()
            await self._drained
            if self._lost:
                raise ConnectionResetError("Connection lost")


class Session:
    """A TCP (and maybe TLS) conversation with one server, timed phase by phase."""

    def __init__(
        self,
        address: Address,
        module: ModuleConfig,
        result: ProbeResult,
        deadline: float = math.inf,
        memory: ProbeMemory | None = None,
    ) -> None:
        self.address = address
        self.module = module
        self.result = result
        self.deadline = deadline
        """When the probe's budget ends (``time.monotonic()``): a step that may give up
        early, to leave the rest of the session its time, measures its share from it."""
        self.memory = memory
        """What probes keep between runs, the token broker among it: a session whose module
        logs in with an OAuth2 token needs it (the TLS scan's sessions never log in)."""
        self.phase = Phase.RESOLVE
        self.farewell: Farewell | None = None
        """Set by the protocol once the server's greeting is accepted: from then on there
        is a conversation to end politely, even when the probe fails."""
        self.peer_chain: tuple[bytes, ...] | None = None
        """The chain the server presented (DER, leaf first), kept for the revocation checks
        when the module asks for them."""
        self._channel: Channel | None = None
        self._socket: socket.socket | None = None
        """The connection's socket, for TCP_QUICKACK (fetched once: on uvloop each
        ``get_extra_info("socket")`` costs a system call)."""
        self._started = time.monotonic()

    @property
    def encrypted(self) -> bool:
        return self.result.tls is not None

    def log(self, message: str, step: str | None = None) -> None:
        """An entry of the session log, under the current phase or ``step``."""
        self.result.log.add(time.monotonic() - self._started, step or self.phase, message)

    @contextmanager
    def timed(self, phase: Phase) -> Iterator[None]:
        """Attribute the time spent in the block to ``phase`` (repeats add up)."""
        self.phase = phase
        start = time.monotonic()
        try:
            yield
        finally:
            spent = time.monotonic() - start
            self.result.phases[phase] = self.result.phases.get(phase, 0.0) + spent

    async def connect(self) -> None:
        """Resolve the host in the preferred family and open the TCP connection."""
        with self.timed(Phase.RESOLVE):
            ip, family = await self._resolve()
        self.result.peer_address = ip
        with self.timed(Phase.CONNECT):
            self.log(f"connecting to {ip} port {self.address.port}")
            try:
                transport, self._channel = await asyncio.get_running_loop().create_connection(
                    Channel, ip, self.address.port, family=family
                )
                self._socket = transport.get_extra_info("socket")
            except OSError as error:
                reason = os.strerror(error.errno) if error.errno else str(error)
                raise ProbeFailure(FailureReason.CONNECT, reason) from None

    async def _resolve(self) -> tuple[str, int]:
        if self.address.is_ip:  # no lookup, and no thread hop, for a literal
            family = socket.AF_INET6 if ":" in self.address.host else socket.AF_INET
            return self.address.host, family
        preferred = (
            socket.AF_INET6 if self.module.preferred_ip_protocol == "ip6" else socket.AF_INET
        )
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                self.address.host, self.address.port, type=socket.SOCK_STREAM
            )
        except (socket.gaierror, UnicodeError) as error:
            raise ProbeFailure(
                FailureReason.RESOLVE, f"cannot resolve {self.address.host}: {error}"
            ) from None
        chosen = [info for info in infos if info[0] == preferred]
        if not chosen and self.module.ip_protocol_fallback:
            chosen = [info for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]
        if not chosen:
            wanted = self.module.preferred_ip_protocol
            raise ProbeFailure(
                FailureReason.RESOLVE, f"{self.address.host} has no {wanted} address"
            )
        family, _, _, _, sockaddr = chosen[0]
        self.log(f"resolved {self.address.host} to {sockaddr[0]}")
        return str(sockaddr[0]), family

    def tls_channel(self) -> Channel:
        """The open connection, where the TLS handshake is to begin (by asyncio, or by hand
        as the stapling check's is); raises ``ProbeFailure`` when the server already sent
        something: bytes sent in plaintext after its go-ahead, read as if they came through
        TLS, are the STARTTLS injection flaw (CVE-2011-0411)."""
        assert self._channel is not None
        if self._channel.buffer:
            raise ProbeFailure(FailureReason.PROTOCOL, "server sent data before the TLS handshake")
        return self._channel

    def server_name_indication(self) -> str | None:
        """The name sent as SNI: ``tls_config.server_name``, else the target's host unless
        it is an address (RFC 6066 3: no literal addresses)."""
        server_name = self.module.tls_config.server_name
        if self.address.is_ip and not server_name:
            return None
        return tls_facts.tls_name(server_name or self.address.host)

    async def handshake(self, context: ssl.SSLContext) -> ssl.SSLObject:
        """The TLS handshake with ``context`` on the open connection, timed as
        ``tls_handshake``; raises what it raised (``ssl.SSLError``, ``OSError``, ``EOFError``)."""
        channel = self.tls_channel()
        plain = channel.transport
        assert plain is not None
        with self.timed(Phase.TLS_HANDSHAKE):
            try:
                channel.over_ssl = True
                channel.transport = None  # until read_through: nothing to pause in between
                encrypted = await channel.loop.start_tls(
                    plain, channel, context, server_hostname=self.server_name_indication()
                )
            except BaseException:
                # asyncio has closed the connection, but tells no protocol whose start_tls
                # failed or was cancelled: a wait for its close would never end.
                plain.abort()
                self._channel = self._socket = None
                raise
        assert encrypted is not None
        channel.read_through(encrypted)
        ssl_object: ssl.SSLObject = encrypted.get_extra_info("ssl_object")
        return ssl_object

    async def start_tls(self) -> None:
        """Handshake on the open connection and record the TLS facts."""
        try:
            ssl_object = await self.handshake(tls_facts.client_context())
        except (ssl.SSLError, OSError, EOFError) as error:
            raise ProbeFailure(FailureReason.TLS, f"TLS handshake failed: {error}") from None
        settings = self.module.tls_config
        server_name = settings.server_name or self.address.host
        with self.timed(Phase.TLS_HANDSHAKE):
            ca_file = str(settings.ca_file) if settings.ca_file else None
            facts = tls_facts.session_facts(ssl_object, server_name, ca_file)
        self.result.tls = facts
        if self.module.revocation.enabled:
            self.peer_chain = tls_facts.peer_chain(ssl_object)
        self.log(f"TLS {facts.version} {facts.cipher}, certificate {facts.leaf_subject or '?'}")
        if not facts.verified:
            self.log(f"certificate not verified: {facts.verify_error}")
            if self.module.verifies:
                raise ProbeFailure(
                    FailureReason.TLS, f"certificate not verified: {facts.verify_error}"
                )
            self.log(f"going on: {NOT_VERIFYING_BECAUSE[self.module.opportunistic]}")

    async def negotiate_starttls(
        self,
        verb: str,
        offered: bool,
        login_offered: bool,
        request: Callable[[], Awaitable[object]],
    ) -> bool:
        """The STARTTLS step every protocol shares; True when the session is now encrypted.

        On a plaintext session it first records what the server offered before TLS.
        ``request`` sends the protocol's STARTTLS/STLS command and checks the go-ahead.
        """
        if not self.encrypted:
            self.result.starttls_offered = offered
            self.result.plaintext_auth_offered = login_offered
        if self.module.tls != "starttls":
            return False
        if not offered:
            refusal = plaintext_refusal(self.module, verb)
            if refusal is not None:
                raise ProbeFailure(FailureReason.STARTTLS_UNAVAILABLE, refusal)
            self.log(f"{verb} not offered; continuing without TLS as the module allows")
            return False
        with self.timed(Phase.STARTTLS):
            await request()
        await self.start_tls()
        return True

    async def quit(self) -> None:
        """The goodbye as the last step of a session that passed, timed as ``quit``."""
        assert self.farewell is not None, "quit before the greeting"
        with self.timed(Phase.QUIT):
            await self.farewell()

    async def part_after_failure(self, seconds: float) -> None:
        """Say goodbye after a failure, waiting at most ``seconds`` for the answer.

        Best effort: the verdict is already made, so nothing here can change it, and
        the time is no phase's (``quit`` is the goodbye of a session that passed).
        """
        if self.farewell is None or seconds <= 0:
            return
        self.log("saying goodbye after the failure")
        with contextlib.suppress(ProbeFailure, TimeoutError, OSError, EOFError):
            async with asyncio.timeout(seconds):
                await self.farewell()

    def _ack_at_once(self) -> None:
        """Keep the kernel from delaying ACKs while TLS is up.

        A TLS 1.3 server sends its session ticket just after the handshake; if our first
        command crossed it, the server holds its reply (Nagle) until we ACK the ticket,
        which Linux delays by about 40 ms. Quick-ACK mode ends by itself, so it is set
        again around every command and before every wait for the server. Linux only;
        elsewhere nothing happens.
        """
        if self.encrypted and _TCP_QUICKACK is not None and self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)

    async def read_line(self) -> str:
        """One line without its ending; CRLF and bare LF are both accepted."""
        channel = self._channel
        assert channel is not None
        buffer = channel.buffer
        end = buffer.find(b"\n")
        # A line already received needs no wait, so no ACK is pending on it: the rest of
        # a multi-line reply costs no system call.
        if end < 0:
            self._ack_at_once()
        while end < 0 or channel.error is not None:
            if channel.error is not None:
                if isinstance(channel.error, ConnectionError | ssl.SSLError):
                    detail = f"connection lost: {channel.error}"
                    raise ProbeFailure(FailureReason.PROTOCOL, detail) from None
                raise channel.error
            if len(buffer) > MAX_LINE_BYTES:
                break
            if channel.eof:
                raise ProbeFailure(FailureReason.PROTOCOL, "server closed the connection")
            await channel.wait()
            end = buffer.find(b"\n")
        if end < 0 or end > MAX_LINE_BYTES:
            raise ProbeFailure(
                FailureReason.PROTOCOL, f"server sent a line longer than {MAX_LINE_BYTES} bytes"
            )
        line = buffer[: end + 1].rstrip(b"\r\n").decode("utf-8", "replace")
        del buffer[: end + 1]
        channel.consumed()
        self.log(f"S: {printable(line)}")
        return line

    async def write_line(self, line: str, shown: str | None = None) -> None:
        """Send one command with CRLF; ``shown`` replaces it in the log when it holds a secret."""
        assert self._channel is not None
        self.log(f"C: {shown if shown is not None else printable(line)}")
        self._ack_at_once()
        self._channel.write(line.encode() + b"\r\n")
        try:
            await self._channel.drain()
        except (ConnectionError, ssl.SSLError) as error:
            raise ProbeFailure(FailureReason.PROTOCOL, f"connection lost: {error}") from None

    async def close(self, wait: float = 1.0) -> None:
        """Close the connection, waiting at most ``wait`` seconds for the close to finish."""
        if self._channel is None or self._channel.transport is None:
            return
        self._channel.transport.close()
        # The verdict is already made; a messy close changes nothing.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._channel.closed), wait)


def fail_result(result: ProbeResult, phase: Phase, reason: FailureReason, detail: str) -> None:
    """Record a failure on the result (first failure wins)."""
    if result.failure is None:
        result.failure = Failure(phase, reason, printable(detail, None))
