"""What every queue collector reports: the queue metric families, declared here once.

A collector measures each queue into a :class:`QueueStats` and hands them to
:func:`queue_families`; every queue of an MTA is always present, 0 when empty.

Sample output::

    mail_queue_messages{mta="postfix",mta_instance="postfix",queue="deferred"} 12.0
    mail_queue_size_bytes{mta="postfix",mta_instance="postfix",queue="deferred"} 48213.0
    mail_queue_oldest_message_age_seconds{mta="exim",mta_instance="exim",queue="input"} 5400.0
"""

from __future__ import annotations

import logging
import os
import stat
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.core import Metric

from mail_exporter.metric_spec import MetricSpec, as_is

logger = logging.getLogger(__name__)

QUEUE_LABELS = ("mta", "mta_instance", "queue")
OTHER = "other"


def read_head(path: str, limit: int, dir_fd: int | None = None) -> tuple[bytes, int] | None:
    """The first ``limit`` bytes of a spool file and its size; ``None`` if it vanished
    meanwhile or is not a regular file. A FIFO or a device planted in a spool would make
    a plain open wait for a writer, or a read never end: it is opened without blocking
    and skipped, never read. ``path`` is relative to the directory ``dir_fd`` if given
    (one path component to look up instead of the whole path)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        return None  # delivered or moved between listing and reading
    try:
        found = os.fstat(descriptor)
        if not stat.S_ISREG(found.st_mode):
            return None
        return os.read(descriptor, limit), found.st_size
    finally:
        os.close(descriptor)


@dataclass
class QueueStats:
    """One queue's contents: count, bytes and the earliest arrival (Unix seconds).

    ``count_only`` marks a source that gives the count alone (``exim -bpc``): size and
    age are then left out of the metrics instead of being reported as a made-up 0.
    """

    messages: int = 0
    size_bytes: int = 0
    oldest_arrival: float | None = None
    count_only: bool = False

    def add(self, size_bytes: int, arrival: float | None) -> None:
        self.messages += 1
        self.size_bytes += size_bytes
        if arrival is not None and (self.oldest_arrival is None or arrival < self.oldest_arrival):
            self.oldest_arrival = arrival


def _size(queue: tuple[QueueStats, float]) -> int | None:
    stats, _ = queue
    return None if stats.count_only else stats.size_bytes


def _oldest_age(queue: tuple[QueueStats, float]) -> float | None:
    stats, now = queue
    if stats.count_only:
        return None
    return 0.0 if stats.oldest_arrival is None else max(0.0, now - stats.oldest_arrival)


QUEUE = (
    MetricSpec("mail_queue_messages", "Messages in the queue.", "gauge", QUEUE_LABELS,
        lambda queue: queue[0].messages),
    MetricSpec("mail_queue_size_bytes", "Total size of the messages in the queue.", "gauge",
        QUEUE_LABELS, _size),
    MetricSpec("mail_queue_oldest_message_age_seconds", "Age of the oldest message in the queue, "
        "from its recorded arrival time; 0 when empty.", "gauge", QUEUE_LABELS, _oldest_age),
)  # fmt: skip
"""Read from (stats, now) rows; a count-only queue has neither size nor age."""
SOURCE_INFO = MetricSpec(
    "mail_queue_source_info", "Where the queue figures come from (postfix: spool, showq, "
    "postqueue; exim: spool, bpc; qmail: directory, commands).", "gauge",
    ("mta", "mta_instance", "source"), as_is,
)  # fmt: skip
COLLECT_SUCCESS = MetricSpec(
    "mail_queue_collect_success", "1 if the instance's queues were read at this scrape, 0 if they "
    "could not be.", "gauge", ("mta", "mta_instance"), as_is,
)  # fmt: skip
"""Whether each instance's queues could be read at this scrape (a failed one has no queue
figures, so this tells "empty" from "unknown")."""


def queue_families(
    mta: str, instance: str, queues: Mapping[str, QueueStats], now: float
) -> list[Metric]:
    """The three contract families for one MTA instance's queues."""
    rows = [((mta, instance, queue), (stats, now)) for queue, stats in queues.items()]
    return [spec.family(rows) for spec in QUEUE]


def source_info(mta: str, instance: str, source: str) -> Metric:
    """Which source an MTA instance's queue figures came from."""
    return SOURCE_INFO.family([((mta, instance, source), 1.0)])


class SourceLog:
    """Logs the source of each instance's figures when it changes, not on every scrape."""

    def __init__(self, mta: str) -> None:
        self.mta = mta
        self._sources: dict[str, str] = {}

    def announce(self, instance: str, source: str, why: str) -> None:
        if self._sources.get(instance) != source:
            logger.info("%s %s: reading the queue from %s (%s)", self.mta, instance, source, why)
            self._sources[instance] = source


def top_with_other(counts: Counter[str], keep: int) -> list[tuple[str, int]]:
    """The ``keep`` largest entries and the rest summed as ``other``: bounded label values.

    An entry named ``other`` (a real domain of that name, or addresses without one) is
    never one of the ``keep``: it goes into the rest, so ``other`` is one series.
    """
    top = [entry for entry in counts.most_common(keep + 1) if entry[0] != OTHER][:keep]
    rest = sum(counts.values()) - sum(count for _, count in top)
    return [*top, (OTHER, rest)] if rest else top
