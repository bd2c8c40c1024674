"""The demo's HTTP server on 127.0.0.1: Alertmanager's webhook receiver, and the endpoint the
``make demo-break-…`` commands post to.

``POST /alertmanager`` takes Alertmanager's webhook payload (version 4): each alert is
printed as one line and appended, as Alertmanager sent it with the receiver's name, to
``notifications.jsonl`` in the demo's directory (what the demo's test reads).
``POST /break/NAME`` runs a break (or ``repair``) in the running demo and answers with
what was done, in plain text.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

NOTIFICATIONS_FILE = "notifications.jsonl"
MAX_BODY_BYTES = 10 * 1024 * 1024
"""Alertmanager's payloads are a few KiB per alert; anything past this is refused."""


class Printer:
    """Prints the demo's lines whole from any thread and keeps each notification."""

    def __init__(self, directory: Path) -> None:
        self.notifications = directory / NOTIFICATIONS_FILE
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        with self._lock:
            print(text, flush=True)

    def notification(self, payload: dict[str, Any]) -> None:
        receiver = payload.get("receiver", "?")
        lines = [_alert_line(receiver, alert) for alert in payload.get("alerts", [])]
        with self._lock:
            with self.notifications.open("a") as kept:
                for alert in payload.get("alerts", []):
                    kept.write(json.dumps({"receiver": receiver, **alert}) + "\n")
            print("\n".join(lines), flush=True)


def _alert_line(receiver: str, alert: dict[str, Any]) -> str:
    labels, annotations = alert.get("labels", {}), alert.get("annotations", {})
    where = ", ".join(
        f"{key}={labels[key]}" for key in ("target", "route", "queue") if key in labels
    )
    text = annotations.get("description") or annotations.get("summary", "")
    return (
        f"[{alert.get('status', '?').upper()} → {receiver}] {labels.get('alertname', '?')} "
        f"({labels.get('severity', '?')}{', ' + where if where else ''}): {text}"
    )


class ControlServer:
    """The server, in a thread of its own while the context lasts; ``act(name)`` runs a
    break and returns what was done (KeyError: no such break)."""

    def __init__(self, printer: Printer, act: Callable[[str], str]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(printer, act))
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.webhook_url = f"{self.url}/alertmanager"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ControlServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(printer: Printer, act: Callable[[str], str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._answer(413, "too large\n")
                return
            body = self.rfile.read(length)
            if self.path == "/alertmanager":
                printer.notification(json.loads(body))
                self._answer(200, "")
            elif self.path.startswith("/break/"):
                self._break(self.path.removeprefix("/break/"))
            else:
                self._answer(404, "POST /alertmanager or /break/NAME\n")

        def _break(self, name: str) -> None:
            try:
                done = act(name)
            except KeyError as error:
                self._answer(404, f"{error.args[0]}\n")
                return
            except Exception as error:  # a break that failed is told to whoever asked
                self._answer(500, f"{name} failed: {error}\n")
                return
            printer.say(f"-- {done}")
            self._answer(200, done + "\n")

        def _answer(self, status: int, text: str) -> None:
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the notifications and breaks are printed; the requests would be noise

    return Handler
