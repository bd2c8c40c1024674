"""The ``mail-delivery`` dashboard: what the logs say (deliveries, delays, domains, why
receivers refuse our mail, who sends (:mod:`.delivery_senders`), message sizes and
recipients, spam, rejects, logins) and whether the logs are read at all; beside them, rspamd's
and Dovecot's own counters (:mod:`.delivery_paired`)."""

from __future__ import annotations

from mixin.config import CONFIG
from mixin.dashboards.delivery_paired import dovecot_row, spam_filter_row
from mixin.dashboards.delivery_senders import senders_row
from mixin.dashboards.shared import INSTANCE, LOG, UP_DOWN
from mixin.grafana import (
    NAMED,
    Json,
    Panel,
    Query,
    Row,
    bargauge,
    dashboard,
    label_legend,
    label_variable,
    stat,
    thresholds,
    timeseries,
)
from mixin.promql import (
    BOUNCE_RATIO_RULE,
    DEFER_RATIO_RULE,
    equals,
    increase,
    quantile,
    rate,
    series,
    sum_by,
)


def increase_over_range(metric: str, *matchers: str) -> str:
    """How much a counter grew over the dashboard's whole time range."""
    return rate(metric, *matchers, func="increase", window="$__range")


def per_second(
    metric: str, by: str, *matchers: str, legend: str = "", above_zero: bool = False
) -> Query:
    """A log counter's rate per ``by`` group, named by its labels unless ``legend`` is given;
    ``above_zero`` leaves out the groups at 0 (for problems: no line, no noise)."""
    expr = sum_by(by, rate(metric, *matchers, *LOG)) + (" > 0" if above_zero else "")
    return Query(expr, legend or label_legend(by))


def _grown(metric: str, *matchers: str) -> str:
    """How much a log counter grew over the time range, all series together."""
    return f"sum({increase_over_range(metric, *matchers, *LOG)})"


def _total(title: str, description: str, metric: str, *matchers: str) -> Panel:
    """A stat of how much a log counter grew over the time range."""
    return stat(title, description, Query(_grown(metric, *matchers)), decimals=0)


def _delivery_ratio(title: str, status: str, warning: float) -> Panel:
    """The share of delivery attempts that ended in ``status``, orange from ``warning``."""
    part = _grown("mail_deliveries_total", equals("status", status))
    return stat(
        title,
        f"{status.capitalize()} of all delivery attempts; orange from {warning:.0%}.",
        Query(f"{part} / {_grown('mail_deliveries_total')}"),
        unit="percentunit",
        steps=thresholds("green", (warning, "orange")),
        decimals=1,
    )


# What each delivery status counts, in the order the totals show them.
DELIVERY_STATUSES = {
    "sent": "Recipient deliveries that succeeded.",
    "deferred": "Delivery attempts that were deferred.",
    "bounced": "Deliveries that bounced.",
    "expired": "Messages given up after their maximal queue lifetime.",
}


def top_over_range(by: str, metric: str, *matchers: str, count: int = 10) -> str:
    """The ``count`` largest ``by`` groups of a counter's growth over the time range."""
    grown = sum_by(by, increase_over_range(metric, *matchers))
    return f"sort_desc(topk({count}, {grown}))"


def _delivery_totals() -> Row:
    return Row(
        "Over the selected time range",
        [
            *(
                _total(
                    status.capitalize(),
                    description,
                    "mail_deliveries_total",
                    equals("status", status),
                )
                for status, description in DELIVERY_STATUSES.items()
            ),
            _delivery_ratio("Bounce ratio", "bounced", CONFIG.bounce_ratio_warning),
            _delivery_ratio("Defer ratio", "deferred", CONFIG.defer_ratio_warning),
            _total("Rejects", "SMTP commands the server rejected.", "mail_smtpd_rejects_total"),
            _total("Login failures", "Failed SASL and mailbox logins.", "mail_auth_failures_total"),
        ],
    )


def _delivery_flow() -> Row:
    return Row(
        "Deliveries",
        [
            timeseries(
                "Deliveries by status",
                "Recipient delivery attempts per second: sent, deferred, bounced, expired.",
                per_second("mail_deliveries_total", "status"),
                unit="mps",
                stack=True,
            ),
            timeseries(
                "Deliveries by transport",
                "Delivery attempts per second by transport (smtp, lmtp, local, …) and status.",
                per_second("mail_deliveries_total", "transport, status"),
                unit="mps",
            ),
            timeseries(
                "Bounce and defer ratio",
                "Share of delivery attempts that bounced or were deferred over 15 minutes, from "
                f"the recording rules {BOUNCE_RATIO_RULE} and {DEFER_RATIO_RULE} (shown only "
                "while above 0). Dashed lines: the alerts' "
                f"{CONFIG.bounce_ratio_warning:.0%} bounce and "
                f"{CONFIG.defer_ratio_warning:.0%} defer warnings.",
                Query(series(BOUNCE_RATIO_RULE, *LOG), "{{instance}} {{mta}} bounced"),
                Query(series(DEFER_RATIO_RULE, *LOG), "{{instance}} {{mta}} deferred"),
                unit="percentunit",
                steps=thresholds(
                    "green",
                    (CONFIG.bounce_ratio_warning, "orange"),
                    (CONFIG.defer_ratio_warning, "red"),
                ),
            ),
            timeseries(
                "Delivery delay by stage",
                "95th percentile of Postfix's delays= stages: before the queue manager, in "
                "the queue manager, connection setup and transmission.",
                Query(
                    quantile(0.95, "mail_delivery_delay_seconds", "stage", *LOG), "p95 {{stage}}"
                ),
                unit="s",
            ),
            timeseries(
                "Messages received",
                "Messages accepted into the queue per second.",
                per_second("mail_messages_received_total", "instance, mta"),
                unit="mps",
                width=8,
            ),
            timeseries(
                "Delivery status codes",
                "Delivery attempts per second by DSN class: 2 delivered, 4 temporary failure, "
                "5 permanent failure.",
                per_second("mail_delivery_dsn_total", "dsn_class", legend="{{dsn_class}}.x.x"),
                unit="mps",
                stack=True,
                width=8,
            ),
            timeseries(
                "Bounce notifications",
                "Notifications the bounce service generated per second, by kind.",
                per_second("mail_bounces_generated_total", "kind"),
                unit="mps",
                width=8,
            ),
        ],
    )


def _delivery_domains() -> Row:
    return Row(
        "Domains",
        [
            bargauge(
                "Top recipient domains",
                "Delivery attempts over the time range by recipient domain (the busiest "
                "domains by name, the rest as other).",
                Query(
                    top_over_range("domain", "mail_recipient_domain_deliveries_total", *LOG),
                    "{{domain}}",
                    instant=True,
                ),
                decimals=0,
                width=8,
            ),
            bargauge(
                "Domains that defer or bounce",
                "Deferred and bounced delivery attempts over the time range by recipient "
                "domain: one domain at the top points at that destination, not at us.",
                Query(
                    top_over_range(
                        "domain, status",
                        "mail_recipient_domain_deliveries_total",
                        'status=~"deferred|bounced|expired"',
                        *LOG,
                    ),
                    "{{domain}} {{status}}",
                    instant=True,
                ),
                steps=thresholds("orange"),
                decimals=0,
                width=8,
            ),
            bargauge(
                "Top sender domains",
                "Messages received over the time range by sender domain (none: the null "
                "sender of bounces).",
                Query(
                    top_over_range("domain", "mail_sender_domain_messages_total", *LOG),
                    "{{domain}}",
                    instant=True,
                ),
                decimals=0,
                width=8,
            ),
        ],
    )


REFUSALS = "mail_delivery_refusals_total"


def _outbound_refusals() -> Row:
    minutes = CONFIG.remote_refusals_window_minutes
    warn, crit = (
        CONFIG.remote_reputation_refusals_warning,
        CONFIG.remote_reputation_refusals_critical,
    )

    def per_window(reason: str) -> Query:
        """Refusals of ``reason`` per receiving domain over the alerts' window."""
        grown = increase(REFUSALS, equals("reason", reason), *LOG, window=f"{minutes}m")
        return Query(sum_by("instance, mta, domain", grown), f"{{{{domain}}}} {reason}")

    return Row(
        "Outbound refusals",
        [
            timeseries(
                "Refusals by reason",
                "Deferred and bounced deliveries that quote the receiving server's reply, per "
                "second, by the reason read from it: reputation, policy, rate limited, unknown "
                "user, full mailbox, TLS required, other.",
                per_second(REFUSALS, "reason"),
                unit="mps",
                stack=True,
            ),
            timeseries(
                "Refusals by receiving domain",
                "The same refusals by receiving domain (the busiest refusing domains by name, "
                "the rest as other) and status: one domain alone points at that receiver's "
                "view of us.",
                per_second(REFUSALS, "domain, status"),
                unit="mps",
            ),
            timeseries(
                f"Reputation and rate-limit refusals per {minutes} minutes",
                f"What the alerts count: refusals per domain over {minutes} minutes. Dashed "
                f"lines: MailRemoteReputationBlocks' warning ({warn}) and critical ({crit}); "
                "MailRemoteRateLimited warns above "
                f"{CONFIG.remote_rate_limited_refusals_warning} for "
                f"{CONFIG.remote_rate_limited_for}.",
                per_window("reputation"),
                per_window("rate_limited"),
                steps=thresholds("green", (warn, "orange"), (crit, "red")),
                width=8,
            ),
            bargauge(
                "Top refusing domains",
                "Refusals over the time range by receiving domain and reason.",
                Query(
                    top_over_range("domain, reason", REFUSALS, *LOG),
                    "{{domain}} {{reason}}",
                    instant=True,
                ),
                steps=thresholds("orange"),
                decimals=0,
                width=8,
            ),
            bargauge(
                "Enhanced status codes",
                "Refusals over the time range by the reply's RFC 3463 enhanced status code "
                "(5.7.1, 4.7.28, …; a receiver's private code such as 4.7.650 counts as "
                "other, under its class 4xx or 5xx).",
                Query(
                    top_over_range(
                        "code_class, enhanced_code", "mail_delivery_refusal_codes_total", *LOG
                    ),
                    "{{code_class}}xx {{enhanced_code}}",
                    instant=True,
                ),
                steps=thresholds("orange"),
                decimals=0,
                width=8,
            ),
        ],
    )


def _message_shape() -> Row:
    def quantiles(histogram: str) -> list[Query]:
        return [
            Query(quantile(q, histogram, "mta", *LOG), f"p{q * 100:g} {{{{mta}}}}")
            for q in (0.5, 0.95, 0.99)
        ]

    return Row(
        "Message shape",
        [
            timeseries(
                "Message size",
                "Median, 95th and 99th percentile size of the messages accepted into the "
                "queue (Postfix qmgr size=, Exim S=): a spam run or a mass mailing moves them.",
                *quantiles("mail_message_size_bytes"),
                unit="bytes",
            ),
            timeseries(
                "Recipients per message",
                "Median, 95th and 99th percentile of recipients per message accepted into the "
                "queue: a high 99th percentile is mail to many recipients at once.",
                *quantiles("mail_message_recipients"),
            ),
        ],
    )


SPAM_VERDICTS = 'verdict=~"spam|spammy|infected|banned"'
UNWANTED_REJECTS = 'reason=~"rbl|spam|malware|greylist|content|milter"'


def _delivery_spam() -> Row:
    filtered = sum_by("instance", rate("mail_content_filter_results_total", *LOG))
    spam = sum_by("instance", rate("mail_content_filter_results_total", SPAM_VERDICTS, *LOG))
    return Row(
        "Spam and content filters",
        [
            timeseries(
                "Filter verdicts",
                "Verdicts of rspamd, amavis, SpamAssassin and ClamAV per second.",
                per_second("mail_content_filter_results_total", "mta, verdict"),
                unit="mps",
                stack=True,
                width=8,
            ),
            timeseries(
                "Spam share",
                "Share of filtered messages judged spam, spammy, infected or banned.",
                Query(f"{spam} / {filtered}", "{{instance}}"),
                unit="percentunit",
                width=8,
            ),
            timeseries(
                "Filter actions",
                "What the filters did per second (reject, greylist, add_header, blocked, "
                "quarantine, …) and messages quarantined.",
                per_second("mail_content_filter_results_total", "mta, action"),
                per_second("mail_quarantined_total", "mta", legend="{{mta}} quarantined"),
                unit="mps",
                width=8,
            ),
            timeseries(
                "Spam, malware and blocklist rejects",
                "Rejects per second of the classes that catch unwanted mail: DNS blocklists, "
                "spam, malware, greylisting, content checks.",
                per_second("mail_smtpd_rejects_total", "reason", UNWANTED_REJECTS),
                unit="cps",
                stack=True,
            ),
            timeseries(
                "Postscreen",
                "Postscreen's verdicts on connecting clients per second.",
                per_second("mail_postscreen_results_total", "result"),
                unit="cps",
            ),
        ],
    )


def _delivery_smtpd() -> Row:
    return Row(
        "SMTP server and logins",
        [
            timeseries(
                "Rejects by reason",
                "Rejected SMTP commands per second by reason class.",
                per_second("mail_smtpd_rejects_total", "reason"),
                unit="cps",
                stack=True,
            ),
            timeseries(
                "Rejects by stage",
                "The same rejects by the SMTP stage they happened at (CONNECT, RCPT, DATA, "
                "header and body checks, …).",
                per_second("mail_smtpd_reject_stages_total", "stage"),
                unit="cps",
                stack=True,
            ),
            timeseries(
                "Connections by service",
                "Incoming SMTP connections per second by master.cf service.",
                per_second("mail_smtpd_connections_total", "mta, service"),
                unit="cps",
            ),
            timeseries(
                "Lost connections and timeouts",
                "Connections the client dropped or the server timed out, by the last command: "
                "many after AUTH or DATA are worth a look.",
                per_second(
                    "mail_smtpd_lost_connections_total", "after", legend="lost after {{after}}"
                ),
                per_second("mail_smtpd_timeouts_total", "after", legend="timeout after {{after}}"),
                unit="cps",
            ),
            timeseries(
                "Login failures by service",
                "Failed SASL and IMAP/POP3 logins per second; the dashed line is the brute "
                f"force alert's {CONFIG.auth_failures_per_second_warning}/s.",
                per_second("mail_auth_failures_total", "mta, service"),
                unit="cps",
                steps=thresholds("green", (CONFIG.auth_failures_per_second_warning, "red")),
            ),
            timeseries(
                "Logins by mechanism",
                "Successful logins per second by service and SASL mechanism.",
                per_second("mail_logins_total", "mta, service, mechanism"),
                unit="cps",
            ),
            timeseries(
                "TLS sessions",
                "TLS sessions per second by version and trust, as Postfix logs them: old "
                "versions and untrusted peers stand out.",
                per_second("mail_tls_connections_total", "version, trust"),
                unit="cps",
                stack=True,
            ),
            timeseries(
                "Dovecot disconnects",
                "IMAP and POP3 sessions ended per second, by reason.",
                per_second("mail_disconnects_total", "service, reason"),
                unit="cps",
                stack=True,
            ),
        ],
    )


def _delivery_log_health() -> Row:
    return Row(
        "Log reading",
        [
            stat(
                "Log sources",
                "Each log source: read (up) or not (a missing file, no journal, stdin closed).",
                Query(series("mail_log_source_up", INSTANCE), "{{source}}"),
                mappings=UP_DOWN,
                text=NAMED,
                width=6,
                height=8,
            ),
            timeseries(
                "Log lines by result",
                "Log lines read per second, parsed or unsupported: many unsupported lines mean "
                "a log format the exporter does not know.",
                per_second("mail_log_lines_total", "mta, result"),
                unit="cps",
                width=6,
            ),
            timeseries(
                "Warnings and errors",
                "Log lines of severity warning, error, fatal or panic per second.",
                per_second("mail_log_problems_total", "mta, service, severity", above_zero=True),
                unit="cps",
                width=6,
            ),
            timeseries(
                "Postfix problems by class",
                "Postfix's warning, error, fatal and panic lines per second by what they are "
                "about (configuration, a lookup table, SASL, milter, TLS, DNS, resources, …), "
                "and lookup tables rebuilt (info, table_changed).",
                per_second("mail_log_problem_classes_total", "severity, class", above_zero=True),
                unit="cps",
                width=6,
            ),
        ],
    )


def delivery_and_logs() -> Json:
    return dashboard(
        "mail-delivery",
        "Mail: delivery and logs",
        "What the MTA's, Dovecot's and the content filters' logs say: deliveries by status, "
        "delays, domains, why receivers refuse our mail, message sizes, spam, rejects, "
        "logins, and whether the logs are read at all.",
        [
            _delivery_totals(),
            _delivery_flow(),
            _delivery_domains(),
            _outbound_refusals(),
            senders_row(),
            _message_shape(),
            _delivery_spam(),
            spam_filter_row(),
            _delivery_smtpd(),
            dovecot_row(),
            _delivery_log_health(),
        ],
        [
            label_variable("instance", "Exporter", "mail_log_lines_total"),
            label_variable("mta", "MTA", "mail_log_lines_total"),
        ],
    )
