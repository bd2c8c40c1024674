"""The paired exporters for real (docs/pairing.md): Debian's snmpd and snmp_exporter,
Dovecot's own stats listener and rspamd's controller, each scraped by a real Prometheus
with the guide's scrape config (only the addresses changed) and the shipped rules; the
queries of the panels that read them must return data.

Each test starts its servers on loopback ports of its own, with configs and state in its
temporary directory, and stops them. Counters need two samples apart to give a rate, so
each test keeps its server busy (scans, logins, SNMP walks) while it waits for the
panels' queries, with Prometheus scraping every second and the panels' rate window
shortened to a few seconds.
"""

from __future__ import annotations

import http.client
import imaplib
import json
import re
import smtplib
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixin import dashboards, rules
from tests.promtool import ALERTING
from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import PKI
from tests.realservers.rspamd import CONTROLLER_PASSWORD, Rspamd
from tests.realservers.snmpd import Snmpd
from tests.served import served_prometheus, served_snmp_exporter
from tests.test_dashboards import GRAFANA_VARIABLES, substitute

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
PAIRING = ROOT / "docs" / "pairing.md"
DEPLOY = ROOT / "deploy" / "pairing"
DEADLINE_SECONDS = 60.0
MAIL_HOST = "mailhost:9469"  # the mail_host the guide's snmp config gives the port
VARIABLES = {**GRAFANA_VARIABLES, "__rate_interval": "10s", "instance": MAIL_HOST, "mta": ".*"}


# --- The guide --------------------------------------------------------------------------


def guide_block(marker: str) -> str:
    """The code block after ``<!-- marker -->`` in docs/pairing.md."""
    text = PAIRING.read_text(encoding="utf-8")
    after = text.split(f"<!-- {marker} -->\n", 1)[1]
    assert after.startswith("```"), marker
    return after.split("\n", 1)[1].split("\n```", 1)[0] + "\n"


def scrape_job(name: str) -> dict[str, Any]:
    [job] = yaml.safe_load(guide_block(f"scrape config: {name}"))["scrape_configs"]
    assert job["job_name"] == name
    return dict(job)


def with_target(job: dict[str, Any], target: str) -> dict[str, Any]:
    """The job with its one static target replaced (the address is all the test changes)."""
    [static] = job["static_configs"]
    assert len(static["targets"]) == 1
    return {**job, "static_configs": [{**static, "targets": [target]}]}


# --- Prometheus -------------------------------------------------------------------------


def prometheus(stack: ExitStack, directory: Path, *jobs: dict[str, Any]) -> int:
    """A Prometheus scraping ``jobs`` every second with the shipped rules; its port."""
    config = directory / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTING / rules.RULES_FILE)],
        "scrape_configs": list(jobs),
    }))  # fmt: skip
    return stack.enter_context(served_prometheus(directory, config)).port


def query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def row_queries(board: str, row: str) -> list[tuple[str, str]]:
    """(panel title, expression) of every query of a dashboard row, variables filled in."""
    panels = dashboards.dashboards()[board]["panels"]
    start = next(i for i, panel in enumerate(panels) if panel["title"] == row)
    # A collapsed row holds its panels; an open one is followed by them.
    after = panels[start + 1 :]
    end = next((i for i, panel in enumerate(after) if panel["type"] == "row"), len(after))
    inside = panels[start].get("panels") or after[:end]
    return [
        (panel["title"], substitute(target["expr"], VARIABLES))
        for panel in inside
        for target in panel["targets"]
    ]


# A mail_exporter series in a query (not the `mail_host` label of the switch ports).
MAIL_EXPORTER_SERIES = re.compile(r"\bmail_\w+[{\[]")


def paired_queries(board: str, row: str) -> list[tuple[str, str]]:
    """The row's queries of the paired exporter alone: mail_exporter does not run here."""
    return [(t, e) for t, e in row_queries(board, row) if not MAIL_EXPORTER_SERIES.search(e)]


def answers(port: int, expr: str) -> bool:
    """Whether ``expr`` returns data; one that keeps only values above 0 (errors, say)
    counts when its series are there without that filter."""
    if query(port, expr):
        return True
    return expr.endswith(" > 0") and bool(query(port, expr.removesuffix(" > 0")))


def wait_for_panels(
    port: int, queries: list[tuple[str, str]], keep_busy: Callable[[], None]
) -> None:
    """Until every query returns data, calling ``keep_busy`` between tries."""
    pending = queries
    deadline = time.monotonic() + DEADLINE_SECONDS
    while pending and time.monotonic() < deadline:
        keep_busy()
        pending = [(title, expr) for title, expr in pending if not answers(port, expr)]
        time.sleep(0.5)
    assert not pending, "no data for:\n" + "\n".join(f"{t}: {e}" for t, e in pending)


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as exits:
        yield exits


# --- Switch ports -----------------------------------------------------------------------


def test_switch_port_panels_show_the_loopback_interface(tmp_path: Path, stack: ExitStack) -> None:
    snmpd = Snmpd(tmp_path / "snmpd")
    snmpd.start()
    stack.callback(snmpd.stop)
    snmp_config = tmp_path / "snmp.yml"
    snmp_config.write_text(
        (DEPLOY / "snmp.yml")
        .read_text()
        .replace("community: public", f"community: {snmpd.community}")
    )
    exporter = stack.enter_context(served_snmp_exporter(tmp_path, snmp_config))
    job = with_target(scrape_job("snmp"), snmpd.address)
    relabel = job["relabel_configs"]
    assert relabel[-1]["replacement"] == "127.0.0.1:9116"
    relabel[-1] = {**relabel[-1], "replacement": f"127.0.0.1:{exporter.port}"}
    [mapping] = job["metric_relabel_configs"]
    assert mapping["replacement"] == MAIL_HOST
    job["metric_relabel_configs"] = [{**mapping, "regex": f"{re.escape(snmpd.address)};lo"}]
    port = prometheus(stack, tmp_path, job)

    queries = paired_queries("mail-host.json", "Switch port")
    assert len(queries) >= 8, queries
    wait_for_panels(port, queries, lambda: None)
    [status] = query(port, f'ifOperStatus{{mail_host="{MAIL_HOST}"}}')
    assert status["metric"]["ifName"] == "lo" and status["value"][1] == "1"
    [speed] = query(port, f'ifHighSpeed{{mail_host="{MAIL_HOST}"}}')
    assert speed["value"][1] == "10"  # Linux reports 10 Mb/s for lo
    # Only the mapped port is the mail host's.
    assert len(query(port, 'ifOperStatus{mail_host=""}')) >= 1


# --- Dovecot ----------------------------------------------------------------------------


def test_dovecot_panels_show_its_own_counters(tmp_path: Path, pki: PKI, stack: ExitStack) -> None:
    snippet = (DEPLOY / "dovecot-metrics.conf").read_text()
    assert snippet.count("port = 9900") == 1
    dovecot = Dovecot(
        tmp_path / "dovecot", pki.server_cert, pki.server_key,
        native_metrics=snippet.replace("port = 9900", "port = {stats_port}"),
    )  # fmt: skip
    dovecot.start()
    stack.callback(dovecot.stop)
    guide = scrape_job("dovecot")
    assert guide["static_configs"][0]["targets"] == ["mailhost.example.com:9900"]
    port = prometheus(stack, tmp_path, with_target(guide, f"127.0.0.1:{dovecot.stats_port}"))

    def keep_busy() -> None:
        with imaplib.IMAP4("127.0.0.1", dovecot.imap_port, timeout=10) as imap:
            imap.login(dovecot.user, dovecot.password)
            imap.select("INBOX")
            imap.select("No-Such-Folder")  # a NO reply
        with (
            imaplib.IMAP4("127.0.0.1", dovecot.imap_port, timeout=10) as imap,
            pytest.raises(imaplib.IMAP4.error),
        ):
            imap.login(dovecot.user, "wrong password")
        with smtplib.LMTP("127.0.0.1", dovecot.lmtp_port, timeout=10) as lmtp:
            lmtp.sendmail("sender@example.com", [dovecot.user], b"Subject: hi\r\n\r\nhello\r\n")

    queries = paired_queries("mail-delivery.json", "Dovecot's own counters")
    assert len(queries) >= 7, queries
    wait_for_panels(port, queries, keep_busy)
    per_command = query(port, 'dovecot_imap_command_total{tagged_reply_state=""}')
    assert {s["metric"]["cmd_name"] for s in per_command} >= {"SELECT", "LOGOUT"}


# --- rspamd -----------------------------------------------------------------------------

HAM = (
    b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: lunch\r\n"
    b"Message-ID: <lunch@example.com>\r\nDate: Sun, 06 Dec 2026 12:00:00 +0000\r\n\r\n"
    b"Noon at the usual place?\r\n"
)
# The GTUBE line, which rspamd rejects whatever else it sees.
SPAM = (
    b"From: bulk@example.com\r\nTo: bob@example.org\r\nSubject: offer\r\n\r\n"
    b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"
)


def scan(rspamd: Rspamd, message: bytes) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{rspamd.normal_port}/checkv2", data=message, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(json.load(response)["action"])


def metrics_over_ipv6(rspamd: Rspamd, headers: dict[str, str]) -> tuple[int, str]:
    """The controller's /metrics asked from ::1: its status, and its body when 200."""
    connection = http.client.HTTPConnection("::1", rspamd.controller_port, timeout=10)
    try:
        connection.request("GET", "/metrics", headers=headers)
        response = connection.getresponse()
        body = response.read().decode()
        return response.status, body if response.status == 200 else ""
    finally:
        connection.close()


def test_rspamd_metrics_reach_prometheus_through_the_guide(
    tmp_path: Path, stack: ExitStack
) -> None:
    controller = guide_block("rspamd controller")
    assert '"192.0.2.10"' in controller
    # Prometheus scrapes from 127.0.0.1 here: that is the address secure_ip must name.
    rspamd = Rspamd(tmp_path / "rspamd", controller.replace("192.0.2.10", "127.0.0.1"))
    rspamd.start()
    stack.callback(rspamd.stop)
    # From elsewhere (::1 is not in this secure_ip) /metrics wants the password.
    assert metrics_over_ipv6(rspamd, {}) == (401, "")
    status, body = metrics_over_ipv6(rspamd, {"Password": CONTROLLER_PASSWORD})
    assert status == 200 and "rspamd_scanned_total" in body
    guide = scrape_job("rspamd")
    assert guide["static_configs"][0]["targets"] == ["mailhost.example.com:11334"]
    port = prometheus(stack, tmp_path, with_target(guide, f"127.0.0.1:{rspamd.controller_port}"))
    assert scan(rspamd, SPAM) == "reject"
    assert scan(rspamd, HAM) == "no action"

    def keep_busy() -> None:
        scan(rspamd, SPAM)
        scan(rspamd, HAM)

    queries = paired_queries("mail-delivery.json", "Spam filter effectiveness (rspamd)")
    assert len(queries) >= 5, queries
    wait_for_panels(port, queries, keep_busy)
    [rejected] = query(port, 'rspamd_actions_total{type="reject"}')
    assert float(rejected["value"][1]) >= 1
