"""End to end: real Dovecot, the exporter, Prometheus with the shipped rules, Alertmanager, a webhook.

Stopping Dovecot must bring MailProbeDown to the webhook with its labels and annotations,
and starting it again the resolved notification. Only the rule's ``for`` is shortened
(seconds instead of minutes); everything else is the shipped rules file.

A real Alertmanager with the shipped route tree and inhibit rules must hold back exactly
the alerts they mean to: the outage hides a slow probe, never the alert naming its cause.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixin import config as mixin_config
from mixin import rules
from mixin.generate import write_rules
from tests.promtool import ALERTING
from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import PKI
from tests.served import served_alertmanager, served_exporter, served_prometheus

pytestmark = pytest.mark.integration

DEADLINE_SECONDS = 60


class Webhook:
    """Records every notification Alertmanager posts."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        received = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, status: str) -> list[dict[str, Any]]:
        return [a for n in self.notifications for a in n["alerts"] if a["status"] == status]


def wait_for(check: Callable[[], bool], what: str, timeout: float = DEADLINE_SECONDS) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.25)
    pytest.fail(f"{what} did not happen within {timeout:.0f}s")


def write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document))  # JSON is YAML
    return path


def test_probe_down_alert_is_delivered_and_resolved(
    tmp_path: Path, pki: PKI, exit_stack: ExitStack
) -> None:
    (tmp_path / "dovecot").mkdir()
    dovecot = Dovecot(tmp_path / "dovecot", pki.server_cert, pki.server_key)
    dovecot.start()
    try:
        run_stack(tmp_path, pki, dovecot, exit_stack)
    finally:
        dovecot.stop()


def run_stack(tmp_path: Path, pki: PKI, dovecot: Dovecot, stack: ExitStack) -> None:
    webhook = Webhook()
    exporter_config = write(tmp_path / "exporter.yml", {
        "global": {"interval": "1s"},
        "modules": {"imaps": {"protocol": "imap", "tls": "implicit", "timeout": "1s",
                              "tls_config": {"ca_file": str(pki.ca_file)}}},
        "targets": [{"name": "store", "address": f"127.0.0.1:{dovecot.imaps_port}", "module": "imaps"}],
    })  # fmt: skip
    exporter = stack.enter_context(served_exporter(tmp_path, exporter_config))
    # The shipped rules, with the outage noticed after seconds instead of minutes.
    write_rules(tmp_path, replace(mixin_config.CONFIG, probe_down_for="3s"))
    alertmanager_config = write(tmp_path / "alertmanager.yml", {
        "route": {"receiver": "webhook", "group_by": ["alertname", "instance", "target"],
                  "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "webhook", "webhook_configs": [
            {"url": f"http://127.0.0.1:{webhook.port}/", "send_resolved": True}]}],
    })  # fmt: skip
    alertmanager = stack.enter_context(served_alertmanager(tmp_path, alertmanager_config))
    # Written once the exporter and Alertmanager hold the ports it names (tests/served.py).
    prometheus_config = write(tmp_path / "prometheus.yml", {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "alerting" / rules.RULES_FILE)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager.port}"]}]}]},
        "scrape_configs": [{"job_name": "mail", "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}]}],
    })  # fmt: skip
    prometheus = stack.enter_context(
        served_prometheus(tmp_path, prometheus_config, "--rules.alert.resend-delay=1s")
    )
    wait_for(
        lambda: probe_success(prometheus.port) == 1.0, "a first successful probe in Prometheus"
    )

    dovecot.stop()
    took = wait_for(lambda: any(a["labels"]["alertname"] == "MailProbeDown" for a in webhook.alerts("firing")),
                    "the MailProbeDown notification")  # fmt: skip
    alert = next(a for a in webhook.alerts("firing") if a["labels"]["alertname"] == "MailProbeDown")
    assert {k: alert["labels"][k] for k in ("target", "module", "protocol", "severity", "job")} == {
        "target": "store", "module": "imaps", "protocol": "imap", "severity": "critical", "job": "mail",
    }  # fmt: skip
    assert alert["annotations"]["summary"] == "A mail service does not answer its probe."
    # The phase and reason come from mail_probe_failure_info, queried as the alert renders.
    assert alert["annotations"]["description"] == (
        "imap on store (imaps) has failed its probe for 3s: connect in the connect phase."
    )
    assert alert["annotations"]["runbook_url"].endswith("#mailprobedown")
    assert took < DEADLINE_SECONDS

    dovecot.start()
    wait_for(lambda: any(a["labels"]["alertname"] == "MailProbeDown" for a in webhook.alerts("resolved")),
             "the resolved notification")  # fmt: skip


def probe_success(port: int) -> float | None:
    url = f"http://127.0.0.1:{port}/api/v1/query?query=mail_probe_success"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            result = json.load(response)["data"]["result"]
    except OSError:
        return None
    return float(result[0]["value"][1]) if result else None


def post_alerts(url: str, alerts: list[dict[str, str]]) -> None:
    body = json.dumps([{"labels": labels} for labels in alerts]).encode()
    request = urllib.request.Request(
        f"{url}/api/v2/alerts", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def inhibitors(url: str) -> dict[tuple[str, str, str], set[str]]:
    """Each alert (alertname, target, severity): the alertnames of the alerts inhibiting it."""
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as response:
        alerts = json.load(response)
    names = {a["fingerprint"]: a["labels"]["alertname"] for a in alerts}
    return {
        (a["labels"]["alertname"], a["labels"].get("target", ""), a["labels"]["severity"]):
            {names.get(fingerprint, fingerprint) for fingerprint in a["status"]["inhibitedBy"]}
        for a in alerts
    }  # fmt: skip


def alert(
    name: str, severity: str, target: str = "", instance: str = "mailhost:9469"
) -> dict[str, str]:
    labels = {"alertname": name, "severity": severity, "instance": instance, "job": "mail"}
    return {**labels, "target": target} if target else labels


def test_shipped_inhibitions_hide_noise_but_never_the_cause(
    tmp_path: Path, exit_stack: ExitStack
) -> None:
    shipped = yaml.safe_load((ALERTING / "alertmanager.yml").read_text())
    webhook = Webhook()
    # The shipped route tree and inhibit rules verbatim; receivers of the same names that
    # post to the test's webhook instead of PagerDuty, Slack and a mail relay.
    config = {
        "route": shipped["route"],
        "inhibit_rules": shipped["inhibit_rules"],
        "receivers": [
            {"name": receiver["name"], "webhook_configs": [{"url": f"http://127.0.0.1:{webhook.port}/"}]}
            for receiver in shipped["receivers"]
        ],
    }  # fmt: skip
    config_file = write(tmp_path / "alertmanager.yml", config)
    alertmanager = exit_stack.enter_context(served_alertmanager(tmp_path, config_file))
    url = f"http://127.0.0.1:{alertmanager.port}"
    # Each target is one case. The alerts that must stay visible go first, in a request of
    # their own: once the later ones show as inhibited, Alertmanager has seen them all.
    post_alerts(url, [
        alert("MailProbeDown", "critical", "login"), alert("MailLoginFailing", "critical", "login"),
        alert("MailProbeDown", "critical", "starttls"), alert("MailStartTLSMissing", "critical", "starttls"),
        alert("MailProbeDown", "critical", "cert"), alert("MailCertificateNotVerified", "critical", "cert"),
        alert("MailCertificateExpiring", "warning", "cert"),
    ])  # fmt: skip
    post_alerts(url, [
        alert("MailProbeDown", "critical", "slow"), alert("MailProbeSlow", "warning", "slow"),
        alert("MailProbeDown", "critical", "old-tls"), alert("MailTLSVersionOld", "warning", "old-tls"),
        alert("MailCertificateNotVerified", "critical", "both"),
        alert("MailCertificateNotVerified", "warning", "both"),
        alert("MailExporterDown", "critical", instance="gone:9469"),
        alert("MailQueueDeferredHigh", "warning", instance="gone:9469"),
        alert("MailProbeDown", "critical", "mx1", instance="gone:9469"),
    ])  # fmt: skip
    held_back = {
        ("MailProbeSlow", "slow", "warning"): {"MailProbeDown"},
        ("MailTLSVersionOld", "old-tls", "warning"): {"MailProbeDown"},
        ("MailCertificateNotVerified", "both", "warning"): {"MailCertificateNotVerified"},
        ("MailQueueDeferredHigh", "", "warning"): {"MailExporterDown"},
        ("MailProbeDown", "mx1", "critical"): {"MailExporterDown"},
    }
    wait_for(lambda: all(inhibitors(url).get(key) == by for key, by in held_back.items()),
             "the inhibitions of the later alerts")  # fmt: skip
    state = inhibitors(url)
    assert len(state) == 16
    assert {key: by for key, by in state.items() if by} == held_back
