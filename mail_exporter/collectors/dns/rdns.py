"""Reverse DNS of each sending IP: PTR present, forward-confirmed, matching the HELO name.

Forward-confirmed (FCrDNS): one of the PTR names resolves back to the IP. The HELO
check compares the configured HELO name with the PTR names (case and trailing dot
ignored); without a configured HELO name it is not reported.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import dns.reversename

from mail_exporter.collectors.dns.resolver import Lookups


@dataclass(frozen=True)
class ReverseDns:
    ptr_present: bool | None = None
    forward_confirmed: bool | None = None
    matches_helo: bool | None = None
    error: str | None = None


def _host(name: str) -> str:
    return name.rstrip(".").lower()


async def check_reverse(lookups: Lookups, ip: str, helo_name: str | None) -> ReverseDns:
    outcome = await lookups.query(dns.reversename.from_address(ip).to_text(), "PTR")
    if outcome.error:
        return ReverseDns(error=outcome.error)
    names = sorted({_host(record.to_text()) for record in outcome.records})
    matches = None if helo_name is None else _host(helo_name) in names
    if not names:
        return ReverseDns(ptr_present=False, forward_confirmed=False, matches_helo=matches)
    wanted = ipaddress.ip_address(ip)
    errors = []
    for name in names:
        addresses, error = await lookups.addresses(name)
        if any(ipaddress.ip_address(address) == wanted for address in addresses):
            return ReverseDns(ptr_present=True, forward_confirmed=True, matches_helo=matches)
        if error:
            errors.append(error)
    if errors:
        return ReverseDns(ptr_present=True, matches_helo=matches, error=errors[0])
    return ReverseDns(ptr_present=True, forward_confirmed=False, matches_helo=matches)
