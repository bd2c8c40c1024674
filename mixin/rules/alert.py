"""What an alert is: its rule, its examples as promtool cases, and the sample labels the
examples share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mixin.config import Config

HOST = 'instance="mailhost:9469",job="mail"'
HOST_LABELS = {"instance": "mailhost:9469", "job": "mail"}


@dataclass(frozen=True)
class Example:
    """Input series (promtool ``input_series``) and the labels the alert fires with, if any."""

    series: list[tuple[str, str]]
    alerts: list[dict[str, str]] = field(default_factory=list)  # labels of each firing alert


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    severity: str
    summary: str
    description: str
    fires: Example
    quiet: Example
    for_: str = "5m"
    eval_minutes: int = 90
    labels: dict[str, str] = field(default_factory=dict)
    # More promtool cases, each firing or quiet as its alerts say: the expression's edges.
    also: tuple[Example, ...] = ()

    def rule(self, c: Config) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity, **self.labels},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": f"{c.runbook_url}#{self.name.lower()}",
            },
        }


def steady(value: float, minutes: int = 120) -> str:
    """A promtool series value: ``value`` every minute for ``minutes`` minutes."""
    return f"{value:g}x{minutes}"


def ramp(start: float, step: float, minutes: int = 120) -> str:
    """A promtool series value: from ``start``, ``step`` more every minute."""
    return f"{start:g}{step:+g}x{minutes}"


def fired(base: dict[str, str], severity: str, **extra: str) -> dict[str, str]:
    return {**base, **extra, "severity": severity}


def selector(labels: dict[str, str]) -> str:
    """An example series' label matchers, in the labels' order: ``a="1",b="2"``."""
    return ",".join(f'{name}="{value}"' for name, value in labels.items())


def flag_alert(
    c: Config,
    name: str,
    metric: str,
    labels: dict[str, str],
    severity: str,
    summary: str,
    description: str,
    *,
    bad: int = 0,
    for_: str = "5m",
) -> Alert:
    """An alert on a 1/0 gauge that reads ``bad``: it fires on a series of ``labels`` at
    ``bad`` and stays quiet at the other value."""
    series = f"{metric}{{{selector(labels)}}}"
    return Alert(
        name,
        f"{metric}{c.matchers()} == {bad}",
        severity,
        summary,
        description,
        Example([(series, steady(bad))], [fired(labels, severity)]),
        Example([(series, steady(1 - bad))]),
        for_=for_,
    )


@dataclass(frozen=True)
class Levels:
    """A warning and a critical threshold, and a series value in each band around them."""

    warning: float
    critical: float
    quiet: float  # neither fires
    between: float  # the warning fires
    beyond: float  # both fire

    @classmethod
    def of_durations(cls, warning: float, critical: float) -> Levels:
        """For durations: quiet at half the warning, beyond at twice the critical."""
        return cls(warning, critical, warning / 2, (warning + critical) / 2, critical * 2)


def leveled(
    name: str,
    expr: str,
    levels: Levels,
    series: str,
    labels: dict[str, str],
    summary: str,
    description: str,
    for_: str,
    values: Callable[[float], str] = steady,
) -> list[Alert]:
    """A warning and a critical alert of one name: ``expr`` and ``description`` hold ``{limit}``.

    ``values`` turns a level into the example series' values: a gauge holds it
    (:func:`steady`), a counter grows by it every minute (``lambda v: ramp(0, v)``).
    """
    warning, critical = fired(labels, "warning"), fired(labels, "critical")
    return [
        Alert(name, expr.replace("{limit}", f"{levels.warning:g}"), "warning", summary,
              description.replace("{limit}", f"{levels.warning:g}"),
              Example([(series, values(levels.between))], [warning]),
              Example([(series, values(levels.quiet))]), for_=for_),
        Alert(name, expr.replace("{limit}", f"{levels.critical:g}"), "critical", summary,
              description.replace("{limit}", f"{levels.critical:g}"),
              Example([(series, values(levels.beyond))], [warning, critical]),
              Example([(series, values(levels.between))], [warning]), for_=for_),
    ]  # fmt: skip
