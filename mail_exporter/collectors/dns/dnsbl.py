"""Blocklist lookups per RFC 5782, with the pitfalls of other checkers avoided.

* The query name is the IPv4 address with its octets reversed, or the IPv6 address as
  32 reversed nibbles, under the zone; a domain blocklist is queried for the domain.
* An IP blocklist lists with answers in 127.0.0.2-127.0.0.255: the return code is the
  ``code`` label (a bounded set: at most 254 values per zone).
* 127.255.255.x is the list refusing the query (Spamhaus answers that to public and
  unregistered resolvers): an error (``refused``), never "listed". Other answers
  (127.0.0.1, addresses outside 127/8 from resolvers that rewrite NXDOMAIN) are an
  error (``unexpected_answer``) too, as are timeouts and SERVFAIL.
* NXDOMAIN, or a name without an A record, is "not listed".
* A domain blocklist lists with answers in 127.0.0.2-127.0.0.254 and 127.0.1.2-127.0.1.254
  (at most 506 codes per zone). Spamhaus DBL, the default, answers in 127.0.1.0/24
  (127.0.1.2 spam domain, ...) and 127.0.1.255 when it is asked for an IP address
  ("IP queries prohibited"): its refusal to answer, so ``refused`` like 127.255.255.x.
  127.0.1.0 and 127.0.1.1 mirror 127.0.0.0 and 127.0.0.1, which RFC 5782 section 2.1
  keeps from meaning "listed", and 127.0.0.255 is the network's broadcast address,
  which no domain list answers with: all three are ``unexpected_answer``. An IP
  blocklist answering in 127.0.1.0/24 is an ``unexpected_answer`` as well.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from mail_exporter.collectors.dns.resolver import Lookups

_Range = tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]


def _range(first: str, last: str) -> _Range:
    return ipaddress.IPv4Address(first), ipaddress.IPv4Address(last)


@dataclass(frozen=True)
class ReturnCodes:
    """What a kind of blocklist answers: ranges that mean listed, networks that mean refused."""

    listed: tuple[_Range, ...]
    refused: tuple[ipaddress.IPv4Network, ...]


REFUSED = ipaddress.IPv4Network("127.255.255.0/24")
LISTED = ReturnCodes(listed=(_range("127.0.0.2", "127.0.0.255"),), refused=(REFUSED,))
DOMAIN_LISTED = ReturnCodes(
    listed=(_range("127.0.0.2", "127.0.0.254"), _range("127.0.1.2", "127.0.1.254")),
    refused=(REFUSED, ipaddress.IPv4Network("127.0.1.255/32")),
)


@dataclass(frozen=True)
class Listing:
    """One check's verdict: return codes when listed, empty when not, or an error."""

    codes: list[str] = field(default_factory=list)
    error: str | None = None


def query_name(ip: str, zone: str) -> str:
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv4Address):
        reversed_part = ".".join(reversed(str(address).split(".")))
    else:
        reversed_part = ".".join(reversed(address.exploded.replace(":", "")))
    return f"{reversed_part}.{zone.rstrip('.')}"


def classify(answers: list[str], meaning: ReturnCodes = LISTED) -> Listing:
    codes = set()
    for text in answers:
        try:
            address = ipaddress.IPv4Address(text)
        except ValueError:
            return Listing(error="unexpected_answer")
        if any(address in network for network in meaning.refused):
            return Listing(error="refused")
        if not any(first <= address <= last for first, last in meaning.listed):
            return Listing(error="unexpected_answer")
        codes.add(text)
    return Listing(codes=sorted(codes, key=ipaddress.IPv4Address))


async def check_listing(lookups: Lookups, name: str, domain: bool = False) -> Listing:
    outcome = await lookups.query(name, "A")
    if outcome.error:
        return Listing(error=outcome.error)
    answers = [record.to_text() for record in outcome.records]
    return classify(answers, DOMAIN_LISTED if domain else LISTED)
