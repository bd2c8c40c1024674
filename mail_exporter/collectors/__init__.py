"""Collectors in the node_exporter pattern: registered by name, switched on, never fatal.

A collector module registers a factory with :func:`register_collector`; the CLI
turns every registration into ``--collector.NAME`` / ``--no-collector.NAME``,
and a flag given on the command line wins over the section's ``enabled`` key.
At each scrape :class:`CollectorSet` runs the enabled collectors in worker
threads (never on the event loop), each within its section's ``timeout``, and
reports ``mail_exporter_collector_success`` and ``..._duration_seconds`` for
each: a failing or hanging collector costs its own metrics and nothing else.

A collection's duration is timed in the worker that runs it, so a slow collector
does not make the ones read after it look slow; one that has not ended (timed out,
or its previous collection still running) reports how long it has been waited for.

A reload keeps each collector whose section is unchanged (sections compare by
value), so caches and read positions survive a SIGHUP: the dns collector's answers
(blocklists ban heavy queriers), the log followers' offsets, smartctl's slow-interval
readings. A factory therefore reads only its own section. Collectors whose section
changed are rebuilt and those no longer enabled are closed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from prometheus_client.core import GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from mail_exporter.config import CollectorSection, Config

logger = logging.getLogger(__name__)


class Collector(Protocol):
    """Anything that yields fresh metric families on each call."""

    def collect(self) -> Iterable[Metric]: ...


class CollectorError(Exception):
    """A collector could not read its source; the message says what and why."""


@dataclass(frozen=True)
class CollectorSpec:
    name: str
    factory: Callable[[Config], Collector]
    help: str


COLLECTORS: dict[str, CollectorSpec] = {}


def register_collector(
    name: str, help: str
) -> Callable[[Callable[[Config], Collector]], Callable[[Config], Collector]]:
    """Decorator for a collector factory, which takes the whole config."""

    def register(factory: Callable[[Config], Collector]) -> Callable[[Config], Collector]:
        COLLECTORS[name] = CollectorSpec(name, factory, help)
        return factory

    return register


def enabled_collectors(config: Config, flags: Mapping[str, bool | None]) -> list[str]:
    """Names to run: the command-line flag where one was given, else the section's ``enabled``."""
    names = []
    for name in COLLECTORS:
        flag = flags.get(name)
        if flag if flag is not None else config.collectors.section(name).enabled:
            names.append(name)
    return names


class _Collection:
    """One collection submitted to the pool, timed by the worker that runs it."""

    def __init__(self, collector: Collector, pool: ThreadPoolExecutor) -> None:
        self.submitted = time.monotonic()
        self.took: float | None = None
        self.future = pool.submit(self._run, collector)

    def _run(self, collector: Collector) -> list[Metric]:
        began = time.monotonic()
        try:
            return list(collector.collect())
        finally:
            self.took = time.monotonic() - began

    def seconds(self) -> float:
        """Its own duration once ended; until then, how long it has been waited for."""
        return self.took if self.took is not None else time.monotonic() - self.submitted


class CollectorSet:
    """The enabled collectors of one config, with a thread pool to run them in."""

    def __init__(self, config: Config, flags: Mapping[str, bool | None]) -> None:
        self.flags = flags
        self.collectors: dict[str, Collector] = {}
        self.timeouts: dict[str, float] = {}
        self._sections: dict[str, CollectorSection] = {}
        # Scrapes run in worker threads: they take collectors and timeouts as one pair.
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="collector")
        # Kept across reloads, so a rebuilt collector whose source hangs stays one thread.
        self._running: dict[str, _Collection] = {}
        self._failures: dict[str, str] = {}
        self.latest: list[Metric] = []
        """The families of the last scrape, for the status page."""
        self.apply(config)

    def apply(self, config: Config) -> None:
        """Switch to ``config``'s collectors, keeping those whose section is unchanged."""
        names = enabled_collectors(config, self.flags)
        sections = {name: config.collectors.section(name) for name in names}
        kept = {
            name: self.collectors[name]
            for name in names
            if name in self.collectors and self._sections.get(name) == sections[name]
        }
        collectors = {
            name: kept[name] if name in kept else COLLECTORS[name].factory(config) for name in names
        }
        with self._lock:
            replaced, self.collectors = self.collectors, collectors
            self.timeouts = {name: float(section.timeout) for name, section in sections.items()}
            self._sections = sections
        for name, collector in replaced.items():
            if kept.get(name) is not collector:
                _close(collector)
        rebuilt = sorted(set(names) - set(kept))
        if rebuilt:
            logger.info("collectors started: %s", ", ".join(rebuilt))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for collector in self.collectors.values():
            _close(collector)

    def _start(self, name: str, collector: Collector) -> _Collection | None:
        """Submit a collection, unless the last one still runs (a hung source stays one thread)."""
        previous = self._running.get(name)
        if previous is not None and not previous.future.done():
            return None
        self._running[name] = collection = _Collection(collector, self._pool)
        return collection

    def collect(self) -> Iterable[Metric]:
        success = GaugeMetricFamily(
            "mail_exporter_collector_success",
            "1 if the collector's last scrape worked.",
            labels=["collector"],
        )
        duration = GaugeMetricFamily(
            "mail_exporter_collector_duration_seconds",
            "Seconds the collector's own last collection took (unfinished: waited so far).",
            labels=["collector"],
        )
        with self._lock:
            collectors, timeouts = self.collectors, self.timeouts
        started = time.monotonic()
        collections = {name: self._start(name, collector) for name, collector in collectors.items()}
        # Collectors may share metric names (every queue collector exports mail_queue_*):
        # their samples merge into one family, as the exposition format requires.
        merged: dict[str, Metric] = {}
        for name, collection in collections.items():
            families = self._result(name, collection, started, timeouts[name])
            duration.add_metric([name], self._running[name].seconds())
            success.add_metric([name], 0.0 if families is None else 1.0)
            for family in families or []:
                if family.name in merged:
                    merged[family.name].samples.extend(family.samples)
                else:
                    merged[family.name] = family
        self.latest = list(merged.values())
        yield from self.latest
        if collectors:
            yield success
            yield duration

    def _result(
        self, name: str, collection: _Collection | None, started: float, timeout: float
    ) -> list[Metric] | None:
        if collection is None:
            self._failed(name, "the previous collection is still running")
            return None
        try:
            remaining = timeout - (time.monotonic() - started)
            families = collection.future.result(timeout=max(0.0, remaining))
        except FutureTimeout:
            self._failed(name, f"no result within {timeout:.3g}s")
        except CollectorError as error:
            self._failed(name, f"failed: {error}")
        except Exception:  # a broken collector must not break the scrape
            logger.exception("collector %s failed", name)
        else:
            if self._failures.pop(name, None) is not None:
                logger.info("collector %s works again", name)
            return families
        return None

    def _failed(self, name: str, reason: str) -> None:
        """Log a failure when it starts or changes, not at every scrape while it lasts."""
        if self._failures.get(name) != reason:
            logger.warning("collector %s: %s", name, reason)
            self._failures[name] = reason


def _close(collector: Collector) -> None:
    close = getattr(collector, "close", None)  # collectors that own background work
    if close is not None:
        close()


# Registration: each collector module registers itself on import.
from mail_exporter.collectors import (  # noqa: E402, F401
    backups,
    dns,
    exim_queue,
    host,
    logs,
    postfix_queue,
    qmail_queue,
    sensors,
    services,
    smart,
)
