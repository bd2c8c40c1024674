"""PromQL shared by the alert rules and the dashboards: selectors, range functions, and the
names the rules give to what they write.

Every selector starts from ``config.selector`` (:data:`~mixin.config.CONFIG` unless a rule
passes its own), so rules and dashboards filter alike. Range functions take Grafana's
``$__rate_interval`` unless given a window: the dashboards' default; rules name fixed ones.
"""

from __future__ import annotations

from mixin.config import CONFIG, Config

DAY_SECONDS = 86400
HOUR_SECONDS = 3600
RATE = "$__rate_interval"

# The alert rules' names all start with this (alerting/mail_exporter.rules.yml).
ALERT_PREFIX = "Mail"

# Series recorded by the rules in alerting/ (mixin/rules/recording.py), shared with the
# alerts and the dashboards.
CERT_DAYS_RULE = "mail:tls_cert_expiry:days"
PROBE_P95_RULE = "mail:probe_latency_seconds:p95_rate1h"
ROUNDTRIP_P95_RULE = "mail:roundtrip_delivery_seconds:p95_rate1h"
BOUNCE_RATIO_RULE = "mail:deliveries:bounce_ratio_rate15m"
DEFER_RATIO_RULE = "mail:deliveries:defer_ratio_rate15m"

# The round-trip routes' sites: one info series per route carries `site`, the routes' own
# series only `route` (docs/metrics.md); these name one route of one exporter.
ROUTE_INFO = "mail_roundtrip_route_info"
ROUTE_OF_EXPORTER = "instance, job, route"

# The reports mailbox's series the rules and the dashboard read, and mail that failed DMARC
# (neither DKIM nor SPF aligned) and TLS sessions that failed, as the collector labels them
# (docs/metrics.md).
DMARC_MESSAGES = "mail_dmarc_report_messages_total"
UNALIGNED = "mail_dmarc_unaligned_messages_total"
TLSRPT_SESSIONS = "mail_tlsrpt_sessions_total"
NOTIFICATION = "mail_notification_last_timestamp_seconds"
DMARC_FAILED = 'dkim_aligned="false",spf_aligned="false"'
TLS_FAILED = 'result!="success"'

# The labels that name one probed target: scheduled (target, module) or through /probe (instance).
PROBED = "instance, job, target, module, protocol"

# TLS older than 1.2 as the exporter labels it (tls_version_label: "TLS 1.0"; exporters
# before 2026-12 wrote "TLS 1", still matched),
# a regular expression Prometheus anchors at both ends; PromQL strings take backslash
# escapes, so the matchers write its \. as \\.
_OLD_TLS_VERSIONS = r"TLS 1(\.[01])?|SSL.*".replace("\\", "\\\\")
OLD_TLS = f'version=~"{_OLD_TLS_VERSIONS}"'
CURRENT_TLS = f'version!~"{_OLD_TLS_VERSIONS}"'


def equals(label: str, value: str) -> str:
    """A ``label="value"`` matcher."""
    return f'{label}="{value}"'


def _offset(offset: str) -> str:
    return f" offset {offset}" if offset else ""


def series(metric: str, *matchers: str, offset: str = "", config: Config = CONFIG) -> str:
    """``metric{config.selector, matchers...}``, optionally shifted back in time."""
    return metric + config.matchers(*matchers) + _offset(offset)


def rate(
    metric: str,
    *matchers: str,
    offset: str = "",
    func: str = "rate",
    window: str = RATE,
    config: Config = CONFIG,
) -> str:
    """``rate(metric{...}[$__rate_interval])``, or another range function or window."""
    return f"{func}({metric}{config.matchers(*matchers)}[{window}]{_offset(offset)})"


def increase(metric: str, *matchers: str, window: str = RATE, config: Config = CONFIG) -> str:
    """How much a counter grew per window: counts, not rates, for rare events."""
    return rate(metric, *matchers, func="increase", window=window, config=config)


def counted(metric: str, *matchers: str, window: str, config: Config = CONFIG) -> str:
    """How much a counter counted within ``window``, a series born within it at its whole value.

    Counters that count batches (a day's DMARC report, added in one pass) appear with
    their first batch already in them: ``increase()`` starts from a series' first sample and
    would lose the first batch of every new reporter, source or result type, and every
    series' first batch after the exporter restarts. A series that did not exist a window
    ago counts with its value; the others with their increase.
    """
    grown = increase(metric, *matchers, window=window, config=config)
    before = series(metric, *matchers, offset=window, config=config)
    return f"({grown} and {before}) or {series(metric, *matchers, config=config)}"


def counted_share(
    metric: str, part: str, by: str, *matchers: str, window: str, config: Config = CONFIG
) -> str:
    """The share of what a counter counted within ``window`` (:func:`counted`) that the
    ``part`` matchers select, per ``by`` labels."""
    selected = sum_by(by, counted(metric, part, *matchers, window=window, config=config))
    whole = sum_by(by, counted(metric, *matchers, window=window, config=config))
    return f"{selected} / {whole}"


def new_unaligned_sources(*matchers: str, config: Config = CONFIG) -> str:
    """The unaligned mail of each source whose series existed neither a reports window ago
    nor ``dmarc_new_source_lookback`` ago (all it sent since, as the series is that young);
    ``other``, the sources past the collector's cap, is no source."""
    now = series(UNALIGNED, 'source!="other"', *matchers, config=config)
    before = (config.reports_window, config.dmarc_new_source_lookback)
    known = " unless ".join(series(UNALIGNED, *matchers, offset=w, config=config) for w in before)
    return f"({now} unless {known})"


def quantile(
    q: float,
    histogram: str,
    by: str,
    *matchers: str,
    offset: str = "",
    window: str = RATE,
    config: Config = CONFIG,
) -> str:
    """The ``q`` quantile of a histogram's recent observations, per ``by`` labels."""
    buckets = rate(f"{histogram}_bucket", *matchers, offset=offset, window=window, config=config)
    return f"histogram_quantile({q}, sum by ({by}, le) ({buckets}))"


def sum_by(by: str, expr: str) -> str:
    """``sum by (by) (expr)``: ``by`` is a comma-separated label list."""
    return f"sum by ({by}) ({expr})"


def count_or_zero(expr: str) -> str:
    """How many series match, 0 rather than no data when none do."""
    return f"count({expr}) or vector(0)"


def age(timestamp_metric: str, *matchers: str, config: Config = CONFIG) -> str:
    """Seconds since the point in time a ``_timestamp_seconds`` gauge holds."""
    return f"time() - {series(timestamp_metric, *matchers, config=config)}"


def days_left(expiry_metric: str, *matchers: str, config: Config = CONFIG) -> str:
    """Days until the point in time an ``_expiry_timestamp_seconds`` gauge holds."""
    return f"({series(expiry_metric, *matchers, config=config)} - time()) / {DAY_SECONDS}"


def cert_days_left(*matchers: str, config: Config = CONFIG) -> str:
    """Days until the earliest certificate of each presented chain expires."""
    return days_left("mail_tls_cert_expiry_timestamp_seconds", *matchers, config=config)


def chain_cert_days_left(*matchers: str, config: Config = CONFIG) -> str:
    """Days until each certificate of each presented chain expires, by its ``position``."""
    return days_left("mail_tls_chain_cert_expiry_timestamp_seconds", *matchers, config=config)


def cert_file_days_left(*matchers: str, config: Config = CONFIG) -> str:
    """Days until the earliest certificate of each watched file (``path``) expires."""
    return days_left("mail_tls_cert_file_expiry_timestamp_seconds", *matchers, config=config)


def path_free_bytes_ahead(*matchers: str, config: Config = CONFIG) -> str:
    """Free bytes behind each mail path ``disk_fill_horizon_hours`` from now, if the trend of
    the last ``disk_fill_trend_hours`` goes on."""
    avail = series("mail_host_path_avail_bytes", *matchers, config=config)
    ahead = config.disk_fill_horizon_hours * HOUR_SECONDS
    return f"predict_linear({avail}[{config.disk_fill_trend_hours}h], {ahead})"


def at_site(expr: str, site: str, config: Config = CONFIG) -> str:
    """``expr`` over round-trip routes, kept for the routes whose ``site`` matches (a
    ``site...`` matcher) and given their ``site`` label."""
    info = series(ROUTE_INFO, site, config=config)
    return f"{expr} * on ({ROUTE_OF_EXPORTER}) group_left (site) {info}"


def site_quantile(q: float, by: str, site: str, window: str = RATE, config: Config = CONFIG) -> str:
    """The ``q`` quantile of the transit times of the routes at ``site``, per ``by`` (which
    may name ``site`` and the routes' own labels)."""
    buckets = rate("mail_roundtrip_delivery_seconds_bucket", window=window, config=config)
    return f"histogram_quantile({q}, {sum_by(f'{by}, le', at_site(buckets, site, config))})"


def site_failures(by: str, site: str, window: str = RATE, config: Config = CONFIG) -> str:
    """Failed round trips per second at ``site``, per ``by``: a failed cleanup is left out,
    as it is counted on top of its attempt's own end (the message had arrived)."""
    failed = rate("mail_roundtrip_failures_total", 'stage!="cleanup"', window=window, config=config)
    return sum_by(by, at_site(failed, site, config))


def site_attempts(site: str, window: str = RATE, config: Config = CONFIG) -> str:
    """Round trips ended per second at ``site``, by ``site``: each ends seen in time (the
    delivery histogram counts it, arrivals in junk too) or failed at one stage."""
    seen = rate("mail_roundtrip_delivery_seconds_count", window=window, config=config)
    seen_at_site = sum_by("site", at_site(seen, site, config))
    return f"({seen_at_site} + {site_failures('site', site, window, config)})"


def site_share(part: str, site: str, window: str = RATE, config: Config = CONFIG) -> str:
    """``part`` (a rate at ``site``, summed by labels that include ``site``) as a share of
    the round trips ended there."""
    return f"{part} / on (site) group_left () {site_attempts(site, window, config)}"
