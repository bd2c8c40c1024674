"""STARTTLS with an MX the way a sender makes it, for the DANE and the MTA-STS checks.

The collector connects to each address of an MX on port 25 (``dane_port``,
``mta_sts_port``), says EHLO and STARTTLS, sends SNI for the MX name and reads the chain
the server presented, leaf first. The handshake does not verify: each check judges the
chain by its own rules (DANE by TLSA records, MTA-STS by the web PKI).

A pass makes each handshake (address, port, MX name) once, whichever checks ask for it,
and at most ``max_in_flight`` at a time with the pass's DNS queries (:class:`Handshakes`
shares their semaphore): with both checks on and on the same port, an MX sees one
connection per address and pass.

At most ``MAX_ADDRESSES`` (4) addresses of an MX are tried, IPv4 and IPv6 alternately
and each family in address order, so both families are covered and a pass tries the same
addresses as the last.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Sequence
from itertools import zip_longest

from cryptography import x509

from mail_exporter.tls_facts import peer_chain

MAX_REPLY_LINES = 100
MAX_ADDRESSES = 4


async def _reply(reader: asyncio.StreamReader) -> str:
    """The code of a (multi-line) SMTP reply."""
    for _ in range(MAX_REPLY_LINES):
        line = (await reader.readline()).decode("ascii", "replace")
        if len(line) < 4 or line[3] != "-":
            return line[:3]
    return ""


async def smtp_chain(
    address: str, port: int, server_name: str, time_limit: float, context: ssl.SSLContext
) -> tuple[bytes, ...]:
    """The chain (DER, leaf first) an SMTP server shows after STARTTLS; raises OSError."""
    async with asyncio.timeout(time_limit):
        reader, writer = await asyncio.open_connection(address, port)
        try:
            if await _reply(reader) != "220":
                raise OSError("no 220 greeting")
            writer.write(b"EHLO mail-exporter.invalid\r\n")
            if await _reply(reader) != "250":
                raise OSError("EHLO refused")
            writer.write(b"STARTTLS\r\n")
            if await _reply(reader) != "220":
                raise OSError("STARTTLS refused")
            await writer.start_tls(context, server_hostname=server_name)
            ssl_object = writer.get_extra_info("ssl_object")
            chain = peer_chain(ssl_object) if ssl_object else ()
            if not chain:
                raise OSError("no certificate")
            writer.write(b"QUIT\r\n")
            return chain
        finally:
            writer.close()


def certificates(chain_der: Sequence[bytes]) -> list[x509.Certificate]:
    """The chain without certificates that do not parse; empty if the leaf does not."""
    parsed = []
    for position, der in enumerate(chain_der):
        try:
            parsed.append(x509.load_der_x509_certificate(der))
        except ValueError:
            if position == 0:
                return []
    return parsed


def addresses_to_check(addresses: Sequence[str]) -> list[str]:
    """At most ``MAX_ADDRESSES`` of an MX's addresses, IPv4 and IPv6 alternately, sorted."""
    parsed = {ipaddress.ip_address(address) for address in addresses}
    by_family = [sorted(a for a in parsed if a.version == version) for version in (4, 6)]
    alternating = [a for pair in zip_longest(*by_family) for a in pair if a is not None]
    return [str(address) for address in alternating[:MAX_ADDRESSES]]


class Handshakes:
    """The STARTTLS handshakes of one pass: each once, within the pass's bound on work.

    :meth:`chain` is the chain an address showed, or the reason it showed none
    (``timeout``, ``connect``: refused, reset, no STARTTLS, a failed handshake).
    """

    def __init__(self, slots: asyncio.Semaphore, time_limit: float) -> None:
        self._slots = slots
        self._time_limit = time_limit
        self._context = ssl.create_default_context()
        self._context.check_hostname = False
        self._context.verify_mode = ssl.CERT_NONE
        self._made: dict[tuple[str, int, str], asyncio.Task[list[x509.Certificate] | str]] = {}

    async def chain(self, address: str, port: int, mx: str) -> list[x509.Certificate] | str:
        key = (address, port, mx)
        if key not in self._made:
            self._made[key] = asyncio.create_task(self._handshake(address, port, mx))
        return await self._made[key]

    async def _handshake(self, address: str, port: int, mx: str) -> list[x509.Certificate] | str:
        async with self._slots:
            try:
                chain_der = await smtp_chain(address, port, mx, self._time_limit, self._context)
            except TimeoutError:
                return "timeout"
            except (OSError, ssl.SSLError, EOFError):
                return "connect"
        return certificates(chain_der)
