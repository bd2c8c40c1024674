"""The ``mail-migration`` dashboard: the same graphs now and ``$shift`` ago, overlaid, for
before/after checks."""

from __future__ import annotations

from collections.abc import Callable

from mixin.dashboards.shared import TARGET
from mixin.grafana import (
    Json,
    Panel,
    Query,
    Row,
    custom_variable,
    dashboard,
    label_variable,
    timeseries,
)
from mixin.promql import quantile, rate, series, sum_by

Expression = Callable[[str], str]
"""Builds a query given an offset: "" for now, "$shift" for the comparison."""


def overlay(
    title: str, description: str, expression: Expression, legend: str, unit: str = "short"
) -> Panel:
    """The same query now and ``$shift`` ago; the earlier one dashed."""
    dashed = {
        "matcher": {"id": "byRegexp", "options": "^before .*"},
        "properties": [{"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}}],
    }
    return timeseries(
        title,
        f"{description} Solid: now; dashed: the same time $shift earlier.",
        Query(expression(""), f"now {legend}"),
        Query(expression("$shift"), f"before {legend}"),
        unit=unit,
        overrides=[dashed],
    )


def _migration_probes() -> Row:
    return Row(
        "Probes",
        [
            overlay(
                "Probe latency p95 by protocol",
                "95th percentile of probe durations per protocol.",
                lambda at: quantile(
                    0.95, "mail_probe_latency_seconds", "protocol", TARGET, offset=at
                ),
                "{{protocol}}",
                unit="s",
            ),
            overlay(
                "Probe success by protocol",
                "Share of targets whose last probe passed.",
                lambda at: f"avg by (protocol) ({series('mail_probe_success', TARGET, offset=at)})",
                "{{protocol}}",
                unit="percentunit",
            ),
            overlay(
                "Probe phases",
                "Average time per probe phase: shows a slower TLS handshake or login at once.",
                lambda at: "avg by (phase) "
                f"({series('mail_probe_phase_duration_seconds', TARGET, offset=at)})",
                "{{phase}}",
                unit="s",
            ),
        ],
    )


def _migration_mail_flow() -> Row:
    return Row(
        "Mail flow",
        [
            overlay(
                "Round trip duration",
                "Send to seen in the mailbox, last success per route.",
                lambda at: series("mail_roundtrip_duration_seconds", offset=at),
                "{{route}}",
                unit="s",
            ),
            overlay(
                "Deliveries by status",
                "Recipient delivery attempts per second.",
                lambda at: sum_by("status", rate("mail_deliveries_total", offset=at)),
                "{{status}}",
                unit="mps",
            ),
            overlay(
                "Queues",
                "Messages per queue, all MTAs together.",
                lambda at: sum_by("queue", series("mail_queue_messages", offset=at)),
                "{{queue}}",
            ),
            overlay(
                "Rejects by reason",
                "Rejected SMTP commands per second by reason class.",
                lambda at: sum_by("reason", rate("mail_smtpd_rejects_total", offset=at)),
                "{{reason}}",
                unit="cps",
            ),
            overlay(
                "Login failures",
                "Failed SASL and mailbox logins per second.",
                lambda at: sum_by("mta", rate("mail_auth_failures_total", offset=at)),
                "{{mta}}",
                unit="cps",
            ),
        ],
    )


def migration_comparison() -> Json:
    return dashboard(
        "mail-migration",
        "Mail: migration before/after",
        "Each graph now and $shift earlier, overlaid: did the migration make mail slower, "
        "less reliable or noisier?",
        [_migration_probes(), _migration_mail_flow()],
        [
            custom_variable("shift", "Compare with", ["1d", "7d", "30d"], "7d"),
            label_variable("target", "Target", "mail_probe_success"),
        ],
    )
