"""The reports collector's metric families (docs/metrics.md, "Reports mailbox").

Counters that a pass has not touched yet still show where their labels are known in
advance (each message result, each rejection kind and reason, each configured rule and
status at 0), so that ``increase()`` sees their first step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client.core import Metric

from mail_exporter.collectors.reports.config import UNKNOWN_STATUS, ReportsConfig
from mail_exporter.collectors.reports.rejection import KINDS, REASONS
from mail_exporter.collectors.reports.tally import MESSAGE_RESULTS, Counters
from mail_exporter.metric_spec import MetricSpec, Row, as_is

DMARC_MESSAGES = MetricSpec(
    "mail_dmarc_report_messages_total", "Messages DMARC aggregate reports saw from the domain, "
    "by the policy applied and DKIM and SPF alignment.", "counter",
    ("domain", "reporter", "disposition", "dkim_aligned", "spf_aligned"), as_is,
)  # fmt: skip
DMARC_UNALIGNED = MetricSpec(
    "mail_dmarc_unaligned_messages_total", "Messages DMARC aggregate reports saw fail both DKIM "
    "and SPF alignment, by sending IP address (the top sources, other for the rest).", "counter",
    ("domain", "source"), as_is,
)  # fmt: skip
DMARC_REPORTS = MetricSpec(
    "mail_dmarc_reports_total", "DMARC aggregate reports counted.", "counter",
    ("domain", "reporter"), as_is,
)  # fmt: skip
TLSRPT_SESSIONS = MetricSpec(
    "mail_tlsrpt_sessions_total", "TLS sessions TLS-RPT reports counted for the policy domain, "
    "by policy type and result.", "counter", ("domain", "policy_type", "result"), as_is,
)  # fmt: skip
TLSRPT_REPORTS = MetricSpec(
    "mail_tlsrpt_reports_total", "TLS-RPT reports counted.", "counter",
    ("domain", "reporter"), as_is,
)  # fmt: skip
MESSAGES = MetricSpec(
    "mail_reports_messages_total", "Messages read from the reports mailbox, by what became of "
    "them.", "counter", ("result",), as_is,
)  # fmt: skip
REJECTED = MetricSpec(
    "mail_reports_rejected_total", "Reports refused, by kind and reason.", "counter",
    ("kind", "reason"), as_is,
)  # fmt: skip
DUPLICATES = MetricSpec(
    "mail_reports_duplicates_total", "Reports seen again (same reporter and report id) and not "
    "counted.", "counter", ("kind",), as_is,
)  # fmt: skip
NOTIFICATIONS = MetricSpec(
    "mail_notifications_total", "Messages that matched the notification rule, by status.",
    "counter", ("rule", "status"), as_is,
)  # fmt: skip
NOTIFICATION_LAST = MetricSpec(
    "mail_notification_last_timestamp_seconds", "Time of the newest message that matched the "
    "notification rule with the status.", "gauge", ("rule", "status"), as_is,
)  # fmt: skip


def _rows(counter: Mapping[Any, float]) -> list[Row]:
    return [(labels, float(count)) for labels, count in sorted(counter.items())]


def families(
    settings: ReportsConfig, counters: Counters, last: dict[tuple[str, str], float]
) -> list[Metric]:
    messages = {(result,): counters.messages[result] for result in MESSAGE_RESULTS}
    rejected = {(kind, reason): 0 for kind in KINDS for reason in REASONS}
    rejected.update(counters.rejected)
    duplicates = {(kind,): counters.duplicates[kind] for kind in KINDS if kind != "message"}
    notifications = {
        (rule.name, status): 0
        for rule in settings.notifications
        for status in (*rule.statuses, UNKNOWN_STATUS)
    }
    notifications.update(counters.notifications)
    return [
        DMARC_MESSAGES.family(_rows(counters.dmarc_messages)),
        DMARC_UNALIGNED.family(_rows(counters.unaligned)),
        DMARC_REPORTS.family(_rows(counters.dmarc_reports)),
        TLSRPT_SESSIONS.family(_rows(counters.tlsrpt_sessions)),
        TLSRPT_REPORTS.family(_rows(counters.tlsrpt_reports)),
        MESSAGES.family(_rows(messages)),
        REJECTED.family(_rows(rejected)),
        DUPLICATES.family(_rows(duplicates)),
        NOTIFICATIONS.family(_rows(notifications)),
        NOTIFICATION_LAST.family(_rows(last)),
    ]
