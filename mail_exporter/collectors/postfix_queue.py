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
    mail_queue_collect_success{mta="postfix",mta_instance="postfix"} 1.0
"""

from __future__ import annotations

import functools
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
from typing import Annotated, Literal

from prometheus_client.core import Metric
from pydantic import AfterValidator, Field, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from mail_exporter.collectors.base import (
    COMMAND_TIME_SHARE,
    Collector,
    CollectorError,
    register_collector,
)
from mail_exporter.collectors.commands import run_command
from mail_exporter.collectors.queues import (
    COLLECT_SUCCESS,
    OTHER,
    QueueStats,
    SourceLog,
    queue_families,
    read_head,
    source_info,
    top_with_other,
)
from mail_exporter.config.collectors import CollectorSection
from mail_exporter.config.fields import StrictModel
from mail_exporter.decimal_text import ascii_int
from mail_exporter.metric_spec import MetricSpec, as_is

logger = logging.getLogger(__name__)


class PostfixInstance(StrictModel):
    """One Postfix instance; ``name`` is its ``mta_instance`` label (as in ``postfix-NAME``)."""

    name: str = Field(default="postfix", pattern=r"^[A-Za-z0-9_.-]+$")
    config_directory: Path = Path("/etc/postfix")
    queue_directory: Path | None = None  # default: what postconf says for config_directory


def _distinct_instance_names(instances: list[PostfixInstance]) -> list[PostfixInstance]:
    """Each name once: two instances of one name would export the same series twice.

    The error is raised at the second instance's ``name`` (present or defaulted), so that
    check-config points at the instance to rename rather than at the whole list.
    """
    seen: set[str] = set()
    problems: list[InitErrorDetails] = []
    for index, instance in enumerate(instances):
        if instance.name in seen:
            problems.append(
                InitErrorDetails(
                    type=PydanticCustomError(
                        "duplicate_name",
                        "duplicate instance name {name}",
                        {"name": repr(instance.name)},
                    ),
                    loc=(index, "name"),
                    input=instance.name,
                )
            )
        seen.add(instance.name)
    if problems:
        raise ValidationError.from_exception_data("instances", problems)
    return instances


class PostfixQueueConfig(CollectorSection):
    instances: Annotated[list[PostfixInstance], AfterValidator(_distinct_instance_names)] = Field(
        default_factory=lambda: [PostfixInstance()]
    )
    source: Literal["auto", "spool", "showq", "postqueue"] = "auto"
    postconf_command: str = "postconf"
    postqueue_command: str = "postqueue"
    top_domains: int = Field(default=10, ge=1, le=100)


QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
SOURCES = ("spool", "showq", "postqueue")
DEFER_REASONS = (
    "connection_refused", "timed_out", "dns", "tls", "remote_4xx", "remote_5xx", "other"
)  # fmt: skip
HEAD_BYTES = 4096
"""How much of a queue file is read: the size and time records come first."""
MAX_FIELD_BYTES = 65536
"""Longest showq field or postqueue line accepted; anything longer is a broken stream."""

DEFERRED_RECIPIENTS = MetricSpec(
    "mail_queue_deferred_recipients", "Recipients waiting in the deferred queue, by class of the "
    "last delay reason.", "gauge", ("mta", "mta_instance", "reason"), as_is,
)  # fmt: skip
DEFERRED_DOMAIN_RECIPIENTS = MetricSpec(
    "mail_queue_deferred_domain_recipients", "Deferred recipients by domain: the largest domains, "
    "the rest as other.", "gauge", ("mta", "mta_instance", "domain"), as_is,
)  # fmt: skip

_REMOTE_REPLY = re.compile(r"\b(?:said|refused to talk to me):? ([45])\d\d\b")
"""Postfix's wording when the remote server answered: ``host X said: 450 ...`` or
``host X refused to talk to me: 421 ...`` (a greeting refused)."""
_REASON_PATTERNS = (
    ("tls", re.compile(r"\bTLS\b|\bSSL\b|\bcertificate\b|\bSTARTTLS\b", re.IGNORECASE)),
    ("connection_refused", re.compile(r"\bconnection refused\b|\bno route to host\b|"
                                      r"\bnetwork is unreachable\b", re.IGNORECASE)),
    ("timed_out", re.compile(r"\btimed out\b|\btimeout\b", re.IGNORECASE)),
    ("dns", re.compile(r"\bhost or domain name not found\b|\bname service error\b|"
                       r"\bno MX host\b|\bMX host .* not found\b|\bDNS\b", re.IGNORECASE)),
)  # fmt: skip


@functools.lru_cache(maxsize=4096)  # a queue holds few distinct reasons, many times over
def classify_reason(reason: str) -> str:
    """One of :data:`DEFER_REASONS` for a delay reason as Postfix records it.

    A reply from the remote server is recognised first: whatever its text mentions
    ("listed in dnsbl", "timeout exceeded", "TLS not available"), the connection was
    made and the remote chose to refuse, so the reply is the reason. A 5xx reply in a
    deferral (``soft_bounce = yes`` turns bounces into deferrals) is ``remote_5xx``,
    apart from ``remote_4xx``: it will not go away by retrying. The
    other classes describe failures before any reply; ``connection_refused`` also takes
    "No route to host" and "Network is unreachable", the other ways a connection is
    refused before it opens.
    """
    reply = _REMOTE_REPLY.search(reason)
    if reply is not None:
        return f"remote_{reply.group(1)}xx"
    for name, pattern in _REASON_PATTERNS:
        if pattern.search(reason):
            return name
    return "other"


def recipient_domain(address: str) -> str:
    """The recipient's domain in lower case; ``other`` (the rest bucket) when it has none.

    A recipient without a domain (``root``, the null address ``<>``) is counted with
    the rest rather than as a domain of its own name; :func:`top_with_other` merges a
    real domain named ``other`` there too, so the label value means one thing.
    """
    _, at, domain = address.strip().strip("<>").rpartition("@")
    return domain.lower() if at and domain else OTHER


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
        self.count_deferrals([(classify_reason(reason), recipient_domain(recipient))])

    def count_deferrals(self, deferrals: Iterable[tuple[str, str]]) -> None:
        for reason_class, domain in deferrals:
            self.reasons[reason_class] += 1
            self.domains[domain] += 1


# --- spool ------------------------------------------------------------------------------


def _records(head: bytes) -> Iterator[tuple[int, bytes]]:
    """Postfix queue file records: a type byte, a base-128 length (low bits first), the data."""
    position, end = 0, len(head)
    while position < end:
        kind = head[position]
        position += 1
        length = shift = 0
        while position < end:
            byte = head[position]
            position += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        if position + length > end:
            return
        yield kind, head[position : position + length]
        position += length


_SIZE, _TIME, _CONTENT = ord("C"), ord("T"), frozenset(b"MEN")


def parse_queue_file_head(head: bytes) -> tuple[int | None, float | None]:
    """Message size (the size record's first field, as showq reports it) and arrival time."""
    size: int | None = None
    arrival: float | None = None
    for kind, data in _records(head):
        if kind == _SIZE:
            fields = data.split()
            size = int(fields[0]) if fields and fields[0].isdigit() else None
        elif kind == _TIME:  # "seconds [microseconds]"
            fields = data.split()
            arrival = float(fields[0]) if fields and fields[0].isdigit() else None
        elif kind in _CONTENT:  # the message itself begins: no envelope records after this
            break
        if size is not None and arrival is not None:
            break
    return size, arrival


def read_queue_file(path: str) -> tuple[int, float | None] | None:
    """Message size and arrival time of a queue file; ``None`` if it vanished meanwhile."""
    found = read_head(path, HEAD_BYTES)
    if found is None:
        return None
    head, file_size = found
    size, arrival = parse_queue_file_head(head)
    return (file_size if size is None else size), arrival


def parse_defer_log(text: bytes) -> list[tuple[str, str]]:
    """(recipient, reason) pairs of a per-message defer log (``name=value`` lines)."""
    pairs = []
    recipient = ""
    for line in text.split(b"\n"):
        if line.startswith(b"recipient="):
            recipient = line[10:].decode(errors="replace")
        elif line.startswith(b"reason=") and recipient:
            pairs.append((recipient, line[7:].decode(errors="replace")))
            recipient = ""
    return pairs


def _walk(directory: str, *, missing_ok: bool = False) -> Iterator[os.DirEntry[str]]:
    """Every file below a queue directory, through hashed subdirectories of any depth.

    A missing ``directory`` raises :class:`FileNotFoundError` unless ``missing_ok``; a
    hashed subdirectory that vanishes during the scan is skipped.
    """
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        if missing_ok:
            return
        raise
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(entry.path, missing_ok=True)
        elif entry.is_file(follow_symlinks=False):
            yield entry


Deferral = tuple[str, str]
"""A deferred recipient as counted: (reason class, recipient domain)."""


@dataclass
class SpoolScanner:
    """Scans a queue directory, remembering what each queue file said.

    A queue file's size and arrival records never change, so they are read once per
    file (keyed by name and inode, which survive moves between queues). Postfix writes
    a new defer log for each delivery attempt, so a deferred message's reasons are read
    again only when its defer log's inode changed. Steady-state scans cost two
    directory walks and no per-file system calls; entries for files that are gone are
    dropped at each scan, so memory follows the queue.

    Each of the five queue directories must exist: without one, ``queue_directory`` is
    not a Postfix queue directory (a typo, or Postfix not installed), and reporting
    empty queues would hide that. ``defer/`` only adds reasons and may be missing.
    """

    queue_directory: Path
    _heads: dict[tuple[str, int], tuple[int, float | None]] = field(default_factory=dict)
    _deferrals: dict[tuple[str, int], list[Deferral]] = field(default_factory=dict)

    def scan(self) -> QueueSnapshot:
        snapshot = QueueSnapshot("spool")
        heads: dict[tuple[str, int], tuple[int, float | None]] = {}
        deferrals: dict[tuple[str, int], list[Deferral]] = {}
        defer_logs = {
            entry.name: entry
            for entry in _walk(os.path.join(self.queue_directory, "defer"), missing_ok=True)
        }
        for queue in QUEUES:
            for entry in self._queue_files(queue):
                key = (entry.name, entry.inode())
                found = self._heads.get(key) or read_queue_file(entry.path)
                if found is None:
                    continue
                heads[key] = found
                snapshot.add_message(queue, *found)
                log = defer_logs.get(entry.name) if queue == "deferred" else None
                if log is not None:
                    log_key = (log.name, log.inode())
                    counted = self._deferrals.get(log_key)
                    if counted is None:
                        counted = _deferrals_in(log.path)
                    deferrals[log_key] = counted
                    snapshot.count_deferrals(counted)
        self._heads, self._deferrals = heads, deferrals
        return snapshot

    def _queue_files(self, queue: str) -> Iterator[os.DirEntry[str]]:
        try:  # only the queue directory itself may raise: see _walk
            yield from _walk(os.path.join(self.queue_directory, queue))
        except FileNotFoundError:
            raise CollectorError(
                f"{self.queue_directory} has no {queue} directory: not a Postfix queue "
                "directory (check queue_directory)"
            ) from None


def _deferrals_in(path: str) -> list[Deferral]:
    found = read_head(path, MAX_FIELD_BYTES)
    pairs = parse_defer_log(found[0]) if found else []
    return [(classify_reason(reason), recipient_domain(recipient)) for recipient, reason in pairs]


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
        elif name == "size" and (size := ascii_int(value)) is not None:
            message.size = size
        elif name == "time" and (seconds := ascii_int(value)) is not None:
            message.arrival = float(seconds)
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
    """Collects every configured Postfix instance's queues through the best source it may use.

    Instances fail one at a time: one that cannot be read costs its own figures (left
    out, not reported as 0) and shows as ``mail_queue_collect_success 0``; the others
    are exported. Its failure is logged when it starts or changes, and its recovery,
    as :class:`~mail_exporter.collectors.base.CollectorSet` does for whole collectors. Only
    when every instance fails does the collector fail, as a single instance always
    has; the framework then logs all the reasons in one line, and later that the
    collector works again, so those failures are not logged a second time here.
    """

    def __init__(self, settings: PostfixQueueConfig) -> None:
        self.settings = settings
        self.timeout = float(settings.timeout) * COMMAND_TIME_SHARE
        self._sources = SourceLog("postfix")
        self._scanners: dict[str, SpoolScanner] = {}
        self._failures: dict[str, str] = {}
        """The failure last logged of each instance that is failing."""

    def _queue_directory(self, instance: PostfixInstance) -> Path:
        if instance.queue_directory is not None:
            return instance.queue_directory
        return postconf_queue_directory(
            self.settings.postconf_command, instance.config_directory, self.timeout
        )

    def _scanner(self, instance: str, queue_directory: Path) -> SpoolScanner:
        scanner = self._scanners.get(instance)
        if scanner is None or scanner.queue_directory != queue_directory:
            scanner = self._scanners[instance] = SpoolScanner(queue_directory)
        return scanner

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
        """One instance's queues; :class:`CollectorError` naming the instance if unreadable."""
        try:
            queue_directory = self._queue_directory(instance)
            source, why = self._choose_source(queue_directory)
            self._sources.announce(instance.name, source, why)
            return self._read(instance, source, queue_directory)
        except (OSError, CollectorError) as error:
            raise CollectorError(f"postfix instance {instance.name}: {error}") from None

    def _read(self, instance: PostfixInstance, source: str, queue_directory: Path) -> QueueSnapshot:
        try:
            if source == "spool":
                return self._scanner(instance.name, queue_directory).scan()
            if source == "showq":
                return read_showq(queue_directory, self.timeout)
        except OSError as error:
            raise CollectorError(f"{source}: {error}") from None
        command = self.settings.postqueue_command
        return run_postqueue(command, instance.config_directory, self.timeout)

    def collect(self) -> Iterable[Metric]:
        """Each readable instance's families; the collector set merges those of one name."""
        now = time.time()
        families: list[Metric] = []
        read: list[tuple[str, bool]] = []
        failures: dict[str, str] = {}
        for instance in self.settings.instances:
            try:
                snapshot = self.snapshot(instance)
            except CollectorError as error:
                failures[instance.name] = str(error)
                read.append((instance.name, False))
                continue
            read.append((instance.name, True))
            families += self._families(instance.name, snapshot, now)
            families.append(source_info("postfix", instance.name, snapshot.source))
        self._log_failures(failures)
        return [*families, COLLECT_SUCCESS.family((("postfix", name), ok) for name, ok in read)]

    def _log_failures(self, failures: dict[str, str]) -> None:
        """Log what changed since the last scrape; raise when no instance could be read."""
        if len(failures) == len(self.settings.instances):
            self._failures = {}  # the framework logs these, and later that it works again
            raise CollectorError("; ".join(failures.values()))
        for name, reason in failures.items():
            if self._failures.get(name) != reason:
                logger.warning("%s", reason)
        for name in self._failures.keys() - failures.keys():
            logger.info("postfix instance %s works again", name)
        self._failures = failures

    def _families(self, instance: str, snapshot: QueueSnapshot, now: float) -> list[Metric]:
        domains = top_with_other(snapshot.domains, self.settings.top_domains)
        return [
            *queue_families("postfix", instance, snapshot.queues, now),
            DEFERRED_RECIPIENTS.family(
                (("postfix", instance, reason), snapshot.reasons.get(reason, 0))
                for reason in DEFER_REASONS
            ),
            DEFERRED_DOMAIN_RECIPIENTS.family(
                (("postfix", instance, domain), count) for domain, count in domains
            ),
        ]


@register_collector(
    "postfix_queue", "Postfix queue sizes, ages and deferral reasons", PostfixQueueConfig
)
def _postfix_queue(
    section: PostfixQueueConfig, previous: Collector | None
) -> PostfixQueueCollector:
    return PostfixQueueCollector(section)
