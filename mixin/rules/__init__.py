"""Prometheus alert and recording rules for mail_exporter, each alert with its own test case.

Every alert is an :class:`~mixin.rules.alert.Alert`: its expression, ``for``, severity, a
one-line summary, a templated description, and two examples: input series under which it
fires and under which it stays quiet. Each area has its module (probes and TLS, security
posture, queues, round trip, host, logs, spam and refusals, DNS, mailboxes, the reports
mailbox, the exporter itself, and the paired exporters: switch ports, Exchange, rspamd;
recording rules apart), and :func:`all_alerts` lists them in the order they ship.
:func:`rules_file` renders the rules and :func:`tests_file` the ``promtool test rules``
cases, so no alert ships untested. Thresholds and selectors come from :mod:`mixin.config`,
shared PromQL from :mod:`mixin.promql`.
"""

from __future__ import annotations

from typing import Any

from mixin.config import CONFIG, Config
from mixin.rules.alert import Alert, Example
from mixin.rules.dns import dns_alerts
from mixin.rules.exchange import exchange_alerts, exchange_recording_rules
from mixin.rules.exporter import exporter_alerts
from mixin.rules.host import host_alerts
from mixin.rules.logs import account_alerts, log_alerts, refusal_alerts, spam_alerts
from mixin.rules.mailboxes import mailbox_alerts
from mixin.rules.posture import posture_alerts
from mixin.rules.probes import probe_alerts
from mixin.rules.queues import queue_alerts
from mixin.rules.recording import recording_rules
from mixin.rules.reports import report_alerts
from mixin.rules.roundtrip import roundtrip_alerts
from mixin.rules.spam_filter import spam_filter_alerts
from mixin.rules.switch_ports import switch_port_alerts

RULES_FILE = "mail_exporter.rules.yml"


def all_alerts(c: Config = CONFIG) -> list[Alert]:
    return [*probe_alerts(c), *posture_alerts(c), *queue_alerts(c), *roundtrip_alerts(c),
            *host_alerts(c), *log_alerts(c), *spam_alerts(c), *refusal_alerts(c),
            *account_alerts(c), *dns_alerts(c), *mailbox_alerts(c), *report_alerts(c),
            *exporter_alerts(c), *paired_alerts(c)]  # fmt: skip


def paired_alerts(c: Config = CONFIG) -> list[Alert]:
    """The alerts on the exporters paired with mail_exporter (docs/pairing.md)."""
    return [*switch_port_alerts(c), *exchange_alerts(c), *spam_filter_alerts(c)]


def rules_file(c: Config = CONFIG) -> dict[str, Any]:
    return {
        "groups": [
            {"name": "mail_exporter.recording", "rules": recording_rules(c)},
            {"name": "mail_exporter.paired", "rules": exchange_recording_rules()},
            {"name": "mail_exporter.alerts", "rules": [alert.rule(c) for alert in all_alerts(c)]},
        ]
    }


def _case(alert: Alert, example: Example) -> dict[str, Any]:
    expected = [{"exp_labels": {"alertname": alert.name, **labels}} for labels in example.alerts]
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in example.series],
        "alert_rule_test": [{"eval_time": f"{alert.eval_minutes}m", "alertname": alert.name,
                             "exp_alerts": expected}],
    }  # fmt: skip


TEST_RULES_FILE = "rules_without_annotations.yml"


def test_rules_file(c: Config = CONFIG) -> dict[str, Any]:
    """The shipped rules without annotations, for ``promtool test rules``.

    promtool compares annotations verbatim, values and all; the cases here check what
    decides whether and how an alert fires (expression, ``for``, labels). The
    annotations' templates are checked by ``promtool check rules`` and rendered by a
    real Prometheus in the end-to-end test.
    """
    shipped = rules_file(c)
    for group in shipped["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    return shipped


def tests_file(c: Config = CONFIG) -> dict[str, Any]:
    """promtool cases: each alert firing under its example, quiet under the other, and its
    further cases."""
    cases = []
    for alert in all_alerts(c):
        cases += [_case(alert, example) for example in (alert.fires, alert.quiet, *alert.also)]
    return {"rule_files": [TEST_RULES_FILE], "evaluation_interval": "1m", "tests": cases}
