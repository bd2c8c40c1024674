"""How every metric family is declared: one :class:`MetricSpec` each, in tables.

One shape for the collectors, the probes and the round trips, as node_exporter declares
every metric with a ``typedDesc``: the name as Prometheus shows it (counters end in
``_total``), the help, the type, the label names, and how a sample's value is read from
what its row carries. Code that measures something builds rows, (label values, source)
pairs, and :meth:`MetricSpec.family` turns them into a family at scrape time (or, for
the scheduled probes, when a result arrives: see :mod:`mail_exporter.exposition`).

A value read as None gives no sample: a figure that is not known is left out, never
reported as a made-up 0. Rows whose label values come from the data (a phase, a queue,
a reason) carry their value itself, read with :func:`as_is`.

Sample::

    MEMORY_TOTAL = MetricSpec(
        "mail_host_memory_total_bytes", "Physical memory.", "gauge", (), attribute("total")
    )
    MEMORY_TOTAL.family([((), psutil.virtual_memory())])
    # mail_host_memory_total_bytes 8.2e+09
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

Buckets = Sequence[tuple[str, float]]
"""A histogram's cumulative counts by upper bound (``"+Inf"`` last)."""
Reading = float | bool | tuple[Buckets, float] | None
"""A sample's value: a number (a bool counts 1 or 0), a histogram's buckets and sum, or
None for no sample."""
Row = tuple[Sequence[str], Any]
"""Label values and the source its value is read from."""

Family = GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily


@dataclass(frozen=True)
class MetricSpec:
    """A metric family: name, help, type, label names, and how to read a row's value."""

    name: str
    help: str
    type: Literal["gauge", "counter", "histogram"]
    labels: tuple[str, ...]
    value: Callable[[Any], Reading]

    def empty(self) -> Family:
        """The family without samples."""
        labels = list(self.labels)
        if self.type == "gauge":
            return GaugeMetricFamily(self.name, self.help, labels=labels)
        if self.type == "counter":
            return CounterMetricFamily(self.name, self.help, labels=labels)
        return HistogramMetricFamily(self.name, self.help, labels=labels)

    def family(self, rows: Iterable[Row]) -> Family:
        """A sample for each row whose value is not None, in the rows' order."""
        family = self.empty()
        read = self.value
        for labels, source in rows:
            found = read(source)
            if found is None:
                continue
            if isinstance(found, tuple) and isinstance(family, HistogramMetricFamily):
                family.add_metric(list(labels), found[0], found[1])
            elif not isinstance(found, tuple) and not isinstance(family, HistogramMetricFamily):
                family.add_metric(list(labels), float(found))
            else:
                raise TypeError(f"{self.name}: {found!r} is not a {self.type} value")
        return family

    def after(self, names: tuple[str, ...]) -> MetricSpec:
        """The same family with ``names`` before its own labels (the probes' own labels)."""
        return replace(self, labels=(*names, *self.labels))


def families(specs: Iterable[MetricSpec], rows: Sequence[Row]) -> list[Metric]:
    """One family per spec over the same rows, those left without samples left out."""
    built = (spec.family(rows) for spec in specs)
    return [family for family in built if family.samples]


def attribute(name: str, per: float = 1) -> Callable[[Any], float | None]:
    """Reads the source's attribute ``name``, ``per`` of its units making one base unit
    (1000 for milliseconds); None stays None."""

    def read(source: Any) -> float | None:
        value = getattr(source, name)
        return None if value is None else value / per

    return read


def as_is(value: Reading) -> Reading:
    """For rows that carry their value itself."""
    return value
