"""The ``mail-delivery`` dashboard: what the logs say (deliveries, delays, domains, spam,
rejects, logins) and whether the logs are read at all."""

from __future__ import annotations

from mixin.config import CONFIG
from mixin.dashboards.shared import INSTANCE, UP_DOWN
from mixin.grafana import (
    NAMED,
    Json,
    Query,
    Row,
    bargauge,
    dashboard,
    label_variable,
    stat,
    thresholds,
    timeseries,
)
from mixin.promql import BOUNCE_RATIO_RULE, DEFER_RATIO_RULE, equals, quantile, rate, series, sum_by

MTA = 'mta=~"$mta"'
LOG = (MTA, INSTANCE)


def increase_over_range(metric: str, *matchers: str) -> str:
    """How much a counter grew over the dashboard's whole time range."""
    return rate(metric, *matchers, func="increase", window="$__range")


def _deliveries(status: str) -> str:
    deliveries = increase_over_range("mail_deliveries_total", equals("status", status), *LOG)
    return f"sum({deliveries})"


def _delivery_ratio(status: str) -> str:
    return f"{_deliveries(status)} / sum({increase_over_range('mail_deliveries_total', *LOG)})"


def top_over_range(by: str, metric: str, *matchers: str, count: int = 10) -> str:
    """The ``count`` largest ``by`` groups of a counter's growth over the time range."""
    grown = sum_by(by, increase_over_range(metric, *matchers))
    return f"sort_desc(topk({count}, {grown}))"


def _delivery_totals() -> Row:
    return Row(
        "Over the selected time range",
        [
            stat(
                "Sent",
                "Recipient deliveries that succeeded.",
                Query(_deliveries("sent")),
                decimals=0,
            ),
            stat(
                "Deferred",
                "Delivery attempts that were deferred.",
                Query(_deliveries("deferred")),
                decimals=0,
            ),
            stat(
                "Bounced",
                "Deliveries that bounced.",
                Query(_deliveries("bounced")),
                decimals=0,
            ),
            stat(
                "Expired",
                "Messages given up after their maximal queue lifetime.",
                Query(_deliveries("expired")),
                decimals=0,
            ),
            stat(
                "Bounce ratio",
                f"Bounced of all delivery attempts; orange from {CONFIG.bounce_ratio_warning:.0%}.",
                Query(_delivery_ratio("bounced")),
                unit="percentunit",
                steps=thresholds("green", (CONFIG.bounce_ratio_warning, "orange")),
                decimals=1,
            ),
            stat(
                "Defer ratio",
                f"Deferred of all delivery attempts; orange from {CONFIG.defer_ratio_warning:.0%}.",
                Query(_delivery_ratio("deferred")),
                unit="percentunit",
                steps=thresholds("green", (CONFIG.defer_ratio_warning, "orange")),
                decimals=1,
            ),
            stat(
                "Rejects",
                "SMTP commands the server rejected.",
                Query(f"sum({increase_over_range('mail_smtpd_rejects_total', *LOG)})"),
                decimals=0,
            ),
            stat(
                "Login failures",
                "Failed SASL and mailbox logins.",
                Query(f"sum({increase_over_range('mail_auth_failures_total', *LOG)})"),
                decimals=0,
            ),
        ],
    )


def _delivery_flow() -> Row:
    return Row(
        "Deliveries",
        [
            timeseries(
                "Deliveries by status",
                "Recipient delivery attempts per second: sent, deferred, bounced, expired.",
                Query(sum_by("status", rate("mail_deliveries_total", *LOG)), "{{status}}"),
                unit="mps",
                stack=True,
            ),
            timeseries(
                "Deliveries by transport",
                "Delivery attempts per second by transport (smtp, lmtp, local, …) and status.",
                Query(
                    sum_by("transport, status", rate("mail_deliveries_total", *LOG)),
                    "{{transport}} {{status}}",
                ),
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
                Query(
                    sum_by("instance, mta", rate("mail_messages_received_total", *LOG)),
                    "{{instance}} {{mta}}",
                ),
                unit="mps",
                width=8,
            ),
            timeseries(
                "Delivery status codes",
                "Delivery attempts per second by DSN class: 2 delivered, 4 temporary failure, "
                "5 permanent failure.",
                Query(
                    sum_by("dsn_class", rate("mail_delivery_dsn_total", *LOG)), "{{dsn_class}}.x.x"
                ),
                unit="mps",
                stack=True,
                width=8,
            ),
            timeseries(
                "Bounce notifications",
                "Notifications the bounce service generated per second, by kind.",
                Query(sum_by("kind", rate("mail_bounces_generated_total", *LOG)), "{{kind}}"),
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


SPAM_VERDICTS = 'verdict=~"spam|spammy|infected|banned"'


def _delivery_spam() -> Row:
    filtered = sum_by("instance", rate("mail_content_filter_results_total", *LOG))
    spam = sum_by("instance", rate("mail_content_filter_results_total", SPAM_VERDICTS, *LOG))
    return Row(
        "Spam and content filters",
        [
            timeseries(
                "Filter verdicts",
                "Verdicts of rspamd, amavis, SpamAssassin and ClamAV per second.",
                Query(
                    sum_by("mta, verdict", rate("mail_content_filter_results_total", *LOG)),
                    "{{mta}} {{verdict}}",
                ),
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
                Query(
                    sum_by("mta, action", rate("mail_content_filter_results_total", *LOG)),
                    "{{mta}} {{action}}",
                ),
                Query(sum_by("mta", rate("mail_quarantined_total", *LOG)), "{{mta}} quarantined"),
                unit="mps",
                width=8,
            ),
            timeseries(
                "Spam, malware and blocklist rejects",
                "Rejects per second of the classes that catch unwanted mail: DNS blocklists, "
                "spam, malware, greylisting, content checks.",
                Query(
                    sum_by(
                        "reason",
                        rate(
                            "mail_smtpd_rejects_total",
                            'reason=~"rbl|spam|malware|greylist|content|milter"',
                            *LOG,
                        ),
                    ),
                    "{{reason}}",
                ),
                unit="cps",
                stack=True,
            ),
            timeseries(
                "Postscreen",
                "Postscreen's verdicts on connecting clients per second.",
                Query(sum_by("result", rate("mail_postscreen_results_total", *LOG)), "{{result}}"),
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
                Query(sum_by("reason", rate("mail_smtpd_rejects_total", *LOG)), "{{reason}}"),
                unit="cps",
                stack=True,
            ),
            timeseries(
                "Rejects by stage",
                "The same rejects by the SMTP stage they happened at (CONNECT, RCPT, DATA, "
                "header and body checks, …).",
                Query(sum_by("stage", rate("mail_smtpd_reject_stages_total", *LOG)), "{{stage}}"),
                unit="cps",
                stack=True,
            ),
            timeseries(
                "Connections by service",
                "Incoming SMTP connections per second by master.cf service.",
                Query(
                    sum_by("mta, service", rate("mail_smtpd_connections_total", *LOG)),
                    "{{mta}} {{service}}",
                ),
                unit="cps",
            ),
            timeseries(
                "Lost connections and timeouts",
                "Connections the client dropped or the server timed out, by the last command: "
                "many after AUTH or DATA are worth a look.",
                Query(
                    sum_by("after", rate("mail_smtpd_lost_connections_total", *LOG)),
                    "lost after {{after}}",
                ),
                Query(
                    sum_by("after", rate("mail_smtpd_timeouts_total", *LOG)),
                    "timeout after {{after}}",
                ),
                unit="cps",
            ),
            timeseries(
                "Login failures by service",
                "Failed SASL and IMAP/POP3 logins per second; the dashed line is the brute "
                f"force alert's {CONFIG.auth_failures_per_second_warning}/s.",
                Query(
                    sum_by("mta, service", rate("mail_auth_failures_total", *LOG)),
                    "{{mta}} {{service}}",
                ),
                unit="cps",
                steps=thresholds("green", (CONFIG.auth_failures_per_second_warning, "red")),
            ),
            timeseries(
                "Logins by mechanism",
                "Successful logins per second by service and SASL mechanism.",
                Query(
                    sum_by("mta, service, mechanism", rate("mail_logins_total", *LOG)),
                    "{{mta}} {{service}} {{mechanism}}",
                ),
                unit="cps",
            ),
            timeseries(
                "TLS sessions",
                "TLS sessions per second by version and trust, as Postfix logs them: old "
                "versions and untrusted peers stand out.",
                Query(
                    sum_by("version, trust", rate("mail_tls_connections_total", *LOG)),
                    "{{version}} {{trust}}",
                ),
                unit="cps",
                stack=True,
            ),
            timeseries(
                "Dovecot disconnects",
                "IMAP and POP3 sessions ended per second, by reason.",
                Query(
                    sum_by("service, reason", rate("mail_disconnects_total", *LOG)),
                    "{{service}} {{reason}}",
                ),
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
                width=8,
                height=8,
            ),
            timeseries(
                "Log lines by result",
                "Log lines read per second, parsed or unsupported: many unsupported lines mean "
                "a log format the exporter does not know.",
                Query(
                    sum_by("mta, result", rate("mail_log_lines_total", *LOG)),
                    "{{mta}} {{result}}",
                ),
                unit="cps",
                width=8,
            ),
            timeseries(
                "Warnings and errors",
                "Log lines of severity warning, error, fatal or panic per second.",
                Query(
                    sum_by("mta, service, severity", rate("mail_log_problems_total", *LOG))
                    + " > 0",
                    "{{mta}} {{service}} {{severity}}",
                ),
                unit="cps",
                width=8,
            ),
        ],
    )


def delivery_and_logs() -> Json:
    return dashboard(
        "mail-delivery",
        "Mail: delivery and logs",
        "What the MTA's, Dovecot's and the content filters' logs say: deliveries by status, "
        "delays, domains, spam, rejects, logins, and whether the logs are read at all.",
        [
            _delivery_totals(),
            _delivery_flow(),
            _delivery_domains(),
            _delivery_spam(),
            _delivery_smtpd(),
            _delivery_log_health(),
        ],
        [
            label_variable("instance", "Exporter", "mail_log_lines_total"),
            label_variable("mta", "MTA", "mail_log_lines_total"),
        ],
    )
