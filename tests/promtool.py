"""promtool, which the tests ask whether an exposition follows Prometheus' conventions."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from mixin import rules

ALERTING = Path(__file__).resolve().parent.parent / "alerting"


def tool(name: str) -> str:
    path = shutil.which(name)
    assert (
        path is not None
    ), f"{name} is missing: apt-get install prometheus prometheus-alertmanager"
    return path


async def check_metrics(text: str) -> None:
    """Fail unless ``promtool check metrics`` accepts ``text`` (it also lints names)."""
    check = await asyncio.to_thread(
        subprocess.run,
        [tool("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def shipped_rules(alertname: str) -> list[dict[str, Any]]:
    """The shipped rules of ``alertname`` (one per severity), as the rules file has them."""
    shipped = yaml.safe_load((ALERTING / rules.RULES_FILE).read_text())
    return [
        rule
        for group in shipped["groups"]
        for rule in group["rules"]
        if rule.get("alert") == alertname
    ]


def shipped_annotations(
    rule: dict[str, Any], labels: dict[str, str], value: float
) -> dict[str, str]:
    """The rule's annotations as Prometheus renders them for these labels and value.

    promtool compares annotations verbatim; rendering the template forms the shipped
    alerts use (``$labels.NAME``, ``$value | printf "%.Nf"``) and failing on any other
    keeps a case on the shipped file itself.
    """
    rendered: dict[str, str] = {}
    for key, template in rule["annotations"].items():
        text = re.sub(
            r'\{\{ \$value \| printf "%\.(\d)f" \}\}', lambda m: f"{value:.{m[1]}f}", template
        )
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m[1], ""), text)
        assert "{{" not in text, text
        rendered[key] = text
    return rendered


def check_shipped_alert(
    alertname: str,
    series: list[dict[str, str]],
    quiet_at: str,
    fires_at: str,
    expected: list[dict[str, Any]],
    directory: Path,
) -> None:
    """Fail unless ``promtool test rules``, on the shipped rules file and ``series`` (one
    sample a minute), finds ``alertname`` quiet at ``quiet_at`` and firing at ``fires_at``
    with ``expected`` (``exp_labels`` and ``exp_annotations`` of each alert)."""
    case = {
        "rule_files": [str(ALERTING / rules.RULES_FILE)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": quiet_at, "alertname": alertname, "exp_alerts": []},
                    {"eval_time": fires_at, "alertname": alertname, "exp_alerts": expected},
                ],
            }
        ],
    }
    run_rule_tests(case, directory)


def run_rule_tests(case: dict[str, Any], directory: Path) -> None:
    """Fail unless ``promtool test rules`` passes ``case`` (its rule_files and tests)."""
    path = directory / "rule_test.yml"
    path.write_text(yaml.safe_dump(case))
    result = subprocess.run(
        [tool("promtool"), "test", "rules", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
