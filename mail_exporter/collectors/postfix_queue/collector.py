"""The ``postfix_queue`` collector: each instance's queues through the best source it may use.

Sources are chosen per instance in this order unless the config names one: ``spool``
(:mod:`.spool`), the fastest and the only one that costs Postfix nothing while it is in
trouble, when the queue directory is readable; else ``showq`` (:mod:`.showq`) when its
socket is reachable; else ``postqueue`` (:mod:`.postqueue`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.core import Metric

from mail_exporter.collectors.base import (
    COMMAND_TIME_SHARE,
    Collector,
    CollectorError,
    register_collector,
)
from mail_exporter.collectors.commands import run_command
from mail_exporter.collectors.postfix_queue.config import PostfixInstance, PostfixQueueConfig
from mail_exporter.collectors.postfix_queue.postqueue import run_postqueue
from mail_exporter.collectors.postfix_queue.reasons import DEFER_REASONS
from mail_exporter.collectors.postfix_queue.showq import read_showq
from mail_exporter.collectors.postfix_queue.snapshot import QueueSnapshot
from mail_exporter.collectors.postfix_queue.spool import SpoolScanner, spool_readable
from mail_exporter.collectors.queues import (
    COLLECT_SUCCESS,
    SourceLog,
    queue_families,
    source_info,
    top_with_other,
)
from mail_exporter.metric_spec import MetricSpec, as_is

logger = logging.getLogger(__name__)

DEFERRED_RECIPIENTS = MetricSpec(
    "mail_queue_deferred_recipients", "Recipients waiting in the deferred queue, by class of the "
    "last delay reason.", "gauge", ("mta", "mta_instance", "reason"), as_is,
)  # fmt: skip
DEFERRED_DOMAIN_RECIPIENTS = MetricSpec(
    "mail_queue_deferred_domain_recipients", "Deferred recipients by domain: the largest domains, "
    "the rest as other.", "gauge", ("mta", "mta_instance", "domain"), as_is,
)  # fmt: skip


def postconf_queue_directory(command: str, config_directory: Path, timeout: float) -> Path:
    output = run_command([command, "-c", str(config_directory), "-h", "queue_directory"], timeout)
    if not output.strip():
        raise CollectorError(f"{command} -c {config_directory} names no queue_directory")
    return Path(output.strip())


class PostfixQueueCollector:
    """Collects every configured Postfix instance's queues through the best source it may use.

    Instances fail one at a time: one that cannot be read costs its own figures (left
    out, not reported as 0) and shows as ``mail_queue_collect_success 0``; the others
    are exported. Its failure is logged when it starts or changes, and its recovery,
    as :class:`~mail_exporter.collectors.base.CollectorSet` does for whole collectors. Only
    when every instance fails does the collector fail, as a single instance always
    has; the framework then logs all the reasons in one line, and later that the
    collector works again, so those failures are not logged a second time here.
    """

    def __init__(self, settings: PostfixQueueConfig) -> None:
        self.settings = settings
        self.timeout = float(settings.timeout) * COMMAND_TIME_SHARE
        self._sources = SourceLog("postfix")
        self._scanners: dict[str, SpoolScanner] = {}
        self._failures: dict[str, str] = {}
        """The failure last logged of each instance that is failing."""

    def _queue_directory(self, instance: PostfixInstance) -> Path:
        if instance.queue_directory is not None:
            return instance.queue_directory
        return postconf_queue_directory(
            self.settings.postconf_command, instance.config_directory, self.timeout
        )

    def _scanner(self, instance: str, queue_directory: Path) -> SpoolScanner:
        scanner = self._scanners.get(instance)
        if scanner is None or scanner.queue_directory != queue_directory:
            scanner = self._scanners[instance] = SpoolScanner(queue_directory)
        return scanner

    def _choose_source(self, queue_directory: Path) -> tuple[str, str]:
        """The source to use and why, for the log."""
        if self.settings.source != "auto":
            return self.settings.source, "the config says so"
        if spool_readable(queue_directory):
            return "spool", f"{queue_directory} is readable: scanning it costs Postfix nothing"
        showq = queue_directory / "public" / "showq"
        if os.access(showq, os.W_OK):
            return "showq", f"the spool is not readable but {showq} is reachable"
        return "postqueue", "neither the spool nor the showq socket is reachable"

    def snapshot(self, instance: PostfixInstance) -> QueueSnapshot:
        """One instance's queues; :class:`CollectorError` naming the instance if unreadable."""
        try:
            queue_directory = self._queue_directory(instance)
            source, why = self._choose_source(queue_directory)
            self._sources.announce(instance.name, source, why)
            return self._read(instance, source, queue_directory)
        except (OSError, CollectorError) as error:
            raise CollectorError(f"postfix instance {instance.name}: {error}") from None

    def _read(self, instance: PostfixInstance, source: str, queue_directory: Path) -> QueueSnapshot:
        try:
            if source == "spool":
                return self._scanner(instance.name, queue_directory).scan()
            if source == "showq":
                return read_showq(queue_directory, self.timeout)
        except OSError as error:
            raise CollectorError(f"{source}: {error}") from None
        command = self.settings.postqueue_command
        return run_postqueue(command, instance.config_directory, self.timeout)

    def collect(self) -> Iterable[Metric]:
        """Each readable instance's families; the collector set merges those of one name."""
        now = time.time()
        families: list[Metric] = []
        read: list[tuple[str, bool]] = []
        failures: dict[str, str] = {}
        for instance in self.settings.instances:
            try:
                snapshot = self.snapshot(instance)
            except CollectorError as error:
                failures[instance.name] = str(error)
                read.append((instance.name, False))
                continue
            read.append((instance.name, True))
            families += self._families(instance.name, snapshot, now)
            families.append(source_info("postfix", instance.name, snapshot.source))
        self._log_failures(failures)
        return [*families, COLLECT_SUCCESS.family((("postfix", name), ok) for name, ok in read)]

    def _log_failures(self, failures: dict[str, str]) -> None:
        """Log what changed since the last scrape; raise when no instance could be read."""
        if len(failures) == len(self.settings.instances):
            self._failures = {}  # the framework logs these, and later that it works again
            raise CollectorError("; ".join(failures.values()))
        for name, reason in failures.items():
            if self._failures.get(name) != reason:
                logger.warning("%s", reason)
        for name in self._failures.keys() - failures.keys():
            logger.info("postfix instance %s works again", name)
        self._failures = failures

    def _families(self, instance: str, snapshot: QueueSnapshot, now: float) -> list[Metric]:
        domains = top_with_other(snapshot.domains, self.settings.top_domains)
        return [
            *queue_families("postfix", instance, snapshot.queues, now),
            DEFERRED_RECIPIENTS.family(
                (("postfix", instance, reason), snapshot.reasons.get(reason, 0))
                for reason in DEFER_REASONS
            ),
            DEFERRED_DOMAIN_RECIPIENTS.family(
                (("postfix", instance, domain), count) for domain, count in domains
            ),
        ]


@register_collector(
    "postfix_queue", "Postfix queue sizes, ages and deferral reasons", PostfixQueueConfig
)
def _postfix_queue(
    section: PostfixQueueConfig, previous: Collector | None
) -> PostfixQueueCollector:
    return PostfixQueueCollector(section)
