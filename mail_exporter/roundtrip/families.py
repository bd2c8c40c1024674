"""The round-trip metric families, rendered at scrape time from each route's running totals
(:class:`mail_exporter.roundtrip.outcome.RouteStats`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from mail_exporter.roundtrip.outcome import RouteStats

_Family = TypeVar("_Family", GaugeMetricFamily, CounterMetricFamily, HistogramMetricFamily)


class RoundTripFamilies:
    """Metric families of the round-trip routes, from each route's running totals.

    Sample output of a route whose last attempt passed::

        mail_roundtrip_success{route="local-loop"} 1.0
        mail_roundtrip_duration_seconds{route="local-loop"} 0.052
        mail_roundtrip_failures_total{route="local-loop",stage="timeout"} 0.0
        mail_roundtrip_hop_delay_seconds{route="local-loop",hop="1"} 0.0
    """

    def __init__(self) -> None:
        self._families: list[Metric] = []
        self.success = self._family(
            GaugeMetricFamily,
            "mail_roundtrip_success",
            "1 if the last round trip's message was seen in the mailbox in time.",
        )
        self.duration = self._family(
            GaugeMetricFamily,
            "mail_roundtrip_duration_seconds",
            "Start of sending to the message seen in the mailbox, last success.",
        )
        self.delivery = self._family(
            HistogramMetricFamily,
            "mail_roundtrip_delivery_seconds",
            "Start of sending to the message seen, for every message seen in time.",
        )
        self.last_success = self._family(
            GaugeMetricFamily,
            "mail_roundtrip_last_success_timestamp_seconds",
            "When a round trip last succeeded.",
        )
        self.failures = self._family(
            CounterMetricFamily,
            "mail_roundtrip_failures",
            "Failed round trips by stage: send, send_auth, receive, receive_auth, timeout, "
            "cleanup.",
            "stage",
        )
        self.late = self._family(
            CounterMetricFamily,
            "mail_roundtrip_late_arrivals",
            "Messages seen after their route's timeout (each counted once, not lost again).",
        )
        self.junk = self._family(
            CounterMetricFamily,
            "mail_roundtrip_junk",
            "Messages seen in time in the junk mailbox instead of the mailbox.",
        )
        self.hops = self._family(
            GaugeMetricFamily,
            "mail_roundtrip_hop_delay_seconds",
            "Delay each hop added, from the Received headers of the last message seen in time "
            "(hop 1 is the first server; hops past 5 add to hop 5).",
            "hop",
        )

    def _family(self, kind: type[_Family], name: str, documentation: str, *extra: str) -> _Family:
        family = kind(name, documentation, labels=["route", *extra])
        self._families.append(family)
        return family

    def add(self, route: str, stats: RouteStats) -> None:
        """Add one route's totals; values not known yet are left out, never reported as 0."""
        for stage, count in stats.failures.items():
            self.failures.add_metric([route, stage], count)
        self.late.add_metric([route], stats.late)
        self.junk.add_metric([route], stats.junk)
        histogram = stats.delivery
        self.delivery.add_metric([route], histogram.buckets(), histogram.total)
        if stats.success is not None:
            self.success.add_metric([route], float(stats.success))
        if stats.duration is not None:
            self.duration.add_metric([route], stats.duration)
        if stats.last_success is not None:
            self.last_success.add_metric([route], stats.last_success)
        for hop, seconds in stats.hops.items():
            self.hops.add_metric([route, hop], seconds)

    def __iter__(self) -> Iterator[Metric]:
        return (family for family in self._families if family.samples)
