"""Grafana's dashboard model built as plain dicts: field settings, panels, rows and their
layout, template variables, and the dashboard around them.

A dashboard module lists :class:`Row` objects of :class:`Panel` objects made by the panel
functions here (:func:`timeseries`, :func:`stat`, :func:`state_timeline`, :func:`bargauge`,
:func:`table`); :func:`dashboard` lays them out on Grafana's 24-column grid, numbers them and
adds what every mail dashboard has: the ``datasource`` variable, links to the other mail
dashboards and the mail alerts that fired. :func:`render` gives the file text.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from mixin.promql import ALERT_PREFIX, series

Json = dict[str, Any]

DATASOURCE: Json = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24


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


def states(*values: tuple[int, str, str]) -> list[Json]:
    """Value mappings that name and colour each value: ``(value, text, colour)``."""
    options = {
        str(value): {"index": index, "text": text, "color": color}
        for index, (value, text, color) in enumerate(values)
    }
    return [{"type": "value", "options": options}]


def flag(one: tuple[str, str], zero: tuple[str, str]) -> list[Json]:
    """Value mappings that name and colour a 1/0 gauge: ``(text, colour)`` each."""
    return states((1, *one), (0, *zero))


DAYS = "suffix: days"
NAMED = "value_and_name"


def column(name: str, **properties: Any) -> Json:
    """A field override for one table column or series, by its name."""
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": key, "value": value} for key, value in sorted(properties.items())],
    }


def colored_cells(name: str, **properties: Any) -> Json:
    """A table column whose cells take the colour of their value's threshold or mapping."""
    return column(name, **{"custom.cellOptions": {"type": "color-background"}}, **properties)


def label_legend(labels: str) -> str:
    """The legend that names a series by its ``labels`` (comma-separated): ``{{a}} {{b}}``."""
    return " ".join(f"{{{{{label}}}}}" for label in labels.split(", "))


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
    links: Sequence[Json] = (),
) -> Panel:
    """Big coloured numbers, one per series: the value now.

    ``text`` is Grafana's text mode: ``value``, ``value_and_name`` (the legend above each
    value, for several series) or ``name`` (the legend alone, for info metrics); ``links``
    are data links on each value.
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
    defaults = field_defaults(unit, steps, mappings, links=links, decimals=decimals)
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
    return _label_values(name, label, metric, name, include_all, multi=True, current={})


def label_choice(name: str, label: str, metric: str, of: str, default: str) -> Json:
    """One value of the label ``of`` to pick, ``default`` until picked: two of them compare
    two values of one label side by side."""
    current = {"selected": True, "text": default, "value": default}
    return _label_values(name, label, metric, of, include_all=False, multi=False, current=current)


def _label_values(
    name: str, label: str, metric: str, of: str, include_all: bool, multi: bool, current: Json
) -> Json:
    query = f"label_values({series(metric)}, {of})"
    return {
        "allValue": ".*",
        "current": current,
        "datasource": DATASOURCE,
        "definition": query,
        "hide": 0,
        "includeAll": include_all,
        "label": label,
        "multi": multi,
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


def render(board: Json) -> str:
    """The file text: sorted keys, two-space indent, a trailing newline."""
    return json.dumps(board, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
