"""Alerts on the mail queues: too many messages, too old, growing, frozen."""

from __future__ import annotations

from mixin.config import Config
from mixin.promql import HOUR_SECONDS, series
from mixin.rules.alert import HOST_LABELS, Alert, Example, Levels, fired, leveled, ramp, steady
from mixin.rules.exchange import with_exchange

QUEUE = 'mta="postfix",mta_instance="postfix",instance="mailhost:9469",job="mail"'
QUEUE_LABELS = {
    "mta": "postfix",
    "mta_instance": "postfix",
    "instance": "mailhost:9469",
    "job": "mail",
}

EXCHANGE_DEFERRED = (
    'mail_queue_messages{mta="exchange",mta_instance="exchange",instance="exchange1:9182",'
    'job="windows",queue="deferred"}'
)


def queue_alerts(c: Config) -> list[Alert]:
    alerts: list[Alert] = []
    for queue, name, warn, crit in (
        ("deferred", "MailQueueDeferredHigh", c.queue_deferred_warning, c.queue_deferred_critical),
        ("active", "MailQueueActiveHigh", c.queue_active_warning, c.queue_active_critical),
    ):
        # Exchange's queues (recorded from windows_exporter) have thresholds of their own.
        alerts += [with_exchange(alert, queue, c) for alert in leveled(
            name, "mail_queue_messages" + c.matchers(f'queue="{queue}"', 'mta!="exchange"') + " > {limit}",
            Levels(warn, crit, warn, (warn + crit) // 2, crit + 1),
            f'mail_queue_messages{{{QUEUE},queue="{queue}"}}', {**QUEUE_LABELS, "queue": queue},
            f"Mail piles up in the {queue} queue.",
            "{{ $labels.mta }} {{ $labels.mta_instance }} on {{ $labels.instance }} holds "
            '{{ $value | printf "%.0f" }} messages in the ' + queue + " queue (threshold {limit}).",
            c.queue_for,
        )]  # fmt: skip
    warn_age, crit_age = c.queue_oldest_warning_seconds, c.queue_oldest_critical_seconds
    alerts += leveled(
        "MailQueueOldestMessageOld",
        # Held mail waits on purpose (postsuper -h): it does not make the queue stuck.
        "mail_queue_oldest_message_age_seconds" + c.matchers('queue!="hold"') + " > {limit}",
        Levels(warn_age, crit_age, warn_age - 60, (warn_age + crit_age) / 2, crit_age + 60),
        f'mail_queue_oldest_message_age_seconds{{{QUEUE},queue="deferred"}}',
        {**QUEUE_LABELS, "queue": "deferred"}, "A message has waited in the queue for too long.",
        "The oldest message in the {{ $labels.queue }} queue of {{ $labels.mta_instance }} on "
        "{{ $labels.instance }} is {{ $value | humanizeDuration }} old (threshold {limit}s).", "5m",
    )  # fmt: skip
    horizon = c.queue_growth_horizon_hours * HOUR_SECONDS
    deferred = f'mail_queue_messages{{{QUEUE},queue="deferred"}}'

    def growing_past(mta: str, limit: int) -> str:
        queues = series("mail_queue_messages", 'queue=~"deferred|active"', mta, config=c)
        return f"predict_linear({queues}[1h], {horizon}) > {limit} and deriv({queues}[1h]) > 0"

    alerts.append(Alert(
        "MailQueueGrowing",
        # Exchange's queues are measured against its own critical threshold.
        growing_past('mta!="exchange"', c.queue_deferred_critical)
        + " or "
        + growing_past('mta="exchange"', c.exchange_queue_critical),
        "warning", "A mail queue keeps growing.",
        "At its rate over the last hour the {{ $labels.queue }} queue of {{ $labels.mta_instance }} "
        f"on {{{{ $labels.instance }}}} will hold {{{{ $value | printf \"%.0f\" }}}} messages in "
        f"{c.queue_growth_horizon_hours} hours.",
        Example([(deferred, ramp(0, 0.1))], [fired(QUEUE_LABELS, "warning", queue="deferred")]),
        Example([(deferred, steady(3))]),
        for_="15m",
        # Exchange growing at a rate Postfix's threshold would flag, far below its own.
        also=(Example([(EXCHANGE_DEFERRED, ramp(300, 1))]),),
    ))  # fmt: skip
    alerts.append(Alert(
        "MailQueueFrozenMessages", f"mail_queue_frozen_messages{c.matchers()} > 0", "warning",
        "Exim holds frozen messages.",
        "{{ $value }} frozen messages in Exim's queue on {{ $labels.instance }}: they will not be "
        "retried until someone looks at them.",
        Example([('mail_queue_frozen_messages{mta="exim",mta_instance="exim",instance="mailhost:9469",job="mail"}', steady(2))],
                [fired({"mta": "exim", "mta_instance": "exim", **HOST_LABELS}, "warning")]),
        Example([('mail_queue_frozen_messages{mta="exim",mta_instance="exim",instance="mailhost:9469",job="mail"}', steady(0))]),
        for_="1h",
    ))  # fmt: skip
    return alerts
