"""Collectors in the node_exporter pattern: registered by name, switched by flags, never fatal.

A collector module calls :func:`register_collector` at import time; the CLI
turns every registration into ``--collector.NAME`` / ``--no-collector.NAME``.
At each scrape :class:`CollectorSet` runs the enabled ones (in the scrape's
worker thread, off the event loop) and reports
``mail_exporter_collector_success`` and ``..._duration_seconds`` for each, so a
failing collector costs its own metrics and nothing else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily, Metric

from mail_exporter.config import Config

logger = logging.getLogger(__name__)


class Collector(Protocol):
    """Anything that yields fresh metric families on each call."""

    def collect(self) -> Iterable[Metric]: ...


@dataclass(frozen=True)
class CollectorSpec:
    name: str
    enabled_by_default: bool
    factory: Callable[[Config], Collector]
    help: str


COLLECTORS: dict[str, CollectorSpec] = {}


def register_collector(
    name: str, enabled_by_default: bool, help: str
) -> Callable[[Callable[[Config], Collector]], Callable[[Config], Collector]]:
    """Decorator for a collector factory taking the config."""

    def register(factory: Callable[[Config], Collector]) -> Callable[[Config], Collector]:
        COLLECTORS[name] = CollectorSpec(name, enabled_by_default, factory, help)
        return factory

    return register


class CollectorSet:
    """The enabled collectors, built from one config."""

    def __init__(self, config: Config, enabled: Iterable[str]) -> None:
        self.collectors = {name: COLLECTORS[name].factory(config) for name in enabled}

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
        for name, collector in self.collectors.items():
            started = time.monotonic()
            try:
                families = list(collector.collect())
            except Exception:  # a broken collector must not break the scrape
                logger.exception("collector %s failed", name)
                families, ok = [], False
            else:
                ok = True
            duration.add_metric([name], time.monotonic() - started)
            success.add_metric([name], 1.0 if ok else 0.0)
            yield from families
        if self.collectors:
            yield success
            yield duration


def enabled_collectors(choices: dict[str, bool | None]) -> list[str]:
    """Names to run: each flag's choice, or the collector's default where no flag was given."""
    return [
        name
        for name, spec in COLLECTORS.items()
        if (choices.get(name) if choices.get(name) is not None else spec.enabled_by_default)
    ]
