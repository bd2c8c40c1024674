"""The records of one mail domain: MX, SPF, DMARC, DKIM keys and TLS-RPT.

Each check returns plain values (None where a lookup failed, with the reason added to
``errors``), so that a failed lookup is an error and never a bad record. Decisions:

* MX: each host must resolve to an address (A or AAAA); a null MX (``0 .``, RFC 7505) is
  an MX set with no hosts. Each host of the section's ``mx_hosts`` is expected among
  them (``mx_expected``), and the hosts that are not expected are counted
  (``mx_unexpected``): a mistyped or hijacked MX change shows in both.
* DMARC: the record at ``_dmarc.<domain>`` only; the organisational-domain fallback of
  RFC 7489 needs the public suffix list and is left out. A policy other than none,
  quarantine and reject is reported as ``invalid``; ``pct`` defaults to 100.
* DKIM: ``<selector>._domainkey.<domain>``; an empty ``p=`` is a revoked key (not
  present); the size is the RSA modulus, or 256 for Ed25519.
* TLS-RPT: exactly one ``v=TLSRPTv1`` record at ``_smtp._tls.<domain>``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from mail_exporter.collectors.dns import spf
from mail_exporter.collectors.dns.resolver import Lookups, Outcome

DMARC_POLICIES = ("none", "quarantine", "reject")


@dataclass
class DomainRecords:
    """What the DNS says about one domain; None where the lookup failed."""

    mx_hosts: list[str] | None = None
    mx_resolvable: dict[str, bool] = field(default_factory=dict)
    mx_addresses: dict[str, list[str]] = field(default_factory=dict)
    mx_authenticated: bool | None = None
    mx_expected: dict[str, bool] = field(default_factory=dict)  # by configured MX host
    mx_unexpected: int | None = None  # MX hosts not configured, with mx_hosts set
    spf_records: int | None = None
    spf_valid: bool | None = None
    spf_lookups: int | None = None
    spf_void_lookups: int | None = None
    dmarc_present: bool | None = None
    dmarc_policy: str | None = None
    dmarc_ratio: float | None = None
    dkim_present: dict[str, bool] = field(default_factory=dict)
    dkim_bits: dict[str, int] = field(default_factory=dict)
    tls_rpt_present: bool | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)  # (check, reason)


def tags(text: str) -> dict[str, str]:
    """``k=v; k=v`` tag lists (DMARC, DKIM, MTA-STS TXT), keys lower case."""
    found = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            found[key.strip().lower()] = value.strip()
    return found


def versioned(outcome: Outcome, version: str) -> list[str]:
    """TXT records that start with the ``v=`` tag given."""
    return [text for text in outcome.texts() if tags(text).get("v", "").lower() == version.lower()]


def dkim_key_bits(record: str) -> int | None:
    """The key size of a DKIM record, None when revoked or unreadable."""
    values = tags(record)
    key = "".join(values.get("p", "").split())
    if not key:
        return None
    if values.get("k", "rsa").lower() == "ed25519":
        return 256
    try:
        public = load_der_public_key(base64.b64decode(key, validate=True))
    except (ValueError, binascii.Error):
        return None
    return public.key_size if isinstance(public, rsa.RSAPublicKey) else None


class RecordChecks:
    def __init__(self, lookups: Lookups) -> None:
        self.lookups = lookups

    async def _txt(self, name: str) -> tuple[list[str] | None, str | None]:
        outcome = await self.lookups.query(name, "TXT")
        if outcome.error:
            return None, outcome.error
        return (outcome.texts() if outcome.exists else None), None

    async def _mx_names(self, name: str) -> tuple[list[str] | None, str | None]:
        outcome = await self.lookups.query(name, "MX")
        if outcome.error:
            return None, outcome.error
        exchanges = [getattr(record, "exchange", "") for record in outcome.records]
        return [str(exchange).rstrip(".").lower() for exchange in exchanges], None

    async def _addresses(self, name: str) -> tuple[list[str] | None, str | None]:
        addresses, error = await self.lookups.addresses(name)
        return (None, error) if error else (addresses, None)

    async def mx(self, domain: str, result: DomainRecords, expected: list[str]) -> None:
        outcome = await self.lookups.query(domain, "MX")
        if outcome.error:
            result.errors.append(("mx", outcome.error))
            return
        result.mx_authenticated = outcome.authenticated
        hosts = sorted(
            {str(getattr(record, "exchange", "")).rstrip(".").lower() for record in outcome.records}
            - {""}
        )
        result.mx_hosts = hosts
        if expected:
            result.mx_expected = {host: host in hosts for host in expected}
            result.mx_unexpected = len(set(hosts) - set(expected))
        for host in hosts:
            addresses, error = await self.lookups.addresses(host)
            if error:
                result.errors.append(("mx", error))
                continue
            result.mx_resolvable[host] = bool(addresses)
            result.mx_addresses[host] = addresses

    async def spf(self, domain: str, result: DomainRecords) -> None:
        texts, error = await self._txt(domain)
        if error:
            result.errors.append(("spf", error))
            return
        result.spf_records = len(spf.spf_records(texts or []))
        queries = spf.Queries(txt=self._txt, mx=self._mx_names, addresses=self._addresses)
        try:
            cost = await spf.count_lookups(domain, queries)
        except spf.SpfUnknown as unknown:
            result.errors.append(("spf", str(unknown)))
            return
        except spf.SpfError:
            result.spf_valid = False
            return
        result.spf_lookups, result.spf_void_lookups = cost.lookups, cost.void
        result.spf_valid = cost.within_limits()

    async def dmarc(self, domain: str, result: DomainRecords) -> None:
        outcome = await self.lookups.query(f"_dmarc.{domain}", "TXT")
        if outcome.error:
            result.errors.append(("dmarc", outcome.error))
            return
        records = versioned(outcome, "DMARC1")
        result.dmarc_present = len(records) == 1
        if len(records) == 1:
            values = tags(records[0])
            policy = values.get("p", "").lower()
            result.dmarc_policy = policy if policy in DMARC_POLICIES else "invalid"
            try:
                result.dmarc_ratio = min(max(int(values.get("pct", "100")), 0), 100) / 100
            except ValueError:
                result.dmarc_ratio = 1.0

    async def dkim(self, domain: str, selector: str, result: DomainRecords) -> None:
        outcome = await self.lookups.query(f"{selector}._domainkey.{domain}", "TXT")
        if outcome.error:
            result.errors.append(("dkim", outcome.error))
            return
        bits = [dkim_key_bits(text) for text in outcome.texts()]
        known = [size for size in bits if size is not None]
        result.dkim_present[selector] = bool(known)
        if known:
            result.dkim_bits[selector] = min(known)

    async def tls_rpt(self, domain: str, result: DomainRecords) -> None:
        outcome = await self.lookups.query(f"_smtp._tls.{domain}", "TXT")
        if outcome.error:
            result.errors.append(("tls_rpt", outcome.error))
            return
        result.tls_rpt_present = len(versioned(outcome, "TLSRPTv1")) == 1
