"""The ``mail-migration`` dashboard: the old and the new site's round trips side by side,
then the same graphs now and ``$shift`` ago, overlaid, for before/after checks.

The side-by-side row compares two sites (``$site_before`` and ``$site_after``: values of
the routes' ``site`` key, by default the pair the alert compares, from
:mod:`mixin.config`) while both carry mail, which the time shift cannot: the old system
keeps its routes while mailboxes move. Each site is its routes together, joined to their
site by ``route`` (:func:`mixin.promql.at_site`). Loss and junk are shares of the round
trips that ended; the headline figures take the alert's window, the graphs Grafana's.
"""

from __future__ import annotations

from collections.abc import Callable

from mixin.config import CONFIG
from mixin.dashboards.shared import TARGET
from mixin.grafana import (
    Json,
    Panel,
    Query,
    Row,
    custom_variable,
    dashboard,
    higher_is_worse,
    label_choice,
    label_variable,
    stat,
    thresholds,
    timeseries,
)
from mixin.promql import (
    RATE,
    ROUTE_INFO,
    at_site,
    equals,
    quantile,
    rate,
    series,
    site_failures,
    site_quantile,
    site_share,
    sum_by,
)

Expression = Callable[[str], str]
"""Builds a query given an offset: "" for now, "$shift" for the comparison."""


def overlay(
    title: str, description: str, expression: Expression, legend: str, unit: str = "short"
) -> Panel:
    """The same query now and ``$shift`` ago; the earlier one dashed."""
    dashed = {
        "matcher": {"id": "byRegexp", "options": "^before .*"},
        "properties": [{"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}}],
    }
    return timeseries(
        title,
        f"{description} Solid: now; dashed: the same time $shift earlier.",
        Query(expression(""), f"now {legend}"),
        Query(expression("$shift"), f"before {legend}"),
        unit=unit,
        overrides=[dashed],
    )


BEFORE = equals("site", "$site_before")
AFTER = equals("site", "$site_after")
SITES = (("before", BEFORE), ("after", AFTER))


def _p95(site: str, window: str) -> str:
    return site_quantile(0.95, "site", site, window)


def _loss(site: str, window: str, by: str = "site") -> str:
    return site_share(site_failures(by, site, window), site, window)


def _junk(site: str, window: str) -> str:
    junk = sum_by("site", at_site(rate("mail_roundtrip_junk_total", window=window), site))
    return site_share(junk, site, window)


def _headlines(variable: str, site: str) -> list[Panel]:
    """One site's day in three figures, coloured by the round trip's thresholds."""
    window = CONFIG.migration_window
    slow = higher_is_worse(
        CONFIG.roundtrip_slow_warning_seconds, CONFIG.roundtrip_slow_critical_seconds
    )
    share = higher_is_worse(
        CONFIG.roundtrip_loss_warning_ratio, CONFIG.roundtrip_loss_critical_ratio
    )
    return [
        stat(f"{variable}: transit p95 ({window})",
             f"95th percentile of the transit time of the routes at site {variable} over "
             f"{window}: send start to seen in the mailbox.",
             Query(_p95(site, window)), unit="s", steps=slow, width=4),
        stat(f"{variable}: loss ({window})",
             f"Share of the round trips at site {variable} over {window} that failed at any "
             "stage (a failed cleanup alone is no loss: the message had arrived).",
             Query(_loss(site, window)), unit="percentunit",
             steps=share, width=4, decimals=2),
        stat(f"{variable}: junk ({window})",
             f"Share of the round trips at site {variable} over {window} whose message landed "
             "in the junk mailbox.",
             Query(_junk(site, window)), unit="percentunit",
             steps=share, width=4, decimals=2),
    ]  # fmt: skip


def _side_by_side() -> Row:
    window, ratio = CONFIG.migration_window, CONFIG.migration_slower_ratio
    transit = [
        Query(site_quantile(q, "site", site), f"{when} {{{{site}}}} p{round(q * 100)}")
        for when, site in SITES
        for q in (0.5, 0.95)
    ]
    return Row(
        "Old and new route side by side",
        [
            *_headlines("$site_before", BEFORE),
            *_headlines("$site_after", AFTER),
            timeseries(
                "Transit time p50 and p95",
                "Send start to seen in the mailbox, the routes of each site together.",
                *transit, unit="s", width=8,
            ),
            timeseries(
                "Loss by stage",
                "Share of each site's round trips that failed, by the stage that failed "
                "(timeout: sent but not seen in time).",
                *(Query(_loss(site, RATE, by="site, stage"),
                        f"{when} {{{{site}}}} {{{{stage}}}}") for when, site in SITES),
                unit="percentunit", width=8,
            ),
            timeseries(
                "Junk rate",
                "Share of each site's round trips whose message landed in the junk mailbox.",
                *(Query(_junk(site, RATE), f"{when} {{{{site}}}}")
                  for when, site in SITES),
                unit="percentunit", width=8,
            ),
            timeseries(
                f"Transit p95 over {window}: $site_after ÷ $site_before",
                f"How many times slower the new site delivers than the old, over {window}; the "
                f"dashed line is the ratio from which MailRoundTripNewSiteSlower fires for a "
                f"route of site {CONFIG.migration_new_site} against site "
                f"{CONFIG.migration_baseline_site} ({ratio:g}, once that route's p95 is over "
                f"{CONFIG.migration_slower_min_seconds:g}s).",
                Query(f"{_p95(AFTER, window)} / on () {_p95(BEFORE, window)}", "ratio"),
                steps=thresholds("green", (ratio, "red")), width=24, height=6,
            ),
        ],
    )  # fmt: skip


def _migration_probes() -> Row:
    return Row(
        "Probes",
        [
            overlay(
                "Probe latency p95 by protocol",
                "95th percentile of probe durations per protocol.",
                lambda at: quantile(
                    0.95, "mail_probe_latency_seconds", "protocol", TARGET, offset=at
                ),
                "{{protocol}}",
                unit="s",
            ),
            overlay(
                "Probe success by protocol",
                "Share of targets whose last probe passed.",
                lambda at: f"avg by (protocol) ({series('mail_probe_success', TARGET, offset=at)})",
                "{{protocol}}",
                unit="percentunit",
            ),
            overlay(
                "Probe phases",
                "Average time per probe phase: shows a slower TLS handshake or login at once.",
                lambda at: "avg by (phase) "
                f"({series('mail_probe_phase_duration_seconds', TARGET, offset=at)})",
                "{{phase}}",
                unit="s",
            ),
        ],
    )


def _migration_mail_flow() -> Row:
    return Row(
        "Mail flow",
        [
            overlay(
                "Round trip duration",
                "Send to seen in the mailbox, last success per route.",
                lambda at: series("mail_roundtrip_duration_seconds", offset=at),
                "{{route}}",
                unit="s",
            ),
            overlay(
                "Deliveries by status",
                "Recipient delivery attempts per second.",
                lambda at: sum_by("status", rate("mail_deliveries_total", offset=at)),
                "{{status}}",
                unit="mps",
            ),
            overlay(
                "Queues",
                "Messages per queue, all MTAs together.",
                lambda at: sum_by("queue", series("mail_queue_messages", offset=at)),
                "{{queue}}",
            ),
            overlay(
                "Rejects by reason",
                "Rejected SMTP commands per second by reason class.",
                lambda at: sum_by("reason", rate("mail_smtpd_rejects_total", offset=at)),
                "{{reason}}",
                unit="cps",
            ),
            overlay(
                "Login failures",
                "Failed SASL and mailbox logins per second.",
                lambda at: sum_by("mta", rate("mail_auth_failures_total", offset=at)),
                "{{mta}}",
                unit="cps",
            ),
        ],
    )


def migration_comparison() -> Json:
    return dashboard(
        "mail-migration",
        "Mail: migration before/after",
        "The old and the new site's test mail side by side, then each graph now and $shift "
        "earlier, overlaid: did the migration make mail slower, less reliable or noisier?",
        [_side_by_side(), _migration_probes(), _migration_mail_flow()],
        [
            label_choice("site_before", "Old site", ROUTE_INFO, "site",
                         CONFIG.migration_baseline_site),
            label_choice("site_after", "New site", ROUTE_INFO, "site", CONFIG.migration_new_site),
            custom_variable("shift", "Compare with", ["1d", "7d", "30d"], "7d"),
            label_variable("target", "Target", "mail_probe_success"),
        ],
    )  # fmt: skip
