"""The shipped alert rules, their promtool tests and the Alertmanager example, as promtool sees them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from mixin import rules
from mixin.generate import write_rules
from tests.promtool import ALERTING, tool
from tests.test_dashboards import known_series, label_errors

ROOT = Path(__file__).resolve().parent.parent


def run(*command: str, cwd: Path = ROOT) -> str:
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_generated_rules_are_current(tmp_path: Path) -> None:
    for written in write_rules(tmp_path):
        shipped = ROOT / written.relative_to(tmp_path)
        assert (
            shipped.read_text() == written.read_text()
        ), f"run `python -m mixin`: {shipped} is stale"


def test_rules_pass_promtool_check() -> None:
    output = run(tool("promtool"), "check", "rules", str(ALERTING / rules.RULES_FILE))
    assert "SUCCESS" in output


def test_every_alert_fires_and_stays_quiet_in_promtool_tests() -> None:
    run(tool("promtool"), "test", "rules", "mail_exporter_test.yml", cwd=ALERTING / "tests")
    for alert in rules.all_alerts():
        fired = [labels["severity"] for labels in alert.fires.alerts]
        quiet = [labels["severity"] for labels in alert.quiet.alerts]
        assert alert.severity in fired and alert.severity not in quiet, alert.name


def test_every_alert_is_complete() -> None:
    for alert in rules.all_alerts():
        # The Mail prefix; a name on a mailbox says it once (MailboxQuotaNearlyFull).
        assert re.fullmatch(r"Mail(box)?[A-Z][A-Za-z0-9]+", alert.name), alert.name
        assert alert.severity in ("warning", "critical")
        assert re.fullmatch(r"\d+[smh]", alert.for_), alert.name
        assert alert.summary.endswith(".") and "\n" not in alert.summary
        assert "{{ $labels." in alert.description, alert.name
        # A 0/1 state: the first series compared with 0 or 1, or the expression ending so.
        state = bool(re.match(r"[\w:]+(\{[^}]*\})? == [01]\b", alert.expr)) or bool(
            re.search(r"== [01]$", alert.expr)
        )
        assert "$value" in alert.description or state or alert.name in WORDED, alert.name


# Alerts on a plain 0/1 state name the thing, not a number; this one's value is a byte count
# predicted below zero, which its description puts in words instead.
WORDED = {"MailHostDiskFilling"}


def test_every_alert_has_a_runbook_section() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    headings = set(re.findall(r"^## (\S+)$", runbook, re.MULTILINE))
    missing = {alert.name for alert in rules.all_alerts()} - headings
    assert not missing, f"docs/runbook.md lacks sections for {sorted(missing)}"


def test_alertmanager_example_passes_amtool() -> None:
    output = run(tool("amtool"), "check-config", str(ALERTING / "alertmanager.yml"))
    assert "SUCCESS" in output


def test_no_alert_reaches_anyone_only_by_mail() -> None:
    config = yaml.safe_load((ALERTING / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        if "email_configs" in receiver:
            assert {"slack_configs", "pagerduty_configs", "webhook_configs"} & set(
                receiver
            ), receiver["name"]


@pytest.mark.parametrize("severity", ["warning", "critical"])
def test_each_severity_is_routed(severity: str) -> None:
    routes = yaml.safe_load((ALERTING / "alertmanager.yml").read_text())["route"]["routes"]
    assert any(f'severity="{severity}"' in route["matchers"] for route in routes)


def test_rules_use_only_exported_metrics_and_labels() -> None:
    """Every series and label a rule or its annotations use is one the exporter documents."""
    series = known_series()
    problems = []
    for alert in rules.all_alerts():
        used = re.findall(r"\$labels\.(\w+)", alert.summary + alert.description)
        legend = " ".join("{{ " + label + " }}" for label in used)
        problems += [f"{alert.name}: {error}" for error in label_errors(alert.expr, legend, series)]
    for rule in rules.recording_rules(rules.CONFIG):
        problems += [
            f"{rule['record']}: {error}" for error in label_errors(rule["expr"], "", series)
        ]
    assert not problems, "\n".join(problems)


MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"?([^"]*)"?')


def alertmanager_matchers() -> list[str]:
    """Every matcher of the example config's routes and inhibit rules."""
    config = yaml.safe_load((ALERTING / "alertmanager.yml").read_text())
    routes, found = [config["route"]], []
    while routes:
        route = routes.pop()
        found += route.get("matchers", [])
        routes += route.get("routes", [])
    for rule in config["inhibit_rules"]:
        found += rule.get("source_matchers", []) + rule.get("target_matchers", [])
    return found


def test_alertmanager_names_only_shipped_alerts() -> None:
    """A renamed alert must not silently leave an inhibition or route matching nothing."""
    names = {alert.name for alert in rules.all_alerts()}
    named = []
    for matcher in alertmanager_matchers():
        parsed = MATCHER.fullmatch(matcher)
        assert parsed is not None, matcher
        label, operator, value = parsed.groups()
        if label != "alertname":
            continue
        named.append(value)
        if "~" in operator:  # Alertmanager anchors regular expressions
            for alternative in value.split("|"):  # each alternative names some alert
                assert any(re.fullmatch(alternative, name) for name in names), matcher
        else:
            assert value in names, matcher
    assert {"MailExporterDown", "MailProbeDown"} <= set(named)
