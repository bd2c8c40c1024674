"""Alerts on the round trip: test mail that fails, stops arriving or arrives slowly, or
arrives slower through the new site of a migration than through the old one."""

from __future__ import annotations

from mixin.config import Config
from mixin.promql import age, equals, site_quantile
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

ROUTE = 'route="local-loop",instance="mailhost:9469",job="mail"'
ROUTE_LABELS = {"route": "local-loop", **HOST_LABELS}

# The examples' transit-time buckets, in seconds.
BOUNDS = ("1", "2.5", "5", "10", "+Inf")


def _route(route: str, site: str, within: str) -> list[tuple[str, str]]:
    """A route of ``site`` whose one message a minute arrives ``within`` a bucket's bound:
    its info series and buckets (the message counts in that bucket and every larger one)."""
    labels = f'route="{route}",{HOST}'
    buckets = [
        (f'mail_roundtrip_delivery_seconds_bucket{{{labels},le="{le}"}}',
         ramp(0, int(float(le) >= float(within))))
        for le in BOUNDS
    ]  # fmt: skip
    return [(f'mail_roundtrip_route_info{{{labels},site="{site}"}}', steady(1)), *buckets]


def _new_site_slower(c: Config) -> Alert:
    """A route of the new site slower than the baseline site over the window: its p95 past
    the ratio times the baseline's (all its routes together) and past the floor.

    The examples span two hours, not a day: a range longer than the data reads what there
    is, and cases of a day each would add half a minute to every run of the rule tests.
    """
    window, ratio = c.migration_window, c.migration_slower_ratio
    floor, new, old = (
        c.migration_slower_min_seconds,
        c.migration_new_site,
        c.migration_baseline_site,
    )
    route_p95 = site_quantile(0.95, "instance, job, route, site", equals("site", new), window, c)
    baseline_p95 = site_quantile(0.95, "site", equals("site", old), window, c)
    baseline = _route("old-loop", old, "1")
    labels = {"route": "new-loop", "site": new, **HOST_LABELS}
    return Alert(
        "MailRoundTripNewSiteSlower",
        f"({route_p95} > on () group_left () ({ratio:g} * {baseline_p95}))"
        f" and {route_p95} > {floor:g}",
        "warning", f"Test mail through the new site ({new}) arrives slower than through {old}.",
        "Over " + window + ", 95% of the test messages on route {{ $labels.route }} (site "
        "{{ $labels.site }}) arrived within {{ $value | humanizeDuration }}: more than "
        f"{ratio:g} times the {old} site's 95th percentile, and over {floor:g}s.",
        # The new route at 5 to 10 s (p95 9.75 s) against the old one's 1 s (0.95 s).
        Example([*baseline, *_route("new-loop", new, "10")], [fired(labels, "warning")]),
        # As fast as the old one.
        Example([*baseline, *_route("new-loop", new, "1")]),
        for_=c.migration_slower_for,
        also=(
            # 2.5 times slower (p95 2.4 s), but within the floor: instant to people.
            Example([*baseline, *_route("new-loop", new, "2.5")]),
            # Routes of other sites, and a new site without a baseline to compare with.
            Example([*baseline, *_route("gmail-loop", "gmail", "10")]),
            Example(_route("new-loop", new, "10")),
        ),
    )  # fmt: skip


def roundtrip_alerts(c: Config) -> list[Alert]:
    alerts = [
        flag_alert(
            c, "MailRoundTripFailing", "mail_roundtrip_success", ROUTE_LABELS, "critical",
            "Test mail does not arrive.",
            "The round trip {{ $labels.route }} failed: mail sent there did not reach the mailbox "
            "in time; mail_roundtrip_failures_total says at which stage.",
        ),
        Alert(
            "MailRoundTripStale",
            f"{age('mail_roundtrip_last_success_timestamp_seconds', config=c)} > {c.roundtrip_stale_seconds}",
            "critical", "No test mail has arrived for a long time.",
            "The last successful round trip of {{ $labels.route }} was {{ $value | humanizeDuration }} ago.",
            Example([(f"mail_roundtrip_last_success_timestamp_seconds{{{ROUTE}}}", steady(0))], [fired(ROUTE_LABELS, "critical")]),
            Example([(f"mail_roundtrip_last_success_timestamp_seconds{{{ROUTE}}}", ramp(0, 60))]),
        ),
    ]  # fmt: skip
    alerts += leveled(
        "MailRoundTripSlow", "mail_roundtrip_duration_seconds" + c.matchers() + " > {limit}",
        Levels.of_durations(c.roundtrip_slow_warning_seconds, c.roundtrip_slow_critical_seconds),
        f"mail_roundtrip_duration_seconds{{{ROUTE}}}", ROUTE_LABELS, "Test mail takes long to arrive.",
        "The last test message on {{ $labels.route }} took {{ $value | humanizeDuration }} "
        "to arrive (threshold {limit}s).", "10m",
    )  # fmt: skip
    return [*alerts, _new_site_slower(c)]
