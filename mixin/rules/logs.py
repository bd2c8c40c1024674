"""Alerts on what the logs say: bounces, deferrals, password guessing, fatal errors,
unread logs, spam waves, receivers that refuse our mail, accounts sending for someone else.

Postfix's problem lines by class (``mail_log_problem_classes_total``) get no alert of their
own: its fatal lines are ``mail_log_problems_total``'s too, which MailLogFatalErrors
watches; the class is for the dashboard and the runbook's diagnosis.
"""

from __future__ import annotations

from mixin.config import Config
from mixin.promql import BOUNCE_RATIO_RULE, DEFER_RATIO_RULE, increase, rate, series, sum_by
from mixin.rules.alert import (
    HOST,
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


def log_alerts(c: Config) -> list[Alert]:
    mta = f'mta="postfix",{HOST}'
    mta_labels = {"mta": "postfix", **HOST_LABELS}
    by_service = "instance, job, mta, service"
    severe = 'severity=~"fatal|panic"'
    fatal = series("mail_log_problems_total", severe, config=c)
    fatal_before = series("mail_log_problems_total", severe, offset="15m", config=c)
    problems = f'mail_log_problems_total{{{mta},service="smtpd",severity="fatal"}}'

    def ratio_alert(
        name: str, rule: str, status: str, warning: float, summary: str, description: str
    ) -> Alert:
        """A delivery ratio above ``warning``: fires at 30 of 90 attempts a minute, quiet at 1 in 61."""

        def attempts(per_minute: float) -> list[tuple[str, str]]:
            return [
                (
                    f'mail_deliveries_total{{{mta},transport="smtp",status="{status}"}}',
                    ramp(0, per_minute),
                ),
                (f'mail_deliveries_total{{{mta},transport="smtp",status="sent"}}', ramp(0, 60)),
            ]

        return Alert(
            name,
            f"{rule}{c.matchers()} > {warning:g}",
            "warning",
            summary,
            description,
            Example(attempts(30), [fired(mta_labels, "warning")]),
            Example(attempts(1)),
            for_="15m",
        )

    return [
        ratio_alert("MailBounceRatioHigh", BOUNCE_RATIO_RULE, "bounced", c.bounce_ratio_warning,
                    "Many deliveries bounce.",
                    "{{ $value | humanizePercentage }} of the deliveries of {{ $labels.mta }} on "
                    "{{ $labels.instance }} bounced over the last 15 minutes."),
        ratio_alert("MailDeferRatioHigh", DEFER_RATIO_RULE, "deferred", c.defer_ratio_warning,
                    "Many deliveries are deferred.",
                    "{{ $value | humanizePercentage }} of the delivery attempts of {{ $labels.mta }} on "
                    "{{ $labels.instance }} were deferred over the last 15 minutes."),
        Alert(
            "MailAuthBruteForce",
            sum_by(by_service, rate("mail_auth_failures_total", window="5m", config=c))
            + f" > {c.auth_failures_per_second_warning:g}",
            "warning", "Many failed logins: a password-guessing attack.",
            "{{ $labels.mta }} {{ $labels.service }} on {{ $labels.instance }} sees "
            '{{ $value | printf "%.1f" }} failed logins per second.',
            Example([(f'mail_auth_failures_total{{{mta},service="submission/smtpd"}}', ramp(0, 300))],
                    [fired({"mta": "postfix", "service": "submission/smtpd", **HOST_LABELS}, "warning")]),
            Example([(f'mail_auth_failures_total{{{mta},service="submission/smtpd"}}', ramp(0, 3))]),
            for_="10m",
        ),
        Alert(
            "MailLogFatalErrors",
            # A counter appears with its first line: a series new within the window counts too.
            sum_by(by_service, increase("mail_log_problems_total", severe, window="15m", config=c))
            + f" > 0 or {sum_by(by_service, f'{fatal} unless {fatal_before}')}",
            "warning", "A mail program logs fatal errors.",
            "{{ $labels.mta }} {{ $labels.service }} on {{ $labels.instance }} logged "
            '{{ $value | printf "%.0f" }} fatal or panic lines in the last 15 minutes: the '
            "process gave up (a missing map, a bad configuration, a full disk), and what it "
            "handles waits or fails.",
            Example([(problems, "_x60 1x60")], [fired(mta_labels, "warning", service="smtpd")]),
            Example([(problems, steady(3))]),
            for_="0m", eval_minutes=65,
            also=(Example([(problems, "3x60 4x60")], [fired(mta_labels, "warning", service="smtpd")]),
                  Example([(f'mail_log_problems_total{{{mta},service="smtpd",severity="warning"}}', "_x60 1x60")])),
        ),
        flag_alert(
            c, "MailLogSourceDown", "mail_log_source_up", {"source": "/var/log/mail.log", **HOST_LABELS},
            "warning", "A mail log cannot be read.",
            "Log source {{ $labels.source }} on {{ $labels.instance }} is not being read (missing, "
            "unreadable, journal unavailable): deliveries, rejects and logins from it go uncounted.",
            for_="10m",
        ),
    ]  # fmt: skip


def spam_alerts(c: Config) -> list[Alert]:
    def rejects(window: str) -> str:
        """Spam, malware and blocklist rejects per second per MTA, over ``window``."""
        spam = 'reason=~"spam|rbl|malware"'
        return sum_by(
            "instance, job, mta", rate("mail_smtpd_rejects_total", spam, window=window, config=c)
        )

    rbl = f'mail_smtpd_rejects_total{{mta="postfix",service="smtpd",reason="rbl",{HOST}}}'
    return [
        Alert(
            "MailSpamRejectSpike",
            f"{rejects('15m')} > {c.spam_reject_spike_factor:g} * {rejects('1d')}"
            f" and {rejects('15m')} > {c.spam_reject_min_per_second:g}",
            "warning", "Spam and blocklist rejects spike.",
            "{{ $labels.mta }} on {{ $labels.instance }} rejects spam, malware or listed clients "
            '{{ $value | printf "%.2f" }} times a second, more than '
            f"{c.spam_reject_spike_factor:g} times its daily average: a spam wave, or a filter gone wrong.",
            Example([(rbl, "0+1x100 100+30x20")], [fired({"mta": "postfix", **HOST_LABELS}, "warning")]),
            Example([(rbl, ramp(0, 1))]),
            for_="10m", eval_minutes=120,
        ),
    ]  # fmt: skip


def refusal_alerts(c: Config) -> list[Alert]:
    """Receiving domains that refuse our mail for our reputation, or throttle it: counts per
    domain over ``remote_refusals_window_minutes``, since one receiver's verdict is the news."""
    minutes = c.remote_refusals_window_minutes
    window = f"{minutes}m"
    by_domain = "instance, job, mta, domain"

    def refusals(reason: str) -> str:
        grown = increase(
            "mail_delivery_refusals_total", f'reason="{reason}"', window=window, config=c
        )
        return sum_by(by_domain, grown)

    def example(reason: str, status: str) -> tuple[str, dict[str, str]]:
        labels = {"mta": "postfix", "domain": "gmail.com", **HOST_LABELS}
        return (
            f'mail_delivery_refusals_total{{mta="postfix",domain="gmail.com",status="{status}",'
            f'reason="{reason}",{HOST}}}',
            labels,
        )

    reputation, reputation_labels = example("reputation", "bounced")
    throttled, throttled_labels = example("rate_limited", "deferred")
    warn, crit = c.remote_reputation_refusals_warning, c.remote_reputation_refusals_critical
    return [
        *leveled(
            "MailRemoteReputationBlocks", refusals("reputation") + " > {limit}",
            # The examples' counters grow by half the warning, the mean, twice the critical
            # per window.
            Levels(warn, crit, warn / 2 / minutes, (warn + crit) / 2 / minutes, crit * 2 / minutes),
            reputation, reputation_labels, "A receiving domain refuses our mail for its reputation.",
            "{{ $labels.domain }} refused {{ $value | printf \"%.0f\" }} deliveries of "
            "{{ $labels.mta }} on {{ $labels.instance }} in the last " + window + " for the "
            "sending IP's or domain's reputation (a blocklist, spam complaints; threshold "
            "{limit}): mail to it bounces or waits.",
            c.remote_reputation_for, values=lambda v: ramp(0, v),
        ),
        Alert(
            "MailRemoteRateLimited",
            refusals("rate_limited") + f" > {c.remote_rate_limited_refusals_warning:g}",
            "warning", "A receiving domain keeps throttling our mail.",
            "{{ $labels.domain }} deferred {{ $value | printf \"%.0f\" }} deliveries of "
            "{{ $labels.mta }} on {{ $labels.instance }} in the last " + window + " as sent "
            "too fast or in unusual volume, for over " + c.remote_rate_limited_for + ": mail "
            "to it is delayed, and a lasting throttle turns into a reputation block.",
            Example([(throttled, ramp(0, 2))], [fired(throttled_labels, "warning")]),
            # A throttle that passes within the hour, as the queue's retries slow down.
            Example([(throttled, "0+2x30 60x90")]),
            for_=c.remote_rate_limited_for, eval_minutes=100,
        ),
    ]  # fmt: skip


def account_alerts(c: Config) -> list[Alert]:
    """An account sending far above its own daily average, or logged in from many addresses.

    The baseline is ``rate(...[1d])``, which divides by the whole day: an account whose
    series is younger than a day has a low baseline, so a newly promoted account (it was
    ``other`` until its volume rose) that bursts fires, and so can a busy account in the
    first hours after the exporter is first deployed (until ``1d / factor`` of history)."""
    by_account = "instance, job, mta, account"

    def sent(window: str) -> str:
        return sum_by(
            by_account,
            rate("mail_account_messages_total", 'account!="other"', window=window, config=c),
        )

    labels = {"mta": "postfix", "account": "alice@example.org", **HOST_LABELS}
    messages = f'mail_account_messages_total{{mta="postfix",account="alice@example.org",{HOST}}}'
    addresses = f'mail_account_client_addresses{{account="alice@example.org",{HOST}}}'
    address_labels = {"account": "alice@example.org", **HOST_LABELS}
    many = c.account_client_addresses_warning
    return [
        Alert(
            "MailAccountSendingBurst",
            f"{sent('10m')} > {c.account_burst_factor:g} * {sent('1d')}"
            f" and {sent('10m')} > {c.account_burst_min_per_second:g}",
            "warning", "An account sends far more than it usually does.",
            "{{ $labels.account }} sends {{ $value | printf \"%.2f\" }} messages a second "
            "through {{ $labels.mta }} on {{ $labels.instance }}, more than "
            f"{c.account_burst_factor:g} times its daily average: a stolen password or a "
            "compromised client sending spam, or a mailing nobody announced.",
            # A day at one a minute, then 200 a minute.
            Example([(messages, "0+1x1440 1440+200x60")], [fired(labels, "warning")]),
            # A day at a steady 5 a minute, above the floor.
            Example([(messages, ramp(0, 5, 1500))]),
            for_="10m", eval_minutes=1480,
        ),
        Alert(
            "MailAccountManyClientIPs",
            f"max by (instance, job, account) (mail_account_client_addresses{c.matchers()})"
            f" > {many}",
            "warning", "An account logs in from many addresses.",
            "{{ $labels.account }} authenticated from {{ $value }} client addresses within "
            "the exporter's account_address_window on {{ $labels.instance }} (threshold "
            f"{many}): its password is probably in use by others.",
            Example([(addresses, steady(many + 5))], [fired(address_labels, "warning")]),
            Example([(addresses, steady(3))]),
            for_="15m",
        ),
    ]  # fmt: skip
