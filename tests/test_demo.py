"""The local demo through its make targets: ``make demo`` starts everything, two
``make demo-break-…`` bring their alerts to the webhook, ``make demo-stop`` leaves no
process, no listening port and no file behind.

Only hang guards bound the waits: the demo's rules fire after 30 s, and the whole test
takes about a minute and a half.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from demo.control import NOTIFICATIONS_FILE
from demo.stack import STATE_FILE
from tests.realservers.runtime import LOOPBACK_ADDRESSES, session_members

pytestmark = pytest.mark.integration

REPOSITORY = Path(__file__).resolve().parent.parent
START_SECONDS = 120.0
ALERT_SECONDS = 240.0
STOP_SECONDS = 60.0

T = TypeVar("T")


def make(directory: Path, target: str) -> list[str]:
    """``make TARGET`` for the demo in ``directory``, run by this interpreter's venv as it
    is (``-o``: never installed again from the test)."""
    venv = Path(sys.prefix)
    return [
        "make", "-s", "-C", str(REPOSITORY), "-o", str(venv / "bin" / ".installed"), target,
        f"DEMO_DIR={directory}", f"VENV={venv}",
    ]  # fmt: skip


def wait_for(find: Callable[[], T | None], what: str, timeout: float, log: Path) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = find()
        if found is not None:
            return found
        time.sleep(0.5)
    pytest.fail(f"{what} did not happen within {timeout:.0f}s; the demo said:\n{log.read_text()}")


def state(directory: Path) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = json.loads((directory / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return found


def firing(directory: Path) -> set[tuple[str, str, str, str]]:
    """(alertname, severity, target, receiver) of every firing notification so far."""
    path = directory / NOTIFICATIONS_FILE
    lines = path.read_text().splitlines() if path.exists() else []
    alerts = [json.loads(line) for line in lines]
    return {
        (a["labels"]["alertname"], a["labels"]["severity"], a["labels"].get("target", ""), a["receiver"])
        for a in alerts
        if a["status"] == "firing"
    }  # fmt: skip


def answers(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        return int(response.status)


def listened_on(port: int) -> bool:
    """Whether anything listens on ``port`` of a loopback address (connections left in
    TIME_WAIT do not count: SO_REUSEADDR binds beside them, never beside a listener)."""
    for address in LOOPBACK_ADDRESSES:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError:
                return True
    return False


def test_make_demo_breaks_notify_the_webhook_and_stop_leaves_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    log = tmp_path / "demo.log"
    with log.open("wb") as output:
        # A session of its own: whatever the demo starts outside its servers' own
        # sessions (the exporter, Prometheus, Alertmanager) is found in it afterwards.
        demo = subprocess.Popen(
            make(directory, "demo"), stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        started = wait_for(lambda: state(directory), "the demo's start", START_SECONDS, log)
        urls = started["urls"]
        assert answers(urls["status page"]) == 200
        assert answers(urls["Prometheus alerts"]) == 200
        assert answers(urls["Alertmanager"]) == 200
        assert "make demo-break-dovecot" in log.read_text()

        for target in ("demo-break-dovecot", "demo-break-queue"):
            done = subprocess.run(
                make(directory, target), capture_output=True, text=True, check=False, timeout=120
            )
            assert done.returncode == 0, done.stdout + done.stderr
            assert done.stdout.startswith("Done: "), done.stdout
        expected = {
            ("MailProbeDown", "critical", "imaps", "page"),
            ("MailQueueDeferredHigh", "critical", "", "page"),
        }
        wait_for(lambda: expected <= firing(directory) or None,
                 "the notifications of both breaks", ALERT_SECONDS, log)  # fmt: skip
        printed = log.read_text()
        assert "[FIRING → page] MailProbeDown (critical, target=imaps): imap on imaps" in printed
        assert "MailQueueDeferredHigh (critical, queue=deferred): postfix demo" in printed

        stopped = subprocess.run(
            make(directory, "demo-stop"), capture_output=True, text=True, check=False,
            timeout=STOP_SECONDS * 2,
        )  # fmt: skip
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert demo.wait(STOP_SECONDS) == 0, log.read_text()
    finally:
        if demo.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(demo.pid, signal.SIGTERM)
            demo.wait(STOP_SECONDS)
    assert "The demo has stopped and its files are removed." in log.read_text()
    assert not directory.exists()
    # Postfix's master and Dovecot lead sessions of their own; Dovecot's was already
    # ended by the break, the rest by the stop.
    for session in [demo.pid, *started["sessions"].values()]:
        assert session_members(session) == [], session
    assert [port for port in started["ports"] if listened_on(port)] == []
