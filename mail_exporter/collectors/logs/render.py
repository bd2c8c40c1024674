"""The log collector's metric families: every name, help text and label set in one table.

Sample output::

    mail_messages_submitted_total{mta="postfix",service="submission/smtpd"} 2.0
    mail_deliveries_total{mta="postfix",transport="lmtp",status="sent"} 2.0
    mail_delivery_delay_seconds_count{mta="postfix",transport="lmtp",stage="transmission"} 2.0
    mail_smtpd_rejects_total{mta="postfix",service="smtpd",reason="relay_denied"} 1.0
    mail_auth_failures_total{mta="postfix",service="submission/smtpd"} 1.0
    mail_log_lines_total{mta="postfix",result="parsed"} 42.0
    mail_log_source_up{source="/var/log/mail.log"} 1.0
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from mail_exporter.collectors.logs.counters import Histogram, Labels, LogCounters
from mail_exporter.collectors.logs.follower import Follower


@dataclass(frozen=True)
class Family:
    attribute: str  # of LogCounters
    name: str
    documentation: str
    labels: tuple[str, ...]


COUNTERS = (
    Family("received", "mail_messages_received_total",
           "Messages accepted into the queue (Postfix: qmgr's first from= line of a queue ID; "
           "Exim: <=).", ("mta",)),
    Family("submitted", "mail_messages_submitted_total",
           "Messages handed to the MTA, by the service that took them (Postfix: smtpd's "
           "QUEUEID: client= and pickup's uid= lines; Exim: <= by protocol P=, not its own "
           "bounces).", ("mta", "service")),
    Family("deliveries", "mail_deliveries_total",
           "Delivery attempts, one per recipient: sent, deferred, bounced, expired.",
           ("mta", "transport", "status")),
    Family("dsn_classes", "mail_delivery_dsn_total",
           "Delivery attempts by the class of their DSN status code (2, 4, 5).",
           ("mta", "transport", "dsn_class")),
    Family("connections", "mail_smtpd_connections_total",
           "SMTP connections accepted by the server.", ("mta", "service")),
    Family("lost_connections", "mail_smtpd_lost_connections_total",
           "SMTP connections the client dropped, by the last command.",
           ("mta", "service", "after")),
    Family("timeouts", "mail_smtpd_timeouts_total",
           "SMTP connections the server ended for a timeout, by the last command.",
           ("mta", "service", "after")),
    Family("rejects", "mail_smtpd_rejects_total",
           "Rejected SMTP commands and messages, by class of reason.",
           ("mta", "service", "reason")),
    Family("reject_stages", "mail_smtpd_reject_stages_total",
           "Rejected SMTP commands and messages, by the stage they were rejected at.",
           ("mta", "service", "stage")),
    Family("auth_failures", "mail_auth_failures_total",
           "Failed SASL or mailbox logins.", ("mta", "service")),
    Family("passdb_failures", "mail_auth_passdb_failures_total",
           "Failed logins as each Dovecot passdb (and PAM) logged them, by result; one "
           "failed login can show in several passdbs.", ("mta", "passdb", "result")),
    Family("logins", "mail_logins_total",
           "Successful SASL or mailbox logins, by mechanism.", ("mta", "service", "mechanism")),
    Family("disconnects", "mail_disconnects_total",
           "Dovecot sessions ended, by reason.", ("mta", "service", "reason")),
    Family("tls_connections", "mail_tls_connections_total",
           "TLS sessions established, by protocol version and trust (Postfix *_tls_loglevel "
           ">= 1; Exim: each <= with X=, each => with X= on a new connection).",
           ("mta", "service", "version", "trust")),
    Family("postscreen", "mail_postscreen_results_total",
           "Postscreen connections and test results.", ("mta", "result")),
    Family("bounces", "mail_bounces_generated_total",
           "Notifications the MTA generated (non-delivery, delay, success, postmaster).",
           ("mta", "kind")),
    Family("frozen", "mail_messages_frozen_total", "Messages Exim froze.", ("mta",)),
    Family("problems", "mail_log_problems_total",
           "Log lines of severity warning, error, fatal or panic.",
           ("mta", "service", "severity")),
    Family("problem_classes", "mail_log_problem_classes_total",
           "Log lines of severity warning, error, fatal or panic by class of problem, and "
           "lookup table restarts (severity info).", ("mta", "severity", "class")),
    Family("filter_results", "mail_content_filter_results_total",
           "Spam and malware filter verdicts, by what the filter did.",
           ("mta", "verdict", "action")),
    Family("quarantined", "mail_quarantined_total",
           "Messages a content filter put in quarantine.", ("mta",)),
    Family("refusal_codes", "mail_delivery_refusal_codes_total",
           "Deferred and bounced deliveries with a remote reply, by the reply's code class "
           "and RFC 3463 enhanced status code (known codes only, the rest as other).",
           ("mta", "code_class", "enhanced_code")),
)  # fmt: skip
DOMAINS = (
    Family("sender_domains", "mail_sender_domain_messages_total",
           "Messages received by sender domain: the busiest domains, the rest as other.",
           ("mta", "domain")),
    Family("recipient_domains", "mail_recipient_domain_deliveries_total",
           "Delivery attempts by recipient domain: the busiest domains, the rest as other.",
           ("mta", "domain", "status")),
    Family("refusals", "mail_delivery_refusals_total",
           "Deferred and bounced deliveries with a remote reply, by receiving domain (the "
           "busiest refusing domains, the rest as other) and reason read from the reply.",
           ("mta", "domain", "status", "reason")),
)  # fmt: skip
HISTOGRAMS = (
    Family("delays", "mail_delivery_delay_seconds",
           "Delivery delay by stage of Postfix's delays=a/b/c/d (final status only): "
           "before_queue_manager, queue_manager, connection_setup, transmission.",
           ("mta", "transport", "stage")),
    Family("message_sizes", "mail_message_size_bytes",
           "Sizes of messages accepted into the queue (Postfix: qmgr's size=; Exim: S=).",
           ("mta",)),
    Family("message_recipients", "mail_message_recipients",
           "Recipients per message accepted into the queue (Postfix: qmgr's nrcpt=; Exim: "
           "the for list of log_selector +received_recipients).", ("mta",)),
)  # fmt: skip


@dataclass
class Snapshot:
    """Copies of the counters, taken under their lock, rendered outside it."""

    counts: dict[str, dict[Labels, int]]
    lines: dict[Labels, int]
    histograms: dict[str, dict[Labels, Histogram]]

    @classmethod
    def take(cls, counters: LogCounters) -> Snapshot:
        with counters.lock:
            counts = {family.attribute: dict(getattr(counters, family.attribute))
                      for family in COUNTERS}  # fmt: skip
            for family in DOMAINS:
                counts[family.attribute] = getattr(counters, family.attribute).snapshot()
            histograms = {
                family.attribute: {key: value.copy()
                                   for key, value in getattr(counters, family.attribute).items()}
                for family in HISTOGRAMS
            }  # fmt: skip
            return cls(counts, dict(counters.lines), histograms)


def counter(family: Family, values: Mapping[Labels, int]) -> Metric:
    metric = CounterMetricFamily(family.name, family.documentation, labels=list(family.labels))
    for labels, value in sorted(values.items()):
        metric.add_metric(list(labels), value)
    return metric


def histogram_family(family: Family, values: Mapping[Labels, Histogram]) -> Metric:
    metric = HistogramMetricFamily(family.name, family.documentation, labels=list(family.labels))
    for labels, histogram in sorted(values.items()):
        bounds = [*map(repr, histogram.bounds), "+Inf"]
        cumulative, buckets = 0, []
        for bound, count in zip(bounds, histogram.buckets, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        metric.add_metric(list(labels), buckets, histogram.sum)
    return metric


def line_families(lines: Mapping[Labels, int]) -> list[Metric]:
    """Coverage: ``mail_log_lines_total{mta,result}`` and the same by program."""
    by_mta: defaultdict[Labels, int] = defaultdict(int)
    for (mta, _, result), count in lines.items():
        by_mta[(mta, result)] += count
    return [
        counter(Family("", "mail_log_lines_total",
                       "Log lines read: parsed (understood) or unsupported.",
                       ("mta", "result")), by_mta),
        counter(Family("", "mail_log_program_lines_total",
                       "Log lines read by the program that wrote them (syslog tag).",
                       ("mta", "program", "result")), lines),
    ]  # fmt: skip


def source_families(followers: Sequence[Follower]) -> list[Metric]:
    up = GaugeMetricFamily(
        "mail_log_source_up", "1 while the log source is being read.", labels=["source"]
    )
    read = CounterMetricFamily(
        "mail_log_source_lines", "Lines read from the log source.", labels=["source"]
    )
    too_long = CounterMetricFamily(
        "mail_log_source_lines_too_long",
        "Lines dropped for exceeding max_line_bytes.",
        labels=["source"],
    )
    rotations = CounterMetricFamily(
        "mail_log_source_rotations",
        "Rotations of a log file seen: rename (and create) or truncate (copytruncate).",
        labels=["source", "kind"],
    )
    for follower in followers:
        up.add_metric([follower.label], 1.0 if follower.up else 0.0)
        read.add_metric([follower.label], follower.lines_read)
        too_long.add_metric([follower.label], follower.too_long)
        for kind, count in sorted(follower.rotations.items()):
            rotations.add_metric([follower.label, kind], count)
    return [up, read, too_long, rotations]


def families(snapshot: Snapshot, followers: Sequence[Follower]) -> Iterable[Metric]:
    for family in (*COUNTERS, *DOMAINS):
        yield counter(family, snapshot.counts[family.attribute])
    for family in HISTOGRAMS:
        yield histogram_family(family, snapshot.histograms[family.attribute])
    yield from line_families(snapshot.lines)
    yield from source_families(followers)
