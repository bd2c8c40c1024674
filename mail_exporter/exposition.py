"""The Prometheus text format (0.0.4), written directly for the per-target probe results.

With hundreds of targets the probe results are nearly all of /metrics, and
``prometheus_client.generate_latest`` validates and escapes every label name of
every sample on every scrape (about 0.3 s for 500 targets). Each target's lines
only change when its probe finishes, so they are rendered here once, then, and a
scrape only joins strings. A /probe answer is written here too (:func:`spec_text`),
straight from the rows of each family.

The same holds for a collector whose work runs on an interval of its own (the dns
collector: 185,000 series for 10,000 domains, half a second for prometheus_client to
write at every scrape). It hands its families over as :class:`RenderedFamily`, which
carries the text ``generate_latest`` writes for it and that text compressed, made once
per pass; :func:`registry_parts` serves those as they are and writes the others. A
rendered family is still a :class:`Metric` with its samples, for whatever reads those
(the status page, a merge): its text stands only while its ``samples`` are the list it
was rendered from, so that a merge, which gives the merged family a list of its own,
falls back to writing it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from functools import cache, lru_cache

from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from mail_exporter.gzip_body import Part, compress
from mail_exporter.metric_spec import MetricSpec, Row

_go_number: Callable[[float], str] = floatToGoString
"""Numbers as Go writes them, as ``generate_latest`` does."""


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def exposed_name(family: Metric) -> str:
    """The name HELP and TYPE lines use: counters carry their ``_total``."""
    return f"{family.name}_total" if family.type == "counter" else family.name


def header(family: Metric) -> str:
    return _header(exposed_name(family), family.documentation, family.type)


@lru_cache(maxsize=1024)  # the declared families: a few hundred
def _header(name: str, documentation: str, kind: str) -> str:
    documentation = documentation.replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {name} {documentation}\n# TYPE {name} {kind}\n"


def sample_lines(family: Metric) -> str:
    """The family's samples, one line each, without the header."""
    lines = []
    for sample in family.samples:
        if sample.labels:
            pairs = sample.labels.items()
            labels = ",".join(f'{key}="{_escape_label_value(text)}"' for key, text in pairs)
            lines.append(f"{sample.name}{{{labels}}} {format_value(sample.value)}\n")
        else:
            lines.append(f"{sample.name} {format_value(sample.value)}\n")
    return "".join(lines)


@cache
def _by_name(labels: tuple[str, ...]) -> tuple[tuple[int, str], ...]:
    """Each label's position and name, in the order of the names."""
    return tuple(sorted(enumerate(labels), key=lambda pair: pair[1]))


@lru_cache(maxsize=4096)  # a target's label values repeat from one probe to the next
def _labels_text(order: tuple[tuple[int, str], ...], values: tuple[str, ...]) -> str:
    return ",".join(f'{name}="{_escape_label_value(values[i])}"' for i, name in order)


def spec_text(spec: MetricSpec, rows: Iterable[Row]) -> str:
    """The family ``spec.family(rows)`` as ``prometheus_client.generate_latest`` writes it
    (nothing for a family without samples), byte for byte (labels by name, Go's number
    format), without building the family or validating its names: a /probe answer in 42 µs
    rather than 115 (docs/benchmarks.md, section 2). Gauges and counters only."""
    read = spec.value
    order = _by_name(spec.labels)
    lines = []
    for values, source in rows:
        found = read(source)
        if found is None:
            continue
        if isinstance(found, tuple):
            raise TypeError(f"{spec.name}: {found!r} is not a {spec.type} value")
        number = _go_number(float(found))
        if order:
            lines.append(f"{spec.name}{{{_labels_text(order, tuple(values))}}} {number}\n")
        else:
            lines.append(f"{spec.name} {number}\n")
    if not lines:
        return ""
    return _header(spec.name, spec.help, spec.type) + "".join(lines)


class _Families(Collector):
    """A list of families as ``generate_latest`` takes them."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


class RenderedFamily(Metric):
    """A family with its text as ``generate_latest`` writes it, and that text compressed."""

    def __init__(self, family: Metric) -> None:
        super().__init__(family.name, family.documentation, family.type, family.unit)
        self.samples = family.samples
        self.rendered_samples = family.samples
        self.text = generate_latest(_Families([family]))
        self.part = compress(self.text)

    @property
    def current(self) -> bool:
        """Whether the text is that of the samples: they are the list it was written from."""
        return self.samples is self.rendered_samples


def registry_parts(registry: Collector) -> Iterator[tuple[bytes, Part | None]]:
    """What ``generate_latest(registry)`` writes, in parts: the text of each run of
    families, and with a rendered family's text its compressed part."""
    batch: list[Metric] = []
    for family in registry.collect():
        if isinstance(family, RenderedFamily) and family.current:
            if batch:
                yield generate_latest(_Families(batch)), None
                batch = []
            yield family.text, family.part
        else:
            batch.append(family)
    if batch:
        yield generate_latest(_Families(batch)), None
