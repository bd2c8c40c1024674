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


STAGE_MEANINGS = {
    "send": "the test message could not be submitted, so none was sent",
    "send_auth": "the submission server refused the probe's login, so no message was sent",
    "receive": "the mailbox could not be read (it is opened before sending, so none was sent)",
    "receive_auth": "the mailbox server refused the probe's login, so no message was sent",
    "timeout": "the message was sent but did not reach the mailbox within the route's timeout",
}
"""What a failed stage of ``mail_roundtrip_failures_total`` means to the reader of an alert
(``cleanup`` is counted on top of an attempt's own result, never its failure)."""

FAILURE_WINDOW = "30m"
"""How far back the description looks for the stage that failed: longer than a route's
interval, so the last failed attempt is in it."""


def failed_stage(window: str = FAILURE_WINDOW) -> str:
    """The description's account of what failed: the stage that failed most within
    ``window``, read when the alert is rendered, in words; without one, the attempt ended
    in the junk mailbox."""
    query = (
        "{{ with printf `topk(1, increase(mail_roundtrip_failures_total{instance=%q,job=%q,"
        f'route=%q,stage!="cleanup"}}[{window}]) > 0)` '
        "$labels.instance $labels.job $labels.route | query }}{{ with index . 0 }}"
    )
    branches = "".join(
        f'{{{{ {"if" if i == 0 else "else if"} eq .Labels.stage "{stage}" }}}}{meaning}'
        for i, (stage, meaning) in enumerate(STAGE_MEANINGS.items())
    )
    return (
        query + branches + "{{ else }}its {{ .Labels.stage }} stage failed{{ end }}{{ end }}"
        "{{ else }}the message arrived in the junk mailbox, or the attempts failed longer "
        f"than {window} ago{{{{ end }}}}"
    )


def roundtrip_alerts(c: Config) -> list[Alert]:
    alerts = [
        flag_alert(
            c, "MailRoundTripFailing", "mail_roundtrip_success", ROUTE_LABELS, "critical",
            "Test mail does not arrive.",
            "The round trip {{ $labels.route }} failed: " + failed_stage() + ". The exporter's "
            "log says why (level warn, route {{ $labels.route }}).",
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
