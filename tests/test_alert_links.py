"""Where the alerts lead and what they say: every runbook link opens its section of the
runbook the exporter serves, MailExporterDown guards an exporter whatever its job is
named, and MailRoundTripFailing says which stage failed."""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

import pytest
import yaml

from mail_exporter.runbook import anchor, render
from mixin import rules
from mixin.rules.roundtrip import STAGE_MEANINGS
from tests.promtool import ALERTING, check_shipped_alert
from tests.served import get, served_exporter

ROUTE = {"route": "local-loop", "instance": "mailhost:9469", "job": "mail"}
SERIES = 'route="local-loop",instance="mailhost:9469",job="mail"'


def test_every_runbook_link_opens_its_section_on_the_exporter(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("{}\n")
    with served_exporter(tmp_path, config) as served:
        response = get(served.port, "/runbook")
        page = response.body
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/html")
    ids = set(re.findall(r' id="([^"]+)"', page))
    shipped = yaml.safe_load((ALERTING / rules.RULES_FILE).read_text())
    for group in shipped["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            link = rule["annotations"]["runbook_url"].replace(
                "{{ $labels.instance }}", f"127.0.0.1:{served.port}"
            )
            parsed = urllib.parse.urlsplit(link)
            assert (parsed.scheme, parsed.netloc, parsed.path) == (
                "http", f"127.0.0.1:{served.port}", "/runbook"), link  # fmt: skip
            assert parsed.fragment in ids, f"{rule['alert']}: no section #{parsed.fragment}"


def test_runbook_page_escapes_and_anchors() -> None:
    page = render(
        "## Mail<Probe> Down\n\nrun `a < b` and **now**, see [x](#y) or [z](javascript:1)\n"
    )
    assert '<h2 id="mailprobe-down">Mail&lt;Probe&gt; Down</h2>' in page
    assert "<code>a &lt; b</code>" in page and "<b>now</b>" in page
    assert '<a href="#y">x</a>' in page and "javascript" not in page
    assert anchor("MailProbeDown") == "mailprobedown"


def test_exporter_down_whatever_the_job_is_named(tmp_path: Path) -> None:
    labels = {"instance": "mailhost:9469", "job": "mail_exporter"}
    series = [
        {"series": 'up{instance="mailhost:9469",job="mail_exporter"}', "values": "1x10 0x110"},
        {"series": 'mail_exporter_build_info{instance="mailhost:9469",job="mail_exporter",version="1"}',
         "values": "1x10"},
    ]  # fmt: skip
    (rule,) = [r for g in yaml.safe_load((ALERTING / rules.RULES_FILE).read_text())["groups"]
               for r in g["rules"] if r.get("alert") == "MailExporterDown"]  # fmt: skip
    annotations = {
        "summary": rule["annotations"]["summary"],
        "description": "Prometheus cannot scrape mail_exporter on mailhost:9469: none of its "
        "mail checks are known.",
        "runbook_url": "http://mailhost:9469/runbook#mailexporterdown",
    }
    expected = [{"exp_labels": {**labels, "severity": "critical"}, "exp_annotations": annotations}]
    check_shipped_alert("MailExporterDown", series, "5m", "20m", expected, tmp_path)


def roundtrip_failing(stage: str | None, tmp_path: Path) -> None:
    """MailRoundTripFailing after attempts that failed in ``stage`` (None: none failed, the
    message went to junk), with cleanup failing on top, and its description for it."""
    counted = [stage] if stage is not None else []
    series = [{"series": f"mail_roundtrip_success{{{SERIES}}}", "values": "0x60"}] + [
        {"series": f'mail_roundtrip_failures_total{{{SERIES},stage="{name}"}}',
         "values": "0+1x60" if name in counted else "0x60"}
        for name in [*STAGE_MEANINGS, "cleanup"]
    ]  # fmt: skip
    series[-1]["values"] = "0+2x60"  # cleanup fails more often than any stage
    what = STAGE_MEANINGS[stage] if stage is not None else (
        "the message arrived in the junk mailbox, or the attempts failed longer than 30m ago")  # fmt: skip
    annotations = {
        "summary": "Test mail does not arrive.",
        "description": f"The round trip local-loop failed: {what}. The exporter's log says why "
        "(level warn, route local-loop).",
        "runbook_url": "http://mailhost:9469/runbook#mailroundtripfailing",
    }
    expected = [{"exp_labels": {**ROUTE, "severity": "critical"}, "exp_annotations": annotations}]
    check_shipped_alert("MailRoundTripFailing", series, "1m", "30m", expected, tmp_path)


@pytest.mark.parametrize("stage", [*STAGE_MEANINGS, None])
def test_roundtrip_failing_says_what_failed(stage: str | None, tmp_path: Path) -> None:
    roundtrip_failing(stage, tmp_path)


def test_readme_prometheus_section_says_any_job_name_will_do() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("## Pointing Prometheus at it") : readme.index("## Grafana")]
    assert "Name the jobs as you like" in section and "`exporter_jobs`" in section
