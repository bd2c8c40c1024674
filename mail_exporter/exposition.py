"""The Prometheus text format (0.0.4), written directly for the per-target probe results.

With hundreds of targets the probe results are nearly all of /metrics, and
``prometheus_client.generate_latest`` validates and escapes every label name of
every sample on every scrape (about 0.3 s for 500 targets). Each target's lines
only change when its probe finishes, so they are rendered here once, then, and a
scrape only joins strings.
"""

from __future__ import annotations

import math

from prometheus_client.core import Metric


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
    documentation = family.documentation.replace("\\", "\\\\").replace("\n", "\\n")
    name = exposed_name(family)
    return f"# HELP {name} {documentation}\n# TYPE {name} {family.type}\n"


def sample_lines(family: Metric) -> str:
    """The family's samples, one line each, without the header."""
    lines = []
    for sample in family.samples:
        if sample.labels:
            labels = ",".join(
                f'{key}="{_escape_label_value(value)}"' for key, value in sample.labels.items()
            )
            lines.append(f"{sample.name}{{{labels}}} {format_value(sample.value)}\n")
        else:
            lines.append(f"{sample.name} {format_value(sample.value)}\n")
    return "".join(lines)
