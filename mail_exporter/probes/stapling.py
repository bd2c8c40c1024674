"""The server's OCSP staple, asked for with a ClientHello made by hand.

Python's :mod:`ssl` can neither ask for a stapled OCSP response nor read one, so the
stapling check makes the start of a TLS 1.2 handshake itself, on a connection of its own
after the probe's conversation. It gets there as the TLS scan does
(:class:`~.tls_scanner.HandshakeSession`): connect, and with STARTTLS the protocol's own
greeting, capabilities and STARTTLS command, never a login. There it sends a ClientHello
with the ``status_request`` extension (RFC 6066 8; OCSP, no responder IDs, no extensions),
SNI as the probe sends it, the usual groups, point formats and signature algorithms, and
the TLS 1.2 ECDHE, DHE and RSA suites with AES-GCM, ChaCha20 and AES-CBC (:data:`SUITES`),
so that any server that speaks TLS 1.2 finds something it takes.

It then reads the server's handshake in cleartext: ServerHello, Certificate, maybe
CertificateStatus (type 22, status_type ``ocsp``, the DER OCSPResponse), up to
ServerHelloDone, and closes the connection there, without finishing the handshake (no
key exchange, nothing encrypted, nothing said after it).

- A ServerHello without ``status_request`` is a server that will not staple, and the
  reading stops there. One with it may still staple nothing (RFC 6066 8 allows it).
- A ServerHello in another version than TLS 1.2 is an error: the staple was asked for in
  TLS 1.2, and what the server does in another is not known.
- An alert, a reset or a close instead of the handshake is "no staple": the server would
  not take the ClientHello (a TLS 1.3-only server refuses it with ``protocol_version``).
- Anything else that is not the handshake of RFC 5246 is garbage, an error: a record that
  is no TLS record, longer than 2^14 bytes or empty, a message longer than what is left
  of :data:`MAX_HANDSHAKE_BYTES`, a message out of place, a malformed ServerHello or
  CertificateStatus.
- Everything read counts against :data:`MAX_HANDSHAKE_BYTES` (64 KiB: a chain of a few
  certificates and a staple take well under 16), and the probe's deadline bounds the
  whole connection.

The staple itself is verified in :mod:`.revocation`, as an answer of the leaf's OCSP
responder is, and kept there per server.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import struct
from collections.abc import Iterator
from enum import IntEnum
from typing import Final

from mail_exporter.config.probes import ModuleConfig
from mail_exporter.probes.result import Phase
from mail_exporter.probes.revocation import Staple, StapleSource
from mail_exporter.probes.session import Channel, Session
from mail_exporter.probes.tls_scan import scan_key
from mail_exporter.probes.tls_scanner import (
    Converse,
    HandshakeReached,
    HandshakeSession,
    HandshakeStopped,
    until_handshake,
)
from mail_exporter.targets import Address

MAX_HANDSHAKE_BYTES: Final = 64 * 1024
"""Most bytes read from the server's handshake, record headers included."""
MAX_RECORD_BYTES: Final = 2**14
"""Longest plaintext record (RFC 5246 6.2.1)."""

TLS_1_2: Final = 0x0303
_HELLO_RECORD_VERSION: Final = 0x0301  # what clients put on their first record (RFC 8446 D.5)

SUITES: Final = (
    # ECDHE with AES-GCM and ChaCha20, then CBC
    0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8,
    0xC023, 0xC027, 0xC024, 0xC028, 0xC009, 0xC013, 0xC00A, 0xC014,
    # DHE with AES-GCM and ChaCha20, then CBC
    0x009E, 0x009F, 0xCCAA, 0x0067, 0x006B, 0x0033, 0x0039,
    # static RSA key exchange with AES-GCM, then CBC
    0x009C, 0x009D, 0x003C, 0x003D, 0x002F, 0x0035,
    0x00FF,  # TLS_EMPTY_RENEGOTIATION_INFO_SCSV (RFC 5746)
)  # fmt: skip
"""The cipher suites offered: what a server speaking TLS 1.2 takes (nothing is encrypted)."""

_GROUPS: Final = (0x001D, 0x0017, 0x0018, 0x0019, 0x001E, 0x0100, 0x0101)
"""x25519, secp256r1, secp384r1, secp521r1, x448, ffdhe2048, ffdhe3072."""
_SIGNATURE_ALGORITHMS: Final = (
    0x0403, 0x0503, 0x0603, 0x0807, 0x0808,  # ECDSA with SHA-2, Ed25519, Ed448
    0x0804, 0x0805, 0x0806, 0x0809, 0x080A, 0x080B,  # RSA-PSS
    0x0401, 0x0501, 0x0601, 0x0203, 0x0201,  # RSA PKCS#1, ECDSA and RSA with SHA-1
)  # fmt: skip


class _Record(IntEnum):
    CHANGE_CIPHER_SPEC = 20
    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23


_RECORD_TYPES: Final = frozenset(_Record)


class _Message(IntEnum):
    SERVER_HELLO = 2
    CERTIFICATE = 11
    SERVER_KEY_EXCHANGE = 12
    CERTIFICATE_REQUEST = 13
    SERVER_HELLO_DONE = 14
    CERTIFICATE_STATUS = 22


class _Extension(IntEnum):
    SERVER_NAME = 0
    STATUS_REQUEST = 5
    SUPPORTED_GROUPS = 10
    EC_POINT_FORMATS = 11
    SIGNATURE_ALGORITHMS = 13


_STATUS_TYPE_OCSP: Final = 1
_BETWEEN_HELLO_AND_DONE: Final = frozenset(
    {_Message.CERTIFICATE, _Message.SERVER_KEY_EXCHANGE, _Message.CERTIFICATE_REQUEST}
)
_ALERTS: Final = {
    0: "close_notify", 10: "unexpected_message", 40: "handshake_failure",
    47: "illegal_parameter", 50: "decode_error", 70: "protocol_version",
    71: "insufficient_security", 80: "internal_error", 86: "inappropriate_fallback",
    112: "unrecognized_name",
}  # fmt: skip
"""Names of the alerts a server may send a ClientHello it refuses."""


class _Garbage(Exception):
    """The server's answer is not the handshake a ClientHello asks for; the message says why."""


class _NoStaple(Exception):
    """The server will not staple, or would not take the ClientHello; the message says why."""


def _vector(data: bytes, length_bytes: int) -> bytes:
    return len(data).to_bytes(length_bytes, "big") + data


def _u16s(values: tuple[int, ...]) -> bytes:
    return b"".join(value.to_bytes(2, "big") for value in values)


def _extension(kind: _Extension, body: bytes) -> bytes:
    return kind.to_bytes(2, "big") + _vector(body, 2)


def _sni(server_name: str | None) -> bytes | None:
    """The host name as SNI carries it (IDNA); none for an address or a name it cannot be."""
    if server_name is None:
        return None
    try:
        encoded = server_name.encode("idna")
    except UnicodeError:
        return None
    if not encoded or len(encoded) > 255:
        return None
    try:
        ipaddress.ip_address(server_name)
    except ValueError:
        return encoded
    return None  # RFC 6066 3: no literal addresses


def client_hello(server_name: str | None) -> bytes:
    """A TLS 1.2 ClientHello record asking for the server's OCSP staple, with SNI
    ``server_name`` (none for an address)."""
    extensions = [
        _extension(_Extension.STATUS_REQUEST, bytes([_STATUS_TYPE_OCSP]) + b"\0\0" + b"\0\0"),
        _extension(_Extension.SUPPORTED_GROUPS, _vector(_u16s(_GROUPS), 2)),
        _extension(_Extension.EC_POINT_FORMATS, _vector(b"\0", 1)),  # uncompressed
        _extension(_Extension.SIGNATURE_ALGORITHMS, _vector(_u16s(_SIGNATURE_ALGORITHMS), 2)),
    ]
    name = _sni(server_name)
    if name is not None:
        entry = b"\0" + _vector(name, 2)  # name_type host_name
        extensions.insert(0, _extension(_Extension.SERVER_NAME, _vector(entry, 2)))
    body = (
        TLS_1_2.to_bytes(2, "big")
        + os.urandom(32)
        + _vector(b"", 1)  # no session to resume
        + _vector(_u16s(SUITES), 2)
        + _vector(b"\0", 1)  # no compression
        + _vector(b"".join(extensions), 2)
    )
    message = bytes([1]) + _vector(body, 3)  # ClientHello
    return struct.pack("!BHH", _Record.HANDSHAKE, _HELLO_RECORD_VERSION, len(message)) + message


class _Reader:
    """The server's handshake records, read within :data:`MAX_HANDSHAKE_BYTES`."""

    def __init__(self, stream: Channel) -> None:
        self._stream = stream
        self._left = MAX_HANDSHAKE_BYTES
        self._messages = bytearray()

    async def _read(self, count: int) -> bytes:
        if count > self._left:
            raise _Garbage(f"the server's handshake is longer than {MAX_HANDSHAKE_BYTES} bytes")
        self._left -= count
        try:
            return await self._stream.readexactly(count)
        except asyncio.IncompleteReadError:
            raise _NoStaple("the server closed the connection") from None
        except ConnectionError as error:
            raise _NoStaple(f"the server dropped the connection ({_error(error)})") from None

    async def _record(self) -> None:
        """One more record of handshake messages; an alert ends the reading."""
        kind, version, length = struct.unpack("!BHH", await self._read(5))
        if version >> 8 != 3 or kind not in _RECORD_TYPES:
            raise _Garbage(f"the server sent no TLS record (it began {kind:02x}{version:04x})")
        if not 0 < length <= MAX_RECORD_BYTES:
            raise _Garbage(f"the server sent a TLS record of {length} bytes")
        fragment = await self._read(length)
        if kind == _Record.ALERT:
            description = fragment[1] if length == 2 else None
            name = "?" if description is None else _ALERTS.get(description, f"{description}")
            raise _NoStaple(f"the server answered the ClientHello with the alert {name}")
        if kind != _Record.HANDSHAKE:
            raise _Garbage(f"the server sent a record of type {kind} in the handshake")
        self._messages += fragment

    async def message(self) -> tuple[int, bytes]:
        """The next handshake message: its type and body."""
        while len(self._messages) < 4:
            await self._record()
        kind, length = self._messages[0], int.from_bytes(self._messages[1:4], "big")
        if length > self._left + len(self._messages) - 4:
            raise _Garbage(f"the server's handshake is longer than {MAX_HANDSHAKE_BYTES} bytes")
        while len(self._messages) < 4 + length:
            await self._record()
        body = bytes(self._messages[4 : 4 + length])
        del self._messages[: 4 + length]
        return kind, body


def _error(error: Exception) -> str:
    return str(error) or type(error).__name__


class _Cursor:
    """Reads a message body field by field; running short is :class:`_Garbage`."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._at = 0
        self._what = what

    def take(self, count: int) -> bytes:
        if self._at + count > len(self._data):
            raise _Garbage(f"the server sent a malformed {self._what}")
        taken = self._data[self._at : self._at + count]
        self._at += count
        return taken

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_bytes: int) -> bytes:
        return self.take(self.number(length_bytes))

    @property
    def done(self) -> bool:
        return self._at == len(self._data)


def _server_hello_extensions(body: bytes) -> Iterator[tuple[int, bytes]]:
    """The extensions of a TLS 1.2 ServerHello; :class:`_Garbage` when malformed."""
    hello = _Cursor(body, "ServerHello")
    version = hello.number(2)
    if version != TLS_1_2:
        known = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1"}
        shown = known.get(version, f"version {version:04x}")
        raise _Garbage(f"the server answered in {shown}, not TLS 1.2 (the staple is asked in 1.2)")
    hello.take(32)  # random
    if len(hello.vector(1)) > 32:
        raise _Garbage("the server sent a malformed ServerHello (session id)")
    hello.take(3)  # cipher suite, compression method
    if hello.done:  # no extensions at all
        return
    extensions = _Cursor(hello.vector(2), "ServerHello")
    if not hello.done:
        raise _Garbage("the server sent a malformed ServerHello (data after its extensions)")
    while not extensions.done:
        kind = extensions.number(2)
        yield kind, extensions.vector(2)


def _ocsp_response(body: bytes) -> bytes:
    """The DER OCSPResponse of a CertificateStatus message (RFC 6066 8)."""
    status = _Cursor(body, "CertificateStatus")
    if status.number(1) != _STATUS_TYPE_OCSP:
        raise _Garbage("the server sent a CertificateStatus of another type than OCSP")
    response = status.vector(3)
    if not response or not status.done:
        raise _Garbage("the server sent a malformed CertificateStatus")
    return response


async def _read_staple(reader: Channel) -> Staple:
    """What the server answers a :func:`client_hello` already sent: its staple, or none
    and why. Raises :class:`_Garbage` for what is no such answer."""
    try:
        incoming = _Reader(reader)
        kind, body = await incoming.message()
        if kind != _Message.SERVER_HELLO:
            raise _Garbage(f"the server answered the ClientHello with handshake message {kind}")
        echoed = [
            data
            for extension, data in _server_hello_extensions(body)
            if extension == _Extension.STATUS_REQUEST
        ]
        if not echoed:
            raise _NoStaple("the server did not promise one (no status_request in its ServerHello)")
        if echoed != [b""]:
            raise _Garbage("the server sent a malformed ServerHello (status_request)")
        while True:
            kind, body = await incoming.message()
            if kind == _Message.CERTIFICATE_STATUS:
                response = _ocsp_response(body)
                return Staple(response, f"{len(response)} bytes stapled")
            if kind == _Message.SERVER_HELLO_DONE:
                raise _NoStaple("the server promised one but sent none (RFC 6066 8 allows it)")
            if kind not in _BETWEEN_HELLO_AND_DONE:
                raise _Garbage(f"the server sent handshake message {kind} after its ServerHello")
    except _NoStaple as none:
        return Staple(None, str(none))


class _Stapled(HandshakeReached):
    """Ends the stapling session at its handshake with what the server answered."""

    def __init__(self, staple: Staple) -> None:
        super().__init__(staple.detail)
        self.staple = staple


class _StapleSession(HandshakeSession):
    """A probe's session whose TLS handshake is the stapling check's ClientHello."""

    async def start_tls(self) -> None:
        channel = self.tls_channel()
        with self.timed(Phase.TLS_HANDSHAKE):
            channel.write(client_hello(self.server_name_indication()))
            try:
                await channel.drain()
                staple = await _read_staple(channel)
            except ConnectionError as error:
                staple = Staple(None, f"the server dropped the connection ({_error(error)})")
            except _Garbage as garbage:
                staple = Staple(None, str(garbage), failed=True)
        raise _Stapled(staple)


async def fetch_staple(
    address: Address, module: ModuleConfig, converse: Converse, deadline: float
) -> Staple:
    """Ask the server at ``address``, reached as ``module`` does, for its staple by
    ``deadline`` (the event loop's clock); never raises."""
    session = _StapleSession(address, module)
    try:
        outcome = await until_handshake(session, converse, deadline, _Stapled, "OCSP stapling")
    except HandshakeStopped as stopped:
        return Staple(None, f"stapling connection: {stopped}", failed=True)
    return outcome.staple


def staple_source(probe: Session, converse: Converse) -> StapleSource:
    """How the stapling check asks the server ``probe`` talks to (the way ``converse``
    reaches it), which it is kept by as the TLS scan is (:func:`.tls_scan.scan_key`)."""
    return StapleSource(
        key=scan_key(probe.address, probe.module),
        fetch=functools.partial(fetch_staple, probe.address, probe.module, converse),
    )
