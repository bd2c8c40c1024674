"""Exchange through windows_exporter (docs/pairing.md): its transport queues recorded under
the names the Postfix and Exim queues have, so that the fleet's queue panels and alerts
cover it, and alerts on its services and mailbox databases.

The recording rules write ``mail_queue_messages{mta="exchange",mta_instance="exchange",
queue=...}`` per Exchange server (the ``instance`` and ``job`` of its windows_exporter) from
the queues' own total (:data:`~mixin.paired.EXCHANGE_TOTAL`), mapped as
:data:`~mixin.paired.EXCHANGE_QUEUES` says. The queue alerts compare Exchange's queues with
Checkmk's Exchange thresholds instead of Postfix's: they suit a transport that holds far
more mail in flight (:func:`with_exchange`).

Sample series are named exactly as windows_exporter documents its ``exchange`` collector
(docs/collector.exchange.md at commit 1c75398d, the perflib-based collector of releases
since 0.15.0; tests/test_paired.py quotes the names) and its ``service`` collector
(``windows_service_state``, service names in lower case).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from mixin.config import Config
from mixin.paired import (
    EXCHANGE_DATABASE_MOUNTED,
    EXCHANGE_MTA,
    EXCHANGE_QUEUE_PREFIX,
    EXCHANGE_QUEUES,
    EXCHANGE_TOTAL,
    SERVICE_STATE,
)
from mixin.rules.alert import Alert, Example, fired, selector, steady

WINDOWS_LABELS = {"instance": "exchange1:9182", "job": "windows"}
QUEUE_LABELS = {**WINDOWS_LABELS, "mta": EXCHANGE_MTA, "mta_instance": EXCHANGE_MTA}
SERVICE_LABELS = {**WINDOWS_LABELS, "name": "msexchangetransport", "state": "running"}
DATABASE_LABELS = {**WINDOWS_LABELS, "database": "DB01"}


def _queue(name: str) -> str:
    return f"{EXCHANGE_QUEUE_PREFIX}{name}{{{EXCHANGE_TOTAL}}}"


def exchange_recording_rules() -> list[dict[str, Any]]:
    """One rule per queue name; the transport queues summed keep their server's labels."""
    return [
        {
            "record": "mail_queue_messages",
            "expr": "sum without (name) (" + " + ".join(_queue(name) for name in names) + ")",
            "labels": {"mta": EXCHANGE_MTA, "mta_instance": EXCHANGE_MTA, "queue": queue},
        }
        for queue, names in EXCHANGE_QUEUES.items()
    ]


def _transport_series(name: str, value: float) -> tuple[str, str]:
    labels = selector({**WINDOWS_LABELS, "name": "total_excluding_priority_none"})
    return f"{EXCHANGE_QUEUE_PREFIX}{name}{{{labels}}}", steady(value)


def with_exchange(alert: Alert, queue: str, c: Config) -> Alert:
    """A queue alert of Postfix's thresholds (MailQueueActiveHigh, MailQueueDeferredHigh)
    that also fires on Exchange's ``queue`` at Exchange's threshold of its severity.

    Its further examples feed the transport queues the recording rule reads: the first of
    the queue's transport queues holds every message, the others are empty.
    """
    warn, crit = c.exchange_queue_warning, c.exchange_queue_critical
    limit = warn if alert.severity == "warning" else crit
    first, *rest = EXCHANGE_QUEUES[queue]
    labels = {**QUEUE_LABELS, "queue": queue}

    def holding(messages: int, *severities: str) -> Example:
        series = [_transport_series(first, messages), *(_transport_series(r, 0) for r in rest)]
        return Example(series, [fired(labels, severity) for severity in severities])

    between = (warn + crit) // 2
    if alert.severity == "warning":
        examples = (holding(between, "warning"), holding(warn))
    else:
        examples = (holding(crit + 1, "warning", "critical"), holding(between, "warning"))
    exchange = f'mail_queue_messages{{mta="{EXCHANGE_MTA}",queue="{queue}"}} > {limit}'
    threshold = re.compile(r"\(threshold ([^)]*)\)")
    return replace(
        alert,
        expr=f"{alert.expr} or {exchange}",
        description=threshold.sub(rf"(threshold \1, Exchange {limit})", alert.description),
        also=(*alert.also, *examples),
    )


def exchange_alerts(c: Config) -> list[Alert]:
    service = f"{SERVICE_STATE}{{{selector(SERVICE_LABELS)}}}"
    database = f"{EXCHANGE_DATABASE_MOUNTED}{{{selector(DATABASE_LABELS)}}}"
    return [
        Alert(
            "MailExchangeServiceDown",
            f'{SERVICE_STATE}{{name=~"{c.exchange_services}",state="running"}} == 0',
            "critical",
            "An Exchange service that carries mail is not running.",
            "The Exchange service {{ $labels.name }} on {{ $labels.instance }} is not running.",
            Example([(service, steady(0))], [fired(SERVICE_LABELS, "critical")]),
            Example([(service, steady(1))]),
            for_=c.exchange_service_down_for,
        ),
        Alert(
            "MailExchangeDatabaseDismounted",
            f"{EXCHANGE_DATABASE_MOUNTED} == 0",
            "critical",
            "An Exchange mailbox database is not mounted.",
            "The mailbox database {{ $labels.database }} on {{ $labels.instance }} is "
            "dismounted: its users can neither read nor receive mail.",
            Example([(database, steady(0))], [fired(DATABASE_LABELS, "critical")]),
            Example([(database, steady(1))]),
            for_=c.exchange_database_dismounted_for,
        ),
    ]
