"""MTA-STS (RFC 8461): the ``_mta-sts`` TXT record and the policy fetched over HTTPS.

The policy comes from ``https://mta-sts.<domain>/.well-known/mta-sts.txt``, verified
against the system's CAs or the section's ``mta_sts_ca_file``; redirects are not
followed (section 3.3). ``mx_hosts_covered`` says of each MX host of the domain
whether it matches one of the policy's ``mx`` patterns (``*.example.com`` matches
exactly one leading label), ``mx_covered`` whether they all do: a sender enforcing the
policy refuses an MX that does not.

With the policy in mode ``enforce`` or ``testing``, each covered MX host is also
judged as such a sender judges it (section 4.1, :func:`check_mx_certificates`): after
STARTTLS on port ``mta_sts_port`` (25; :mod:`.starttls`, the handshake the DANE check
makes too), the chain must verify up to the system's CAs (or ``mta_sts_ca_file``) and
the leaf must name the MX host in a subjectAltName dNSName (a wildcard stands for its
whole leftmost label, RFC 6125; the common name does not count). As for DANE, every
address of the MX counts (at most four): the MX is valid only when every address that
completed a handshake showed a valid chain, and an address without one is an
``mta_sts_smtp`` error, left out of the verdict. An uncovered MX gets no handshake: a
sender refuses it whatever its certificate, and ``mx_hosts_covered`` says so already.
In mode ``none`` senders apply nothing, so nothing is judged.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import aiohttp

from mail_exporter.collectors.dns.records import tags
from mail_exporter.collectors.dns.resolver import Lookups
from mail_exporter.collectors.dns.starttls import Handshakes, addresses_to_check
from mail_exporter.decimal_text import ascii_int
from mail_exporter.tls_facts import verify_chain

MODES = ("enforce", "testing", "none")
APPLIED_MODES = ("enforce", "testing")  # the modes in which senders judge the MX
MAX_POLICY_BYTES = 64 * 1024


def policy_url(domain: str) -> str:
    return f"https://mta-sts.{domain}/.well-known/mta-sts.txt"


@dataclass
class Policy:
    version: str | None = None
    mode: str | None = None
    max_age: int | None = None
    mx: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.version == "STSv1" and self.mode in MODES and self.max_age is not None


def parse_policy(text: str) -> Policy:
    policy = Policy()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "version":
            policy.version = value
        elif key == "mode":
            policy.mode = value.lower()
        elif key == "max_age":
            policy.max_age = ascii_int(value)
        elif key == "mx":
            policy.mx.append(value.rstrip(".").lower())
    return policy


def mx_matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        label, _, rest = host.partition(".")
        return bool(label) and rest == pattern[2:]
    return host == pattern


@dataclass(frozen=True)
class MtaSts:
    record_present: bool | None = None
    policy: Policy | None = None
    policy_valid: bool | None = None
    mx_covered: bool | None = None
    mx_hosts_covered: Mapping[str, bool] = field(default_factory=dict)  # by MX host
    mx_certificates_valid: Mapping[str, bool] = field(default_factory=dict)  # by covered MX
    errors: list[tuple[str, str]] = field(default_factory=list)


async def fetch_policy(
    session: aiohttp.ClientSession, url: str, context: ssl.SSLContext, time_limit: float
) -> tuple[str | None, str | None]:
    """The policy text, or an error reason (http_status, tls, connect, timeout)."""
    try:
        async with session.get(
            url,
            ssl=context,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=time_limit),
        ) as response:
            if response.status != 200:
                return None, "http_status"
            body = await response.content.read(MAX_POLICY_BYTES)
    except TimeoutError:
        return None, "timeout"
    except aiohttp.ClientSSLError:
        return None, "tls"
    except (aiohttp.ClientError, OSError):
        return None, "connect"
    return body.decode("utf-8", "replace"), None


async def check_mta_sts(
    lookups: Lookups,
    session: aiohttp.ClientSession,
    context: ssl.SSLContext,
    domain: str,
    mx_hosts: list[str] | None,
    time_limit: float,
    url_of: Callable[[str], str] = policy_url,
) -> MtaSts:
    outcome = await lookups.query(f"_mta-sts.{domain}", "TXT")
    if outcome.error:
        return MtaSts(errors=[("mta_sts", outcome.error)])
    records = [text for text in outcome.texts() if tags(text).get("v") == "STSv1"]
    if len(records) != 1:
        return MtaSts(record_present=False)
    text, error = await fetch_policy(session, url_of(domain), context, time_limit)
    if text is None:
        return MtaSts(record_present=True, errors=[("mta_sts_policy", error or "error")])
    policy = parse_policy(text)
    found = MtaSts(record_present=True, policy=policy, policy_valid=policy.valid)
    if mx_hosts is None or not policy.valid:
        return found
    covered = {host: any(mx_matches(host, p) for p in policy.mx) for host in mx_hosts}
    return replace(found, mx_covered=all(covered.values()), mx_hosts_covered=covered)


async def _mx_certificate_valid(
    handshakes: Handshakes, mx: str, address: str, port: int, ca_file: str | None
) -> bool | str:
    """Whether ``address`` of ``mx`` shows a chain valid for ``mx``, or why it showed none."""
    chain = await handshakes.chain(address, port, mx)
    if isinstance(chain, str):
        return chain
    return bool(chain) and verify_chain(chain, mx, ca_file) is None


async def _mx_valid(
    handshakes: Handshakes, mx: str, addresses: list[str], port: int, ca_file: str | None
) -> tuple[bool | None, list[tuple[str, str]]]:
    if not addresses:
        return None, [("mta_sts_smtp", "resolve")]
    verdicts = await asyncio.gather(
        *(
            _mx_certificate_valid(handshakes, mx, address, port, ca_file)
            for address in addresses_to_check(addresses)
        )
    )
    valid = [v for v in verdicts if isinstance(v, bool)]
    errors = [("mta_sts_smtp", v) for v in verdicts if isinstance(v, str)]
    return (all(valid) if valid else None), errors


async def check_mx_certificates(
    sts: MtaSts,
    handshakes: Handshakes,
    mx_addresses: Mapping[str, list[str]],
    port: int,
    ca_file: str | None,
) -> MtaSts:
    """``sts`` with the certificate verdict of each MX its policy covers (mode enforce, testing)."""
    if sts.policy is None or not sts.policy_valid or sts.policy.mode not in APPLIED_MODES:
        return sts
    hosts = [host for host, covered in sts.mx_hosts_covered.items() if covered]
    verdicts = await asyncio.gather(
        *(_mx_valid(handshakes, h, mx_addresses.get(h, []), port, ca_file) for h in hosts)
    )
    valid = {h: v for h, (v, _) in zip(hosts, verdicts, strict=True) if v is not None}
    errors = [error for _, found in verdicts for error in found]
    return replace(sts, mx_certificates_valid=valid, errors=[*sts.errors, *errors])
