"""One DNS lookup, classified: records, NXDOMAIN, or an error with a bounded reason.

Every check goes through :class:`Lookups`, which bounds the queries in flight with a
semaphore (blocklists ban heavy users) and turns dnspython's exceptions into an
:class:`Outcome`, so that "this name does not exist" is never confused with "we could
not find out". Queries ask for the AD bit (RFC 6840 section 5.7), which a validating
resolver sets when the answer is DNSSEC-authenticated.

A ``Lookups`` lives for one pass and asks each name and type once: the checks of many
domains meet on the same names (a provider's MX hosts, the SPF record every customer
includes, each domain's MX asked again by its SPF ``mx`` term), and asking again would
only cost the resolver and our CPU (10,000 domains: 205,652 queries become 95,660).
Later askers share the first one's outcome, errors included, as they would share a
resolver's cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.name
import dns.rdata
import dns.rdatatype
import dns.resolver


@dataclass(frozen=True)
class Outcome:
    """The records of one lookup; ``error`` is a bounded reason when there is no verdict."""

    records: list[dns.rdata.Rdata] = field(default_factory=list)
    exists: bool = True  # False on NXDOMAIN
    authenticated: bool = False  # the resolver set the AD bit
    error: str | None = None  # timeout, servfail, error

    def texts(self) -> list[str]:
        """TXT records as text, their strings joined (RFC 7208 section 3.3)."""
        return [
            b"".join(getattr(record, "strings", ())).decode("utf-8", "replace")
            for record in self.records
        ]


class Lookups:
    """A resolver (nameservers and port, else the system's) with a bound on queries in flight.

    The bound is the semaphore ``slots``, which the caller may share between the
    ``Lookups`` of several resolvers, so that the bound holds for all of them together.
    """

    def __init__(
        self, nameservers: Sequence[str], port: int, timeout: float, slots: asyncio.Semaphore
    ) -> None:
        if nameservers:
            self.resolver = dns.asyncresolver.Resolver(configure=False)
            self.resolver.nameservers = list(nameservers)
        else:
            self.resolver = dns.asyncresolver.Resolver()
        self.resolver.port = port
        self.resolver.lifetime = timeout
        self.resolver.timeout = min(timeout, 2.0)
        self.resolver.flags = dns.flags.RD | dns.flags.AD
        self.resolver.use_search_by_default = False
        self._slots = slots
        # a lookup's task while it runs, then only its outcome (a task holds far more)
        self._asked: dict[tuple[dns.name.Name, str], asyncio.Task[Outcome] | Outcome] = {}

    async def query(self, name: str, rdtype: str) -> Outcome:
        key = (dns.name.from_text(name), rdtype)
        asked = self._asked.get(key)
        if isinstance(asked, Outcome):
            return asked
        if asked is None:
            asked = self._asked[key] = asyncio.create_task(self._query(*key))
        # shielded: one asker cancelled leaves the lookup to the others
        outcome = await asyncio.shield(asked)
        self._asked[key] = outcome
        return outcome

    async def _query(self, qname: dns.name.Name, rdtype: str) -> Outcome:
        async with self._slots:
            try:
                answer = await self.resolver.resolve(
                    qname, dns.rdatatype.from_text(rdtype), raise_on_no_answer=False, search=False
                )
            except dns.resolver.NXDOMAIN:
                return Outcome(exists=False)
            except dns.exception.Timeout:
                return Outcome(error="timeout")
            except dns.resolver.NoNameservers:
                return Outcome(error="servfail")
            except dns.exception.DNSException:
                return Outcome(error="error")
        authenticated = bool(answer.response.flags & dns.flags.AD)
        records = list(answer.rrset) if answer.rrset is not None else []
        return Outcome(records=records, authenticated=authenticated)

    async def addresses(self, name: str) -> tuple[list[str], str | None]:
        """A and AAAA addresses of ``name``, and an error if either lookup had one."""
        results = await asyncio.gather(self.query(name, "A"), self.query(name, "AAAA"))
        found = [record.to_text() for result in results for record in result.records]
        errors = [result.error for result in results if result.error]
        return found, errors[0] if errors and not found else None
