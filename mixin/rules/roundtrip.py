"""Alerts on the round trip: test mail that fails, stops arriving or arrives slowly."""

from __future__ import annotations

from mixin.config import Config
from mixin.promql import age
from mixin.rules.alert import (
    HOST_LABELS,
    Alert,
    Example,
    Levels,
    fired,
    flag_alert,
    leveled,
    ramp,
    steady,
)

ROUTE = 'route="local-loop",instance="mailhost:9469",job="mail"'
ROUTE_LABELS = {"route": "local-loop", **HOST_LABELS}


def roundtrip_alerts(c: Config) -> list[Alert]:
    alerts = [
        flag_alert(
            c, "MailRoundTripFailing", "mail_roundtrip_success", ROUTE_LABELS, "critical",
            "Test mail does not arrive.",
            "The round trip {{ $labels.route }} failed: mail sent there did not reach the mailbox "
            "in time; mail_roundtrip_failures_total says at which stage.",
        ),
        Alert(
            "MailRoundTripStale",
            f"{age('mail_roundtrip_last_success_timestamp_seconds', config=c)} > {c.roundtrip_stale_seconds}",
            "critical", "No test mail has arrived for a long time.",
            "The last successful round trip of {{ $labels.route }} was {{ $value | humanizeDuration }} ago.",
            Example([(f"mail_roundtrip_last_success_timestamp_seconds{{{ROUTE}}}", steady(0))], [fired(ROUTE_LABELS, "critical")]),
            Example([(f"mail_roundtrip_last_success_timestamp_seconds{{{ROUTE}}}", ramp(0, 60))]),
        ),
    ]  # fmt: skip
    alerts += leveled(
        "MailRoundTripSlow", "mail_roundtrip_duration_seconds" + c.matchers() + " > {limit}",
        Levels.of_durations(c.roundtrip_slow_warning_seconds, c.roundtrip_slow_critical_seconds),
        f"mail_roundtrip_duration_seconds{{{ROUTE}}}", ROUTE_LABELS, "Test mail takes long to arrive.",
        "The last test message on {{ $labels.route }} took {{ $value | humanizeDuration }} "
        "to arrive (threshold {limit}s).", "10m",
    )  # fmt: skip
    return alerts
