"""The ``mail-reports`` dashboard: what the reports mailbox says (collectors.reports). Who
sends mail in our name and whether receivers see it aligned (DMARC aggregate reports),
whether senders reach our MX over TLS (TLS-RPT), whether the jobs that report by mail (a
nightly backup) said success, and whether the collector reads the mailbox.

Reports arrive one a day per reporter, each covering a day, so the graphs show what the
reports of the last day said (a sliding ``reports_window``), not a rate: a rate of daily
batches is a row of spikes. Counts go through :func:`~mixin.promql.counted`, which counts
a series' first batch too, as the alerts do; the headline shares are the alerts' own
expressions per domain, coloured at their thresholds.
"""

from __future__ import annotations

from mixin.config import CONFIG
from mixin.grafana import (
    NAMED,
    Json,
    Query,
    Row,
    any_is_bad,
    bargauge,
    colored_cells,
    column,
    dashboard,
    flag,
    label_variable,
    stat,
    state_timeline,
    table,
    thresholds,
    timeseries,
)
from mixin.promql import (
    DMARC_FAILED,
    DMARC_MESSAGES,
    HOUR_SECONDS,
    NOTIFICATION,
    TLS_FAILED,
    TLSRPT_SESSIONS,
    UNALIGNED,
    count_or_zero,
    counted,
    counted_share,
    equals,
    new_unaligned_sources,
    series,
    sum_by,
)

UID = "mail-reports"
DOMAIN = 'domain=~"$domain"'
INSTANCE = 'instance=~"$instance"'
REPORTS = (DOMAIN, INSTANCE)
WINDOW = CONFIG.reports_window
RANGE = "$__range"


DMARC_SHARE = thresholds("green", (CONFIG.dmarc_unaligned_warning_ratio, "orange"))
TLS_SHARE = thresholds("green", (CONFIG.tlsrpt_failure_warning_ratio, "orange"))
SUCCESS_AGE = thresholds("green", (CONFIG.notification_success_max_age_hours * HOUR_SECONDS, "red"))
OK_FAILED = flag(("ok", "green"), ("failed", "red"))
# The statuses MailBackupNotReported reads, coloured where a table shows them.
STATUS_COLOURS = [
    {"type": "value", "options": {"success": {"color": "green", "index": 0},
                                  "failure": {"color": "red", "index": 1}}},
]  # fmt: skip

# The four ways a record can stand towards DMARC: one query each, named in the legend.
ALIGNMENT = {
    "DKIM and SPF": 'dkim_aligned="true",spf_aligned="true"',
    "DKIM only": 'dkim_aligned="true",spf_aligned="false"',
    "SPF only": 'dkim_aligned="false",spf_aligned="true"',
    "neither: fails DMARC": DMARC_FAILED,
}


def reports_link() -> list[Json]:
    """A data link to this dashboard for the domain a series names, keeping the data source
    and time range."""
    url = (
        f"/d/{UID}/{UID}?var-domain=${{__field.labels.domain}}"
        "&${datasource:queryparam}&${__url_time_range}"
    )
    return [{"title": "Open the reports of ${__field.labels.domain}", "url": url}]


def dmarc_failing_share(*matchers: str) -> str:
    """Each domain's share of reported mail that failed DMARC, over the reports window."""
    return counted_share(DMARC_MESSAGES, DMARC_FAILED, "domain", *matchers, window=WINDOW)


def tls_failed_share(*matchers: str) -> str:
    """Each policy domain's share of reported TLS sessions that failed, over the window."""
    return counted_share(TLSRPT_SESSIONS, TLS_FAILED, "domain", *matchers, window=WINDOW)


def _success_age() -> str:
    newest = series(NOTIFICATION, equals("status", "success"), INSTANCE)
    return f"time() - max by (instance, rule) ({newest})"


def _now() -> Row:
    return Row(
        f"Now: the reports of the last {WINDOW}",
        [
            stat(f"Mail reported ({WINDOW})",
                 "Messages receivers saw from each domain, by their DMARC aggregate reports "
                 f"of the last {WINDOW}.",
                 Query(sum_by("domain", counted(DMARC_MESSAGES, *REPORTS, window=WINDOW)),
                       "{{domain}}"),
                 text=NAMED, width=4, decimals=0),
            stat("Failing DMARC",
                 "Share of each domain's reported mail that neither DKIM nor SPF aligned; "
                 f"orange from {CONFIG.dmarc_unaligned_warning_ratio:g}, where "
                 "MailDmarcUnalignedTraffic fires (from "
                 f"{CONFIG.dmarc_unaligned_min_messages} such messages).",
                 Query(dmarc_failing_share(*REPORTS), "{{domain}}"),
                 unit="percentunit", steps=DMARC_SHARE, text=NAMED, width=4, decimals=1),
            stat("New unaligned sources",
                 "Sending IPs with mail failing DMARC whose series is younger than "
                 f"{WINDOW} and did not exist {CONFIG.dmarc_new_source_lookback} ago "
                 "(MailSpoofingSourceNew fires for those with at least "
                 f"{CONFIG.dmarc_new_source_min_messages} messages).",
                 Query(count_or_zero(new_unaligned_sources(*REPORTS))),
                 steps=any_is_bad("orange"), width=4),
            stat("TLS sessions failed",
                 "Share of the TLS sessions to each policy domain's MX that senders reported "
                 f"failed (TLS-RPT); orange from {CONFIG.tlsrpt_failure_warning_ratio:g}, where "
                 "MailTlsRptFailures fires.",
                 Query(tls_failed_share(*REPORTS), "{{domain}}"),
                 unit="percentunit", steps=TLS_SHARE, text=NAMED, width=4, decimals=1),
            stat("Last success",
                 "Time since each notification rule's newest message that said success (a "
                 "nightly backup's report); red after "
                 f"{CONFIG.notification_success_max_age_hours} h (MailBackupNotReported).",
                 Query(_success_age(), "{{rule}}"),
                 unit="s", steps=SUCCESS_AGE, text=NAMED, width=4),
            stat("Reports collector",
                 "Whether each exporter's last pass over the reports mailbox worked (login, "
                 "mailbox, reading); when it failed, the exporter's log says why.",
                 Query(series("mail_exporter_collector_success", 'collector="reports"',
                              INSTANCE), "{{instance}}"),
                 mappings=OK_FAILED, text=NAMED, width=4),
        ],
    )  # fmt: skip


def _dmarc() -> Row:
    def alignment(name: str, matchers: str) -> Query:
        share = counted_share(DMARC_MESSAGES, matchers, "domain", *REPORTS, window=WINDOW)
        return Query(share, f"{{{{domain}}}} {name}")

    unaligned_range = counted(UNALIGNED, *REPORTS, window=RANGE)
    return Row(
        "DMARC aggregate reports",
        [
            timeseries(f"Mail reported by reporter (last {WINDOW})",
                       "Messages each reporter (a receiver: Google, Microsoft, …) saw from "
                       f"the domains, by its reports of the last {WINDOW}: a reporter "
                       "missing from a day is a report that did not arrive.",
                       Query(sum_by("reporter", counted(DMARC_MESSAGES, *REPORTS,
                                                        window=WINDOW)), "{{reporter}}"),
                       stack=True),
            timeseries(f"Alignment (last {WINDOW})",
                       "How each domain's reported mail stood towards DMARC: it passes when "
                       "DKIM or SPF aligns. Forwarders break SPF (DKIM only), mailing lists "
                       "often both; a sender of ours on SPF only loses DMARC when forwarded.",
                       *(alignment(name, matchers) for name, matchers in ALIGNMENT.items()),
                       unit="percentunit", stack=True),
            bargauge("Top unaligned sources",
                     "Sending IPs whose mail in our name failed DMARC, over the time range "
                     "(the collector names the biggest per domain, the rest are other): our "
                     "own servers or services here need DKIM or SPF fixed, strangers are "
                     "spoofing.",
                     Query(f"sort_desc(topk(10, {sum_by('domain, source', unaligned_range)}))",
                           "{{source}} ({{domain}})", instant=True),
                     decimals=0, width=8),
            timeseries(f"Unaligned mail by source (last {WINDOW})",
                       "Mail failing DMARC per sending IP, by the reports of the last "
                       f"{WINDOW}: a new line is a new source.",
                       Query(sum_by("domain, source", counted(UNALIGNED, *REPORTS, window=WINDOW)),
                             "{{source}} ({{domain}})"),
                       width=8),
            timeseries(f"Disposition applied (last {WINDOW})",
                       "What the receivers did with the mail, by the policy they applied "
                       "(none, quarantine, reject): with p=none, mail failing DMARC is "
                       "delivered all the same.",
                       Query(sum_by("disposition", counted(DMARC_MESSAGES, *REPORTS,
                                                           window=WINDOW)), "{{disposition}}"),
                       stack=True, width=8),
        ],
    )  # fmt: skip


def _tlsrpt() -> Row:
    failed = counted(TLSRPT_SESSIONS, TLS_FAILED, *REPORTS, window=WINDOW)
    return Row(
        "TLS-RPT reports",
        [
            timeseries(f"Failed TLS sessions by result (last {WINDOW})",
                       "Sessions senders could not set up with our MX, by the failure's "
                       "result type and the policy they applied (sts: MTA-STS, tlsa: DANE, "
                       "no-policy-found: opportunistic TLS).",
                       Query(sum_by("policy_type, result", failed), "{{policy_type}} {{result}}"),
                       stack=True, width=8),
            timeseries(f"TLS sessions by policy type (last {WINDOW})",
                       "All reported sessions, successful and failed, by the policy the "
                       "senders applied: how many senders enforce MTA-STS or DANE.",
                       Query(sum_by("policy_type", counted(TLSRPT_SESSIONS, *REPORTS,
                                                           window=WINDOW)), "{{policy_type}}"),
                       stack=True, width=8),
            timeseries(f"TLS failure ratio (last {WINDOW})",
                       "Share of each policy domain's reported sessions that failed; the "
                       "dashed line is where MailTlsRptFailures fires (from "
                       f"{CONFIG.tlsrpt_failure_min_sessions} failed sessions).",
                       Query(tls_failed_share(*REPORTS), "{{domain}}"),
                       unit="percentunit", steps=TLS_SHARE, width=8),
        ],
    )  # fmt: skip


def _notifications() -> Row:
    newest = series(NOTIFICATION, INSTANCE)
    return Row(
        "Notifications",
        [
            table("Last report of each rule",
                  "Each notification rule's newest message: its status and how long ago it "
                  "was sent. A rule that never matched has no row.",
                  Query(f"time() - topk by (instance, rule) (1, {newest})"),
                  columns={"instance": "Exporter", "rule": "Rule", "status": "Last status",
                           "Value": "Sent"},
                  overrides=[colored_cells("Last status", mappings=STATUS_COLOURS),
                             column("Sent", unit="s")],
                  width=8),
            table("Reports by status",
                  "Each rule and status seen: how long ago its newest message was sent, and "
                  "how many matched over the time range.",
                  Query(f"time() - {newest}"),
                  Query(counted("mail_notifications_total", INSTANCE, window=RANGE)),
                  columns={"instance": "Exporter", "rule": "Rule", "status": "Status",
                           "Value #A": "Newest", "Value #B": "Messages"},
                  overrides=[column("Newest", unit="s"), column("Messages", decimals=0)],
                  width=8),
            timeseries("Since the last success",
                       "Time since each rule's newest success: a sawtooth that drops each "
                       "time the job reports; the dashed line is MailBackupNotReported's "
                       f"{CONFIG.notification_success_max_age_hours} h.",
                       Query(_success_age(), "{{rule}}"),
                       unit="s", steps=SUCCESS_AGE, width=8),
        ],
    )  # fmt: skip


def _collector() -> Row:
    def grown(metric: str, by: str) -> str:
        return sum_by(by, counted(metric, INSTANCE, window="$__rate_interval")) + " > 0"

    return Row(
        "The reports collector",
        [
            state_timeline("Passes",
                           "Each exporter's passes over the reports mailbox: failed means "
                           "nothing of the pass was counted (login, mailbox, timeout).",
                           Query(series("mail_exporter_collector_success",
                                        'collector="reports"', INSTANCE), "{{instance}}"),
                           mappings=OK_FAILED, height=4),
            timeseries("Messages read",
                       "Messages read from the mailbox: processed (moved or flagged), "
                       "rejected (a report refused, left in place), ignored (nothing "
                       "understood, left untouched).",
                       Query(grown("mail_reports_messages_total", "result"), "{{result}}"),
                       bars=True, width=8),
            timeseries("Reports rejected",
                       "Reports refused, by kind and reason (too large, a broken or nested "
                       "archive, XML entities, malformed, a domain not configured).",
                       Query(grown("mail_reports_rejected_total", "kind, reason"),
                             "{{kind}} {{reason}}"),
                       bars=True, width=8),
            timeseries("Reports counted",
                       "Aggregate and TLS-RPT reports counted by reporter, and reports seen "
                       "again (same reporter and report id) and not counted.",
                       Query(grown("mail_dmarc_reports_total", "reporter"), "DMARC {{reporter}}"),
                       Query(grown("mail_tlsrpt_reports_total", "reporter"),
                             "TLS-RPT {{reporter}}"),
                       Query(grown("mail_reports_duplicates_total", "kind"), "{{kind}} duplicates"),
                       bars=True, width=8),
        ],
    )  # fmt: skip


def reports_and_reputation() -> Json:
    return dashboard(
        UID,
        "Mail reputation and reports",
        "What the reports mailbox says: who sends mail in our name and whether it aligns "
        "(DMARC aggregate reports), whether senders reach our MX over TLS (TLS-RPT), whether "
        "the jobs that report by mail said success, and the collector reading it all.",
        [_now(), _dmarc(), _tlsrpt(), _notifications(), _collector()],
        [
            label_variable("instance", "Exporter", "mail_exporter_collector_success"),
            label_variable("domain", "Domain", "mail_dmarc_reports_total"),
        ],
    )
