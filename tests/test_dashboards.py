"""The Grafana dashboards: current with their code, and every query valid against what is exported.

Grafana itself does not run here, so the dashboards are checked the way it would use them:

- the committed ``grafana/dashboards/*.json`` are exactly what ``mixin.dashboards`` writes;
- every series a query uses (mail_exporter's and the paired exporters', not Prometheus'
  own ``up`` and ``ALERTS``) is documented in docs/metrics.md, and every label it
  filters on, groups by or shows in a legend is one that series has there (labels are
  followed through the query: ``sum by (route)`` leaves only ``route`` for the legend);
  ``mail:*`` series must be recorded by the shipped rules, and get their labels the same way;
- every query parses: the template variables get sample values and ``promtool check rules``
  reads them all as ``record:`` rules;
- every panel uses the ``datasource`` variable and says what it shows.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import promql_parser as promql
import pytest
import yaml
from prometheus_client.core import Metric

from mail_exporter.collectors.dns.checks import Results
from mail_exporter.collectors.dns.families import error_families, result_families
from mail_exporter.exporter import Exporter
from mail_exporter.roundtrip.families import roundtrip_families
from mail_exporter.roundtrip.outcome import RouteStats
from mail_exporter.scheduler import scheduled_families
from mixin import dashboards, rules
from mixin.config import CONFIG
from mixin.promql import ALERT_PREFIX
from tests.promtool import run_rule_tests
from tests.realservers.pki import PKI
from tests.test_dns_checks import results, rig  # noqa: F401  fixtures: a real DNS pass
from tests.test_smart import FIXTURES as SMART_FIXTURES

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "grafana" / "dashboards"
PROVISIONING = ROOT / "grafana" / "provisioning"
METRICS_DOC = ROOT / "docs" / "metrics.md"
RULES = ROOT / "alerting" / rules.RULES_FILE
LOG_FIXTURES = ROOT / "tests" / "fixtures" / "logs"
DOVECOT_FIXTURES = ROOT / "tests" / "fixtures" / "dovecot"

# Labels Prometheus attaches to every scraped series, and those CONFIG.selector filters on.
TARGET_LABELS = frozenset({"instance", "job"}) | frozenset(
    re.findall(r"(\w+)\s*[=!]~?", CONFIG.selector)
)
# Sample values for Grafana's own variables; the dashboards' variables get theirs from
# their definitions.
GRAFANA_VARIABLES = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}

Labels = frozenset[str] | None
"""The labels a query's result has; None where unknown (Prometheus' own series)."""


# --- docs/metrics.md --------------------------------------------------------------------


@dataclass
class Section:
    prose: list[str]
    tables: list[list[list[str]]]


def _sections(markdown: str) -> list[Section]:
    """``##`` headings split the text (a ``###`` part stays in its section); table lines
    become rows of cells, the rest prose; code blocks are left out."""
    sections = [Section([], [])]
    in_code = in_table = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif in_code:
            continue
        elif line.startswith("## "):
            sections.append(Section([], []))
        elif line.startswith("|"):
            if not in_table:
                sections[-1].tables.append([])
            sections[-1].tables[-1].append([cell.strip() for cell in line.strip("|").split("|")])
        else:
            sections[-1].prose.append(line)
        in_table = line.startswith("|") and not in_code
    return sections


BACKTICKED = re.compile(r"`([^`]+)`")
SHARED_LABELS = re.compile(r"\blabels?\s+((?:`\w+`(?:\s*,\s*|\s+and\s+)?)+)")
EXCLUDED_LABELS = re.compile(r"\(no\s+([^)]*)\)")


def _without_parentheses(text: str) -> str:
    while (shorter := re.sub(r"\([^()]*\)", "", text)) != text:
        text = shorter
    return text


def _shared_labels(prose: list[str]) -> frozenset[str]:
    """Labels a section's text gives all its metrics: "carry the labels `a`, `b` and `c`"."""
    text = _without_parentheses(" ".join(prose))
    return frozenset(
        label for found in SHARED_LABELS.findall(text) for label in BACKTICKED.findall(found)
    )


def _metric_names(cell: str) -> list[str]:
    """Names in a metric cell, where "`mail_a_b_c` / `_d_c`" abbreviates ``mail_a_d_c``.

    An abbreviation replaces the first name's tail from the last word they share
    (``_files`` / ``_files_free``), else as many words as it has (``_load1`` / ``_load5``).
    """
    names = BACKTICKED.findall(cell)
    full = [name for name in names if not name.startswith("_")]
    return full + [_expand(full[0], name) for name in names if name.startswith("_")]


def _expand(name: str, abbreviation: str) -> str:
    words, tail = name.split("_"), abbreviation[1:].split("_")
    shared = [i for i, word in enumerate(words) if word == tail[0]]
    keep = shared[-1] if shared else len(words) - len(tail)
    return "_".join(words[:keep] + tail)


def _cell_labels(cell: str) -> tuple[frozenset[str], frozenset[str]]:
    """(labels a cell adds, shared labels it takes away with "(no `x`)")."""
    excluded = frozenset(
        label for found in EXCLUDED_LABELS.findall(cell) for label in BACKTICKED.findall(found)
    )
    return frozenset(BACKTICKED.findall(_without_parentheses(cell))), excluded


def documented_metrics(markdown: str) -> dict[str, tuple[str, frozenset[str]]]:
    """Each documented metric's (type, labels) from the tables of docs/metrics.md.

    A table whose column says "extra labels" adds them to the labels the section's text
    gives every metric of the section; a section whose text names none shares those the
    section just before it names (the TLS facts of the probes). A "labels" column is the
    whole set.
    """
    metrics: dict[str, tuple[str, frozenset[str]]] = {}
    before: frozenset[str] = frozenset()
    for section in _sections(markdown):
        named = _shared_labels(section.prose)
        shared = named or before
        for table in section.tables:
            header = [cell.lower() for cell in table[0]]
            if "metric" not in header:
                continue
            name_at, type_at = header.index("metric"), header.index("type")
            labels_at = next(i for i, cell in enumerate(header) if cell.endswith("labels"))
            base = shared if header[labels_at].startswith("extra") else frozenset()
            for row in table[2:]:
                own, excluded = _cell_labels(row[labels_at])
                for name in _metric_names(row[name_at]):
                    metrics[name] = (row[type_at].strip("` "), (base - excluded) | own)
        before = named
    return metrics


def exported_series(metrics: Mapping[str, tuple[str, frozenset[str]]]) -> dict[str, frozenset[str]]:
    """Series names as Prometheus stores them (``_bucket`` with ``le``, ``_sum``, ``_count``)."""
    series: dict[str, frozenset[str]] = {}
    for name, (kind, labels) in metrics.items():
        if kind == "histogram":
            series[f"{name}_bucket"] = labels | {"le"}
        elif kind == "summary":
            series[name] = labels | {"quantile"}
        else:
            series[name] = labels
        if kind in ("histogram", "summary"):
            series[f"{name}_sum"] = series[f"{name}_count"] = labels
    return {name: labels | TARGET_LABELS for name, labels in series.items()}


# --- Following labels through PromQL ----------------------------------------------------

COMPARISONS = {"==", "!=", ">", "<", ">=", "<="}
# Series Prometheus writes itself, which docs/metrics.md does not list.
PROMETHEUS_OWN = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})
KEEPS_LABELS = {"topk", "bottomk", "limitk", "limit_ratio"}


class LabelCheck:
    """Works out the labels of a query's result, noting each label used that is not there."""

    def __init__(self, series: Mapping[str, Labels]) -> None:
        self.series = series
        self.errors: list[str] = []

    def labels(self, node: Any) -> Labels:
        handlers = {
            promql.VectorSelector: self._selector,
            promql.MatrixSelector: lambda n: self._selector(n.vector_selector),
            promql.SubqueryExpr: lambda n: self.labels(n.expr),
            promql.ParenExpr: lambda n: self.labels(n.expr),
            promql.UnaryExpr: lambda n: self.labels(n.expr),
            promql.AggregateExpr: self._aggregate,
            promql.Call: self._call,
            promql.BinaryExpr: self._binary,
        }
        handler = handlers.get(type(node))
        return handler(node) if handler else frozenset()

    def _need(self, labels: Labels, wanted: list[str], where: str) -> None:
        missing = sorted(set(wanted) - labels) if labels is not None else []
        if missing:
            self.errors.append(f"{where} uses {missing}, not among {sorted(labels or ())}")

    def _selector(self, node: Any) -> Labels:
        name = node.name or next(
            (m.value for m in node.matchers.matchers if m.name == "__name__"), None
        )
        # Every other series, the paired exporters' too, must be documented or recorded.
        if not name or name in PROMETHEUS_OWN:
            return None
        if name not in self.series:
            self.errors.append(f"{name} is neither documented nor recorded")
            return None
        labels = self.series[name]
        used = [m.name for m in node.matchers.matchers if m.name != "__name__"]
        self._need(labels, used, f"selector of {name}")
        return labels

    def _aggregate(self, node: Any) -> Labels:
        inner = self.labels(node.expr)
        modifier = node.modifier
        grouping = list(modifier.labels) if modifier else []
        if modifier and modifier.type == promql.AggModifierType.By:
            self._need(inner, grouping, f"{node.op} by")
        if str(node.op) in KEEPS_LABELS or inner is None:
            return inner
        if modifier is None:
            result: frozenset[str] = frozenset()
        elif modifier.type == promql.AggModifierType.By:
            result = frozenset(grouping)
        else:
            result = inner - set(grouping)
        if str(node.op) == "count_values":
            result |= {node.param.val}
        return result

    def _call(self, node: Any) -> Labels:
        args = [self.labels(arg) for arg in node.args]
        name = node.func.name
        if name == "histogram_quantile":
            self._need(args[1], ["le"], "histogram_quantile")
            return None if args[1] is None else args[1] - {"le"}
        if name in ("label_replace", "label_join"):
            return None if args[0] is None else args[0] | {node.args[1].val}
        vectors = [
            labels
            for arg, labels in zip(node.args, args, strict=True)
            if not _is_scalar(arg) and not isinstance(arg, promql.StringLiteral)
        ]
        return vectors[0] if vectors else frozenset()

    def _binary(self, node: Any) -> Labels:
        lhs, rhs = self.labels(node.lhs), self.labels(node.rhs)
        op = str(node.op)
        if op in ("and", "unless"):
            return lhs
        if op == "or":
            return None if lhs is None or rhs is None else lhs | rhs
        if _is_scalar(node.lhs) or _is_scalar(node.rhs):
            return rhs if _is_scalar(node.lhs) else lhs
        modifier = node.modifier
        matching = modifier.matching if modifier else None
        if matching is not None:
            self._need(lhs, list(matching.labels), f"left side of {op} on/ignoring")
            self._need(rhs, list(matching.labels), f"right side of {op} on/ignoring")
        return self._binary_result(node, lhs, rhs)

    def _binary_result(self, node: Any, lhs: Labels, rhs: Labels) -> Labels:
        modifier = node.modifier
        matching = modifier.matching if modifier else None
        extra = list(modifier.group_labels or []) if modifier else []
        cardinality = modifier.card if modifier else None
        if cardinality == promql.VectorMatchCardinality.ManyToOne:
            self._need(rhs, extra, "group_left")
            return None if lhs is None else lhs | set(extra)
        if cardinality == promql.VectorMatchCardinality.OneToMany:
            self._need(lhs, extra, "group_right")
            return None if rhs is None else rhs | set(extra)
        filters = str(node.op) in COMPARISONS and not (modifier and modifier.return_bool)
        if matching is None or filters or lhs is None:
            return lhs
        if matching.type == promql.LabelModifierType.Include:
            return frozenset(matching.labels)
        return lhs - set(matching.labels)


def _is_scalar(node: Any) -> bool:
    if isinstance(node, promql.NumberLiteral):
        return True
    if isinstance(node, promql.ParenExpr | promql.UnaryExpr):
        return _is_scalar(node.expr)
    if isinstance(node, promql.Call):
        return bool(node.func.return_type == promql.ValueType.Scalar)
    if isinstance(node, promql.BinaryExpr):
        return _is_scalar(node.lhs) and _is_scalar(node.rhs)
    return False


LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def label_errors(expr: str, legend: str, series: Mapping[str, Labels]) -> list[str]:
    """Every undocumented series or label that ``expr`` and its legend template use."""
    check = LabelCheck(series)
    result = check.labels(promql.parse(expr))
    check._need(result, LEGEND_LABEL.findall(legend), f"legend {legend!r}")
    return check.errors


# --- The dashboards ---------------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    where: str
    expr: str
    legend: str = ""


def _panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _data_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return (panel for panel in _panels(board) if panel["type"] != "row")


def _sample_values(board: dict[str, Any]) -> dict[str, str]:
    values = dict(GRAFANA_VARIABLES)
    for variable in board["templating"]["list"]:
        options = variable.get("options") or [{"value": "sample"}]
        values[variable["name"]] = options[0]["value"]
    return values


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Grafana's ``$name`` and ``${name}`` replaced; an undefined variable fails the test."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"undefined variable ${name} in {expr}"
        return values[name]

    return re.sub(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))", value, expr)


LABEL_VALUES = re.compile(r"label_values\((.*),\s*(\w+)\)")


def expressions(board: dict[str, Any]) -> list[Expression]:
    """Every query of a dashboard's panels, variables and annotations, variables filled in."""
    values = _sample_values(board)
    found = [
        Expression(
            f"{board['uid']}: {panel['title']} {target['refId']}",
            substitute(target["expr"], values),
            target.get("legendFormat", ""),
        )
        for panel in _data_panels(board)
        for target in panel["targets"]
    ]
    found += [
        Expression(
            f"{board['uid']}: annotation {annotation['name']}",
            substitute(annotation["expr"], values),
        )
        for annotation in board["annotations"]["list"]
        if "expr" in annotation
    ]
    for variable in board["templating"]["list"]:
        match = LABEL_VALUES.fullmatch(variable["query"]) if variable["type"] == "query" else None
        if match:
            selector, label = match.groups()
            where = f"{board['uid']}: variable {variable['name']}"
            found.append(Expression(where, f"count by ({label}) ({selector})"))
    return found


@cache
def generated() -> dict[str, dict[str, Any]]:
    return dashboards.dashboards()


@cache
def known_series() -> dict[str, Labels]:
    """Documented series, and the series the shipped recording rules make from them.

    A rule over undocumented series gets unknown labels: the series themselves are reported.
    A rule that records a documented name (Exchange's queues as ``mail_queue_messages``)
    leaves it as documented; test_paired.py checks that it gives exactly those labels.
    """
    series: dict[str, Labels] = dict(
        exported_series(documented_metrics(METRICS_DOC.read_text(encoding="utf-8")))
    )
    for group in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]:
        for rule in group["rules"]:
            if "record" in rule and rule["record"] not in series:
                series[rule["record"]] = LabelCheck(series).labels(promql.parse(rule["expr"]))
    return series


# --- Tests ------------------------------------------------------------------------------


def test_committed_dashboards_are_what_the_code_generates(tmp_path: Path) -> None:
    written = dashboards.write_all(tmp_path)
    assert sorted(p.name for p in written) == sorted(
        p.name for p in DASHBOARDS.glob("*.json")
    ), "run `python -m mixin` and commit grafana/dashboards"
    for path in written:
        committed = (DASHBOARDS / path.name).read_text(encoding="utf-8")
        assert committed == path.read_text(
            encoding="utf-8"
        ), f"{path.name} is stale: run `python -m mixin`"


def test_generating_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    first = {p.name: p.read_bytes() for p in dashboards.write_all(tmp_path / "a")}
    second = {p.name: p.read_bytes() for p in dashboards.write_all(tmp_path / "b")}
    assert first == second
    assert all(text.endswith(b"}\n") for text in first.values())


def test_every_dashboard_has_the_house_settings() -> None:
    uids = [board["uid"] for board in generated().values()]
    assert len(set(uids)) == len(uids) == 6
    for name, board in generated().items():
        assert name == f"{board['uid']}.json"
        assert board["tags"] == ["mail"]
        assert board["refresh"] == "30s"
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"


def test_every_panel_queries_the_datasource_variable_and_says_what_it_shows() -> None:
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    for board in generated().values():
        ids = [panel["id"] for panel in _panels(board)]
        assert len(set(ids)) == len(ids), f"{board['uid']}: panel ids repeat"
        for panel in _data_panels(board):
            where = f"{board['uid']}: {panel['title']}"
            assert panel["datasource"] == datasource, where
            assert panel["description"].strip(), f"{where} has no description"
            assert panel["targets"], f"{where} has no query"
            assert all(target["datasource"] == datasource for target in panel["targets"]), where
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, where
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                assert variable["datasource"] == datasource, variable["name"]
        for annotation in board["annotations"]["list"]:
            if "expr" in annotation:
                assert annotation["datasource"] == datasource, annotation["name"]


def test_the_alert_annotations_match_every_shipped_alert() -> None:
    names = [
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert names
    assert all(name.startswith(ALERT_PREFIX) for name in names)


def test_the_drilldown_picks_servers_and_the_comparison_picks_a_shift() -> None:
    server = {v["name"]: v for v in generated()["mail-server.json"]["templating"]["list"]}
    assert (
        server["target"]["query"] == f"label_values(mail_probe_success{CONFIG.matchers()}, target)"
    )
    migration = {v["name"]: v for v in generated()["mail-migration.json"]["templating"]["list"]}
    assert [o["value"] for o in migration["shift"]["options"]] == ["1d", "7d", "30d"]
    shifted = [
        e.expr for e in expressions(generated()["mail-migration.json"]) if "offset" in e.expr
    ]
    assert len(shifted) >= 6


def _route_series(route: str, site: str, per_minute: Mapping[str, float]) -> list[dict[str, str]]:
    """A round-trip route's info series and counters, each growing by ``per_minute``
    (keys: ``le=BOUND`` for buckets, ``stage=NAME`` for failures, ``seen``, ``junk``)."""
    labels = f'instance="mailhost:9469",job="mail",route="{route}"'

    def series(key: str) -> str:
        if key == "seen":
            return f"mail_roundtrip_delivery_seconds_count{{{labels}}}"
        if key == "junk":
            return f"mail_roundtrip_junk_total{{{labels}}}"
        label, value = key.split("=")
        name = (
            "mail_roundtrip_delivery_seconds_bucket"
            if label == "le"
            else "mail_roundtrip_failures_total"
        )
        return f'{name}{{{labels},{label}="{value}"}}'

    info = f'mail_roundtrip_route_info{{{labels},site="{site}"}}'
    counters = [
        {"series": series(key), "values": f"0+{step:g}x60"} for key, step in per_minute.items()
    ]
    return [{"series": info, "values": "1x60"}, *counters]


STAGES = ("send", "send_auth", "receive", "receive_auth", "timeout", "cleanup")


def test_the_side_by_side_row_measures_each_site_alone(tmp_path: Path) -> None:
    """The migration dashboard's side-by-side row, its variables set to two sites, gives
    each site's transit time, loss (failed round trips of all that ended, a failed cleanup
    not counted) and junk share from its own routes only, as Prometheus computes them."""
    no_failures = {f"stage={stage}": 0.0 for stage in STAGES}
    series = [
        # onprem: 3 seen a minute, all within 1 s, and 1 lost: loss 1/4, p50 0.5 s, p95 0.95 s.
        *_route_series("old-loop", "onprem", {
            "seen": 3, "junk": 0, "le=1": 3, "le=5": 3, "le=+Inf": 3,
            **no_failures, "stage=timeout": 1}),
        # m365: 4 seen a minute within 1..5 s, 2 of them in junk, a cleanup failing each
        # time: loss 0, junk 2/4, p50 3 s, p95 4.8 s.
        *_route_series("new-loop", "m365", {
            "seen": 4, "junk": 2, "le=1": 0, "le=5": 4, "le=+Inf": 4,
            **no_failures, "stage=cleanup": 1}),
        # Another site, slow and failing, that neither may see.
        *_route_series("other-loop", "gmail", {
            "seen": 10, "junk": 10, "le=1": 0, "le=5": 0, "le=+Inf": 10,
            **no_failures, "stage=send": 10}),
    ]  # fmt: skip
    before, after = '{site="onprem"}', '{site="m365"}'
    stages = {stage: 0.0 for stage in STAGES if stage != "cleanup"}
    expected = {
        ("onprem: transit p95 (1d)", ""): {before: 0.95},
        ("onprem: loss (1d)", ""): {before: 0.25},
        ("onprem: junk (1d)", ""): {before: 0.0},
        ("m365: transit p95 (1d)", ""): {after: 4.8},
        ("m365: loss (1d)", ""): {after: 0.0},
        ("m365: junk (1d)", ""): {after: 0.5},
        ("Transit time p50 and p95", "before {{site}} p50"): {before: 0.5},
        ("Transit time p50 and p95", "before {{site}} p95"): {before: 0.95},
        ("Transit time p50 and p95", "after {{site}} p50"): {after: 3.0},
        ("Transit time p50 and p95", "after {{site}} p95"): {after: 4.8},
        ("Loss by stage", "before {{site}} {{stage}}"): {
            f'{{site="onprem",stage="{stage}"}}': 0.25 if stage == "timeout" else 0.0
            for stage in stages
        },
        ("Loss by stage", "after {{site}} {{stage}}"): {
            f'{{site="m365",stage="{stage}"}}': 0.0 for stage in stages
        },
        ("Junk rate", "before {{site}}"): {before: 0.0},
        ("Junk rate", "after {{site}}"): {after: 0.5},
        ("Transit p95 over 1d: m365 ÷ onprem", "ratio"): {"{}": round(4.8 / 0.95, 3)},
    }
    values = {"site_before": "onprem", "site_after": "m365", **GRAFANA_VARIABLES}
    board = generated()["mail-migration.json"]
    panels = board["panels"][1 : next(
        i for i, panel in enumerate(board["panels"]) if panel["title"] == "Probes"
    )]  # fmt: skip
    assert board["panels"][0]["title"] == "Old and new route side by side"
    found = {
        (substitute(panel["title"], values), target["legendFormat"].replace("__auto", "")):
            substitute(target["expr"], values)
        for panel in panels for target in panel["targets"]
    }  # fmt: skip
    assert set(found) == set(expected)
    tests = [
        {
            "expr": f"round({expr}, 0.001)",
            "eval_time": "30m",
            "exp_samples": [
                {"labels": labels, "value": value} for labels, value in expected[key].items()
            ],
        }
        for key, expr in found.items()
    ]
    case = {"interval": "1m", "input_series": series, "promql_expr_test": tests}
    run_rule_tests({"rule_files": [], "tests": [case]}, tmp_path)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    for name, default in (("site_before", CONFIG.migration_baseline_site),
                          ("site_after", CONFIG.migration_new_site)):  # fmt: skip
        assert (
            variables[name]["query"]
            == f"label_values(mail_roundtrip_route_info{CONFIG.matchers()}, site)"
        )
        assert variables[name]["current"]["value"] == default
        assert not variables[name]["multi"] and not variables[name]["includeAll"]


def test_every_mail_metric_and_label_used_is_documented() -> None:
    series = known_series()
    problems = [
        f"{found.where}: {error}"
        for board in generated().values()
        for found in expressions(board)
        for error in label_errors(found.expr, found.legend, series)
    ]
    assert not problems, "\n".join(problems)


def test_every_expression_parses_in_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test-packages` installs Debian's prometheus"
    groups, panels = [], {}
    for board in generated().values():
        records = []
        for index, found in enumerate(expressions(board)):
            record = f"dashboard:{board['uid'].replace('-', '_')}:query{index}"
            records.append({"record": record, "expr": found.expr})
            panels[record] = found.where
        groups.append({"name": board["uid"], "rules": records})
    queries = tmp_path / "dashboard_queries.yml"
    queries.write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    result = subprocess.run(
        [promtool, "check", "rules", str(queries)], capture_output=True, text=True, check=False
    )
    where = "\n".join(f"{record} is {panel}" for record, panel in panels.items())
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\n{where}"
    assert f"SUCCESS: {len(panels)} rules found" in result.stdout


def test_provisioning_points_grafana_at_prometheus_and_the_dashboards() -> None:
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "mail_exporter.yml").read_text())
    assert providers["apiVersion"] == 1
    [provider] = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]
    sources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    [source] = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"].startswith("http")


# --- The checks themselves --------------------------------------------------------------

SAMPLE_DOC = """
## Probes

Scheduled probes carry the labels `target` (the name), `module` and `protocol` (`smtp`).

| metric | type | extra labels | meaning |
|---|---|---|---|
| `mail_probe_success` | gauge | | 1 when it passed |
| `mail_probe_latency_seconds` | histogram | | durations |

| reason | meaning |
|---|---|
| `resolve` | no address |

## TLS

| metric | type | extra labels | meaning |
|---|---|---|---|
| `mail_tls_version_info` | gauge | `version` | |

## Queues

Collectors share the labels `mta` (`postfix`, `exim`), `mta_instance` and `queue`.

| metric | type | extra labels | meaning |
|---|---|---|---|
| `mail_queue_source_info` | gauge | `source` (no `queue`) | where figures came from |

## Host

| metric | type | labels | meaning |
|---|---|---|---|
| `mail_host_path_avail_bytes` / `_size_bytes` | gauge | `path` | |
| `mail_host_path_files` / `_files_free` | gauge | `path` | |
| `mail_host_load1` / `_load5` | gauge | | |
"""


def test_doc_tables_give_each_metric_its_labels() -> None:
    metrics = documented_metrics(SAMPLE_DOC)
    probe = {"target", "module", "protocol"}
    assert metrics["mail_probe_success"] == ("gauge", probe)
    assert metrics["mail_tls_version_info"] == ("gauge", probe | {"version"})
    assert metrics["mail_queue_source_info"] == ("gauge", {"mta", "mta_instance", "source"})
    assert metrics["mail_host_path_size_bytes"] == ("gauge", {"path"})
    assert metrics["mail_host_path_files_free"] == ("gauge", {"path"})
    assert metrics["mail_host_load5"] == ("gauge", frozenset())
    assert "mail_host_size_bytes" not in metrics
    assert "resolve" not in metrics
    series = exported_series(metrics)
    assert series["mail_probe_latency_seconds_bucket"] == probe | {"le"} | TARGET_LABELS
    assert "mail_probe_latency_seconds" not in series


def test_the_real_doc_covers_the_probe_and_queue_labels() -> None:
    metrics = documented_metrics(METRICS_DOC.read_text(encoding="utf-8"))
    assert metrics["mail_probe_phase_duration_seconds"][1] == {
        "target",
        "module",
        "protocol",
        "phase",
    }
    assert metrics["mail_queue_messages"][1] == {"mta", "mta_instance", "queue"}
    assert metrics["mail_tls_cert_expiry_timestamp_seconds"][1] == {"target", "module", "protocol"}


@pytest.mark.parametrize(
    ("expr", "legend", "error"),
    [
        ("mail_probe_sucess", "", "mail_probe_sucess is neither documented"),
        ('mail_probe_success{route="x"}', "", "selector of mail_probe_success uses ['route']"),
        ("sum by (stage) (mail_probe_success)", "", "sum by uses ['stage']"),
        (
            "sum by (target) (mail_probe_success)",
            "{{protocol}}",
            "legend '{{protocol}}' uses ['protocol']",
        ),
        (
            "histogram_quantile(0.9, sum by (target) (rate(mail_probe_latency_seconds_bucket[5m])))",
            "",
            "histogram_quantile uses ['le']",
        ),
        (
            "mail_probe_success * on (version) mail_tls_version_info",
            "",
            "left side of * on/ignoring uses ['version']",
        ),
        (
            "mail_probe_success * on (target) group_left (cipher) mail_tls_version_info",
            "",
            "group_left uses ['cipher']",
        ),
        ("mail:unknown:ratio", "", "mail:unknown:ratio is neither documented nor recorded"),
        # A paired exporter's series are checked as mail_exporter's are.
        ("windows_exchange_transport_queues_poison", "", "neither documented nor recorded"),
    ],
)
def test_label_check_catches(expr: str, legend: str, error: str) -> None:
    series = exported_series(documented_metrics(SAMPLE_DOC))
    errors = label_errors(expr, legend, series)
    assert any(error in e for e in errors), errors


@pytest.mark.parametrize(
    ("expr", "legend"),
    [
        (
            "histogram_quantile(0.9, sum by (protocol, le) (rate(mail_probe_latency_seconds_bucket[5m])))",
            "{{protocol}}",
        ),
        (
            "mail_probe_success * on (target) group_left (version) mail_tls_version_info",
            "{{version}} {{module}}",
        ),
        ("count(mail_probe_success == 0) or vector(0)", ""),
        ("time() - sum without (module) (mail_probe_success)", "{{target}} {{instance}}"),
        ('up{job="x"}', "{{anything}}"),
    ],
)
def test_label_check_accepts(expr: str, legend: str) -> None:
    series = exported_series(documented_metrics(SAMPLE_DOC))
    assert label_errors(expr, legend, series) == []


def test_variables_are_filled_in_and_unknown_ones_fail() -> None:
    values = {"target": "mx1", **GRAFANA_VARIABLES}
    assert (
        substitute('rate(x{target=~"$target"}[$__rate_interval])', values)
        == 'rate(x{target=~"mx1"}[5m])'
    )
    assert substitute("x offset ${target}", values) == "x offset mx1"
    with pytest.raises(AssertionError, match="undefined variable"):
        substitute("x offset $shift", values)


def test_expressions_come_from_panels_rows_and_variables() -> None:
    board = json.loads((DASHBOARDS / "mail-overview.json").read_text(encoding="utf-8"))
    found = expressions(board)
    assert any(
        "mail_exporter_collector_duration_seconds" in e.expr for e in found
    ), "collapsed rows' panels count too"
    server = expressions(generated()["mail-server.json"])
    assert any(e.where.endswith("variable target") for e in server)


# --- What the exporter really exports ---------------------------------------------------


def test_every_exported_metric_is_documented(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """docs/metrics.md, which the dashboard and rule checks trust, names every family the
    exporter's code emits: probes and round trips (families kept even when empty), every
    collector but postfix_queue and dns run by the exporter over fixtures, and a real DNS
    pass against a local DNS server."""
    dns: Results = request.getfixturevalue("results")
    pki: PKI = request.getfixturevalue("pki")
    errors = error_families(
        Counter({("mx", "timeout"): 1}), Counter({("zen", "refused"): 1}), ["zen"]
    )
    families = [*real_families(tmp_path, pki.server_cert), *result_families(dns), *errors]
    # prometheus_client keeps a counter family's name without the _total its samples get.
    exported = {f.name + "_total" if f.type == "counter" else f.name for f in families}
    assert len(exported) > 140, sorted(exported)  # every source above gave its families
    undocumented = exported - set(documented_metrics(METRICS_DOC.read_text(encoding="utf-8")))
    assert not undocumented, f"docs/metrics.md lacks {sorted(undocumented)}"


def real_families(tmp_path: Path, certificate: Path) -> list[Metric]:
    """What an exporter whose collectors read fixtures (and ``certificate``) collects, plus
    the probe families."""
    spool, queue, backups = tmp_path / "exim", tmp_path / "qmail", tmp_path / "backups"
    for directory in (spool / "input", queue / "todo", queue / "mess", backups):
        directory.mkdir(parents=True)
    (backups / "mail.tar").write_bytes(b"backup")
    log = tmp_path / "mail.log"
    shutil.copy(LOG_FIXTURES / "postfix_real.log", log)
    smart = [sys.executable, str(SMART_FIXTURES / "fake_smartctl.py"), str(tmp_path)]
    shutil.copy(SMART_FIXTURES / "nvme.json", tmp_path / "nvme.json")
    config = tmp_path / "config.yml"
    config.write_text(json.dumps({"collectors": {
        "host": {"enabled": True, "mail_paths": [str(tmp_path)]},
        "services": {"enabled": True},
        "backups": {"enabled": True, "backups": [{"name": "mail", "path": str(backups)}]},
        "smart": {"enabled": True, "smartctl_command": smart, "devices": ["/dev/nvme"]},
        "sensors": {"enabled": True},
        "dovecot": {"enabled": True, "doveadm": str(DOVECOT_FIXTURES / "fake_doveadm.py")},
        "exim_queue": {"enabled": True, "spool_directory": str(spool), "exim_command": ["false"]},
        "qmail_queue": {"enabled": True, "queue_directory": str(queue), "qstat_command": ["false"],
                        "qread_command": ["false"]},
        "logs": {"enabled": True, "sources": [{"path": str(log)}], "start_at": "beginning"},
        "certificates": {"enabled": True, "files": [str(certificate)]},
    }}))  # fmt: skip
    exporter = Exporter(config, {})
    try:
        families = list(exporter.collect())
    finally:
        exporter.collectors.close()
    success = {s.labels["collector"]: s.value for f in families if f.name == "mail_exporter_collector_success"
               for s in f.samples}  # fmt: skip
    assert set(success.values()) == {1.0}, success
    return [
        *families,
        *scheduled_families(),
        *roundtrip_families({"loop": RouteStats()}, {"loop": "onprem"}),
    ]
