"""The ``spool`` source: read the queue directories directly (root or the postfix user).

The fastest, and the only source that costs Postfix nothing while it is in trouble. A
message's size and arrival time come from the size and time records at the start of
its queue file; the file's mtime would be wrong (in the deferred queue it is the next
retry time). Deferral reasons come from the per-message logs in ``defer/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mail_exporter.collectors.base import CollectorError
from mail_exporter.collectors.postfix_queue.reasons import classify_reason, recipient_domain
from mail_exporter.collectors.postfix_queue.snapshot import MAX_FIELD_BYTES, QUEUES, QueueSnapshot
from mail_exporter.collectors.queues import read_head

HEAD_BYTES = 4096
"""How much of a queue file is read: the size and time records come first."""


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
