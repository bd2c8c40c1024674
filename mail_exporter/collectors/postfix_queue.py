"""Postfix queues (maildrop, incoming, active, deferred, hold): size, bytes, age and why mail waits.

Three sources, chosen per instance in this order unless the config names one:

* ``spool``: read the queue directories directly (root or the postfix user).
  The fastest, and the only source that costs Postfix nothing while it is in
  trouble. A message's size and arrival time come from the size and time
  records at the start of its queue file; the file's mtime would be wrong (in
  the deferred queue it is the next retry time). Deferral reasons come from
  the per-message logs in ``defer/``.
* ``showq``: Postfix's own listing service on ``public/showq`` (the postdrop
  group may connect), as ``postqueue -p`` reads it. Postfix's showq process
  pays about half a CPU-second per 10,000 messages.
* ``postqueue``: ``postqueue -j``, the last resort (it asks showq too, through
  one more process).

Sample output::

    mail_queue_messages{mta="postfix",mta_instance="postfix",queue="deferred"} 3.0
    mail_queue_deferred_recipients{mta="postfix",mta_instance="postfix",reason="timed_out"} 6.0
    mail_queue_deferred_domain_recipients{mta="postfix",mta_instance="postfix",domain="a.net"} 3.0
    mail_queue_source_info{mta="postfix",mta_instance="postfix",source="spool"} 1.0
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import Metric

from mail_exporter.collectors import CollectorError, register_collector
from mail_exporter.collectors.commands import COMMAND_TIME_SHARE, run_command
from mail_exporter.collectors.queues import (
    QueueStats,
    SourceLog,
    labelled_counts,
    queue_families,
    source_info,
    top_with_other,
)
from mail_exporter.config import Config, PostfixInstance, PostfixQueueConfig

logger = logging.getLogger(__name__)

QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
SOURCES = ("spool", "showq", "postqueue")
DEFER_REASONS = ("connection_refused", "timed_out", "dns", "tls", "remote_4xx", "other")
HEAD_BYTES = 4096
"""How much of a queue file is read: the size and time records come first."""
MAX_FIELD_BYTES = 65536
"""Longest showq field or postqueue line accepted; anything longer is a broken stream."""

_REASON_PATTERNS = (
    ("tls", re.compile(r"\bTLS\b|\bSSL\b|certificate|STARTTLS", re.IGNORECASE)),
    ("connection_refused", re.compile(r"connection refused", re.IGNORECASE)),
    ("timed_out", re.compile(r"timed out|timeout", re.IGNORECASE)),
    ("dns", re.compile(r"host or domain name not found|name service error|no MX host|"
                       r"MX host .* not found|DNS", re.IGNORECASE)),
    ("remote_4xx", re.compile(r"said: 4\d\d\b")),
)  # fmt: skip


def classify_reason(reason: str) -> str:
    """One of :data:`DEFER_REASONS` for a delay reason as Postfix records it."""
    for name, pattern in _REASON_PATTERNS:
        if pattern.search(reason):
            return name
    return "other"


def recipient_domain(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(">") or "other"


@dataclass
class QueueSnapshot:
    """Everything one collection learned about one instance's queues."""

    source: str
    queues: dict[str, QueueStats] = field(default_factory=lambda: {q: QueueStats() for q in QUEUES})
    reasons: Counter[str] = field(default_factory=Counter)
    domains: Counter[str] = field(default_factory=Counter)

    def add_message(self, queue: str, size: int, arrival: float | None) -> None:
        if queue in self.queues:
            self.queues[queue].add(size, arrival)

    def add_deferral(self, recipient: str, reason: str) -> None:
        self.reasons[classify_reason(reason)] += 1
        self.domains[recipient_domain(recipient)] += 1


# --- spool ------------------------------------------------------------------------------


def _records(head: bytes) -> Iterator[tuple[str, bytes]]:
    """Postfix queue file records: a type byte, a base-128 length (low bits first), the data."""
    position = 0
    while position < len(head):
        kind = chr(head[position])
        position += 1
        length = shift = 0
        while position < len(head):
            byte = head[position]
            position += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if position + length > len(head):
            return
        yield kind, head[position : position + length]
        position += length


def read_queue_file(path: Path) -> tuple[int, float | None] | None:
    """Message size and arrival time from a queue file; ``None`` if it vanished meanwhile."""
    try:
        with path.open("rb") as queue_file:
            head = queue_file.read(HEAD_BYTES)
            file_size = os.fstat(queue_file.fileno()).st_size
    except FileNotFoundError:
        return None  # delivered or moved between listing and reading
    size: int | None = None
    arrival: float | None = None
    for kind, data in _records(head):
        if kind == "C":  # sizes: content length first, as showq and postqueue report it
            fields = data.split()
            size = int(fields[0]) if fields and fields[0].isdigit() else None
        elif kind == "T":  # arrival: "seconds [microseconds]"
            fields = data.split()
            arrival = float(fields[0]) if fields and fields[0].isdigit() else None
        elif kind in "MEN":  # message content begins: no more envelope records of interest
            break
        if size is not None and arrival is not None:
            break
    return (file_size if size is None else size), arrival


def _queue_files(directory: Path) -> Iterator[Path]:
    """Every file below a queue directory, through hashed subdirectories of any depth."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _queue_files(Path(entry.path))
        elif entry.is_file(follow_symlinks=False):
            yield Path(entry.path)


def _read_defer_log(path: Path) -> Iterator[tuple[str, str]]:
    """(recipient, reason) pairs of a per-message defer log."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return
    recipient = ""
    for line in text.splitlines():
        if line.startswith("recipient="):
            recipient = line[len("recipient=") :]
        elif line.startswith("reason=") and recipient:
            yield recipient, line[len("reason=") :]
            recipient = ""


def scan_spool(queue_directory: Path) -> QueueSnapshot:
    snapshot = QueueSnapshot("spool")
    for queue in QUEUES:
        for path in _queue_files(queue_directory / queue):
            found = read_queue_file(path)
            if found is not None:
                snapshot.add_message(queue, *found)
            if queue == "deferred":
                for recipient, reason in _read_defer_log(
                    queue_directory / "defer" / path.relative_to(queue_directory / queue)
                ):
                    snapshot.add_deferral(recipient, reason)
    return snapshot


def spool_readable(queue_directory: Path) -> bool:
    return all(os.access(queue_directory / q, os.R_OK | os.X_OK) for q in ("deferred", "active"))


# --- showq and postqueue ----------------------------------------------------------------


@dataclass
class _Listing:
    """One message of a showq or postqueue listing."""

    queue: str = ""
    size: int = 0
    arrival: float | None = None
    recipients: list[tuple[str, str]] = field(default_factory=list)

    def add_to(self, snapshot: QueueSnapshot) -> None:
        snapshot.add_message(self.queue, self.size, self.arrival)
        if self.queue == "deferred":
            for recipient, reason in self.recipients:
                if reason:
                    snapshot.add_deferral(recipient, reason)


def _showq_fields(connection: socket.socket) -> Iterator[bytes]:
    """The NUL-terminated strings of a showq stream, read in bounded chunks."""
    buffer = b""
    while True:
        chunk = connection.recv(65536)
        if not chunk:
            if buffer:
                raise CollectorError("showq stream ended in the middle of a record")
            return
        buffer += chunk
        *complete, buffer = buffer.split(b"\0")
        if len(buffer) > MAX_FIELD_BYTES:
            raise CollectorError("showq sent a field longer than 64 KiB")
        yield from complete


def parse_showq(fields: Iterable[bytes], snapshot: QueueSnapshot) -> None:
    """Fold showq's attribute stream (name, value, …, empty name ends a record) into a snapshot."""
    iterator = iter(fields)
    message = _Listing()
    for raw_name in iterator:
        if raw_name == b"":
            if message.queue:
                message.add_to(snapshot)
            message = _Listing()
            continue
        name = raw_name.decode(errors="replace")
        value = next(iterator, b"").decode(errors="replace")
        if name == "queue_name":
            message.queue = value
        elif name == "size" and value.isdigit():
            message.size = int(value)
        elif name == "time" and value.isdigit():
            message.arrival = float(value)
        elif name == "recipient":
            message.recipients.append((value, ""))
        elif name == "reason" and message.recipients:
            message.recipients[-1] = (message.recipients[-1][0], value)


def read_showq(queue_directory: Path, timeout: float) -> QueueSnapshot:
    snapshot = QueueSnapshot("showq")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout)
        connection.connect(str(queue_directory / "public" / "showq"))
        parse_showq(_showq_fields(connection), snapshot)
    return snapshot


def parse_postqueue_json(lines: Iterable[str], snapshot: QueueSnapshot) -> None:
    for line in lines:
        if not line.strip():
            continue
        record = json.loads(line)
        message = _Listing(
            queue=str(record.get("queue_name", "")),
            size=int(record.get("message_size", 0)),
            arrival=float(record["arrival_time"]) if "arrival_time" in record else None,
            recipients=[
                (str(r.get("address", "")), str(r.get("delay_reason", "")))
                for r in record.get("recipients", [])
            ],
        )
        message.add_to(snapshot)


def run_postqueue(command: str, config_directory: Path, timeout: float) -> QueueSnapshot:
    snapshot = QueueSnapshot("postqueue")
    output = run_command([command, "-c", str(config_directory), "-j"], timeout)
    try:
        parse_postqueue_json(output.splitlines(), snapshot)
    except (ValueError, TypeError) as error:
        raise CollectorError(f"{command} -j printed something else than JSON: {error}") from None
    return snapshot


# --- the collector ----------------------------------------------------------------------


def postconf_queue_directory(command: str, config_directory: Path, timeout: float) -> Path:
    output = run_command([command, "-c", str(config_directory), "-h", "queue_directory"], timeout)
    if not output.strip():
        raise CollectorError(f"{command} -c {config_directory} names no queue_directory")
    return Path(output.strip())


class PostfixQueueCollector:
    """Collects every configured Postfix instance's queues through the best source it may use."""

    def __init__(self, settings: PostfixQueueConfig) -> None:
        self.settings = settings
        self.timeout = float(settings.timeout) * COMMAND_TIME_SHARE
        self._sources = SourceLog("postfix")

    def _queue_directory(self, instance: PostfixInstance) -> Path:
        if instance.queue_directory is not None:
            return instance.queue_directory
        return postconf_queue_directory(
            self.settings.postconf_command, instance.config_directory, self.timeout
        )

    def _choose_source(self, queue_directory: Path) -> tuple[str, str]:
        """The source to use and why, for the log."""
        if self.settings.source != "auto":
            return self.settings.source, "the config says so"
        if spool_readable(queue_directory):
            return "spool", f"{queue_directory} is readable: scanning it costs Postfix nothing"
        showq = queue_directory / "public" / "showq"
        if os.access(showq, os.W_OK):
            return "showq", f"the spool is not readable but {showq} is reachable"
        return "postqueue", "neither the spool nor the showq socket is reachable"

    def snapshot(self, instance: PostfixInstance) -> QueueSnapshot:
        queue_directory = self._queue_directory(instance)
        source, why = self._choose_source(queue_directory)
        self._sources.announce(instance.name, source, why)
        try:
            if source == "spool":
                return scan_spool(queue_directory)
            if source == "showq":
                return read_showq(queue_directory, self.timeout)
        except OSError as error:
            raise CollectorError(f"postfix instance {instance.name}: {source}: {error}") from None
        command = self.settings.postqueue_command
        return run_postqueue(command, instance.config_directory, self.timeout)

    def collect(self) -> Iterable[Metric]:
        """Each instance's families; the collector set merges those of the same name."""
        now = time.time()
        for instance in self.settings.instances:
            snapshot = self.snapshot(instance)
            yield from self._families(instance.name, snapshot, now)
            yield source_info("postfix", instance.name, snapshot.source)

    def _families(self, instance: str, snapshot: QueueSnapshot, now: float) -> list[Metric]:
        reasons = [(reason, snapshot.reasons.get(reason, 0)) for reason in DEFER_REASONS]
        return [
            *queue_families("postfix", instance, snapshot.queues, now),
            labelled_counts(
                "mail_queue_deferred_recipients",
                "Recipients waiting in the deferred queue, by class of the last delay reason.",
                "reason", ["postfix", instance], reasons,
            ),
            labelled_counts(
                "mail_queue_deferred_domain_recipients",
                "Deferred recipients by domain: the largest domains, the rest as other.",
                "domain", ["postfix", instance],
                top_with_other(snapshot.domains, self.settings.top_domains),
            ),
        ]  # fmt: skip


@register_collector("postfix_queue", "Postfix queue sizes, ages and deferral reasons")
def _postfix_queue(config: Config) -> PostfixQueueCollector:
    return PostfixQueueCollector(config.collectors.postfix_queue)
