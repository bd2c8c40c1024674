"""Collectors in the node_exporter pattern: registered by name, switched on, never fatal.

A collector module registers a factory with :func:`register_collector`; the CLI
turns every registration into ``--collector.NAME`` / ``--no-collector.NAME``,
and a flag given on the command line wins over the section's ``enabled`` key.
At each scrape :class:`CollectorSet` runs the enabled collectors in worker
threads (never on the event loop), each within its section's ``timeout``, and
reports ``mail_exporter_collector_success`` and ``..._duration_seconds`` for
each: a failing or hanging collector costs its own metrics and nothing else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from prometheus_client.core import GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from mail_exporter.config import Config

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


class CollectorSet:
    """The enabled collectors of one config, with a thread pool to run them in."""

    def __init__(self, config: Config, flags: Mapping[str, bool | None]) -> None:
        names = enabled_collectors(config, flags)
        self.collectors = {name: COLLECTORS[name].factory(config) for name in names}
        self.timeouts = {name: float(config.collectors.section(name).timeout) for name in names}
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="collector")
        self._running: dict[str, Future[list[Metric]]] = {}
        self._failures: dict[str, str] = {}
        self.latest: list[Metric] = []
        """The families of the last scrape, for the status page."""
        if names:
            logger.info("collectors enabled: %s", ", ".join(names))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for collector in self.collectors.values():
            close = getattr(collector, "close", None)  # collectors that own background work
            if close is not None:
                close()

    def _start(self, name: str) -> Future[list[Metric]] | None:
        """Submit a collection, unless the last one still runs (a hung source stays one thread)."""
        previous = self._running.get(name)
        if previous is not None and not previous.done():
            return None
        future = self._pool.submit(lambda: list(self.collectors[name].collect()))
        self._running[name] = future
        return future

    def collect(self) -> Iterable[Metric]:
        success = GaugeMetricFamily(
            "mail_exporter_collector_success",
            "1 if the collector's last scrape worked.",
            labels=["collector"],
        )
        duration = GaugeMetricFamily(
            "mail_exporter_collector_duration_seconds",
            "How long the collector's scrape took.",
            labels=["collector"],
        )
        started = time.monotonic()
        futures = {name: self._start(name) for name in self.collectors}
        # Collectors may share metric names (every queue collector exports mail_queue_*):
        # their samples merge into one family, as the exposition format requires.
        merged: dict[str, Metric] = {}
        for name, future in futures.items():
            families = self._result(name, future, started)
            duration.add_metric([name], time.monotonic() - started)
            success.add_metric([name], 0.0 if families is None else 1.0)
            for family in families or []:
                if family.name in merged:
                    merged[family.name].samples.extend(family.samples)
                else:
                    merged[family.name] = family
        self.latest = list(merged.values())
        yield from self.latest
        if self.collectors:
            yield success
            yield duration

    def _result(
        self, name: str, future: Future[list[Metric]] | None, started: float
    ) -> list[Metric] | None:
        if future is None:
            self._failed(name, "the previous collection is still running")
            return None
        remaining = self.timeouts[name] - (time.monotonic() - started)
        try:
            families = future.result(timeout=max(0.0, remaining))
        except FutureTimeout:
            self._failed(name, f"no result within {self.timeouts[name]:.3g}s")
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
