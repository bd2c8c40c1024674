"""The round-trip metric families, rendered at scrape time from each route's running totals
(:class:`mail_exporter.roundtrip.outcome.RouteStats`) and its configured ``site``.

The site is on one series per route, ``mail_roundtrip_route_info``, as Prometheus's info
metrics are: the route's own series keep only ``route``, so moving a route to another
site changes no series of its history, and queries join the site on by ``route``.
"""

from __future__ import annotations

from collections.abc import Mapping

from mail_exporter.metric_spec import Family, MetricSpec, Row, as_is
from mail_exporter.roundtrip.outcome import RouteStats

ROUNDTRIP_FAILURES = MetricSpec(
    "mail_roundtrip_failures_total", "Failed round trips by stage: send, send_auth, receive, "
    "receive_auth, timeout, cleanup.", "counter", ("route", "stage"), as_is,
)  # fmt: skip
ROUNDTRIP_HOPS = MetricSpec(
    "mail_roundtrip_hop_delay_seconds", "Delay each hop added, from the Received headers of the "
    "last message seen in time (hop 1 is the first server; hops past 5 add to hop 5).", "gauge",
    ("route", "hop"), as_is,
)  # fmt: skip
ROUNDTRIP_ROUTE_INFO = MetricSpec(
    "mail_roundtrip_route_info", "1 for each configured route, naming the site (the route's "
    "site key, empty when unset) that its mail goes to.", "gauge", ("route", "site"), as_is,
)  # fmt: skip
ROUNDTRIP_METRICS = (
    ROUNDTRIP_ROUTE_INFO,
    MetricSpec("mail_roundtrip_success", "1 if the last round trip's message was seen in the "
        "mailbox in time.", "gauge", ("route",), lambda stats: stats.success),
    MetricSpec("mail_roundtrip_duration_seconds", "Start of sending to the message seen in the "
        "mailbox, last success.", "gauge", ("route",), lambda stats: stats.duration),
    MetricSpec("mail_roundtrip_delivery_seconds", "Start of sending to the message seen, for "
        "every message seen in time.", "histogram", ("route",),
        lambda stats: (stats.delivery.buckets(), stats.delivery.total)),
    MetricSpec("mail_roundtrip_last_success_timestamp_seconds", "When a round trip last succeeded.",
        "gauge", ("route",), lambda stats: stats.last_success),
    ROUNDTRIP_FAILURES,
    MetricSpec("mail_roundtrip_late_arrivals_total", "Messages seen after their route's timeout "
        "(each counted once, not lost again).", "counter", ("route",), lambda stats: stats.late),
    MetricSpec("mail_roundtrip_junk_total", "Messages seen in time in the junk mailbox instead of "
        "the mailbox.", "counter", ("route",), lambda stats: stats.junk),
    MetricSpec("mail_roundtrip_throttled_total", "Requests of the route's Graph legs answered 429 "
        "or 503 (throttled), each waited out or failing its stage.", "counter", ("route",),
        lambda stats: stats.throttled),
    ROUNDTRIP_HOPS,
)  # fmt: skip
"""Those of one value per route read it from the route's RouteStats."""


def roundtrip_families(routes: Mapping[str, RouteStats], sites: Mapping[str, str]) -> list[Family]:
    """The families of the routes' running totals and of their ``sites`` (by route name);
    values not known yet are left out, never reported as 0.

    Sample output of a route whose last attempt passed::

        mail_roundtrip_route_info{route="local-loop",site="onprem"} 1.0
        mail_roundtrip_success{route="local-loop"} 1.0
        mail_roundtrip_duration_seconds{route="local-loop"} 0.052
        mail_roundtrip_failures_total{route="local-loop",stage="timeout"} 0.0
        mail_roundtrip_hop_delay_seconds{route="local-loop",hop="1"} 0.0
    """
    rows: dict[MetricSpec, list[Row]] = {
        ROUNDTRIP_FAILURES: [
            ((route, stage), count)
            for route, stats in routes.items()
            for stage, count in stats.failures.items()
        ],
        ROUNDTRIP_HOPS: [
            ((route, hop), seconds)
            for route, stats in routes.items()
            for hop, seconds in stats.hops.items()
        ],
        ROUNDTRIP_ROUTE_INFO: [((route, sites[route]), 1.0) for route in routes],
    }
    by_route: list[Row] = [((route,), stats) for route, stats in routes.items()]
    built = [spec.family(rows.get(spec, by_route)) for spec in ROUNDTRIP_METRICS]
    return [family for family in built if family.samples]
