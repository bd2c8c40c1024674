"""The reports mailbox's alerts over days of reports, and the reports dashboard's figures, as
Prometheus computes them.

The alerts' own promtool cases (alerting/tests) evaluate 90 minutes of series, which every
shipped rule is evaluated over; what takes more than a day of history (yesterday's reports
no longer counting, a source known since a week) is checked here on the alerts alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.promtool import run_rule_tests, shipped_rules
from tests.test_dashboards import GRAFANA_VARIABLES, generated, substitute

HOST = 'instance="mailhost:9469",job="mail"'
DOMAIN = {"domain": "example.com", "instance": "mailhost:9469", "job": "mail"}


def _dmarc(dkim: str, spf: str, values: str, reporter: str = "google.com") -> dict[str, str]:
    labels = (
        f'domain="example.com",reporter="{reporter}",disposition="none",'
        f'dkim_aligned="{dkim}",spf_aligned="{spf}",{HOST}'
    )
    return {"series": f"mail_dmarc_report_messages_total{{{labels}}}", "values": values}


def _source(source: str, values: str) -> dict[str, str]:
    labels = f'domain="example.com",source="{source}",{HOST}'
    return {"series": f"mail_dmarc_unaligned_messages_total{{{labels}}}", "values": values}


def _alert_case(
    name: str, minutes: int, series: list[dict[str, str]], fires: bool, **extra: str
) -> dict[str, Any]:
    expected = [{"exp_labels": {**DOMAIN, **extra, "severity": "warning"}}] if fires else []
    return {
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            {"eval_time": f"{minutes}m", "alertname": name, "exp_alerts": expected}
        ],
    }


def _run_alerts(names: list[str], cases: list[dict[str, Any]], directory: Path) -> None:
    """promtool on the shipped rules of ``names`` alone (without annotations, which
    promtool would compare verbatim)."""
    rules = [
        {key: value for key, value in rule.items() if key != "annotations"}
        for name in names
        for rule in shipped_rules(name)
    ]
    (directory / "rules.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "reports", "rules": rules}]})
    )
    run_rule_tests(
        {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": cases}, directory
    )


DAY_AND_A_HALF = 1530  # minutes: a day of window and 90 minutes more


def test_unaligned_traffic_weighs_the_last_day_of_reports(tmp_path: Path) -> None:
    """Aligned mail at one message a minute for a day and a half; spoofed mail whose
    report came yesterday no longer counts, today's does, whether the series is old or
    was born today with its first report (which increase() alone would not see)."""
    aligned = _dmarc("true", "true", f"0+1x{DAY_AND_A_HALF}")
    name = "MailDmarcUnalignedTraffic"
    cases = [
        # 500 failing, reported in the first hour: more than a day ago at the evaluation.
        _alert_case(name, DAY_AND_A_HALF, [aligned, _dmarc("false", "false", "500x1530")], False),
        # The same series, and today a report of 300 more.
        _alert_case(
            name, DAY_AND_A_HALF, [aligned, _dmarc("false", "false", "500x1470 800x60")], True
        ),
        # A reporter's first report of failing mail, today.
        _alert_case(
            name,
            DAY_AND_A_HALF,
            [aligned, _dmarc("false", "false", "_x1470 300x60", reporter="yahoo.com")],
            True,
        ),
    ]
    _run_alerts([name], cases, tmp_path)


def test_a_source_is_new_only_without_history(tmp_path: Path) -> None:
    """A source sending unaligned mail today is new unless its series existed a day or a
    week ago (an exporter restart in between lost it for days); 'other' never is."""
    name = "MailSpoofingSourceNew"
    week = 7 * 1440 + 90
    source = {"source": "203.0.113.9"}
    cases = [
        _alert_case(name, DAY_AND_A_HALF, [_source("203.0.113.9", "_x1470 40x60")], True, **source),
        # Seen yesterday already: today's 40 more are MailDmarcUnalignedTraffic's.
        _alert_case(name, DAY_AND_A_HALF, [_source("203.0.113.9", "5x1470 45x60")], False),
        # A day after it first sent, it is known.
        _alert_case(name, DAY_AND_A_HALF, [_source("203.0.113.9", "_x60 40x1470")], False),
        _alert_case(name, DAY_AND_A_HALF, [_source("other", "_x1470 400x60")], False),
        # Seen a week ago, gone with a restart, back today.
        _alert_case(name, week, [_source("203.0.113.9", f"5x120 _x{week - 211} 40x90")], False),
    ]
    _run_alerts([name], cases, tmp_path)


def test_the_reports_dashboard_shows_what_the_reports_said(tmp_path: Path) -> None:
    """The reports dashboard's headline and graphs, its variables at All, over a day and a
    half of series: shares, top sources, new sources, TLS failures and the last success,
    as Prometheus computes them."""
    minutes, today = DAY_AND_A_HALF, 1480  # today's reports came 50 minutes ago

    def report(count: int, before: str = "_") -> str:
        return f"{before}x{today} {count}x{minutes - today}"

    series = [
        # Yesterday 100 aligned; today 200 more aligned, 50 on DKIM alone, 50 failing.
        _dmarc("true", "true", report(300, "100")),
        _dmarc("true", "false", report(50)),
        _dmarc("false", "false", report(50), reporter="yahoo.com"),
        # Of the failing 50, 40 from a new source and 10 from one known since yesterday.
        _source("203.0.113.9", report(40)),
        _source("198.51.100.7", report(15, "5")),
        # TLS: 95 sessions fine, 5 with an expired certificate: 5 %.
        {"series": f'mail_tlsrpt_sessions_total{{domain="example.com",policy_type="sts",'
                   f'result="success",{HOST}}}', "values": report(95)},
        {"series": f'mail_tlsrpt_sessions_total{{domain="example.com",policy_type="sts",'
                   f'result="certificate-expired",{HOST}}}', "values": report(5)},
        # The backup reported success at 90,000 s, 30 minutes before the evaluation, and
        # a failure 1,000 s later.
        {"series": f'mail_notification_last_timestamp_seconds{{rule="nightly-backup",'
                   f'status="success",{HOST}}}', "values": f"_x1500 90000x{minutes - 1500}"},
        {"series": f'mail_notification_last_timestamp_seconds{{rule="nightly-backup",'
                   f'status="failure",{HOST}}}', "values": f"_x1520 91000x{minutes - 1520}"},
        {"series": f'mail_exporter_collector_success{{collector="reports",{HOST}}}',
         "values": f"1x{minutes}"},
    ]  # fmt: skip
    domain = '{domain="example.com"}'
    # increase() extrapolates a little past the samples: counts are compared in whole
    # messages, shares to a thousandth.
    share, whole = 0.001, 1.0
    expected: dict[tuple[str, str], tuple[float, dict[str, float]]] = {
        ("Mail reported (1d)", "{{domain}}"): (whole, {domain: 300}),
        ("Failing DMARC", "{{domain}}"): (share, {domain: 50 / 300}),
        ("New unaligned sources", ""): (whole, {"{}": 1}),
        ("TLS sessions failed", "{{domain}}"): (share, {domain: 0.05}),
        ("Last success", "{{rule}}"): (whole, {
            '{instance="mailhost:9469",rule="nightly-backup"}': 1800}),
        ("Last report of each rule", ""): (whole, {
            f'{{{HOST},rule="nightly-backup",status="failure"}}': 800}),
        ("Alignment (last 1d)", "{{domain}} DKIM and SPF"): (share, {domain: 200 / 300}),
        ("Alignment (last 1d)", "{{domain}} DKIM only"): (share, {domain: 50 / 300}),
        ("Alignment (last 1d)", "{{domain}} neither: fails DMARC"): (share, {domain: 50 / 300}),
        ("Top unaligned sources", "{{source}} ({{domain}})"): (whole, {
            '{domain="example.com",source="203.0.113.9"}': 40,
            '{domain="example.com",source="198.51.100.7"}': 10}),
    }  # fmt: skip
    values = {**GRAFANA_VARIABLES, "__range": "1h", "domain": ".*", "instance": ".*"}
    board = generated()["mail-reports.json"]
    found = {
        (panel["title"], target["legendFormat"].replace("__auto", "")):
            substitute(target["expr"], values)
        for panel in board["panels"] if panel["type"] != "row"
        for target in panel["targets"]
    }  # fmt: skip
    assert set(expected) <= set(found), sorted(set(expected) - set(found))
    tests = [
        {
            "expr": f"round({found[key]}, {precision:g})",
            "eval_time": f"{minutes}m",
            "exp_samples": [
                {"labels": labels, "value": round(value / precision) * precision}
                for labels, value in want.items()
            ],
        }
        for key, (precision, want) in expected.items()
    ]
    case = {"interval": "1m", "input_series": series, "promql_expr_test": tests}
    run_rule_tests({"rule_files": [], "tests": [case]}, tmp_path)


def test_the_overview_links_each_domain_to_the_reports_dashboard() -> None:
    """The overview's DMARC and TLS-RPT figures open the reports dashboard on their domain."""
    overview = generated()["mail-overview.json"]
    linked = {
        panel["title"]: link["url"]
        for panel in overview["panels"]
        if panel["type"] != "row"
        for link in panel["fieldConfig"]["defaults"]["links"]
        if "/d/mail-reports/" in link["url"]
    }
    assert set(linked) == {"Failing DMARC", "TLS sessions failed"}
    assert "mail-reports.json" in generated()
    for url in linked.values():
        assert "var-domain=${__field.labels.domain}" in url, url
