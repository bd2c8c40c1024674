"""What the log parsers count into: plain dicts keyed by label tuples, rendered at scrape time.

The hot path is ``counts[key] += 1`` on a ``defaultdict``; a prometheus_client metric
would take a lock and a label lookup on every increment, which costs more than parsing
the line. Every label value that comes from a log line goes through a bounded set
(:class:`~.labels.LabelGuard`, :class:`~.domains.TopDomains`) or a fixed classification
(see :mod:`.labels`), so no line can add an unbounded number of series.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import defaultdict

from mail_exporter.collectors.logs.domains import TopDomains
from mail_exporter.collectors.logs.labels import LabelGuard
from mail_exporter.collectors.logs.senders import ClientAddresses, account_counts

Labels = tuple[str, ...]
Counts = defaultdict[Labels, int]
Shapes = defaultdict[Labels, "Histogram"]  # mta

DELAY_BUCKETS: tuple[float, ...] = (
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
    432000.0,
)  # fmt: skip
"""Seconds: a local hop takes milliseconds, a message that bounces after days in the queue 5 d."""
SIZE_BUCKETS: tuple[float, ...] = (
    1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 10240000.0, 26214400.0,
    52428800.0,
)  # fmt: skip
"""Bytes: 1 KiB to 4 MiB by fours, Postfix's default message_size_limit, 25 and 50 MiB."""
RECIPIENT_BUCKETS: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 500.0, 1000.0)


class Histogram:
    """Observations per bucket (the last one is +Inf) and their sum."""

    __slots__ = ("bounds", "buckets", "sum")

    def __init__(self, bounds: tuple[float, ...] = DELAY_BUCKETS) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.buckets[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def copy(self) -> Histogram:
        twin = Histogram(self.bounds)
        twin.buckets = self.buckets.copy()
        twin.sum = self.sum
        return twin


class LogCounters:
    """Every count the log parsers keep, behind one lock shared with the scrape."""

    def __init__(
        self, top_domains: int, top_accounts: int = 10, address_window: float = 3600.0
    ) -> None:
        self.lock = threading.Lock()
        self.lines: Counts = defaultdict(int)  # mta, program, result
        self.received: Counts = defaultdict(int)  # mta
        self.submitted: Counts = defaultdict(int)  # mta, service
        self.deliveries: Counts = defaultdict(int)  # mta, transport, status
        self.dsn_classes: Counts = defaultdict(int)  # mta, transport, dsn_class
        self.delays: dict[Labels, Histogram] = {}  # mta, transport, stage
        self.connections: Counts = defaultdict(int)  # mta, service
        self.lost_connections: Counts = defaultdict(int)  # mta, service, after
        self.timeouts: Counts = defaultdict(int)  # mta, service, after
        self.rejects: Counts = defaultdict(int)  # mta, service, reason
        self.reject_stages: Counts = defaultdict(int)  # mta, service, stage
        self.auth_failures: Counts = defaultdict(int)  # mta, service
        self.passdb_failures: Counts = defaultdict(int)  # mta, passdb, result
        self.logins: Counts = defaultdict(int)  # mta, service, mechanism
        self.disconnects: Counts = defaultdict(int)  # mta, service, reason
        self.tls_connections: Counts = defaultdict(int)  # mta, service, version, trust
        self.postscreen: Counts = defaultdict(int)  # mta, result
        self.bounces: Counts = defaultdict(int)  # mta, kind
        self.frozen: Counts = defaultdict(int)  # mta
        self.problems: Counts = defaultdict(int)  # mta, service, severity
        self.problem_classes: Counts = defaultdict(int)  # mta, severity, class
        self.filter_results: Counts = defaultdict(int)  # mta, verdict, action
        self.quarantined: Counts = defaultdict(int)  # mta
        self.sender_domains = TopDomains(top_domains)  # mta, domain
        self.recipient_domains = TopDomains(top_domains)  # mta, domain, status
        self.refusals = TopDomains(top_domains)  # mta, domain, status, reason
        self.refusal_codes: Counts = defaultdict(int)  # mta, code_class, enhanced_code
        self.message_sizes: Shapes = defaultdict(lambda: Histogram(SIZE_BUCKETS))  # mta
        self.message_recipients: Shapes = defaultdict(lambda: Histogram(RECIPIENT_BUCKETS))
        self.accounts = account_counts(top_accounts)  # mta, account, messages|recipients
        self.account_addresses = ClientAddresses(top_accounts, address_window)  # account
        # Label values taken from log text, each bounded.
        self.programs = LabelGuard(100)
        self.services = LabelGuard(50)
        self.mechanisms = LabelGuard(20)

    def histogram(self, key: Labels) -> Histogram:
        found = self.delays.get(key)
        if found is None:
            found = self.delays[key] = Histogram()
        return found

    def set_top_domains(self, keep: int) -> None:
        """A reload changed ``top_domains``: domain series start over with the new cap."""
        if keep != self.sender_domains.keep:
            self.sender_domains = TopDomains(keep)
            self.recipient_domains = TopDomains(keep)
            self.refusals = TopDomains(keep)

    def set_accounts(self, keep: int, window: float) -> None:
        """A reload changed ``top_accounts`` or the window: account series start over."""
        if keep != self.accounts.keep:
            self.accounts = account_counts(keep)
        if (keep, window) != (self.account_addresses.keep, self.account_addresses.window):
            self.account_addresses = ClientAddresses(keep, window)
