"""MTA-STS (RFC 8461): the ``_mta-sts`` TXT record and the policy fetched over HTTPS.

The policy comes from ``https://mta-sts.<domain>/.well-known/mta-sts.txt``, verified
against the system's CAs or the section's ``mta_sts_ca_file``; redirects are not
followed (section 3.3). ``mx_covered`` says whether every MX host of the domain
matches one of the policy's ``mx`` patterns (``*.example.com`` matches exactly one
leading label): a sender enforcing the policy refuses an MX that does not.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from mail_exporter.collectors.dns.records import tags
from mail_exporter.collectors.dns.resolver import Lookups
from mail_exporter.decimal_text import ascii_int

MODES = ("enforce", "testing", "none")
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
    covered = None
    if mx_hosts is not None and policy.valid:
        covered = all(any(mx_matches(host, p) for p in policy.mx) for host in mx_hosts)
    return MtaSts(record_present=True, policy=policy, policy_valid=policy.valid, mx_covered=covered)
