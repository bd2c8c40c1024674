"""Grafana dashboards for mail_exporter, built as plain dicts from :mod:`mixin.config`.

Five dashboards, each written to ``grafana/dashboards/<uid>.json`` by :func:`write_all`:

- ``mail-overview``: the whole fleet at a glance (probes, TLS, queues, round trip, Exchange);
- ``mail-server``: one server's probes in detail, chosen with the ``target`` variable;
- ``mail-delivery``: what the logs say (deliveries, delays, domains, spam, rejects, logins);
- ``mail-host``: the mail host (services, CPU, memory, disks, sensors, S.M.A.R.T., backups);
- ``mail-migration``: the same graphs now and ``$shift`` ago, overlaid, for before/after checks.

Every query takes its selector from ``CONFIG.matchers`` and every coloured threshold from
``CONFIG``, so the dashboards agree with the alert rules. The data source is the
``datasource`` variable, so the files import into any Grafana with a Prometheus.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixin.config import CONFIG

Json = dict[str, Any]

DATASOURCE: Json = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24
RATE = "$__rate_interval"
DAY_SECONDS = 86400
HOUR_SECONDS = 3600

# Checkmk's Exchange queue defaults; only the dashboards use them so far.
EXCHANGE_QUEUE_WARNING = 500
EXCHANGE_QUEUE_CRITICAL = 2000
# windows_exporter reports each queue per priority; this instance is Exchange's own total.
EXCHANGE_TOTAL = 'name="total_excluding_priority_none"'

# The alert rules' names all start with this (alerting/mail_exporter.rules.yml).
ALERT_PREFIX = "Mail"

TARGET = 'target=~"$target"'
DEFERRED = 'queue="deferred"'
ACTIVE = 'queue="active"'
MTA = 'mta=~"$mta"'
INSTANCE = 'instance=~"$instance"'
LOG = (MTA, INSTANCE)

# Series recorded by the rules in alerting/ (mixin/rules.py), shared with the alerts.
PROBE_P95_RULE = "mail:probe_latency_seconds:p95_rate1h"
BOUNCE_RATIO_RULE = "mail:deliveries:bounce_ratio_rate15m"
DEFER_RATIO_RULE = "mail:deliveries:defer_ratio_rate15m"


# --- PromQL -----------------------------------------------------------------------------


def equals(label: str, value: str) -> str:
    """A ``label="value"`` matcher."""
    return f'{label}="{value}"'


def _offset(offset: str) -> str:
    return f" offset {offset}" if offset else ""


def series(metric: str, *matchers: str, offset: str = "") -> str:
    """``metric{CONFIG.selector, matchers...}``, optionally shifted back in time."""
    return metric + CONFIG.matchers(*matchers) + _offset(offset)


def rate(
    metric: str, *matchers: str, offset: str = "", func: str = "rate", window: str = RATE
) -> str:
    """``rate(metric{...}[$__rate_interval])``, or another range function or window."""
    return f"{func}({metric}{CONFIG.matchers(*matchers)}[{window}]{_offset(offset)})"


def increase(metric: str, *matchers: str) -> str:
    """How much a counter grew per ``$__rate_interval``: counts, not rates, for rare events."""
    return rate(metric, *matchers, func="increase")


def increase_over_range(metric: str, *matchers: str) -> str:
    """How much a counter grew over the dashboard's whole time range."""
    return rate(metric, *matchers, func="increase", window="$__range")


def quantile(q: float, histogram: str, by: str, *matchers: str, offset: str = "") -> str:
    """The ``q`` quantile of a histogram's recent observations, per ``by`` labels."""
    buckets = rate(f"{histogram}_bucket", *matchers, offset=offset)
    return f"histogram_quantile({q}, sum by ({by}, le) ({buckets}))"


def sum_by(by: str, expr: str) -> str:
    """``sum by (by) (expr)``: ``by`` is a comma-separated label list."""
    return f"sum by ({by}) ({expr})"


def count_or_zero(expr: str) -> str:
    """How many series match, 0 rather than no data when none do."""
    return f"count({expr}) or vector(0)"


def age(timestamp_metric: str, *matchers: str) -> str:
    """Seconds since the point in time a ``_timestamp_seconds`` gauge holds."""
    return f"time() - {series(timestamp_metric, *matchers)}"


def cert_days_left(*matchers: str) -> str:
    expiry = series("mail_tls_cert_expiry_timestamp_seconds", *matchers)
    return f"({expiry} - time()) / {DAY_SECONDS}"


# --- Field settings ---------------------------------------------------------------------


def thresholds(base: str, *steps: tuple[float, str]) -> Json:
    """Absolute threshold steps: ``base`` colour below the first step."""
    return {
        "mode": "absolute",
        "steps": [{"color": base, "value": None}]
        + [{"color": color, "value": value} for value, color in steps],
    }


def higher_is_worse(warning: float, critical: float) -> Json:
    return thresholds("green", (warning, "orange"), (critical, "red"))


def lower_is_worse(critical: float, warning: float) -> Json:
    return thresholds("red", (critical, "orange"), (warning, "green"))


def any_is_bad(color: str = "red") -> Json:
    """For counts of broken things: green at 0, ``color`` from 1."""
    return thresholds("green", (1, color))


def flag(one: tuple[str, str], zero: tuple[str, str]) -> list[Json]:
    """Value mappings that name and colour a 1/0 gauge: ``(text, colour)`` each."""
    return [
        {
            "type": "value",
            "options": {
                "1": {"index": 0, "text": one[0], "color": one[1]},
                "0": {"index": 1, "text": zero[0], "color": zero[1]},
            },
        }
    ]


UP_DOWN = flag(("up", "green"), ("down", "red"))
OK_FAILED = flag(("ok", "green"), ("failed", "red"))
VERIFIED = flag(("verified", "green"), ("not verified", "red"))
STARTTLS = flag(("offered", "green"), ("missing", "red"))
PLAINTEXT_LOGIN = flag(("before TLS", "red"), ("no", "green"))

CERT_DAYS = lower_is_worse(CONFIG.cert_expiry_critical_days, CONFIG.cert_expiry_warning_days)
PROBE_SLOW = higher_is_worse(CONFIG.probe_slow_warning_seconds, CONFIG.probe_slow_critical_seconds)
ROUNDTRIP_SLOW = higher_is_worse(
    CONFIG.roundtrip_slow_warning_seconds, CONFIG.roundtrip_slow_critical_seconds
)
OLDEST_MESSAGE = higher_is_worse(
    CONFIG.queue_oldest_warning_seconds, CONFIG.queue_oldest_critical_seconds
)
DEFERRED_QUEUE = higher_is_worse(CONFIG.queue_deferred_warning, CONFIG.queue_deferred_critical)
ACTIVE_QUEUE = higher_is_worse(CONFIG.queue_active_warning, CONFIG.queue_active_critical)
EXCHANGE_QUEUE = higher_is_worse(EXCHANGE_QUEUE_WARNING, EXCHANGE_QUEUE_CRITICAL)
# NVMe "percentage used": the vendor's endurance estimate is spent at 100%.
NVME_WEAR = higher_is_worse(0.8, 1.0)
DAYS = "suffix: days"
NAMED = "value_and_name"


SERIES_TARGET = "${__field.labels.target}"
CELL_VALUE = "${__value.raw}"


def server_link(target: str = SERIES_TARGET) -> list[Json]:
    """A data link to the drill-down of the target a series (or, ``CELL_VALUE``, a table
    cell) names, keeping the data source and time range."""
    url = (
        f"/d/mail-server/mail-server?var-target={target}"
        "&${datasource:queryparam}&${__url_time_range}"
    )
    return [{"title": f"Open {target}", "url": url}]


def column(name: str, **properties: Any) -> Json:
    """A field override for one table column or series, by its name."""
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": key, "value": value} for key, value in sorted(properties.items())],
    }


def colored_cells(name: str, **properties: Any) -> Json:
    """A table column whose cells take the colour of their value's threshold or mapping."""
    return column(name, **{"custom.cellOptions": {"type": "color-background"}}, **properties)


# --- Panels -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """One PromQL query of a panel; ``instant`` for tables, stats of "now" and top lists."""

    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False


@dataclass(frozen=True)
class Panel:
    """A panel before layout: its kind, queries and settings, and how much grid it takes."""

    type: str
    title: str
    description: str
    queries: Sequence[Query]
    width: int
    height: int
    defaults: Json = field(default_factory=dict)
    options: Json = field(default_factory=dict)
    overrides: Sequence[Json] = ()
    transformations: Sequence[Json] = ()


@dataclass(frozen=True)
class Row:
    """A titled row of panels; a collapsed row keeps its panels folded away."""

    title: str
    panels: Sequence[Panel]
    collapsed: bool = False


def field_defaults(
    unit: str = "short",
    steps: Json | None = None,
    mappings: Sequence[Json] = (),
    color: str = "thresholds",
    custom: Json | None = None,
    links: Sequence[Json] = (),
    minimum: float | None = None,
    decimals: int | None = None,
) -> Json:
    """A panel's ``fieldConfig.defaults``; ``steps`` colours values (green when not given)."""
    defaults: Json = {
        "color": {"mode": color},
        "custom": custom or {},
        "links": list(links),
        "mappings": list(mappings),
        "thresholds": steps or thresholds("green"),
        "unit": unit,
    }
    if minimum is not None:
        defaults["min"] = minimum
    if decimals is not None:
        defaults["decimals"] = decimals
    return defaults


LEGEND_TABLE: Json = {
    "calcs": ["lastNotNull", "max"],
    "displayMode": "table",
    "placement": "bottom",
    "showLegend": True,
}
TOOLTIP: Json = {"mode": "multi", "sort": "desc"}
LAST_VALUE: Json = {"calcs": ["lastNotNull"], "fields": "", "values": False}


def timeseries(
    title: str,
    description: str,
    *queries: Query,
    unit: str = "short",
    steps: Json | None = None,
    stack: bool = False,
    bars: bool = False,
    width: int = 12,
    height: int = 8,
    links: Sequence[Json] = (),
    overrides: Sequence[Json] = (),
) -> Panel:
    """A graph over time; ``steps`` draws the thresholds as dashed lines."""
    custom = {
        "drawStyle": "bars" if bars else "line",
        "fillOpacity": 60 if stack or bars else 10,
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stack else "none"},
        "thresholdsStyle": {"mode": "dashed" if steps else "off"},
    }
    return Panel(
        "timeseries",
        title,
        description,
        queries,
        width,
        height,
        field_defaults(unit, steps, color="palette-classic", custom=custom, links=links, minimum=0),
        {"legend": LEGEND_TABLE, "tooltip": TOOLTIP},
        overrides,
    )


def stat(
    title: str,
    description: str,
    *queries: Query,
    unit: str = "short",
    steps: Json | None = None,
    mappings: Sequence[Json] = (),
    text: str = "value",
    width: int = 3,
    height: int = 4,
    decimals: int | None = None,
) -> Panel:
    """Big coloured numbers, one per series: the value now.

    ``text`` is Grafana's text mode: ``value``, ``value_and_name`` (the legend above each
    value, for several series) or ``name`` (the legend alone, for info metrics).
    """
    options = {
        "colorMode": "background",
        "graphMode": "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": LAST_VALUE,
        "textMode": text,
        "wideLayout": True,
    }
    defaults = field_defaults(unit, steps, mappings, decimals=decimals)
    return Panel("stat", title, description, queries, width, height, defaults, options)


def state_timeline(
    title: str,
    description: str,
    *queries: Query,
    mappings: Sequence[Json],
    width: int = 24,
    height: int = 8,
    links: Sequence[Json] = (),
) -> Panel:
    """One coloured band per series: when each thing was up or down."""
    custom = {"fillOpacity": 80, "lineWidth": 0}
    options = {
        "alignValue": "left",
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
        "mergeValues": True,
        "rowHeight": 0.9,
        "showValue": "never",
        "tooltip": TOOLTIP,
    }
    defaults = field_defaults(mappings=mappings, custom=custom, links=links)
    return Panel("state-timeline", title, description, queries, width, height, defaults, options)


def bargauge(
    title: str,
    description: str,
    *queries: Query,
    unit: str = "short",
    steps: Json | None = None,
    width: int = 12,
    height: int = 8,
    decimals: int | None = None,
) -> Panel:
    """Horizontal bars, one per series, coloured by threshold: for top lists and rankings."""
    options = {
        "displayMode": "basic",
        "orientation": "horizontal",
        "reduceOptions": LAST_VALUE,
        "showUnfilled": True,
        "valueMode": "color",
    }
    defaults = field_defaults(unit, steps, minimum=0, decimals=decimals)
    return Panel("bargauge", title, description, queries, width, height, defaults, options)


def table(
    title: str,
    description: str,
    *queries: Query,
    columns: dict[str, str],
    hidden: Sequence[str] = (),
    overrides: Sequence[Json] = (),
    width: int = 24,
    height: int = 8,
) -> Panel:
    """Instant queries joined on their labels into one row per series.

    ``columns`` orders and names the columns: the labels, and each query's value column
    (``Value #A`` …, or ``Value`` for a single query). The ``hidden`` columns, the time,
    ``__name__`` and ``job`` are left out; overrides address columns by their new names.
    """
    excluded = dict.fromkeys(("Time", "__name__", "job", *hidden), True)
    organize = {
        "id": "organize",
        "options": {
            "excludeByName": excluded,
            "indexByName": {name: index for index, name in enumerate(columns)},
            "renameByName": columns,
        },
    }
    transformations = [organize]
    if len(queries) > 1:
        transformations.insert(0, {"id": "merge", "options": {}})
    custom = {"align": "auto", "cellOptions": {"type": "auto"}, "filterable": True}
    options = {"cellHeight": "sm", "showHeader": True}
    defaults = field_defaults(custom=custom)
    return Panel(
        "table",
        title,
        description,
        [Query(q.expr, q.legend, instant=True, table=True) for q in queries],
        width,
        height,
        defaults,
        options,
        overrides,
        transformations,
    )


def _target(query: Query, ref_id: str) -> Json:
    target: Json = {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": query.expr,
        "instant": query.instant,
        "legendFormat": query.legend or "__auto",
        "range": not query.instant,
        "refId": ref_id,
    }
    if query.table:
        target["format"] = "table"
    return target


def _render(panel: Panel, panel_id: int, x: int, y: int) -> Json:
    rendered: Json = {
        "datasource": DATASOURCE,
        "description": panel.description,
        "fieldConfig": {"defaults": panel.defaults, "overrides": list(panel.overrides)},
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "id": panel_id,
        "options": panel.options,
        "targets": [_target(q, chr(ord("A") + i)) for i, q in enumerate(panel.queries)],
        "title": panel.title,
        "type": panel.type,
    }
    if panel.transformations:
        rendered["transformations"] = list(panel.transformations)
    return rendered


def _place(panels: Sequence[Panel], top: int, ids: Iterator[int]) -> tuple[list[Json], int]:
    """Lay panels out left to right, wrapping at the grid's width; return the next free y."""
    placed: list[Json] = []
    x, y, line_height = 0, top, 0
    for panel in panels:
        if x + panel.width > GRID_WIDTH:
            x, y, line_height = 0, y + line_height, 0
        placed.append(_render(panel, next(ids), x, y))
        x += panel.width
        line_height = max(line_height, panel.height)
    return placed, y + line_height


def layout(rows: Sequence[Row]) -> list[Json]:
    """Grafana's flat panel list: each row header followed by its panels (or holding them)."""
    ids = itertools.count(1)
    panels: list[Json] = []
    y = 0
    for row in rows:
        header: Json = {
            "collapsed": row.collapsed,
            "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
            "id": next(ids),
            "panels": [],
            "title": row.title,
            "type": "row",
        }
        placed, y = _place(row.panels, y + 1, ids)
        panels.append(header)
        if row.collapsed:
            header["panels"] = placed
        else:
            panels.extend(placed)
    return panels


# --- Variables and dashboards -----------------------------------------------------------


def datasource_variable() -> Json:
    return {
        "current": {},
        "hide": 0,
        "includeAll": False,
        "label": "Data source",
        "multi": False,
        "name": "datasource",
        "options": [],
        "query": "prometheus",
        "refresh": 1,
        "regex": "",
        "type": "datasource",
    }


def label_variable(name: str, label: str, metric: str, include_all: bool = True) -> Json:
    """A multi-value variable over a label's values; ``All``, when offered, is the default."""
    query = f"label_values({series(metric)}, {name})"
    return {
        "allValue": ".*",
        "current": {},
        "datasource": DATASOURCE,
        "definition": query,
        "hide": 0,
        "includeAll": include_all,
        "label": label,
        "multi": True,
        "name": name,
        "options": [],
        "query": query,
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "type": "query",
    }


def custom_variable(name: str, label: str, values: Sequence[str], default: str) -> Json:
    """A fixed list of values to pick one from."""
    options = [{"selected": v == default, "text": v, "value": v} for v in values]
    return {
        "current": {"selected": True, "text": default, "value": default},
        "hide": 0,
        "includeAll": False,
        "label": label,
        "multi": False,
        "name": name,
        "options": options,
        "query": ",".join(values),
        "type": "custom",
    }


def dashboard(
    uid: str, title: str, description: str, rows: Sequence[Row], variables: Sequence[Json] = ()
) -> Json:
    """A whole dashboard: the ``datasource`` variable first, links to the other mail dashboards,
    and the mail alerts that fired marked on every graph."""
    alerts = {
        "datasource": DATASOURCE,
        "enable": True,
        "expr": f'ALERTS{{alertname=~"{ALERT_PREFIX}.*",alertstate="firing"}}',
        "iconColor": "red",
        "name": "Mail alerts",
        "step": "1m",
        "tagKeys": "severity,target,route,mta_instance,service",
        "textFormat": "{{severity}}",
        "titleFormat": "{{alertname}}",
    }
    builtin_annotations = {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }
    links = {
        "asDropdown": True,
        "icon": "external link",
        "includeVars": False,
        "keepTime": True,
        "tags": ["mail"],
        "targetBlank": False,
        "title": "Mail dashboards",
        "type": "dashboards",
    }
    return {
        "annotations": {"list": [builtin_annotations, alerts]},
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [links],
        "panels": layout(rows),
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["mail"],
        "templating": {"list": [datasource_variable(), *variables]},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


# --- Fleet overview ---------------------------------------------------------------------


def _fleet_summary() -> Row:
    return Row(
        "Now",
        [
            stat(
                "Probes failing",
                "Targets whose last probe failed a step (any protocol).",
                Query(count_or_zero(f"{series('mail_probe_success')} == 0")),
                steps=any_is_bad(),
            ),
            stat(
                "Certificates expiring",
                f"Certificates with less than {CONFIG.cert_expiry_warning_days} days left.",
                Query(count_or_zero(f"{cert_days_left()} < {CONFIG.cert_expiry_warning_days}")),
                steps=any_is_bad("orange"),
            ),
            stat(
                "Certificates not verified",
                "Chains that did not verify or do not name the server.",
                Query(count_or_zero(f"{series('mail_tls_cert_verified')} == 0")),
                steps=any_is_bad(),
            ),
            stat(
                "TLS older than 1.2",
                "Sessions that negotiated TLS 1.0, 1.1 or older.",
                Query(count_or_zero(series("mail_tls_version_info", 'version!~"TLS 1.[23]"'))),
                steps=any_is_bad(),
            ),
            stat(
                "STARTTLS missing",
                "Plaintext sessions whose server did not offer STARTTLS (STLS for POP3).",
                Query(count_or_zero(f"{series('mail_probe_starttls_offered')} == 0")),
                steps=any_is_bad(),
            ),
            stat(
                "Login before TLS",
                "Servers that offer a login on an unencrypted channel: passwords in clear.",
                Query(count_or_zero(f"{series('mail_probe_plaintext_auth_offered')} == 1")),
                steps=any_is_bad(),
            ),
            stat(
                "Round trips failing",
                "Routes whose last test message did not arrive in time.",
                Query(count_or_zero(f"{series('mail_roundtrip_success')} == 0")),
                steps=any_is_bad(),
            ),
            stat(
                "Deferred messages",
                "Messages in every Postfix deferred queue together; colours at "
                f"{CONFIG.queue_deferred_warning}/{CONFIG.queue_deferred_critical}.",
                Query(f"sum({series('mail_queue_messages', DEFERRED)}) or vector(0)"),
                steps=DEFERRED_QUEUE,
            ),
        ],
    )


def _fleet_probes() -> Row:
    return Row(
        "Probes",
        [
            state_timeline(
                "Up/down by server and protocol",
                "Each scheduled target's probe result over time: green when every step passed. "
                "Click a band to open the server's drill-down.",
                Query(series("mail_probe_success"), "{{target}} {{protocol}}"),
                mappings=UP_DOWN,
                links=server_link(),
            ),
            table(
                "Servers",
                "One row per target: last result, duration, certificate, TLS version and the "
                "login safety flags (STARTTLS and login before TLS only on plaintext sessions).",
                Query(series("mail_probe_success")),
                Query(series("mail_probe_duration_seconds")),
                Query(cert_days_left()),
                Query(series("mail_tls_cert_verified")),
                Query(series("mail_tls_version_info")),
                Query(series("mail_probe_starttls_offered")),
                Query(series("mail_probe_plaintext_auth_offered")),
                columns={
                    "target": "Target",
                    "protocol": "Protocol",
                    "module": "Module",
                    "instance": "Exporter",
                    "Value #A": "Status",
                    "Value #B": "Duration",
                    "Value #C": "Certificate days left",
                    "Value #D": "Certificate",
                    "version": "TLS",
                    "Value #F": "STARTTLS",
                    "Value #G": "Login",
                },
                hidden=["Value #E"],
                overrides=[
                    colored_cells("Status", mappings=UP_DOWN),
                    colored_cells("Duration", unit="s", thresholds=PROBE_SLOW),
                    colored_cells(
                        "Certificate days left", unit=DAYS, decimals=0, thresholds=CERT_DAYS
                    ),
                    colored_cells("Certificate", mappings=VERIFIED),
                    colored_cells("STARTTLS", mappings=STARTTLS),
                    colored_cells("Login", mappings=PLAINTEXT_LOGIN),
                    column("Target", links=server_link(CELL_VALUE)),
                ],
                height=10,
            ),
            timeseries(
                "Probe duration",
                "Wall time of each target's last probe, resolve to quit. Dashed lines: "
                f"{CONFIG.probe_slow_warning_seconds} s warning, "
                f"{CONFIG.probe_slow_critical_seconds} s critical.",
                Query(series("mail_probe_duration_seconds"), "{{target}} {{protocol}}"),
                unit="s",
                steps=PROBE_SLOW,
                links=server_link(),
            ),
            timeseries(
                "Probe latency percentiles by protocol",
                "Median and 95th percentile of all scheduled probes' durations per protocol, "
                "from the mail_probe_latency_seconds histogram.",
                Query(quantile(0.5, "mail_probe_latency_seconds", "protocol"), "p50 {{protocol}}"),
                Query(quantile(0.95, "mail_probe_latency_seconds", "protocol"), "p95 {{protocol}}"),
                unit="s",
                steps=PROBE_SLOW,
            ),
            bargauge(
                "Certificate days left",
                "Days until the earliest certificate in each presented chain expires, soonest "
                f"first; orange under {CONFIG.cert_expiry_warning_days}, red under "
                f"{CONFIG.cert_expiry_critical_days}. Shown even when verification fails.",
                Query(f"sort({cert_days_left()})", "{{target}} {{protocol}}", instant=True),
                unit=DAYS,
                steps=CERT_DAYS,
                decimals=0,
            ),
            bargauge(
                "Slowest targets (p95 over 1 h)",
                "95th percentile of each target's probe durations over the last hour, slowest "
                f"first, from the recording rule {PROBE_P95_RULE}.",
                Query(
                    f"sort_desc({series(PROBE_P95_RULE)})",
                    "{{target}} {{protocol}}",
                    instant=True,
                ),
                unit="s",
                steps=PROBE_SLOW,
            ),
        ],
    )


QUEUE_LEGEND = "{{instance}} {{mta_instance}} {{queue}}"


def _fleet_queues() -> Row:
    return Row(
        "Queues",
        [
            timeseries(
                "Queue sizes",
                "Messages in every queue of every MTA (Postfix maildrop, incoming, active, "
                "deferred, hold; Exim input; qmail queue and todo).",
                Query(series("mail_queue_messages"), QUEUE_LEGEND),
            ),
            stat(
                "Deferred queue",
                "Messages in each Postfix deferred queue now; colours at "
                f"{CONFIG.queue_deferred_warning}/{CONFIG.queue_deferred_critical}.",
                Query(series("mail_queue_messages", DEFERRED), "{{mta_instance}}"),
                steps=DEFERRED_QUEUE,
                text=NAMED,
                width=6,
                height=8,
            ),
            stat(
                "Active queue",
                "Messages in each Postfix active queue now; colours at "
                f"{CONFIG.queue_active_warning}/{CONFIG.queue_active_critical}.",
                Query(series("mail_queue_messages", ACTIVE), "{{mta_instance}}"),
                steps=ACTIVE_QUEUE,
                text=NAMED,
                width=6,
                height=8,
            ),
            timeseries(
                "Oldest message age",
                "Age of the oldest message in each queue, from its recorded arrival time; "
                "0 when the queue is empty.",
                Query(series("mail_queue_oldest_message_age_seconds"), QUEUE_LEGEND),
                unit="s",
                steps=OLDEST_MESSAGE,
            ),
            timeseries(
                "Deferred recipients by reason",
                "Recipients waiting in the deferred queue by the class of their last delay "
                "reason: one reason dominating points at one cause (DNS, TLS, a refusing peer).",
                Query(
                    series("mail_queue_deferred_recipients"),
                    "{{instance}} {{mta_instance}} {{reason}}",
                ),
                stack=True,
            ),
            bargauge(
                "Top deferred domains",
                "Destination domains with the most deferred recipients now: is it one "
                "destination or the whole server?",
                Query(
                    f"sort_desc(topk(10, {series('mail_queue_deferred_domain_recipients')}))",
                    "{{mta_instance}} {{domain}}",
                    instant=True,
                ),
                steps=DEFERRED_QUEUE,
            ),
            timeseries(
                "Queue size in bytes",
                "Total size of the messages in each queue.",
                Query(series("mail_queue_size_bytes"), QUEUE_LEGEND),
                unit="bytes",
                width=18,
            ),
            stat(
                "Frozen messages (Exim)",
                "Messages Exim has frozen in each spool: they wait for an admin.",
                Query(series("mail_queue_frozen_messages"), "{{mta_instance}}"),
                steps=any_is_bad("orange"),
                text=NAMED,
                width=6,
                height=8,
            ),
        ],
    )


def _fleet_roundtrip() -> Row:
    return Row(
        "Round trip",
        [
            state_timeline(
                "Round trip status",
                "Whether each route's test message arrived in its mailbox in time.",
                Query(series("mail_roundtrip_success"), "{{route}}"),
                mappings=OK_FAILED,
                height=6,
            ),
            timeseries(
                "Round trip duration",
                "Start of sending to the message seen in the mailbox, last success per route. "
                f"Dashed lines: {CONFIG.roundtrip_slow_warning_seconds} s and "
                f"{CONFIG.roundtrip_slow_critical_seconds} s.",
                Query(series("mail_roundtrip_duration_seconds"), "{{route}}"),
                unit="s",
                steps=ROUNDTRIP_SLOW,
            ),
            timeseries(
                "Delivery time percentiles",
                "Median and 95th percentile of every test message's delivery time per route.",
                Query(quantile(0.5, "mail_roundtrip_delivery_seconds", "route"), "p50 {{route}}"),
                Query(quantile(0.95, "mail_roundtrip_delivery_seconds", "route"), "p95 {{route}}"),
                unit="s",
                steps=ROUNDTRIP_SLOW,
            ),
            stat(
                "Since last success",
                "Time since each route last delivered a test message in time; red after "
                f"{CONFIG.roundtrip_stale_seconds} s.",
                Query(age("mail_roundtrip_last_success_timestamp_seconds"), "{{route}}"),
                unit="s",
                steps=thresholds("green", (CONFIG.roundtrip_stale_seconds, "red")),
                text=NAMED,
                width=12,
                height=8,
            ),
            timeseries(
                "Round trip failures",
                "Failed round trips per interval by the stage that failed (send, send_auth, "
                "receive, receive_auth, timeout, cleanup), messages that arrived after their "
                "timeout, and messages delivered to the junk mailbox.",
                Query(
                    sum_by("route, stage", increase("mail_roundtrip_failures_total")) + " > 0",
                    "{{route}} {{stage}}",
                ),
                Query(
                    sum_by("route", increase("mail_roundtrip_late_arrivals_total")) + " > 0",
                    "{{route}} arrived late",
                ),
                Query(
                    sum_by("route", increase("mail_roundtrip_junk_total")) + " > 0",
                    "{{route}} in junk",
                ),
                bars=True,
            ),
            timeseries(
                "Delay per hop",
                "Delay each server added to the last message seen in time, from its Received "
                "headers (whole seconds: fast hops show 0); hop 1 is the first server.",
                Query(series("mail_roundtrip_hop_delay_seconds"), "{{route}} hop {{hop}}"),
                unit="s",
                stack=True,
                width=24,
            ),
        ],
    )


EXCHANGE_QUEUES = {
    "external_active_remote_delivery": "external remote delivery",
    "internal_active_remote_delivery": "internal remote delivery",
    "active_mailbox_delivery": "mailbox delivery",
    "retry_mailbox_delivery": "mailbox delivery retry",
    "submission_queue_length": "submission",
    "unreachable": "unreachable",
    "poison": "poison",
}


def _exchange_queue(name: str) -> str:
    # windows_exporter runs as its own job: CONFIG.selector is the mail exporter's.
    return f"windows_exchange_transport_queues_{name}{{{EXCHANGE_TOTAL}}}"


def _all_exchange_queues() -> str:
    # One selector for all: a queue that an older windows_exporter lacks drops out of the sum.
    names = "|".join(EXCHANGE_QUEUES)
    return f'{{__name__=~"windows_exchange_transport_queues_({names})",{EXCHANGE_TOTAL}}}'


def _fleet_exchange() -> Row:
    return Row(
        "Exchange (windows_exporter)",
        [
            timeseries(
                "Exchange transport queues",
                "Exchange's transport queues from windows_exporter's exchange collector "
                "(TransportQueues), where one is scraped; empty otherwise. Dashed lines: "
                f"Checkmk's {EXCHANGE_QUEUE_WARNING}/{EXCHANGE_QUEUE_CRITICAL}.",
                *(
                    Query(_exchange_queue(name), f"{{{{instance}}}} {legend}")
                    for name, legend in EXCHANGE_QUEUES.items()
                ),
                steps=EXCHANGE_QUEUE,
                width=16,
            ),
            stat(
                "Exchange queued now",
                "All of each Exchange server's transport queues together.",
                Query(f"sum by (instance) ({_all_exchange_queues()})", "{{instance}}"),
                steps=EXCHANGE_QUEUE,
                text=NAMED,
                width=8,
                height=8,
            ),
        ],
        collapsed=True,
    )


def _fleet_exporters() -> Row:
    return Row(
        "The exporters themselves",
        [
            stat(
                "Collectors failing",
                "Collectors (queues, host, logs, …) whose last scrape failed: their figures "
                "are missing, not zero.",
                Query(count_or_zero(f"{series('mail_exporter_collector_success')} == 0")),
                steps=any_is_bad(),
                width=4,
            ),
            stat(
                "Config reload",
                "Whether each exporter's last configuration reload worked (a failed one keeps "
                "the old configuration running).",
                Query(series("mail_exporter_config_last_reload_successful"), "{{instance}}"),
                mappings=OK_FAILED,
                text=NAMED,
                width=8,
            ),
            table(
                "Versions",
                "Each exporter's version and Python, and when its configuration was loaded.",
                Query(series("mail_exporter_build_info")),
                Query(
                    f"{series('mail_exporter_config_last_reload_success_timestamp_seconds')} * 1000"
                ),
                columns={
                    "instance": "Exporter",
                    "version": "Version",
                    "python_version": "Python",
                    "Value #B": "Config loaded",
                },
                hidden=["Value #A"],
                overrides=[column("Config loaded", unit="dateTimeAsIso")],
                width=12,
                height=4,
            ),
            timeseries(
                "Collector scrape time",
                "How long each collector took at each scrape.",
                Query(
                    series("mail_exporter_collector_duration_seconds"), "{{instance}} {{collector}}"
                ),
                unit="s",
                width=24,
            ),
        ],
        collapsed=True,
    )


MATCH_MISMATCH = flag(("matches", "green"), ("mismatch", "red"))
LISTED = flag(("listed", "red"), ("not listed", "green"))


def _fleet_dns() -> Row:
    def dns_stat(title: str, description: str, query: Query, **options: Any) -> Panel:
        """A quarter-row stat with each series' name: the row's per-host/per-name facts."""
        return stat(title, description, query, text=NAMED, width=6, height=6, **options)

    return Row(
        "DNS and reputation",
        [
            table(
                "Mail domains",
                "One row per configured domain: MX hosts named (0: none or a null MX), SPF "
                "(valid, DNS lookups of RFC 7208's 10, void lookups of its 2), DMARC policy, "
                "MTA-STS mode, whether its policy is valid and covers every MX, TLS-RPT. A "
                "missing cell is a lookup that failed (see DNS check errors).",
                Query(series("mail_dns_spf_valid")),
                Query(series("mail_dns_spf_lookups")),
                Query(series("mail_dns_spf_void_lookups")),
                Query(series("mail_dns_dmarc_present")),
                Query(series("mail_dns_dmarc_policy_info")),
                Query(series("mail_dns_mta_sts_mx_covered")),
                Query(series("mail_dns_mta_sts_mode_info")),
                Query(series("mail_dns_tls_rpt_present")),
                Query(series("mail_dns_mx_records")),
                Query(series("mail_dns_mta_sts_policy_valid")),
                columns={
                    "domain": "Domain",
                    "Value #I": "MX hosts",
                    "Value #A": "SPF",
                    "Value #B": "SPF lookups",
                    "Value #C": "SPF void lookups",
                    "Value #D": "DMARC",
                    "policy": "DMARC policy",
                    "Value #F": "MTA-STS covers MX",
                    "mode": "MTA-STS mode",
                    "Value #J": "MTA-STS policy valid",
                    "Value #H": "TLS-RPT",
                },
                hidden=("instance", "Value #E", "Value #G"),
                width=24,
            ),
            state_timeline(
                "Blocklist listings",
                "Each sending IP on each IP blocklist, and each mail domain on each domain "
                "blocklist (Spamhaus DBL): listed (with its return code) or not. Gaps are "
                "lookups without a verdict (refused, timeout): never counted as listed.",
                Query(series("mail_dnsbl_listed"), "{{ip}} {{zone}}"),
                Query(series("mail_dnsbl_domain_listed"), "{{domain}} {{zone}}"),
                mappings=LISTED,
                height=8,
            ),
            timeseries(
                "Blocklist check errors",
                "Blocklist lookups without a verdict per interval: refused (127.255.255.x: the "
                "list refuses this resolver), unexpected_answer, timeout, servfail.",
                Query(sum_by("zone, reason", increase("mail_dnsbl_check_errors_total")) + " > 0",
                      "{{zone}} {{reason}}"),
                Query(sum_by("check, reason", increase("mail_dns_check_errors_total")) + " > 0",
                      "{{check}} {{reason}}"),
                bars=True,
            ),
            dns_stat(
                "Reverse DNS forward-confirmed",
                "Per sending IP: its PTR name resolves back to it.",
                Query(series("mail_dns_ptr_forward_confirmed"), "{{ip}}"),
                mappings=flag(("confirmed", "green"), ("not confirmed", "red")),
            ),
            dns_stat(
                "PTR matches HELO",
                "Per sending IP: a PTR name is the configured HELO name.",
                Query(series("mail_dns_ptr_matches_helo"), "{{ip}}"),
                mappings=flag(("matches", "green"), ("mismatch", "orange")),
            ),
            dns_stat(
                "DANE",
                "Per MX with TLSA records: a usable record (usage 2 or 3, RFC 7672) matches the "
                "chain its STARTTLS shows; with none usable, mismatch (see MailDaneUnusable).",
                Query(series("mail_dns_dane_tlsa_matches"), "{{mx}}"),
                mappings=MATCH_MISMATCH,
            ),
            dns_stat(
                "DKIM key bits",
                "Per domain and selector: the published key's size (red under 1024, absent when "
                "missing; mail_dns_dkim_key_present says which).",
                Query(series("mail_dns_dkim_key_size"), "{{selector}}._domainkey.{{domain}}"),
                steps=thresholds("red", (1024, "orange"), (2048, "green")),
            ),
            dns_stat(
                "MX hosts resolvable",
                "Per MX host of each domain: it has an A or AAAA address senders can deliver to.",
                Query(series("mail_dns_mx_resolvable"), "{{mx}} ({{domain}})"),
                mappings=flag(("resolves", "green"), ("no address", "red")),
            ),
            dns_stat(
                "DKIM key published",
                "Per domain and selector: a key is published (missing or revoked: mail signed "
                "with the selector fails DKIM).",
                Query(series("mail_dns_dkim_key_present"), "{{selector}}._domainkey.{{domain}}"),
                mappings=flag(("published", "green"), ("missing", "red")),
            ),
            dns_stat(
                "Usable TLSA records",
                "Per MX that publishes TLSA records: those an SMTP client can use (usage 2 or 3, "
                "RFC 7672). 0 is MailDaneUnusable: DANE protects nothing.",
                Query(series("mail_dns_dane_tlsa_usable_records") + " and on (instance, job, mx) "
                      + series("mail_dns_dane_tlsa_records") + " > 0", "{{mx}}"),
                steps=thresholds("red", (1, "green")),
            ),
            dns_stat(
                "DNSSEC validated",
                "Per name: the resolver validated the answer (AD bit) for the domain's MX and each "
                "_25._tcp TLSA name. DANE needs it: senders ignore unvalidated TLSA records.",
                Query(series("mail_dns_dnssec_validated"), "{{name}}"),
                mappings=flag(("validated", "green"), ("not validated", "orange")),
            ),
        ],
    )  # fmt: skip


def fleet_overview() -> Json:
    return dashboard(
        "mail-overview",
        "Mail: fleet overview",
        "Every mail server at a glance: protocols up or down, latency, TLS and certificates, "
        "queues, round trip, Exchange queues from windows_exporter, and the exporters' health.",
        [
            _fleet_summary(),
            _fleet_probes(),
            _fleet_queues(),
            _fleet_roundtrip(),
            _fleet_dns(),
            _fleet_exchange(),
            _fleet_exporters(),
        ],
    )


# --- Per-server drill-down --------------------------------------------------------------


def _server_now() -> Row:
    return Row(
        "Now",
        [
            stat(
                "Status",
                "The last probe's verdict.",
                Query(series("mail_probe_success", TARGET), "{{target}}"),
                mappings=UP_DOWN,
                text=NAMED,
            ),
            stat(
                "Since last success",
                "Time since a probe of this target last passed every step.",
                Query(age("mail_probe_last_success_timestamp_seconds", TARGET), "{{target}}"),
                unit="s",
                text=NAMED,
            ),
            stat(
                "Probe duration",
                "Wall time of the last probe.",
                Query(series("mail_probe_duration_seconds", TARGET), "{{target}}"),
                unit="s",
                steps=PROBE_SLOW,
                text=NAMED,
            ),
            stat(
                "Certificate days left",
                "Days until the earliest certificate of the presented chain expires.",
                Query(cert_days_left(TARGET), "{{target}}"),
                unit=DAYS,
                steps=CERT_DAYS,
                text=NAMED,
                decimals=0,
            ),
            stat(
                "Certificate",
                "Whether the chain verified and names the server.",
                Query(series("mail_tls_cert_verified", TARGET), "{{target}}"),
                mappings=VERIFIED,
                text=NAMED,
            ),
            stat(
                "TLS version",
                "The TLS version the last session negotiated.",
                Query(series("mail_tls_version_info", TARGET), "{{target}}: {{version}}"),
                text="name",
            ),
            stat(
                "STARTTLS",
                "On plaintext sessions: whether the server offered STARTTLS (STLS).",
                Query(series("mail_probe_starttls_offered", TARGET), "{{target}}"),
                mappings=STARTTLS,
                text=NAMED,
            ),
            stat(
                "Login before TLS",
                "On plaintext sessions: whether the server offered a login before TLS.",
                Query(series("mail_probe_plaintext_auth_offered", TARGET), "{{target}}"),
                mappings=PLAINTEXT_LOGIN,
                text=NAMED,
            ),
        ],
    )


def _server_timing() -> Row:
    return Row(
        "Timing",
        [
            timeseries(
                "Phase breakdown",
                "Where the last probe spent its time, stacked: resolve, connect, TLS handshake, "
                "banner, capabilities, STARTTLS, login and quit.",
                Query(series("mail_probe_phase_duration_seconds", TARGET), "{{target}} {{phase}}"),
                unit="s",
                stack=True,
            ),
            timeseries(
                "Duration and latency percentiles",
                "The last probe's duration and the 95th and 99th percentile of recent probes.",
                Query(series("mail_probe_duration_seconds", TARGET), "last {{target}}"),
                Query(
                    quantile(0.95, "mail_probe_latency_seconds", "target", TARGET),
                    "p95 {{target}}",
                ),
                Query(
                    quantile(0.99, "mail_probe_latency_seconds", "target", TARGET),
                    "p99 {{target}}",
                ),
                unit="s",
                steps=PROBE_SLOW,
            ),
        ],
    )


def _server_failures() -> Row:
    return Row(
        "Failures",
        [
            state_timeline(
                "Status history",
                "The probe's verdict over time.",
                Query(series("mail_probe_success", TARGET), "{{target}}"),
                mappings=UP_DOWN,
                height=5,
            ),
            timeseries(
                "Failures by reason",
                "Failed probes per interval by reason: resolve, connect, timeout, tls, banner, "
                "protocol, starttls_unavailable, auth, rejected.",
                Query(
                    sum_by(
                        "target, reason",
                        increase("mail_probe_failures_total", TARGET),
                    )
                    + " > 0",
                    "{{target}} {{reason}}",
                ),
                bars=True,
            ),
            table(
                "Last failure",
                "While the last probe fails: the phase it stopped in and why.",
                Query(f"{series('mail_probe_failure_info', TARGET)} == 1"),
                columns={
                    "target": "Target",
                    "protocol": "Protocol",
                    "phase": "Phase",
                    "reason": "Reason",
                },
                hidden=["Value"],
                width=12,
            ),
        ],
    )


def _server_tls() -> Row:
    return Row(
        "TLS",
        [
            table(
                "TLS facts",
                "The last session's TLS: version, cipher suite, verification and the "
                "certificate's validity window.",
                Query(series("mail_tls_version_info", TARGET)),
                Query(series("mail_tls_cipher_info", TARGET)),
                Query(series("mail_tls_cert_verified", TARGET)),
                Query(f"{series('mail_tls_cert_not_before_timestamp_seconds', TARGET)} * 1000"),
                Query(f"{series('mail_tls_cert_expiry_timestamp_seconds', TARGET)} * 1000"),
                Query(cert_days_left(TARGET)),
                columns={
                    "target": "Target",
                    "protocol": "Protocol",
                    "version": "TLS",
                    "cipher": "Cipher",
                    "Value #C": "Certificate",
                    "Value #D": "Valid from",
                    "Value #E": "Expires",
                    "Value #F": "Days left",
                },
                hidden=["Value #A", "Value #B"],
                overrides=[
                    colored_cells("Certificate", mappings=VERIFIED),
                    column("Valid from", unit="dateTimeAsIso"),
                    column("Expires", unit="dateTimeAsIso"),
                    colored_cells("Days left", unit=DAYS, decimals=0, thresholds=CERT_DAYS),
                ],
                height=6,
            ),
        ],
    )


def server_drilldown() -> Json:
    return dashboard(
        "mail-server",
        "Mail: server drill-down",
        "One server's probes in detail: where the time goes, why probes fail, and its TLS.",
        [_server_now(), _server_timing(), _server_failures(), _server_tls()],
        # One server at first (the first target), more when picked.
        [label_variable("target", "Target", "mail_probe_success", include_all=False)],
    )


# --- Delivery and logs ------------------------------------------------------------------


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


# --- Host resources ---------------------------------------------------------------------

HOST = INSTANCE
FILESYSTEM_LEGEND = "{{instance}} {{mountpoint}}"
LOW_SPACE = thresholds("red", (CONFIG.disk_free_warning_ratio, "green"))
LOW_INODES = thresholds("red", (CONFIG.inodes_free_warning_ratio, "green"))


def ratio(part: str, whole: str) -> str:
    """``part / whole`` of two host gauges with the same labels."""
    return f"{series(part, HOST)} / {series(whole, HOST)}"


def _host_services() -> Row:
    return Row(
        "Services",
        [
            stat(
                "Services",
                "Each configured mail service: up while at least one of its processes runs.",
                Query(series("mail_host_service_up", HOST), "{{service}}"),
                mappings=UP_DOWN,
                text=NAMED,
                width=18,
            ),
            stat(
                "Host uptime",
                "Time since the host booted.",
                Query(age("mail_host_boot_time_seconds", HOST), "{{instance}}"),
                unit="s",
                text=NAMED,
                width=6,
            ),
            timeseries(
                "Processes by service",
                "Processes of each mail service.",
                Query(series("mail_host_service_processes", HOST), "{{instance}} {{service}}"),
            ),
            timeseries(
                "Service uptime",
                "Time since each service's oldest process started: a drop is a restart.",
                Query(
                    age("mail_host_service_start_time_seconds", HOST), "{{instance}} {{service}}"
                ),
                unit="s",
            ),
            timeseries(
                "Memory by service",
                "Resident memory of each service's processes.",
                Query(
                    series("mail_host_service_resident_memory_bytes", HOST),
                    "{{instance}} {{service}}",
                ),
                unit="bytes",
                width=8,
            ),
            timeseries(
                "CPU by service",
                "CPU seconds per second each service's processes use (1 = one CPU busy).",
                Query(
                    rate("mail_host_service_cpu_seconds_total", HOST), "{{instance}} {{service}}"
                ),
                width=8,
            ),
            timeseries(
                "Open files by service",
                "Open files, sockets and pipes of each service's processes.",
                Query(series("mail_host_service_open_fds", HOST), "{{instance}} {{service}}"),
                width=8,
            ),
        ],
    )


def _host_cpu_memory() -> Row:
    busy = sum_by("instance, mode", rate("mail_host_cpu_seconds_total", HOST, 'mode!="idle"'))
    cpus = sum_by("instance", series("mail_host_cpus", HOST))
    total = series("mail_host_memory_total_bytes", HOST)
    swap_total = series("mail_host_swap_total_bytes", HOST)
    return Row(
        "CPU, memory and load",
        [
            timeseries(
                "CPU usage by mode",
                "Share of all CPUs busy, by mode (idle left out), stacked: 100% is every CPU.",
                Query(f"{busy} / on (instance) group_left () {cpus}", "{{instance}} {{mode}}"),
                unit="percentunit",
                stack=True,
                width=8,
            ),
            timeseries(
                "Load per CPU",
                "Load averages divided by the number of CPUs: above 1, work waits for a CPU.",
                *(
                    Query(ratio(f"mail_host_load{minutes}", "mail_host_cpus"), legend)
                    for minutes, legend in (
                        (1, "{{instance}} 1 min"),
                        (5, "{{instance}} 5 min"),
                        (15, "{{instance}} 15 min"),
                    )
                ),
                width=8,
            ),
            timeseries(
                "Memory and swap",
                "Memory in use (total minus available), page cache and buffers, and swap in "
                "use, against the totals.",
                Query(
                    f"{total} - {series('mail_host_memory_available_bytes', HOST)}",
                    "{{instance}} used",
                ),
                Query(
                    f"{series('mail_host_memory_cached_bytes', HOST)} + "
                    f"{series('mail_host_memory_buffers_bytes', HOST)}",
                    "{{instance}} cache and buffers",
                ),
                Query(total, "{{instance}} total"),
                Query(
                    f"{swap_total} - {series('mail_host_swap_free_bytes', HOST)}",
                    "{{instance}} swap used",
                ),
                unit="bytes",
                width=8,
            ),
        ],
    )


def _host_paths() -> Row:
    avail = series("mail_host_path_avail_bytes", HOST)
    horizon = CONFIG.disk_fill_horizon_hours
    return Row(
        "Mail paths",
        [
            bargauge(
                "Free space on mail paths",
                "Share of the filesystem behind each mail path (queue, store, logs) still free; "
                f"red under {CONFIG.disk_free_warning_ratio:.0%}.",
                Query(
                    ratio("mail_host_path_avail_bytes", "mail_host_path_size_bytes"),
                    "{{instance}} {{path}}",
                    instant=True,
                ),
                unit="percentunit",
                steps=LOW_SPACE,
                width=8,
            ),
            bargauge(
                "Free inodes on mail paths",
                "Share of the inodes still free behind each mail path: a Maildir takes one per "
                f"message. Red under {CONFIG.inodes_free_warning_ratio:.0%}.",
                Query(
                    ratio("mail_host_path_files_free", "mail_host_path_files"),
                    "{{instance}} {{path}}",
                    instant=True,
                ),
                unit="percentunit",
                steps=LOW_INODES,
                width=8,
            ),
            bargauge(
                f"Free in {horizon} h at this rate",
                f"Free space behind each mail path in {horizon} hours if the last 6 hours' "
                "trend goes on (predict_linear, as the disk-filling alert): red when it runs "
                "out.",
                Query(
                    f"predict_linear({avail}[6h], {horizon * HOUR_SECONDS})",
                    "{{instance}} {{path}}",
                    instant=True,
                ),
                unit="bytes",
                steps=thresholds("red", (0, "green")),
                width=8,
            ),
            timeseries(
                "Free bytes on mail paths",
                "Bytes free on the filesystem behind each mail path.",
                Query(avail, "{{instance}} {{path}}"),
                unit="bytes",
                width=24,
            ),
        ],
    )


def _host_filesystems() -> Row:
    return Row(
        "Filesystems",
        [
            bargauge(
                "Free space",
                "Share of each filesystem still free to unprivileged users; red under "
                f"{CONFIG.disk_free_warning_ratio:.0%}.",
                Query(
                    ratio("mail_host_filesystem_avail_bytes", "mail_host_filesystem_size_bytes"),
                    FILESYSTEM_LEGEND,
                    instant=True,
                ),
                unit="percentunit",
                steps=LOW_SPACE,
                width=10,
            ),
            bargauge(
                "Free inodes",
                "Share of each filesystem's inodes still free; red under "
                f"{CONFIG.inodes_free_warning_ratio:.0%}.",
                Query(
                    ratio("mail_host_filesystem_files_free", "mail_host_filesystem_files"),
                    FILESYSTEM_LEGEND,
                    instant=True,
                ),
                unit="percentunit",
                steps=LOW_INODES,
                width=10,
            ),
            stat(
                "Read-only",
                "Filesystems mounted read-only: mail cannot be written there (often after "
                "errors).",
                Query(count_or_zero(f"{series('mail_host_filesystem_readonly', HOST)} == 1")),
                steps=any_is_bad(),
                width=4,
                height=8,
            ),
        ],
    )


NETWORK_PROBLEMS = ("receive_errors", "transmit_errors", "receive_drops", "transmit_drops")


def _host_io() -> Row:
    device = "{{instance}} {{device}}"
    return Row(
        "Disks and network",
        [
            timeseries(
                "Disk busy",
                "Share of time each disk was busy with I/O: near 100% it is the bottleneck.",
                Query(rate("mail_host_disk_io_time_seconds_total", HOST), device),
                unit="percentunit",
                width=8,
            ),
            timeseries(
                "Disk throughput",
                "Bytes read and written per second by disk.",
                Query(rate("mail_host_disk_read_bytes_total", HOST), f"{device} read"),
                Query(rate("mail_host_disk_written_bytes_total", HOST), f"{device} written"),
                unit="Bps",
                width=8,
            ),
            timeseries(
                "Network traffic",
                "Bytes received and sent per second by interface (loopback left out).",
                Query(rate("mail_host_network_receive_bytes_total", HOST), f"{device} in"),
                Query(rate("mail_host_network_transmit_bytes_total", HOST), f"{device} out"),
                unit="Bps",
                width=8,
            ),
            timeseries(
                "Network errors and drops",
                "Packets per second that failed or were dropped, by interface and direction: "
                "anything above 0 for long is a link or driver problem.",
                *(
                    Query(
                        rate(f"mail_host_network_{kind}_total", HOST) + " > 0",
                        f"{device} {kind.replace('_', ' ')}",
                    )
                    for kind in NETWORK_PROBLEMS
                ),
                unit="pps",
            ),
            timeseries(
                "Swap traffic",
                "Bytes swapped in and out per second: steady swapping slows everything down.",
                Query(rate("mail_host_swap_in_bytes_total", HOST), "{{instance}} in"),
                Query(rate("mail_host_swap_out_bytes_total", HOST), "{{instance}} out"),
                unit="Bps",
            ),
        ],
    )


def _host_hardware() -> Row:
    sensor = "{{instance}} {{chip}} {{sensor}}"
    headroom = (
        f"{series('mail_host_temperature_high_celsius', HOST)} - "
        f"{series('mail_host_temperature_celsius', HOST)}"
    )
    return Row(
        "Temperatures and S.M.A.R.T.",
        [
            timeseries(
                "Temperatures",
                "Sensor temperatures from the kernel's hwmon, and each disk's own.",
                Query(series("mail_host_temperature_celsius", HOST), sensor),
                Query(
                    series("mail_host_smart_temperature_celsius", HOST),
                    "{{instance}} disk {{device}}",
                ),
                unit="celsius",
            ),
            bargauge(
                "Headroom to the high threshold",
                "Degrees left before each sensor reaches its own high threshold; red under "
                f"{CONFIG.temperature_margin_celsius} °C.",
                Query(f"sort({headroom})", sensor, instant=True),
                unit="celsius",
                steps=thresholds("red", (CONFIG.temperature_margin_celsius, "green")),
                width=8,
            ),
            stat(
                "Disks failing",
                "Disks whose S.M.A.R.T. health self-assessment failed.",
                Query(count_or_zero(f"{series('mail_host_smart_healthy', HOST)} == 0")),
                steps=any_is_bad(),
                width=4,
                height=8,
            ),
            timeseries(
                "Fans",
                "Fan speeds: a fan at 0 while the others turn has stopped.",
                Query(series("mail_host_fan_rpm", HOST), sensor),
                unit="rotrpm",
                width=8,
            ),
            table(
                "Disks (S.M.A.R.T.)",
                "Each disk's health self-assessment and the counters that predict failure: "
                "reallocated, pending and uncorrectable sectors, NVMe wear.",
                Query(series("mail_host_smart_device_info", HOST)),
                Query(series("mail_host_smart_healthy", HOST)),
                Query(series("mail_host_smart_reallocated_sectors", HOST)),
                Query(series("mail_host_smart_pending_sectors", HOST)),
                Query(series("mail_host_smart_offline_uncorrectable_sectors", HOST)),
                Query(series("mail_host_smart_nvme_used_ratio", HOST)),
                Query(series("mail_host_smart_power_on_seconds", HOST)),
                columns={
                    "instance": "Host",
                    "device": "Device",
                    "model": "Model",
                    "serial": "Serial",
                    "Value #B": "Health",
                    "Value #C": "Reallocated",
                    "Value #D": "Pending",
                    "Value #E": "Uncorrectable",
                    "Value #F": "NVMe used",
                    "Value #G": "Powered on",
                },
                hidden=["Value #A", "protocol"],
                overrides=[
                    colored_cells("Health", mappings=flag(("passed", "green"), ("FAILING", "red"))),
                    *(
                        colored_cells(name, thresholds=any_is_bad())
                        for name in ("Reallocated", "Pending", "Uncorrectable")
                    ),
                    colored_cells("NVMe used", unit="percentunit", thresholds=NVME_WEAR),
                    column("Powered on", unit="s"),
                ],
                width=16,
            ),
        ],
    )


def _host_backups() -> Row:
    max_age = CONFIG.backup_max_age_hours * HOUR_SECONDS
    backup = "{{instance}} {{backup}}"
    return Row(
        "Backups",
        [
            bargauge(
                "Backup age",
                "Age of the newest file of each configured backup; red after "
                f"{CONFIG.backup_max_age_hours} h.",
                Query(
                    age("mail_host_backup_last_modified_timestamp_seconds", HOST),
                    backup,
                    instant=True,
                ),
                unit="s",
                steps=thresholds("green", (max_age, "red")),
                width=8,
            ),
            timeseries(
                "Backup size",
                "Size of the newest file of each backup: a sudden drop is worth a look.",
                Query(series("mail_host_backup_size_bytes", HOST), backup),
                unit="bytes",
                width=8,
            ),
            timeseries(
                "Backup files",
                "Files matching each backup's path or glob: 0 means none was found at all.",
                Query(series("mail_host_backup_files", HOST), backup),
                width=8,
            ),
        ],
    )


def host_resources() -> Json:
    return dashboard(
        "mail-host",
        "Mail: host resources",
        "The mail host itself: mail services, CPU, memory, the disks behind the mail paths, "
        "filesystems, I/O, temperatures, S.M.A.R.T. and backups.",
        [
            _host_services(),
            _host_paths(),
            _host_cpu_memory(),
            _host_filesystems(),
            _host_io(),
            _host_hardware(),
            _host_backups(),
        ],
        [label_variable("instance", "Host", "mail_host_boot_time_seconds")],
    )


# --- Migration before/after -------------------------------------------------------------

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
        "Each graph now and $shift earlier, overlaid: did the migration make mail slower, "
        "less reliable or noisier?",
        [_migration_probes(), _migration_mail_flow()],
        [
            custom_variable("shift", "Compare with", ["1d", "7d", "30d"], "7d"),
            label_variable("target", "Target", "mail_probe_success"),
        ],
    )


# --- Output -----------------------------------------------------------------------------

BUILDERS: tuple[Callable[[], Json], ...] = (
    fleet_overview,
    server_drilldown,
    delivery_and_logs,
    host_resources,
    migration_comparison,
)


def dashboards() -> dict[str, Json]:
    """Every dashboard by file name (``<uid>.json``)."""
    built = (build() for build in BUILDERS)
    return {f"{board['uid']}.json": board for board in built}


def render(board: Json) -> str:
    """The file text: sorted keys, two-space indent, a trailing newline."""
    return json.dumps(board, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_all(directory: Path) -> list[Path]:
    """Write every dashboard into ``directory``; return the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, board in dashboards().items():
        path = directory / name
        path.write_text(render(board), encoding="utf-8")
        written.append(path)
    return written
