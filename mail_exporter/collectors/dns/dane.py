"""DANE for SMTP (RFC 7672): TLSA records of ``_25._tcp.<mx>`` against the MX's certificate.

The collector makes its own STARTTLS handshake with each MX that has TLSA records (on
the address the configured resolver gave for it, port ``dane_port``, 25 by default), the
way a DANE-aware sender would, and compares the leaf certificate it was shown. The
handshake does not verify the chain: DANE, not the web PKI, is what is checked here.

Usages 3 (DANE-EE) and 1 (PKIX-EE) are compared with the leaf, selector 0 (whole
certificate) or 1 (public key), matching 0 (exact), 1 (SHA-256) or 2 (SHA-512). Usages
0 and 2 (trust anchors) need the chain the server sent, which Python 3.11's ssl module
does not give out: such records never match, so an MX with only trust-anchor records
shows as not matching (RFC 7672 recommends 3 1 1 for SMTP).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mail_exporter.collectors.dns.resolver import Lookups

MAX_REPLY_LINES = 100


@dataclass(frozen=True)
class Tlsa:
    usage: int
    selector: int
    mtype: int
    data: bytes


@dataclass(frozen=True)
class Dane:
    records: int = 0
    matches: bool | None = None
    authenticated: bool | None = None
    error: tuple[str, str] | None = None  # (check, reason)


def tlsa_matches(record: Tlsa, certificate_der: bytes) -> bool:
    if record.usage not in (1, 3):
        return False
    if record.selector == 0:
        selected = certificate_der
    elif record.selector == 1:
        certificate = x509.load_der_x509_certificate(certificate_der)
        selected = certificate.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
    else:
        return False
    if record.mtype == 0:
        return selected == record.data
    algorithm = {1: "sha256", 2: "sha512"}.get(record.mtype)
    return algorithm is not None and hashlib.new(algorithm, selected).digest() == record.data


async def _reply(reader: asyncio.StreamReader) -> str:
    """The code of a (multi-line) SMTP reply."""
    for _ in range(MAX_REPLY_LINES):
        line = (await reader.readline()).decode("ascii", "replace")
        if len(line) < 4 or line[3] != "-":
            return line[:3]
    return ""


async def smtp_certificate(address: str, port: int, server_name: str, time_limit: float) -> bytes:
    """The leaf certificate (DER) an SMTP server shows after STARTTLS; raises OSError."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
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
            der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
            if not der:
                raise OSError("no certificate")
            writer.write(b"QUIT\r\n")
            return bytes(der)
        finally:
            writer.close()


async def check_dane(
    lookups: Lookups, mx: str, addresses: list[str], port: int, time_limit: float
) -> Dane:
    outcome = await lookups.query(f"_25._tcp.{mx}", "TLSA")
    if outcome.error:
        return Dane(error=("dane", outcome.error))
    records = [
        Tlsa(r.usage, r.selector, r.mtype, r.cert)  # type: ignore[attr-defined]
        for r in outcome.records
    ]
    if not records:
        return Dane()
    if not addresses:
        return Dane(
            len(records), authenticated=outcome.authenticated, error=("dane_smtp", "resolve")
        )
    try:
        der = await smtp_certificate(addresses[0], port, mx, time_limit)
    except TimeoutError:
        reason = "timeout"
    except (OSError, ssl.SSLError, EOFError):
        reason = "connect"
    else:
        return Dane(
            len(records),
            matches=any(tlsa_matches(record, der) for record in records),
            authenticated=outcome.authenticated,
        )
    return Dane(len(records), authenticated=outcome.authenticated, error=("dane_smtp", reason))
