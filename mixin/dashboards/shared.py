"""What several mail dashboards share: the variables' matchers, how a probe's 1/0 facts
read, the probe thresholds' colours from :mod:`mixin.config`, and the count of broken
things."""

from __future__ import annotations

from mixin.config import CONFIG
from mixin.grafana import Panel, Query, any_is_bad, flag, higher_is_worse, lower_is_worse, stat
from mixin.promql import count_or_zero

TARGET = 'target=~"$target"'
INSTANCE = 'instance=~"$instance"'
MTA = 'mta=~"$mta"'
LOG = (MTA, INSTANCE)
"""The delivery dashboard's log series: the chosen MTAs of the chosen exporters."""

UP_DOWN = flag(("up", "green"), ("down", "red"))
VERIFIED = flag(("verified", "green"), ("not verified", "red"))
STARTTLS = flag(("offered", "green"), ("missing", "red"))
PLAINTEXT_LOGIN = flag(("before TLS", "red"), ("no", "green"))

CERT_DAYS = lower_is_worse(CONFIG.cert_expiry_critical_days, CONFIG.cert_expiry_warning_days)
PROBE_SLOW = higher_is_worse(CONFIG.probe_slow_warning_seconds, CONFIG.probe_slow_critical_seconds)


def broken(
    title: str, description: str, expr: str, color: str = "red", width: int = 3, height: int = 4
) -> Panel:
    """How many series ``expr`` selects (the broken things): green at 0, ``color`` from 1."""
    steps = any_is_bad(color)
    return stat(
        title, description, Query(count_or_zero(expr)), steps=steps, width=width, height=height
    )
