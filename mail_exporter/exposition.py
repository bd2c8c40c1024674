"""The Prometheus text format (0.0.4), written directly for the per-target probe results.

With hundreds of targets the probe results are nearly all of /metrics, and
``prometheus_client.generate_latest`` validates and escapes every label name of
every sample on every scrape (about 0.3 s for 500 targets). Each target's lines
only change when its probe finishes, so they are rendered here once, then, and a
scrape only joins strings. A /probe answer is written here too (:func:`spec_text`),
straight from the rows of each family.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import cache, lru_cache

from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

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
