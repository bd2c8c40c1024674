"""The demo's configs: the exporter's (every TLS mode, a round trip, the queue, the logs),
Prometheus' with the shipped rules made quick, and Alertmanager's with the shipped route.

The rules are the mixin's own (:func:`mixin.rules.rules_file` with the shipped thresholds);
only each rule's ``for:`` is capped at :data:`DEMO_FOR`, so that a break shows its alert
within a minute or so instead of after the minutes to hours a real site wants. The demo
writes them into its own directory, never over ``alerting/``.

Alertmanager gets the shipped route tree and inhibit rules with shorter waits, and every
shipped receiver (PagerDuty, Slack, mail) replaced by one webhook of the same name that
prints what it receives, so the notifications show which receiver a real site would page.
"""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import yaml

from mail_exporter.durations import format_duration, parse_duration
from mixin import rules
from mixin.config import CONFIG
from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import PKI
from tests.realservers.postfix import Postfix

ALERTING = Path(__file__).resolve().parent.parent / "alerting"
DEMO_FOR = "30s"
"""The longest ``for:`` of any demo rule."""
SCRAPE_INTERVAL = "5s"
"""Prometheus' scrape and rule evaluation interval, and the exporter's probe interval."""
GROUP_WAIT = "5s"
GROUP_INTERVAL = "15s"
ROUTE = "local-loop"
"""The round trip: submission with a login, then the mailbox over IMAPS."""
PASSWORD_FILE = "probe.pass"


def _write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document, indent=2))  # JSON is YAML
    return path


def exporter_config(directory: Path, pki: PKI, postfix: Postfix, dovecot: Dovecot) -> Path:
    """Targets for each of Postfix's and Dovecot's listeners (TLS none, STARTTLS and
    implicit; logins where the server takes them), the round trip, and the postfix_queue
    and logs collectors on the instance's queue and both servers' logs."""
    (directory / PASSWORD_FILE).write_text(dovecot.password)
    tls = {"ca_file": str(pki.ca_file)}
    auth = {"username": dovecot.user, "password_file": PASSWORD_FILE}
    modules = {
        # Port 25: STARTTLS if offered, as a sending MTA takes it.
        "smtp": {"protocol": "smtp", "tls": "starttls", "require_tls": False, "tls_config": tls},
        "submission": {"protocol": "smtp", "tls": "starttls", "auth": auth, "tls_config": tls},
        "submissions": {"protocol": "smtp", "tls": "implicit", "auth": auth, "tls_config": tls},
        "imap_plain": {"protocol": "imap", "tls": "none"},
        "imap": {"protocol": "imap", "tls": "starttls", "auth": auth, "tls_config": tls},
        "imaps": {"protocol": "imap", "tls": "implicit", "auth": auth, "tls_config": tls},
        "pop3": {"protocol": "pop3", "tls": "starttls", "auth": auth, "tls_config": tls},
        "pop3s": {"protocol": "pop3", "tls": "implicit", "auth": auth, "tls_config": tls},
    }
    ports = {
        "smtp": postfix.smtp_port, "submission": postfix.submission_port,
        "submissions": postfix.smtps_port, "imap_plain": dovecot.imap_port,
        "imap": dovecot.imap_port, "imaps": dovecot.imaps_port, "pop3": dovecot.pop3_port,
        "pop3s": dovecot.pop3s_port,
    }  # fmt: skip
    return _write(directory / "mail_exporter.yml", {
        "global": {"interval": SCRAPE_INTERVAL},
        "modules": modules,
        "targets": [
            {"name": name, "address": f"127.0.0.1:{port}", "module": name}
            for name, port in ports.items()
        ],
        "roundtrip": [{
            "name": ROUTE, "interval": "15s", "timeout": "30s",
            "send": {"address": f"127.0.0.1:{postfix.submission_port}", "module": "submission",
                     "from": dovecot.user, "to": dovecot.user},
            "receive": {"address": f"127.0.0.1:{dovecot.imaps_port}", "module": "imaps",
                        "mailbox": "INBOX"},
        }],
        "collectors": {
            "postfix_queue": {"enabled": True, "instances": [
                {"name": "demo", "config_directory": str(postfix.config_dir)}]},
            "logs": {"enabled": True, "sources": [
                {"path": str(postfix.log_path)},
                {"path": str(dovecot.log_path), "format": "dovecot"}]},
        },
    })  # fmt: skip


def rules_file(directory: Path) -> Path:
    """The shipped rules with every ``for:`` capped at :data:`DEMO_FOR`: in the mixin's
    config, so that descriptions quoting a duration say the demo's, then in the rules
    that set their own."""
    cap = parse_duration(DEMO_FOR)
    shorter: dict[str, Any] = {
        field.name: DEMO_FOR
        for field in fields(CONFIG)
        if field.name.endswith("_for") and parse_duration(getattr(CONFIG, field.name)) > cap
    }
    document = rules.rules_file(replace(CONFIG, **shorter))
    for group in document["groups"]:
        for rule in group["rules"]:
            if "for" in rule and parse_duration(rule["for"]) > cap:
                rule["for"] = format_duration(cap)
    path = directory / rules.RULES_FILE
    path.write_text(
        "# The demo's copy of alerting/"
        + rules.RULES_FILE
        + f" with every for: capped at {DEMO_FOR}.\n"
        + yaml.safe_dump(document, sort_keys=False, width=120, allow_unicode=True)
    )
    return path


def _shorten_waits(route: dict[str, Any]) -> dict[str, Any]:
    shorter = {**route}
    if "group_wait" in shorter:
        shorter["group_wait"] = GROUP_WAIT
    if "group_interval" in shorter:
        shorter["group_interval"] = GROUP_INTERVAL
    if "routes" in shorter:
        shorter["routes"] = [_shorten_waits(child) for child in shorter["routes"]]
    return shorter


def alertmanager_config(directory: Path, webhook_url: str) -> Path:
    """The shipped route tree and inhibit rules; each receiver a webhook to ``webhook_url``.
    The shipped ``global`` section is left out: it names secret files a demo has not."""
    shipped = yaml.safe_load((ALERTING / "alertmanager.yml").read_text())
    return _write(directory / "alertmanager.yml", {
        "route": _shorten_waits(shipped["route"]),
        "inhibit_rules": shipped["inhibit_rules"],
        "receivers": [
            {"name": receiver["name"],
             "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}
            for receiver in shipped["receivers"]
        ],
    })  # fmt: skip


def prometheus_config(
    directory: Path, rules_path: Path, exporter_port: int, alertmanager_port: int
) -> Path:
    """One job named ``mail`` (the name MailExporterDown watches by default)."""
    return _write(directory / "prometheus.yml", {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(rules_path)],
        "alerting": {"alertmanagers": [
            {"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]},
        "scrape_configs": [
            {"job_name": "mail", "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]}],
    })  # fmt: skip
