"""Alerts on what the reports mailbox says (collectors.reports): mail in our name that fails
DMARC, a new source of it, senders failing TLS to our MX, and a job's report mail that no
longer says "success".

Each reporter sends one report a day, at an hour of its own, and the collector adds it in
one pass: the counters move in steps a day apart, so the DMARC and TLS-RPT alerts weigh
the last ``reports_window`` (a day) of reports, counted with
:func:`~mixin.promql.counted` so that a series born with its first report (a new reporter,
source or failure type, or any series after the exporter restarts) counts that report.
They resolve a day after the reports that raised them stop saying so.

MailSpoofingSourceNew: a source is new when its series of unaligned mail did not exist a
day ago nor ``dmarc_new_source_lookback`` (a week) ago. The collector creates a source's
series with its first unaligned message and keeps it for its lifetime, so existence is
history; the two instants are cheap lookups. Looking over the whole week
(``present_over_time(...[7d])``) would also remember a source whose series was lost to an
exporter restart between the two instants and came back, at the cost of reading a week of
samples of every source at each evaluation; the rarer false alarm was preferred. A new
source stays new for a day: the alert resolves once its series is a day old, whatever it
still sends (MailDmarcUnalignedTraffic watches the volume). Sources past the collector's
``top_sources`` are counted as ``other`` and are never new: that is the price of a bounded
label; the dashboard shows ``other`` growing.

MailBackupNotReported reads the statuses named ``success`` and ``failure`` of any
notification rule (the names are a convention: a rule whose statuses are named otherwise
is only shown on the dashboard). It fires when a rule's newest success is older than
``notification_success_max_age_hours``, when a failure is newer than the newest success,
and when a rule has reported failures and never a success; its value is the newest
success's age (the newest failure's, with no success). A rule that has never matched a
message has no series and cannot fire: the dashboard lists the rules that reported.
``unknown`` and other statuses newer than the success (a "job started" mail) are no
failure. The timestamps survive restarts in the collector's state file.
"""

from __future__ import annotations

from mixin.config import Config
from mixin.promql import (
    DMARC_FAILED,
    DMARC_MESSAGES,
    HOUR_SECONDS,
    NOTIFICATION,
    TLS_FAILED,
    TLSRPT_SESSIONS,
    UNALIGNED,
    counted,
    counted_share,
    equals,
    new_unaligned_sources,
    series,
    sum_by,
)
from mixin.rules.alert import HOST, HOST_LABELS, Alert, Example, fired, selector, steady

DOMAIN = {"domain": "example.com", **HOST_LABELS}
BY_DOMAIN = "instance, job, domain"
BY_RULE = "instance, job, rule"


def _dmarc(reporter: str, disposition: str, dkim: bool, spf: bool) -> str:
    labels = {"domain": "example.com", "reporter": reporter, "disposition": disposition,
              "dkim_aligned": str(dkim).lower(), "spf_aligned": str(spf).lower()}  # fmt: skip
    return f"{DMARC_MESSAGES}{{{selector(labels)},{HOST}}}"


def _unaligned(source: str) -> str:
    return f'{UNALIGNED}{{domain="example.com",source="{source}",{HOST}}}'


def _tls(policy_type: str, result: str) -> str:
    labels = {"domain": "example.com", "policy_type": policy_type, "result": result}
    return f"{TLSRPT_SESSIONS}{{{selector(labels)},{HOST}}}"


def _notification(status: str) -> str:
    return f'{NOTIFICATION}{{rule="nightly-backup",status="{status}",{HOST}}}'


def _share(metric: str, failing: str, c: Config) -> tuple[str, str]:
    """(the failing share, the failing count) of ``metric`` per domain over the reports window."""
    window = c.reports_window
    share = counted_share(metric, failing, BY_DOMAIN, window=window, config=c)
    return share, sum_by(BY_DOMAIN, counted(metric, failing, window=window, config=c))


def _report(count: int, at: int = 30, minutes: int = 120) -> str:
    """A counter born at minute ``at`` with one report of ``count``."""
    return f"_x{at} {count}x{minutes - at}"


def dmarc_alerts(c: Config) -> list[Alert]:
    share, unaligned = _share(DMARC_MESSAGES, DMARC_FAILED, c)
    ratio, least = c.dmarc_unaligned_warning_ratio, c.dmarc_unaligned_min_messages
    aligned = _dmarc("google.com", "none", True, True)
    spoofed = _dmarc("google.com", "reject", False, False)
    source_labels = {**DOMAIN, "source": "203.0.113.9"}
    return [
        Alert(
            "MailDmarcUnalignedTraffic",
            f"{share} > {ratio:g} and {unaligned} >= {least}",
            "warning", "Much of a domain's mail fails DMARC.",
            "{{ $value | humanizePercentage }} of the mail that receivers saw from "
            "{{ $labels.domain }} in the reports of the last " + c.reports_window + " "
            f"(read by {{{{ $labels.instance }}}}) failed DMARC, at least {least} messages: "
            "neither DKIM nor SPF aligned. A sender of ours out of alignment (its mail is "
            "junked or rejected under p=quarantine or p=reject), or someone spoofing the domain.",
            # 300 failing of 1,300 from a report that arrived an hour ago.
            Example([(aligned, _report(1000)), (spoofed, _report(300))], [fired(DOMAIN, "warning")]),
            Example([(aligned, _report(1000)), (spoofed, _report(3))]),
            for_=c.reports_for,
            also=(
                # One spoofed message of three is a third, and no campaign.
                Example([(aligned, _report(2)), (spoofed, _report(1))]),
                # The reporters' reports add up per domain.
                Example([(aligned, _report(100)),
                         (_dmarc("microsoft.com", "quarantine", False, False), _report(60))],
                        [fired(DOMAIN, "warning")]),
                # Forwarded mail passes on DKIM alone (the forwarder breaks SPF): aligned.
                Example([(aligned, _report(100)), (_dmarc("google.com", "none", True, False),
                                                   _report(60))]),
            ),
        ),
        Alert(
            "MailSpoofingSourceNew",
            f"{new_unaligned_sources(config=c)} >= {c.dmarc_new_source_min_messages}",
            "warning", "A new source sends mail in a domain's name that fails DMARC.",
            "{{ $labels.source }} sent {{ $value | printf \"%.0f\" }} messages as "
            "{{ $labels.domain }} that failed DMARC, by the reports of the last "
            f"{c.reports_window}, and none before ({c.dmarc_new_source_lookback} back): a "
            "spoofing campaign, or a new service sending for us without DKIM or SPF set up.",
            Example([(_unaligned("203.0.113.9"), _report(40))], [fired(source_labels, "warning")]),
            Example([(_unaligned("203.0.113.9"), _report(3))]),
            for_=c.reports_for,
            also=(
                # The sources past the collector's top_sources are no one source.
                Example([(_unaligned("other"), _report(500))]),
            ),
        ),
    ]  # fmt: skip


def tlsrpt_alerts(c: Config) -> list[Alert]:
    share, failed = _share(TLSRPT_SESSIONS, TLS_FAILED, c)
    ratio, least = c.tlsrpt_failure_warning_ratio, c.tlsrpt_failure_min_sessions
    good = _tls("sts", "success")
    expired = _tls("sts", "certificate-expired")
    return [
        Alert(
            "MailTlsRptFailures",
            f"{share} > {ratio:g} and {failed} >= {least}",
            "warning", "Senders report failed TLS sessions to a domain's MX.",
            "{{ $value | humanizePercentage }} of the TLS sessions senders opened to the MX "
            "of {{ $labels.domain }} failed, by the TLS-RPT reports of the last "
            f"{c.reports_window} (read by {{{{ $labels.instance }}}}): with MTA-STS or DANE "
            "enforced they did not deliver, otherwise they delivered without encryption.",
            Example([(good, _report(1000)), (expired, _report(100))], [fired(DOMAIN, "warning")]),
            Example([(good, _report(1000)), (expired, _report(20))]),
            for_=c.reports_for,
            also=(
                # Half of four sessions: one sender's bad day, not a broken MX.
                Example([(good, _report(2)), (expired, _report(2))]),
                # Every result type and policy type counts.
                Example([(good, _report(10)), (_tls("no-policy-found", "starttls-not-supported"),
                                               _report(10))], [fired(DOMAIN, "warning")]),
            ),
        ),
    ]  # fmt: skip


def notification_alerts(c: Config) -> list[Alert]:
    success, failure = (
        f"max by ({BY_RULE}) ({series(NOTIFICATION, equals('status', status), config=c)})"
        for status in ("success", "failure")
    )
    max_age = c.notification_success_max_age_hours * HOUR_SECONDS
    rule_labels = {"rule": "nightly-backup", **HOST_LABELS}
    # promtool's clock starts at 0 and the examples evaluate at 90 minutes (5400 s).
    day_old, long_ago, recently = 5400 - 86400, 5400 - max_age - 3600, 3600
    return [
        Alert(
            "MailBackupNotReported",
            f"(time() - {success} > {max_age})"
            f" or (time() - {success} and {failure} > {success})"
            f" or (time() - {failure} unless {success})",
            "warning", "A job's report mail has not said success in time.",
            "Notification rule {{ $labels.rule }} (read by {{ $labels.instance }}): the newest "
            "message that says success is {{ $value | humanizeDuration }} old, older than "
            f"{c.notification_success_max_age_hours}h or followed by a failure (with only "
            "failures so far: the newest failure's age). The job did not run, failed, or its "
            "mail did not arrive.",
            Example([(_notification("success"), steady(long_ago))], [fired(rule_labels, "warning")]),
            Example([(_notification("success"), steady(day_old))]),
            for_=c.notification_for,
            also=(
                # Last night's run failed after the success of the night before.
                Example([(_notification("success"), steady(day_old)),
                         (_notification("failure"), steady(recently))],
                        [fired(rule_labels, "warning")]),
                # The failure was before the success: fixed.
                Example([(_notification("failure"), steady(day_old)),
                         (_notification("success"), steady(recently))]),
                # Failures, never a success.
                Example([(_notification("failure"), steady(recently))],
                        [fired(rule_labels, "warning")]),
                # A "job started" mail, newer than the success, is no failure.
                Example([(_notification("success"), steady(day_old)),
                         (_notification("unknown"), steady(recently))]),
            ),
        ),
    ]  # fmt: skip


def report_alerts(c: Config) -> list[Alert]:
    return [*dmarc_alerts(c), *tlsrpt_alerts(c), *notification_alerts(c)]
