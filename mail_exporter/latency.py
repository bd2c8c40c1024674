"""A latency histogram kept as plain numbers, rendered by a custom collector at scrape time.

Observing is a few additions and one list built, with no lock: a prometheus_client
Histogram takes a lock and a label lookup on every observation, which costs more
than the probe result it counts. Used for the scheduled probes'
``mail_probe_latency_seconds`` (the default buckets) and the round trips'
``mail_roundtrip_delivery_seconds``.
"""

from __future__ import annotations

from mail_exporter.metric_spec import MetricSpec

LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                                      10.0, 30.0, 60.0)  # fmt: skip
"""The buckets of ``mail_probe_latency_seconds``."""


class LatencyHistogram:
    """Cumulative histogram of one series' durations, kept as plain numbers."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        # Scrapes read from a worker thread: the count goes up first and the bucket
        # list is replaced whole, so a reader never sees a non-cumulative histogram.
        self.count += 1
        self.total += seconds
        self.counts = [
            n + (seconds <= bound) for n, bound in zip(self.counts, self.bounds, strict=True)
        ]

    def buckets(self) -> list[tuple[str, float]]:
        counts, count = self.counts, self.count
        pairs = [(repr(bound), float(n)) for bound, n in zip(self.bounds, counts, strict=True)]
        return [*pairs, ("+Inf", float(max(count, counts[-1])))]


LATENCY = MetricSpec(
    "mail_probe_latency_seconds", "Durations of all scheduled probes.", "histogram", (),
    lambda histogram: (histogram.buckets(), histogram.total),
)  # fmt: skip
"""Its labels follow the scheduled probes' own (see :mod:`mail_exporter.metrics`)."""
