"""SPF (RFC 7208): pick the one ``v=spf1`` record, parse it, count its DNS lookups.

The count follows section 4.6.4: ``include``, ``a``, ``mx``, ``ptr``, ``exists`` and the
``redirect`` modifier each cost one lookup, recursively through the records that
``include`` and ``redirect`` name; more than 10 makes the record a permerror. Every
include costs a lookup before it is followed, so a loop of includes ends past the
limit too. A domain spec with macros (``%{i}``) depends on the sender and cannot be
followed: it counts one lookup and ends that branch. An included name without exactly
one SPF record is a permerror (sections 5.2 and 6.1), and so is a target that is no
valid domain name.

Void lookups (section 4.6.4: a query answered NXDOMAIN or with no records; more than 2
make a permerror) are counted where they do not depend on the sender: an ``a`` whose
name has neither an A nor an AAAA record (an evaluation asks for one of them, by the
sender's address family, so a name with only an A record is void for IPv6 senders and
not counted here), an ``mx`` whose name has no MX records, and each MX host of it
without an address. An ``mx`` with more than 10 hosts is a permerror. ``ptr`` and
``exists`` are left out: what they query depends on the connecting IP, or on the
sender through macros. An include or redirect target without a record never reaches
the void count: it is a permerror on its own. Once the count passes 2 no more ``a``
or ``mx`` names are looked up, so it stops at 3.

Lookups that time out make the verdict unknown (an error), never "invalid".
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import dns.exception
import dns.name

LOOKUP_LIMIT = 10
VOID_LIMIT = 2
MX_HOST_LIMIT = 10
MECHANISM = re.compile(
    r"^[+\-~?]?(all|include|a|mx|ptr|ip4|ip6|exists)(?::([^/\s]+))?(/\d+(?://\d+)?)?$",
    re.IGNORECASE,
)
MODIFIER = re.compile(r"^([a-z][a-z0-9_.\-]*)=(\S*)$", re.IGNORECASE)
COUNTED = frozenset({"include", "a", "mx", "ptr", "exists"})
NEEDS_TARGET = frozenset({"include", "exists", "ip4", "ip6"})

Lookup = Callable[[str], Awaitable[tuple[list[str] | None, str | None]]]
"""A name's records as text (None or empty when void), or an error reason."""


@dataclass(frozen=True)
class Queries:
    """The DNS lookups the count makes."""

    txt: Lookup  # TXT strings, one text per record
    mx: Lookup  # MX host names, "" for a null MX
    addresses: Lookup  # A and AAAA addresses together


@dataclass
class Cost:
    lookups: int = 0  # terms that query DNS, at most LOOKUP_LIMIT + 1
    void: int = 0  # void lookups, at most VOID_LIMIT + 1

    def within_limits(self) -> bool:
        return self.lookups <= LOOKUP_LIMIT and self.void <= VOID_LIMIT


class SpfError(Exception):
    """The record breaks RFC 7208 (a permerror): the message says how."""


class SpfUnknown(Exception):
    """A lookup failed, so the verdict is unknown; the message is the bounded reason."""


def spf_records(texts: list[str]) -> list[str]:
    return [
        text for text in texts if text.lower() == "v=spf1" or text.lower().startswith("v=spf1 ")
    ]


@dataclass(frozen=True)
class Term:
    name: str  # mechanism or modifier name, lower case
    target: str | None
    modifier: bool


def parse(record: str) -> list[Term]:
    terms = []
    for word in record.split()[1:]:
        mechanism = MECHANISM.match(word)
        if mechanism:
            name = mechanism.group(1).lower()
            if name in NEEDS_TARGET and not mechanism.group(2):
                raise SpfError(f"{name} needs a value")
            terms.append(Term(name, mechanism.group(2), modifier=False))
            continue
        modifier = MODIFIER.match(word)
        if modifier is None:
            raise SpfError(f"unknown term {word[:40]!r}")
        terms.append(Term(modifier.group(1).lower(), modifier.group(2), modifier=True))
    if sum(term.modifier and term.name == "redirect" for term in terms) > 1:
        raise SpfError("more than one redirect")
    return terms


def domain_name(target: str) -> str:
    """``target`` without its final dot; a name that DNS cannot carry is a permerror."""
    try:
        name = dns.name.from_text(target)
    except dns.exception.DNSException:
        name = dns.name.root
    if name == dns.name.root:
        raise SpfError(f"invalid domain {target[:40]!r}")
    return target.rstrip(".")


async def _void(lookup: Lookup, name: str) -> bool:
    found, error = await lookup(name)
    if error is not None:
        raise SpfUnknown(error)
    return not found


async def void_lookups(mechanism: str, name: str, queries: Queries) -> int:
    """The void lookups of an ``a`` or ``mx`` term for ``name``."""
    if mechanism == "a":
        return int(await _void(queries.addresses, name))
    hosts, error = await queries.mx(name)
    if error is not None:
        raise SpfUnknown(error)
    if not hosts:
        return 1
    if len(hosts) > MX_HOST_LIMIT:
        raise SpfError(f"{len(hosts)} MX hosts at {name}, more than {MX_HOST_LIMIT}")
    found = await asyncio.gather(*(_void(queries.addresses, host) for host in hosts if host))
    return sum(found)


async def count_lookups(domain: str, queries: Queries) -> Cost:
    """The DNS lookups and void lookups evaluating ``domain``'s SPF record costs."""
    cost = Cost()
    pending = [domain]
    first = True
    while pending:
        name = pending.pop()
        texts, error = await queries.txt(name)
        if error is not None:
            raise SpfUnknown(error)
        records = spf_records(texts or [])
        if len(records) != 1:
            where = "" if first else f" at {name}"
            raise SpfError(f"{len(records)} SPF records{where}, not one")
        first = False
        terms = parse(records[0])
        has_all = any(term.name == "all" and not term.modifier for term in terms)
        for term in terms:
            if term.modifier and term.name == "redirect":
                if has_all:
                    continue  # ignored when the record has "all" (section 6.1)
            elif term.modifier or term.name not in COUNTED:
                continue
            cost.lookups += 1
            if cost.lookups > LOOKUP_LIMIT:
                return cost
            target = term.target if term.target is not None else name
            if not target or "%" in target:
                continue
            if term.name in ("include", "redirect"):
                pending.append(domain_name(target))
            elif term.name in ("a", "mx") and cost.void <= VOID_LIMIT:
                found = await void_lookups(term.name, domain_name(target), queries)
                cost.void = min(cost.void + found, VOID_LIMIT + 1)
    return cost
