"""Recording rules: series the alerts and dashboards read, under the names in
:mod:`mixin.promql`."""

from __future__ import annotations

from mixin.config import Config
from mixin.promql import (
    BOUNCE_RATIO_RULE,
    CERT_DAYS_RULE,
    DEFER_RATIO_RULE,
    PROBE_P95_RULE,
    ROUNDTRIP_P95_RULE,
    cert_days_left,
    equals,
    quantile,
    rate,
    sum_by,
)

# The windows the rules' names promise (..._rate1h, ..._rate15m).
QUANTILE_WINDOW = "1h"
RATIO_WINDOW = "15m"


def _delivery_ratio(status: str, c: Config) -> str:
    """The share of delivery attempts that ended in ``status`` per MTA, while above 0."""
    by = "instance, job, mta"
    part = rate("mail_deliveries_total", equals("status", status), window=RATIO_WINDOW, config=c)
    whole = rate("mail_deliveries_total", window=RATIO_WINDOW, config=c)
    return f"{sum_by(by, part)} / {sum_by(by, whole)} > 0"


def _p95(histogram: str, by: str, c: Config) -> str:
    """The 95th percentile of a histogram's observations over the last hour, per ``by``."""
    return quantile(0.95, histogram, by, window=QUANTILE_WINDOW, config=c)


def recording_rules(c: Config) -> list[dict[str, str]]:
    probe_p95 = _p95("mail_probe_latency_seconds", "instance, job, target, protocol", c)
    return [
        {"record": CERT_DAYS_RULE, "expr": cert_days_left(config=c)},
        {"record": PROBE_P95_RULE, "expr": probe_p95},
        {
            "record": ROUNDTRIP_P95_RULE,
            "expr": _p95("mail_roundtrip_delivery_seconds", "instance, job, route", c),
        },
        {"record": BOUNCE_RATIO_RULE, "expr": _delivery_ratio("bounced", c)},
        {"record": DEFER_RATIO_RULE, "expr": _delivery_ratio("deferred", c)},
    ]
