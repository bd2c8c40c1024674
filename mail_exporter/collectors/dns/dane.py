"""DANE for SMTP (RFC 7672): TLSA records of ``_25._tcp.<mx>`` against the MX's certificate chain.

The collector makes its own STARTTLS handshake with each MX that has usable TLSA records
(port ``dane_port``, 25 by default), the way a DANE-aware sender would, and reads the
chain the server presented, leaf first (:mod:`.starttls`, shared with the MTA-STS check).
The handshake does not verify: DANE, not the web PKI, is what is checked here.

Its own handshake rather than the chain a scheduled SMTP probe saw: the DNS collector
must work without any scheduled SMTP target (most MX hosts to check have none), a
probe target names one address and port of its own choosing, while a sender connects
to every address of the MX on port 25 and sends SNI for the MX name, which is exactly
this handshake. A probe's chain would also be as old as the probe's last run, not
the pass's TLSA answer.

Every address of the MX counts, IPv4 and IPv6: a sender may reach any of them, so one
address presenting a stale certificate fails some deliveries (at most four are checked:
:func:`~.starttls.addresses_to_check`). The MX matches only when every address that
completed a handshake presented a chain that a usable record authenticates; an address
without a handshake (refused, timeout) is counted as a ``dane_smtp`` error and left out
of the verdict, which is unknown only when no address completed one. Per-address
verdicts are exported too, so an alert can say which address fails.

A record is usable for SMTP (RFC 7672 §3.1) with usage 3 or 2, selector 0 (whole
certificate) or 1 (SubjectPublicKeyInfo) and matching type 0 (exact), 1 (SHA-256) or
2 (SHA-512):

- 3 (DANE-EE) matches the leaf. Its names and dates are not checked (§3.1.1).
- 2 (DANE-TA) matches a certificate the server sent after its leaf, and only if the
  leaf chains up to that certificate, as the only trust anchor, with valid signatures
  and dates, and names the MX host in its subjectAltName (§3.2.2; the MX host is also
  the TLSA base domain, as CNAMEs are not followed). A record holding only the key of a
  trust anchor that the server does not send (RFC 7671 §5.2.2) is not supported: it
  matches only when the server sends the anchor's certificate too.
- 0 (PKIX-TA) and 1 (PKIX-EE) are unusable for SMTP (§3.1.3) and never match, nor do
  unknown selectors and matching types.

An MX whose TLSA records are all unusable shows as not matching, without a handshake: a
DANE sender finds nothing there to authenticate with, and falls back to TLS without
authentication (Postfix: mandatory unauthenticated TLS). Mail still flows, but the
records protect nothing: ``mail_dns_dane_tlsa_usable_records`` tells this case apart, for
a warning (MailDaneUnusable) instead of the critical MailDaneMismatch.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.verification import Store, VerificationError

from mail_exporter.collectors.dns.resolver import Lookups
from mail_exporter.collectors.dns.starttls import Handshakes, addresses_to_check
from mail_exporter.tls_facts import server_verifier

DANE_TA = 2
DANE_EE = 3
_DIGESTS = {1: "sha256", 2: "sha512"}  # matching type 0 is the selected data itself


@dataclass(frozen=True)
class Tlsa:
    usage: int
    selector: int
    mtype: int
    data: bytes


@dataclass(frozen=True)
class Dane:
    records: int = 0
    usable: int = 0
    matches: bool | None = None  # every address that completed a handshake matched
    authenticated: bool | None = None
    errors: tuple[tuple[str, str], ...] = ()  # (check, reason)
    addresses_checked: int = 0  # handshakes tried, at most starttls.MAX_ADDRESSES
    address_matches: Mapping[str, bool] = field(default_factory=dict)  # by completed address


def usable(record: Tlsa) -> bool:
    """Whether an SMTP client may authenticate with the record (RFC 7672 §3.1)."""
    return (
        record.usage in (DANE_TA, DANE_EE)
        and record.selector in (0, 1)
        and (record.mtype == 0 or record.mtype in _DIGESTS)
    )


def _associated(record: Tlsa, certificate: x509.Certificate) -> bool:
    """Whether the record's data is that of the certificate (selector and matching type)."""
    if record.selector == 0:
        selected = certificate.public_bytes(Encoding.DER)
    else:
        try:
            key = certificate.public_key()
        except UnsupportedAlgorithm:
            return False
        selected = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if record.mtype == 0:
        return selected == record.data
    return hashlib.new(_DIGESTS[record.mtype], selected).digest() == record.data


def _chains_up(chain: Sequence[x509.Certificate], anchor: x509.Certificate, mx: str) -> bool:
    """Whether the leaf verifies up to ``anchor`` alone and names ``mx`` (RFC 7672 §3.2)."""
    try:
        server_verifier(Store([anchor]), mx).verify(chain[0], list(chain[1:]))
    except (VerificationError, ValueError):  # ValueError: mx is no valid DNS name
        return False
    return True


def tlsa_matches(record: Tlsa, chain: Sequence[x509.Certificate], mx: str) -> bool:
    """Whether the record authenticates the chain (leaf first) that MX host ``mx`` sent."""
    if not usable(record) or not chain:
        return False
    if record.usage == DANE_EE:
        return _associated(record, chain[0])
    return any(
        _associated(record, anchor) and _chains_up(chain, anchor, mx) for anchor in chain[1:]
    )


async def _address_matches(
    handshakes: Handshakes, candidates: Sequence[Tlsa], mx: str, address: str, port: int
) -> bool | str:
    """Whether the chain ``address`` presents matches a record, or the reason of no handshake."""
    chain = await handshakes.chain(address, port, mx)
    if isinstance(chain, str):
        return chain
    return any(tlsa_matches(record, chain, mx) for record in candidates)


async def check_dane(
    lookups: Lookups, handshakes: Handshakes, mx: str, addresses: list[str], port: int
) -> Dane:
    outcome = await lookups.query(f"_25._tcp.{mx}", "TLSA")
    if outcome.error:
        return Dane(errors=(("dane", outcome.error),))
    records = [
        Tlsa(r.usage, r.selector, r.mtype, r.cert)  # type: ignore[attr-defined]
        for r in outcome.records
    ]
    if not records:
        return Dane()
    candidates = [record for record in records if usable(record)]
    found = Dane(len(records), len(candidates), authenticated=outcome.authenticated)
    if not candidates:
        return replace(found, matches=False)
    if not addresses:
        return replace(found, errors=(("dane_smtp", "resolve"),))
    checked = addresses_to_check(addresses)
    verdicts = await asyncio.gather(
        *(_address_matches(handshakes, candidates, mx, address, port) for address in checked)
    )
    matches = {a: v for a, v in zip(checked, verdicts, strict=True) if isinstance(v, bool)}
    return replace(
        found,
        matches=all(matches.values()) if matches else None,
        errors=tuple(("dane_smtp", v) for v in verdicts if isinstance(v, str)),
        addresses_checked=len(checked),
        address_matches=matches,
    )
