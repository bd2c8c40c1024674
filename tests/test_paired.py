"""The rules and dashboards on the paired exporters' series (docs/pairing.md), where no real
exporter runs: Exchange's, through promtool on series named exactly as windows_exporter
documents them.

windows_exporter's docs/collector.exchange.md (prometheus-community/windows_exporter at
commit 1c75398d: the perflib-based ``exchange`` collector, whose ``TransportQueues`` part
runs since release 0.15.0) lists the transport queue lengths under these names, each
labelled ``name`` with the queue's priority or ``total_excluding_priority_none``:
"""

from __future__ import annotations

import re
from pathlib import Path

import promql_parser as promql
import yaml

from mixin import dashboards, rules
from mixin.paired import EXCHANGE_QUEUES
from tests.promtool import ALERTING, run_rule_tests
from tests.test_dashboards import (
    METRICS_DOC,
    LabelCheck,
    documented_metrics,
    exported_series,
)

WINDOWS_EXPORTER_EXCHANGE_QUEUES = (
    "windows_exchange_transport_queues_external_active_remote_delivery",
    "windows_exchange_transport_queues_internal_active_remote_delivery",
    "windows_exchange_transport_queues_active_mailbox_delivery",
    "windows_exchange_transport_queues_retry_mailbox_delivery",
    "windows_exchange_transport_queues_unreachable",
    "windows_exchange_transport_queues_external_largest_delivery",
    "windows_exchange_transport_queues_internal_largest_delivery",
    "windows_exchange_transport_queues_poison",
)
WINDOWS = 'instance="exchange1:9182",job="windows"'
TOTAL = 'name="total_excluding_priority_none"'


def _shipped_text() -> str:
    shipped = (ALERTING / rules.RULES_FILE).read_text(encoding="utf-8")
    boards = "".join(str(board) for board in dashboards.dashboards().values())
    return shipped + boards


def test_every_exchange_series_read_is_one_windows_exporter_documents() -> None:
    used = set(re.findall(r"windows_exchange_\w+", _shipped_text()))
    assert used, "the rules read Exchange's queues"
    assert used <= set(WINDOWS_EXPORTER_EXCHANGE_QUEUES), used - set(
        WINDOWS_EXPORTER_EXCHANGE_QUEUES
    )


def test_exchange_queues_are_recorded_as_the_mail_queues(tmp_path: Path) -> None:
    """Each transport queue's total goes into the queue name of docs/pairing.md, per server;
    the queues per priority are not counted again."""
    lengths = {
        "external_active_remote_delivery": 5,
        "internal_active_remote_delivery": 7,
        "active_mailbox_delivery": 11,
        "retry_mailbox_delivery": 13,
        "unreachable": 17,
        "poison": 19,
    }
    series = [
        {"series": f"windows_exchange_transport_queues_{queue}{{{WINDOWS},{TOTAL}}}",
         "values": f"{length}x10"}
        for queue, length in lengths.items()
    ] + [
        {"series": f'windows_exchange_transport_queues_{queue}{{{WINDOWS},name="high"}}',
         "values": "1000x10"}
        for queue in lengths
    ]  # fmt: skip
    expected = {"active": 5 + 7 + 11, "deferred": 13, "unreachable": 17, "poison": 19}
    assert set(expected) == set(EXCHANGE_QUEUES)
    case = {
        "rule_files": [str(ALERTING / rules.RULES_FILE)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "promql_expr_test": [{
                "expr": 'mail_queue_messages{mta="exchange"}',
                "eval_time": "5m",
                "exp_samples": [
                    {"labels": f'mail_queue_messages{{{WINDOWS},mta="exchange",'
                               f'mta_instance="exchange",queue="{queue}"}}', "value": value}
                    for queue, value in expected.items()
                ],
            }],
        }],
    }  # fmt: skip
    run_rule_tests(case, tmp_path)


def test_rules_that_record_a_documented_name_give_its_documented_labels() -> None:
    """Exchange's queues recorded as ``mail_queue_messages`` carry exactly the labels the
    Postfix queues have, so every panel and alert on the queues reads them alike."""
    documented = exported_series(documented_metrics(METRICS_DOC.read_text(encoding="utf-8")))
    recorded = [
        rule
        for group in yaml.safe_load((ALERTING / rules.RULES_FILE).read_text())["groups"]
        for rule in group["rules"]
        if rule.get("record") in documented
    ]
    assert recorded
    for rule in recorded:
        check = LabelCheck(documented)
        labels = check.labels(promql.parse(rule["expr"]))
        assert not check.errors, check.errors
        assert labels is not None
        assert labels | set(rule.get("labels", {})) == documented[rule["record"]], rule
