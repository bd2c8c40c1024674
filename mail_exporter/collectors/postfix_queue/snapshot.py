"""What every source fills and the collector exports, whichever source was read.

:class:`QueueSnapshot` holds one instance's queues; :class:`Listing` is one message as
the two listing sources (:mod:`.showq`, :mod:`.postqueue`) describe it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from mail_exporter.collectors.postfix_queue.reasons import classify_reason, recipient_domain
from mail_exporter.collectors.queues import QueueStats

QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
MAX_FIELD_BYTES = 65536
"""Longest showq field or defer log accepted; anything longer is a broken stream."""


@dataclass
class QueueSnapshot:
    """Everything one collection learned about one instance's queues."""

    source: str
    queues: dict[str, QueueStats] = field(default_factory=lambda: {q: QueueStats() for q in QUEUES})
    reasons: Counter[str] = field(default_factory=Counter)
    domains: Counter[str] = field(default_factory=Counter)

    def add_message(self, queue: str, size: int, arrival: float | None) -> None:
        if queue in self.queues:
            self.queues[queue].add(size, arrival)

    def add_deferral(self, recipient: str, reason: str) -> None:
        self.count_deferrals([(classify_reason(reason), recipient_domain(recipient))])

    def count_deferrals(self, deferrals: Iterable[tuple[str, str]]) -> None:
        for reason_class, domain in deferrals:
            self.reasons[reason_class] += 1
            self.domains[domain] += 1


@dataclass
class Listing:
    """One message of a showq or postqueue listing."""

    queue: str = ""
    size: int = 0
    arrival: float | None = None
    recipients: list[tuple[str, str]] = field(default_factory=list)

    def add_to(self, snapshot: QueueSnapshot) -> None:
        snapshot.add_message(self.queue, self.size, self.arrival)
        if self.queue == "deferred":
            for recipient, reason in self.recipients:
                if reason:
                    snapshot.add_deferral(recipient, reason)
