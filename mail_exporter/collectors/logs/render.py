"""The log collector's metric families: every name, help text and label set, declared here.

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
from functools import cache
from itertools import accumulate

from prometheus_client.core import Metric

from mail_exporter.collectors.logs.counters import Histogram, Labels, LogCounters
from mail_exporter.collectors.logs.follower import Follower
from mail_exporter.collectors.logs.senders import MAX_ADDRESSES, MESSAGES, RECIPIENTS
from mail_exporter.metric_spec import MetricSpec, as_is, attribute

COUNTERS: dict[str, MetricSpec] = {  # by the LogCounters attribute that counts it
    "received": MetricSpec("mail_messages_received_total", "Messages accepted into the queue "
        "(Postfix: qmgr's first from= line of a queue ID; Exim: <=).", "counter", ("mta",), as_is),
    "submitted": MetricSpec("mail_messages_submitted_total", "Messages handed to the MTA, by the "
        "service that took them (Postfix: smtpd's QUEUEID: client= and pickup's uid= lines; Exim: "
        "<= by protocol P=, not its own bounces).", "counter", ("mta", "service"), as_is),
    "deliveries": MetricSpec("mail_deliveries_total", "Delivery attempts, one per recipient: "
        "sent, deferred, bounced, expired.", "counter", ("mta", "transport", "status"), as_is),
    "dsn_classes": MetricSpec("mail_delivery_dsn_total", "Delivery attempts by the class of their "
        "DSN status code (2, 4, 5).", "counter", ("mta", "transport", "dsn_class"), as_is),
    "connections": MetricSpec("mail_smtpd_connections_total", "SMTP connections accepted by the "
        "server.", "counter", ("mta", "service"), as_is),
    "lost_connections": MetricSpec("mail_smtpd_lost_connections_total", "SMTP connections the "
        "client dropped, by the last command.", "counter", ("mta", "service", "after"), as_is),
    "timeouts": MetricSpec("mail_smtpd_timeouts_total", "SMTP connections the server ended for a "
        "timeout, by the last command.", "counter", ("mta", "service", "after"), as_is),
    "rejects": MetricSpec("mail_smtpd_rejects_total", "Rejected SMTP commands and messages, by "
        "class of reason.", "counter", ("mta", "service", "reason"), as_is),
    "reject_stages": MetricSpec("mail_smtpd_reject_stages_total", "Rejected SMTP commands and "
        "messages, by the stage they were rejected at.", "counter", ("mta", "service", "stage"),
        as_is),
    "auth_failures": MetricSpec("mail_auth_failures_total", "Failed SASL or mailbox logins.",
        "counter", ("mta", "service"), as_is),
    "passdb_failures": MetricSpec("mail_auth_passdb_failures_total", "Failed logins as each "
        "Dovecot passdb (and PAM) logged them, by result; one failed login can show in several "
        "passdbs.", "counter", ("mta", "passdb", "result"), as_is),
    "logins": MetricSpec("mail_logins_total", "Successful SASL or mailbox logins, by mechanism.",
        "counter", ("mta", "service", "mechanism"), as_is),
    "disconnects": MetricSpec("mail_disconnects_total", "Dovecot sessions ended, by reason.",
        "counter", ("mta", "service", "reason"), as_is),
    "tls_connections": MetricSpec("mail_tls_connections_total", "TLS sessions established, by "
        "protocol version and trust (Postfix *_tls_loglevel >= 1; Exim: each <= with X=, each => "
        "with X= on a new connection).", "counter", ("mta", "service", "version", "trust"), as_is),
    "postscreen": MetricSpec("mail_postscreen_results_total", "Postscreen connections and test "
        "results.", "counter", ("mta", "result"), as_is),
    "bounces": MetricSpec("mail_bounces_generated_total", "Notifications the MTA generated "
        "(non-delivery, delay, success, postmaster).", "counter", ("mta", "kind"), as_is),
    "frozen": MetricSpec("mail_messages_frozen_total", "Messages Exim froze.", "counter", ("mta",),
        as_is),
    "problems": MetricSpec("mail_log_problems_total", "Log lines of severity warning, error, "
        "fatal or panic.", "counter", ("mta", "service", "severity"), as_is),
    "problem_classes": MetricSpec("mail_log_problem_classes_total", "Log lines of severity "
        "warning, error, fatal or panic by class of problem, and lookup table restarts (severity "
        "info).", "counter", ("mta", "severity", "class"), as_is),
    "filter_results": MetricSpec("mail_content_filter_results_total", "Spam and malware filter "
        "verdicts, by what the filter did.", "counter", ("mta", "verdict", "action"), as_is),
    "quarantined": MetricSpec("mail_quarantined_total", "Messages a content filter put in "
        "quarantine.", "counter", ("mta",), as_is),
    "refusal_codes": MetricSpec("mail_delivery_refusal_codes_total", "Deferred and bounced "
        "deliveries with a remote reply, by the reply's code class and RFC 3463 enhanced status "
        "code (known codes only, the rest as other).", "counter",
        ("mta", "code_class", "enhanced_code"), as_is),
}  # fmt: skip
DOMAINS: dict[str, MetricSpec] = {
    "sender_domains": MetricSpec("mail_sender_domain_messages_total", "Messages received by "
        "sender domain: the busiest domains, the rest as other.", "counter", ("mta", "domain"),
        as_is),
    "recipient_domains": MetricSpec("mail_recipient_domain_deliveries_total", "Delivery attempts "
        "by recipient domain: the busiest domains, the rest as other.", "counter",
        ("mta", "domain", "status"), as_is),
    "refusals": MetricSpec("mail_delivery_refusals_total", "Deferred and bounced deliveries with "
        "a remote reply, by receiving domain (the busiest refusing domains, the rest as other) and "
        "reason read from the reply.", "counter", ("mta", "domain", "status", "reason"), as_is),
}  # fmt: skip

ACCOUNTS: dict[str, MetricSpec] = {  # by the kind of count in LogCounters.accounts
    MESSAGES: MetricSpec("mail_account_messages_total", "Messages an authenticated account sent "
        "into the queue (Postfix: sasl_username=; Exim: A=): the busiest accounts, the rest as "
        "other.", "counter", ("mta", "account"), as_is),
    RECIPIENTS: MetricSpec("mail_account_recipients_total", "Recipients of the messages an "
        "authenticated account sent (Postfix: nrcpt=; Exim: the for list): the busiest accounts, "
        "the rest as other.", "counter", ("mta", "account"), as_is),
}  # fmt: skip
ACCOUNT_ADDRESSES = MetricSpec(
    "mail_account_client_addresses", "Distinct client addresses an account authenticated from "
    f"within account_address_window (exact up to {MAX_ADDRESSES}, then {MAX_ADDRESSES}): "
    "the accounts with the most.",
    "gauge", ("account",), as_is,
)  # fmt: skip


def split_accounts(counts: Mapping[Labels, int]) -> dict[str, dict[Labels, int]]:
    """(mta, account, kind) → {kind: {(mta, account): count}}."""
    split: dict[str, dict[Labels, int]] = {kind: {} for kind in ACCOUNTS}
    for (mta, account, kind), count in counts.items():
        split[kind][(mta, account)] = count
    return split


@cache
def _bound_labels(bounds: tuple[float, ...]) -> tuple[str, ...]:
    return (*map(repr, bounds), "+Inf")


def _cumulative(histogram: Histogram) -> tuple[list[tuple[str, float]], float]:
    bounds, counts = _bound_labels(histogram.bounds), accumulate(histogram.buckets)
    return [(bound, float(n)) for bound, n in zip(bounds, counts, strict=True)], histogram.sum


HISTOGRAMS: dict[str, MetricSpec] = {
    "delays": MetricSpec("mail_delivery_delay_seconds", "Delivery delay by stage of Postfix's "
        "delays=a/b/c/d (final status only): before_queue_manager, queue_manager, "
        "connection_setup, transmission.", "histogram", ("mta", "transport", "stage"), _cumulative),
    "message_sizes": MetricSpec("mail_message_size_bytes", "Sizes of messages accepted into the "
        "queue (Postfix: qmgr's size=; Exim: S=).", "histogram", ("mta",), _cumulative),
    "message_recipients": MetricSpec("mail_message_recipients", "Recipients per message accepted "
        "into the queue (Postfix: qmgr's nrcpt=; Exim: the for list of log_selector "
        "+received_recipients).", "histogram", ("mta",), _cumulative),
}  # fmt: skip
LINES = MetricSpec(
    "mail_log_lines_total", "Log lines read: parsed (understood) or unsupported.", "counter",
    ("mta", "result"), as_is,
)  # fmt: skip
PROGRAM_LINES = MetricSpec(
    "mail_log_program_lines_total", "Log lines read by the program that wrote them (syslog tag).",
    "counter", ("mta", "program", "result"), as_is,
)  # fmt: skip
SOURCE = (
    MetricSpec("mail_log_source_up", "1 while the log source is being read.", "gauge", ("source",),
        attribute("up")),
    MetricSpec("mail_log_source_lines_total", "Lines read from the log source.", "counter",
        ("source",), attribute("lines_read")),
    MetricSpec("mail_log_source_lines_too_long_total", "Lines dropped for exceeding "
        "max_line_bytes.", "counter", ("source",), attribute("too_long")),
)  # fmt: skip
ROTATIONS = MetricSpec(
    "mail_log_source_rotations_total", "Rotations of a log file seen: rename (and create) or "
    "truncate (copytruncate).", "counter", ("source", "kind"), as_is,
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
            counts = {counted: dict(getattr(counters, counted)) for counted in COUNTERS}
            for counted in DOMAINS:
                counts[counted] = getattr(counters, counted).snapshot()
            counts.update(split_accounts(counters.accounts.counts))
            counts[ACCOUNT_ADDRESSES.name] = counters.account_addresses.snapshot()
            histograms = {
                kept: {key: value.copy() for key, value in getattr(counters, kept).items()}
                for kept in HISTOGRAMS
            }
            return cls(counts, dict(counters.lines), histograms)


def line_families(lines: Mapping[Labels, int]) -> list[Metric]:
    """Coverage: ``mail_log_lines_total{mta,result}`` and the same by program."""
    by_mta: defaultdict[Labels, int] = defaultdict(int)
    for (mta, _, result), count in lines.items():
        by_mta[(mta, result)] += count
    return [LINES.family(sorted(by_mta.items())), PROGRAM_LINES.family(sorted(lines.items()))]


def source_families(followers: Sequence[Follower]) -> list[Metric]:
    rows = [((follower.label,), follower) for follower in followers]
    rotations = [
        ((follower.label, kind), count)
        for follower in followers
        for kind, count in sorted(follower.rotations.items())
    ]
    return [*(spec.family(rows) for spec in SOURCE), ROTATIONS.family(rotations)]


def families(snapshot: Snapshot, followers: Sequence[Follower]) -> Iterable[Metric]:
    for counted, spec in (*COUNTERS.items(), *DOMAINS.items(), *ACCOUNTS.items()):
        yield spec.family(sorted(snapshot.counts[counted].items()))
    yield ACCOUNT_ADDRESSES.family(sorted(snapshot.counts[ACCOUNT_ADDRESSES.name].items()))
    for kept, spec in HISTOGRAMS.items():
        yield spec.family(sorted(snapshot.histograms[kept].items()))
    yield from line_families(snapshot.lines)
    yield from source_families(followers)
