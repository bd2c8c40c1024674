"""The ``spool`` source: read the queue directories directly (root or the postfix user).

The fastest, and the only source that costs Postfix nothing while it is in trouble. A
message's size and arrival time come from the size and time records at the start of
its queue file; the file's mtime would be wrong (in the deferred queue it is the next
retry time). Deferral reasons come from the per-message logs in ``defer/``.
"""

from __future__ import annotations

import contextlib
import os
import re
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
    # Every queue file Postfix writes starts with a short size record, then a short time
    # record: read those two in place, without walking the records.
    if len(head) > 3 and head[0] == _SIZE and head[1] < 0x80:
        time_at = 2 + head[1]
        if time_at + 2 < len(head) and head[time_at] == _TIME and head[time_at + 1] < 0x80:
            size_field = head[2:time_at].split(None, 1)
            time_field = head[time_at + 2 : time_at + 2 + head[time_at + 1]].split(None, 1)
            if size_field and time_field and size_field[0].isdigit() and time_field[0].isdigit():
                return int(size_field[0]), float(time_field[0])
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


def read_queue_file(path: str, dir_fd: int | None = None) -> tuple[int, float | None] | None:
    """Message size and arrival time of a queue file (``path`` relative to the directory
    ``dir_fd`` if given); ``None`` if it vanished meanwhile."""
    found = read_head(path, HEAD_BYTES, dir_fd)
    if found is None:
        return None
    head, file_size = found
    size, arrival = parse_queue_file_head(head)
    return (file_size if size is None else size), arrival


_DEFER_FIELD = re.compile(rb"^(recipient|reason)=(.*)$", re.MULTILINE)
"""The two lines of a defer log that are counted; a regular expression finds them
without splitting the others (a log has about ten lines per recipient)."""


def parse_defer_log(text: bytes) -> list[tuple[str, str]]:
    """(recipient, reason) pairs of a per-message defer log (``name=value`` lines)."""
    pairs = []
    recipient = ""
    for found in _DEFER_FIELD.finditer(text):
        if found[1] == b"recipient":
            recipient = found[2].decode(errors="replace")
        elif recipient:
            pairs.append((recipient, found[2].decode(errors="replace")))
            recipient = ""
    return pairs


SpoolFile = tuple[int, os.DirEntry[str]]
"""A file found in the spool: its directory, open, and its entry (named in it)."""
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY


def _walk(
    path: str, open_directories: contextlib.ExitStack, *, missing_ok: bool = False
) -> Iterator[SpoolFile]:
    """Every file below a queue directory, through hashed subdirectories of any depth.

    Each directory is opened once (kept open in ``open_directories``) and its files are
    opened through it, so that opening a file looks up one name, not the whole path: a
    cold scan opens two files per deferred message. A missing ``path`` raises
    :class:`FileNotFoundError` unless ``missing_ok``; a hashed subdirectory that vanishes
    (or turns into something else) during the scan is skipped.
    """
    try:
        directory = os.open(path, _DIRECTORY_FLAGS)
    except FileNotFoundError:
        if missing_ok:
            return
        raise
    yield from _walk_open(directory, open_directories)


def _walk_open(directory: int, open_directories: contextlib.ExitStack) -> Iterator[SpoolFile]:
    open_directories.callback(os.close, directory)
    with os.scandir(directory) as listing:
        entries = list(listing)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            try:
                below = os.open(entry.name, _DIRECTORY_FLAGS | os.O_NOFOLLOW, dir_fd=directory)
            except OSError:  # gone, or replaced by a symbolic link or a file
                continue
            yield from _walk_open(below, open_directories)
        elif entry.is_file(follow_symlinks=False):
            yield directory, entry


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
        with contextlib.ExitStack() as open_directories:
            return self._scan(open_directories)

    def _scan(self, open_directories: contextlib.ExitStack) -> QueueSnapshot:
        snapshot = QueueSnapshot("spool")
        heads: dict[tuple[str, int], tuple[int, float | None]] = {}
        deferrals: dict[tuple[str, int], list[Deferral]] = {}
        known_heads, known_deferrals = self._heads, self._deferrals
        defer_logs = {
            entry.name: (directory, entry)
            for directory, entry in _walk(
                os.path.join(self.queue_directory, "defer"), open_directories, missing_ok=True
            )
        }
        for queue in QUEUES:
            stats = snapshot.queues[queue]
            for directory, entry in self._queue_files(queue, open_directories):
                name = entry.name
                key = (name, entry.inode())
                found = known_heads.get(key) or read_queue_file(name, directory)
                if found is None:
                    continue
                heads[key] = found
                stats.add(*found)
                log = defer_logs.get(name) if queue == "deferred" else None
                if log is not None:
                    log_directory, log_entry = log
                    log_key = (name, log_entry.inode())
                    counted = known_deferrals.get(log_key)
                    if counted is None:
                        counted = _deferrals_in(name, log_directory)
                    deferrals[log_key] = counted
                    snapshot.count_deferrals(counted)
        self._heads, self._deferrals = heads, deferrals
        return snapshot

    def _queue_files(
        self, queue: str, open_directories: contextlib.ExitStack
    ) -> Iterator[SpoolFile]:
        try:  # only the queue directory itself may raise: see _walk
            yield from _walk(os.path.join(self.queue_directory, queue), open_directories)
        except FileNotFoundError:
            raise CollectorError(
                f"{self.queue_directory} has no {queue} directory: not a Postfix queue "
                "directory (check queue_directory)"
            ) from None


def _deferrals_in(name: str, directory: int) -> list[Deferral]:
    found = read_head(name, MAX_FIELD_BYTES, directory)
    pairs = parse_defer_log(found[0]) if found else []
    return [(classify_reason(reason), recipient_domain(recipient)) for recipient, reason in pairs]


def spool_readable(queue_directory: Path) -> bool:
    return all(os.access(queue_directory / q, os.R_OK | os.X_OK) for q in ("deferred", "active"))
