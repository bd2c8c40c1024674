"""One pass of every DNS check of the section, concurrently, into a :class:`Results`."""

from __future__ import annotations

import asyncio
import itertools
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import aiohttp

from mail_exporter.collectors.dns import dnsbl, mtasts
from mail_exporter.collectors.dns.config import DnsConfig, DnsResolverConfig
from mail_exporter.collectors.dns.dane import Dane, check_dane
from mail_exporter.collectors.dns.rdns import ReverseDns, check_reverse
from mail_exporter.collectors.dns.records import DomainRecords, RecordChecks
from mail_exporter.collectors.dns.resolver import Lookups
from mail_exporter.collectors.dns.starttls import Handshakes


@dataclass
class Results:
    domains: dict[str, DomainRecords] = field(default_factory=dict)
    mta_sts: dict[str, mtasts.MtaSts] = field(default_factory=dict)
    dane: dict[str, Dane] = field(default_factory=dict)  # by MX host
    reverse: dict[str, ReverseDns] = field(default_factory=dict)  # by IP
    ip_listings: dict[tuple[str, str], dnsbl.Listing] = field(default_factory=dict)  # zone, IP
    domain_listings: dict[tuple[str, str], dnsbl.Listing] = field(default_factory=dict)
    finished_at: float = 0.0

    def check_errors(self) -> list[tuple[str, str]]:
        """(check, reason) of every lookup that ended without a verdict in this pass."""
        errors = [error for records in self.domains.values() for error in records.errors]
        errors += [error for sts in self.mta_sts.values() for error in sts.errors]
        errors += [error for dane in self.dane.values() for error in dane.errors]
        errors += [("ptr", r.error) for r in self.reverse.values() if r.error]
        return errors

    def blocklist_errors(self) -> list[tuple[str, str]]:
        """(zone, reason) of every blocklist lookup without a verdict in this pass."""
        listings = [*self.ip_listings.items(), *self.domain_listings.items()]
        return [(zone, listing.error) for (zone, _), listing in listings if listing.error]


def _lookups(resolver: DnsResolverConfig, slots: asyncio.Semaphore) -> Lookups:
    return Lookups(resolver.nameservers, resolver.port, float(resolver.timeout), slots)


def _name(domain: str) -> str:
    return domain.rstrip(".").lower()


async def _domain(
    checks: RecordChecks, domain: str, selectors: list[str], expected_mx: list[str]
) -> DomainRecords:
    result = DomainRecords()
    await asyncio.gather(
        checks.mx(domain, result, expected_mx),
        checks.spf(domain, result),
        checks.dmarc(domain, result),
        checks.tls_rpt(domain, result),
        *(checks.dkim(domain, selector, result) for selector in selectors),
    )
    return result


async def _at_most(workers: int, jobs: Iterator[Awaitable[None]]) -> None:
    """Run ``jobs`` with at most ``workers`` of them started and unfinished at once.

    Each job makes at least one query, so ``max_in_flight`` workers keep every slot busy;
    starting all at once (10,000 domains: 60,000 lookups waiting for a slot) holds their
    memory for the whole pass and delays the first answers behind a second-long round of
    the event loop, long enough for lookups already sent to time out.
    """

    async def worker() -> None:
        for job in jobs:
            await job

    await asyncio.gather(*(worker() for _ in range(workers)))


async def run_checks(
    settings: DnsConfig,
    url_of: Callable[[str], str] = mtasts.policy_url,
    wall_clock: Callable[[], float] = time.time,
) -> Results:
    # One bound for both resolvers: max_in_flight is what the section promises in total.
    slots = asyncio.Semaphore(settings.max_in_flight)
    lookups = _lookups(settings.resolver, slots)
    blocklist_lookups = (
        lookups
        if settings.blocklist_resolver is None
        else _lookups(settings.blocklist_resolver, slots)
    )
    time_limit = float(settings.resolver.timeout)
    domains = [_name(domain) for domain in settings.domains]
    expected_mx = list(dict.fromkeys(_name(host) for host in settings.mx_hosts))
    checks = RecordChecks(lookups)
    results = Results()

    async def domain(name: str) -> None:
        results.domains[name] = await _domain(checks, name, settings.dkim_selectors, expected_mx)

    async def reverse(ip: str) -> None:
        results.reverse[ip] = await check_reverse(lookups, ip, settings.helo_name)

    async def ip_listing(zone: str, ip: str) -> None:
        name = dnsbl.query_name(ip, zone)
        results.ip_listings[(zone, ip)] = await dnsbl.check_listing(blocklist_lookups, name)

    async def domain_listing(zone: str, domain: str) -> None:
        name = f"{domain}.{zone.rstrip('.')}"
        listing = await dnsbl.check_listing(blocklist_lookups, name, domain=True)
        results.domain_listings[(zone, domain)] = listing

    await _at_most(
        settings.max_in_flight,
        itertools.chain(
            (domain(name) for name in domains),
            (reverse(ip) for ip in settings.sending_ips),
            (
                ip_listing(zone, ip)
                for zone in settings.ip_blocklists
                for ip in settings.sending_ips
            ),
            (domain_listing(zone, name) for zone in settings.domain_blocklists for name in domains),
        ),
    )
    handshakes = Handshakes(slots, time_limit)
    await asyncio.gather(
        _mta_sts(settings, lookups, handshakes, results, url_of, time_limit),
        _dane(settings, lookups, handshakes, results, expected_mx),
    )
    results.finished_at = wall_clock()
    return results


async def _mta_sts(
    settings: DnsConfig,
    lookups: Lookups,
    handshakes: Handshakes,
    results: Results,
    url_of: Callable[[str], str],
    time_limit: float,
) -> None:
    if not settings.mta_sts or not results.domains:
        return
    ca_file = str(settings.mta_sts_ca_file) if settings.mta_sts_ca_file else None
    context = ssl.create_default_context(cafile=ca_file)

    async def one(session: aiohttp.ClientSession, domain: str, records: DomainRecords) -> None:
        sts = await mtasts.check_mta_sts(
            lookups, session, context, domain, records.mx_hosts, time_limit, url_of
        )
        results.mta_sts[domain] = await mtasts.check_mx_certificates(
            sts, handshakes, records.mx_addresses, settings.mta_sts_port, ca_file
        )

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session, d, r) for d, r in results.domains.items()))


async def _dane(
    settings: DnsConfig,
    lookups: Lookups,
    handshakes: Handshakes,
    results: Results,
    expected_mx: list[str],
) -> None:
    """DANE of every MX host the domains name and every configured one (``mx_hosts``).

    A configured host that no domain names is resolved here; one that does not resolve
    has no addresses, which a usable TLSA record turns into a ``dane_smtp`` ``resolve``
    error, as for an MX host the domains name.
    """
    if not settings.dane:
        return
    addresses: dict[str, list[str]] = {}
    for records in results.domains.values():
        for host in records.mx_hosts or []:
            addresses.setdefault(host, records.mx_addresses.get(host, []))

    async def one(host: str) -> None:
        found = addresses[host] if host in addresses else (await lookups.addresses(host))[0]
        results.dane[host] = await check_dane(lookups, handshakes, host, found, settings.dane_port)

    await asyncio.gather(*(one(host) for host in dict.fromkeys([*addresses, *expected_mx])))
