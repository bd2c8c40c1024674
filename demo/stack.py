"""The running demo: the test suite's Postfix and Dovecot, the exporter, Prometheus,
Alertmanager and the demo's own HTTP server (the webhook and the break commands).

Everything is entered into one :class:`contextlib.ExitStack` in the order each needs the
others (the servers before the exporter that probes them, Alertmanager and the exporter
before the Prometheus whose config names their ports), so leaving the stack stops it all
in reverse order, whatever stopped the demo. Breaks run in the HTTP server's thread and
take :attr:`Demo.lock`, as does the stop, so a break never races the teardown.
"""

from __future__ import annotations

import json
import smtplib
import subprocess
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from demo import configs
from demo.control import ControlServer, Printer
from mixin.config import CONFIG
from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import create_pki
from tests.realservers.postfix import Postfix
from tests.realservers.programs import (
    Served,
    exporter_command,
    served_alertmanager,
    served_program,
    served_prometheus,
)
from tests.realservers.runtime import http_ok

STATE_FILE = "demo.json"
CERTIFICATE_DAYS = 365
"""The servers' certificate: far from the expiry alerts' thresholds."""
QUEUE_FILL = CONFIG.queue_deferred_critical + 5
"""Messages the queue break sends: past the deferred queue's critical threshold."""
PROMETHEUS_ALERT_PAGES = ("/alerts", "/classic/alerts")
UNREACHABLE_DOMAIN = "elsewhere.example"
"""Mail for it goes to Postfix's relayhost, a port that refuses: it stays deferred."""


@dataclass(frozen=True)
class Break:
    description: str
    expect: str


BREAKS = {
    "dovecot": Break(
        "stop Dovecot",
        "MailProbeDown for the IMAP and POP3 targets and for submission (Postfix's logins "
        "go through Dovecot), and MailRoundTripFailing",
    ),
    "queue": Break(
        f"send {QUEUE_FILL} messages to {UNREACHABLE_DOMAIN}, whose server refuses",
        "MailQueueDeferredHigh, warning then critical",
    ),
}


class Demo:
    """The started stack; :meth:`start` enters every part into ``stack``."""

    def __init__(self, directory: Path, printer: Printer) -> None:
        self.directory = directory
        self.printer = printer
        self.lock = threading.Lock()
        self.dovecot_stopped = False

    def start(self, stack: ExitStack) -> None:
        directory = self.directory
        pki = create_pki(_subdirectory(directory, "pki"), server_days=CERTIFICATE_DAYS)
        self.dovecot = Dovecot(directory / "dovecot", pki.server_cert, pki.server_key)
        self.dovecot.start()
        stack.callback(self._stop_dovecot)
        self.postfix = Postfix(
            directory / "postfix", pki.server_cert, pki.server_key,
            dovecot_auth_port=self.dovecot.auth_port, dovecot_lmtp_port=self.dovecot.lmtp_port,
        )  # fmt: skip
        self.postfix.start()
        stack.callback(self.postfix.stop)
        self.ca_file = pki.ca_file

        control = stack.enter_context(ControlServer(self.printer, self.act))
        exporter_config = configs.exporter_config(directory, pki, self.postfix, self.dovecot)
        exporter_dir = _subdirectory(directory, "exporter")
        self.exporter = stack.enter_context(served_program(
            exporter_dir, "exporter", lambda port: exporter_command(exporter_config, port),
            ready_path="/-/healthy",
        ))  # fmt: skip
        alertmanager_dir = _subdirectory(directory, "alertmanager")
        self.alertmanager = stack.enter_context(served_alertmanager(
            alertmanager_dir, configs.alertmanager_config(alertmanager_dir, control.webhook_url)
        ))  # fmt: skip
        prometheus_dir = _subdirectory(directory, "prometheus")
        prometheus_config = configs.prometheus_config(
            prometheus_dir, configs.rules_file(prometheus_dir),
            self.exporter.port, self.alertmanager.port,
        )  # fmt: skip
        self.prometheus = stack.enter_context(served_prometheus(prometheus_dir, prometheus_config))
        # Debian's Prometheus has only the classic web UI, under /classic/.
        self.prometheus_alerts = next(
            (path for path in PROMETHEUS_ALERT_PAGES
             if http_ok(f"http://127.0.0.1:{self.prometheus.port}{path}")),
            "/",
        )  # fmt: skip
        self.control = control
        # Run first when the stack is left: the stop waits for a break in progress, and no
        # break starts once the teardown has begun.
        stack.callback(self.lock.acquire)

    def act(self, name: str) -> str:
        """Run the break ``name`` or ``repair``; what was done and what to expect."""
        actions: dict[str, Callable[[], str]] = {
            "dovecot": self._break_dovecot, "queue": self._fill_queue, "repair": self._repair,
        }  # fmt: skip
        if name not in actions:
            raise KeyError(f"no such break: {name} (breaks: {', '.join(BREAKS)})")
        with self.lock:
            done = actions[name]()
            self.write_state()
        return done

    def _break_dovecot(self) -> str:
        if not self.dovecot_stopped:
            self.dovecot.stop()
            self.dovecot_stopped = True
        return _broken("dovecot")

    def _stop_dovecot(self) -> None:
        if not self.dovecot_stopped:
            self.dovecot.stop()

    def _fill_queue(self) -> str:
        with smtplib.SMTP("127.0.0.1", self.postfix.smtp_port, "localhost", timeout=30) as smtp:
            for number in range(QUEUE_FILL):
                message = EmailMessage()
                message["From"] = self.dovecot.user
                message["To"] = f"nobody@{UNREACHABLE_DOMAIN}"
                message["Subject"] = f"demo queue fill {number + 1}/{QUEUE_FILL}"
                message.set_content("This message waits for a server that never answers.\n")
                smtp.send_message(message)
        return _broken("queue")

    def _repair(self) -> str:
        if self.dovecot_stopped:
            self.dovecot.start()
            self.dovecot_stopped = False
        subprocess.run(
            ["postsuper", "-c", str(self.postfix.config_dir), "-d", "ALL", "deferred"],
            capture_output=True, check=True, timeout=30,
        )  # fmt: skip
        return "Dovecot runs and the deferred queue is empty: expect the resolved notifications."

    def sessions(self) -> dict[str, int]:
        """The session of each mail server's processes (each master leads its own)."""
        found = {"postfix": int((self.postfix.queue_dir / "pid" / "master.pid").read_text())}
        if not self.dovecot_stopped:
            run_dir = self.dovecot.work_dir / "run"
            found["dovecot"] = int((run_dir / "master.pid").read_text())
        return found

    def ports(self) -> list[int]:
        """Every port the demo listens on."""
        postfix, dovecot = self.postfix, self.dovecot
        return [
            postfix.smtp_port, postfix.submission_port, postfix.smtps_port,
            dovecot.imap_port, dovecot.imaps_port, dovecot.pop3_port, dovecot.pop3s_port,
            dovecot.lmtp_port, dovecot.auth_port, self.exporter.port, self.alertmanager.port,
            self.prometheus.port, self.control.port,
        ]  # fmt: skip

    def processes(self) -> dict[str, Served]:
        return {
            "exporter": self.exporter,
            "alertmanager": self.alertmanager,
            "prometheus": self.prometheus,
        }

    def state(self, pid: int) -> dict[str, Any]:
        return {
            "pid": pid,
            "control_url": self.control.url,
            "sessions": self.sessions(),
            "pids": {name: served.process.pid for name, served in self.processes().items()},
            "ports": self.ports(),
            "urls": self.url_table(),
        }

    def write_state(self, pid: int | None = None) -> None:
        path = self.directory / STATE_FILE
        if pid is None:
            pid = json.loads(path.read_text())["pid"]
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.state(pid), indent=2))
        temporary.replace(path)

    def url_table(self) -> dict[str, str]:
        def url(port: int, path: str = "/") -> str:
            return f"http://127.0.0.1:{port}{path}"

        return {
            "status page": url(self.exporter.port),
            "metrics": url(self.exporter.port, "/metrics"),
            "Prometheus alerts": url(self.prometheus.port, self.prometheus_alerts),
            "Alertmanager": url(self.alertmanager.port),
            "webhook": self.control.webhook_url,
        }

    def banner(self) -> str:
        postfix, dovecot = self.postfix, self.dovecot
        lines = [
            f"The mail_exporter demo runs on 127.0.0.1, its files in {self.directory}:",
            *(f"  {name:<18}{url}" for name, url in self.url_table().items()),
            f"  {'Postfix':<18}smtp {postfix.smtp_port} (STARTTLS), submission "
            f"{postfix.submission_port}, smtps {postfix.smtps_port}",
            f"  {'Dovecot':<18}imap {dovecot.imap_port}, imaps {dovecot.imaps_port}, pop3 "
            f"{dovecot.pop3_port}, pop3s {dovecot.pop3s_port} "
            f"(user {dovecot.user}, password {dovecot.password})",
            f"  {'CA certificate':<18}{self.ca_file}",
            f"Alerts fire after at most {configs.DEMO_FOR} (a real site waits minutes); "
            "notifications are printed here. MailPlaintextLoginOffered comes first: Dovecot "
            "offers logins without TLS to clients on its own address.",
            "Break something:",
            *(f"  {'make demo-break-' + name:<26}{b.description}" for name, b in BREAKS.items()),
            f"  {'make demo-repair':<26}undo the breaks",
            f"  {'make demo-stop':<26}(or Ctrl-C) stop everything and remove its files",
        ]
        return "\n".join(lines)


def _broken(name: str) -> str:
    done = BREAKS[name]
    return f"Done: {done.description}. Expect {done.expect} within a minute or two."


def _subdirectory(directory: Path, name: str) -> Path:
    path = directory / name
    path.mkdir()
    return path
