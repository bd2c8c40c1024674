"""SPF (RFC 7208): pick the one ``v=spf1`` record, parse it, count its DNS lookups.

The count follows section 4.6.4: ``include``, ``a``, ``mx``, ``ptr``, ``exists`` and the
``redirect`` modifier each cost one lookup, recursively through the records that
``include`` and ``redirect`` name; more than 10 makes the record a permerror. A
domain spec with macros (``%{i}``) depends on the sender and cannot be followed: it
counts one lookup and ends that branch. An included name without exactly one SPF
record is a permerror too. Lookups that time out make the verdict unknown (an error),
never "invalid".
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

LOOKUP_LIMIT = 10
MECHANISM = re.compile(
    r"^[+\-~?]?(all|include|a|mx|ptr|ip4|ip6|exists)(?::([^/\s]+))?(/\d+(?://\d+)?)?$",
    re.IGNORECASE,
)
MODIFIER = re.compile(r"^([a-z][a-z0-9_.\-]*)=(\S*)$", re.IGNORECASE)
COUNTED = frozenset({"include", "a", "mx", "ptr", "exists"})
NEEDS_TARGET = frozenset({"include", "exists", "ip4", "ip6"})

TxtLookup = Callable[[str], Awaitable[tuple[list[str] | None, str | None]]]
"""A name's TXT strings (None on NXDOMAIN), or an error reason."""


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


async def count_lookups(domain: str, lookup: TxtLookup) -> int:
    """The DNS lookups evaluating ``domain``'s SPF record costs, at most LOOKUP_LIMIT + 1."""
    count = 0
    pending = [domain]
    first = True
    while pending:
        name = pending.pop()
        texts, error = await lookup(name)
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
            count += 1
            if count > LOOKUP_LIMIT:
                return count
            target = term.target
            if term.name in ("include", "redirect") and target and "%" not in target:
                pending.append(target.rstrip("."))
    return count
