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
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mail_exporter.collectors.base import CollectorError
from mail_exporter.collectors.postfix_queue.reasons import classify_reason, recipient_domain
from mail_exporter.collectors.postfix_queue.snapshot import MAX_FIELD_BYTES, QUEUES, QueueSnapshot

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


def _leading_records(head: bytes) -> tuple[int, float] | None:
    """Size and arrival time from the short size record and the short time record that
    open every queue file Postfix writes, read in place; ``None`` if the file does not
    start so."""
    if len(head) > 3 and head[0] == _SIZE and head[1] < 0x80:
        time_at = 2 + head[1]
        if time_at + 2 < len(head) and head[time_at] == _TIME and head[time_at + 1] < 0x80:
            size_field = head[2:time_at].split(None, 1)
            time_field = head[time_at + 2 : time_at + 2 + head[time_at + 1]].split(None, 1)
            if size_field and time_field and size_field[0].isdigit() and time_field[0].isdigit():
                return int(size_field[0]), float(time_field[0])
    return None


def parse_queue_file_head(head: bytes) -> tuple[int | None, float | None]:
    """Message size (the size record's first field, as showq reports it) and arrival time."""
    leading = _leading_records(head)
    if leading is not None:
        return leading
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


_DEFER_PAIR = re.compile(
    rb"^recipient=(.+)\n(?:(?!recipient=|reason=).*\n)*reason=(.*)$", re.MULTILINE
)
"""A recipient line of a defer log and the reason line after it (a log has about ten
lines per recipient): a reason counts when the field line before it names a recipient,
as each recipient's ``reason`` follows its ``recipient`` with other fields between."""


def parse_defer_log(text: bytes) -> list[tuple[str, str]]:
    """(recipient, reason) pairs of a per-message defer log (``name=value`` lines)."""
    return [
        (recipient.decode(errors="replace"), reason.decode(errors="replace"))
        for recipient, reason in _DEFER_PAIR.findall(text)
    ]


Listing = tuple[int, list[os.DirEntry[str]]]
"""A directory of the spool, open, and files listed in it (named in it)."""
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY


def _listings(
    path: str, open_directories: contextlib.ExitStack, *, missing_ok: bool = False
) -> list[Listing]:
    """Every file below a queue directory, through hashed subdirectories of any depth,
    a list per directory, in the order of the directory listings.

    Each directory is opened once (kept open in ``open_directories``) and its files are
    opened through it, so that opening a file looks up one name, not the whole path. A
    file is what its directory entry says is a regular file (``d_type``: no system call
    per file). A missing ``path`` raises :class:`FileNotFoundError` unless
    ``missing_ok``; a hashed subdirectory that vanishes (or turns into something else)
    during the scan is skipped.
    """
    try:
        directory = os.open(path, _DIRECTORY_FLAGS)
    except FileNotFoundError:
        if missing_ok:
            return []
        raise
    found: list[Listing] = []
    _list(directory, open_directories, found)
    return found


def _list(directory: int, open_directories: contextlib.ExitStack, found: list[Listing]) -> None:
    open_directories.callback(os.close, directory)
    with os.scandir(directory) as listing:
        entries = list(listing)
    files: list[os.DirEntry[str]] = []
    for entry in entries:
        if entry.is_file(follow_symlinks=False):
            files.append(entry)
        elif entry.is_dir(follow_symlinks=False):
            if files:  # keep the listing order: it is the order deferrals are counted in
                found.append((directory, files))
                files = []
            try:
                below = os.open(entry.name, _DIRECTORY_FLAGS | os.O_NOFOLLOW, dir_fd=directory)
            except OSError:  # gone, or replaced by a symbolic link or a file
                continue
            _list(below, open_directories, found)
    if files:
        found.append((directory, files))


_NOATIME = getattr(os, "O_NOATIME", 0)
_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK


def _regular(descriptor: int) -> bool:
    return stat.S_ISREG(os.fstat(descriptor).st_mode)


def read_queue_file(
    path: str, dir_fd: int | None = None, flags: int = _FILE_FLAGS
) -> tuple[int, float | None] | None:
    """Message size and arrival time of a queue file (``path`` relative to the directory
    ``dir_fd`` if given); ``None`` if it vanished meanwhile or is not a regular file.

    The scan calls it for what its directory entry says is a regular file. The common
    case costs three system calls (open, read, close): a queue file opened by its size
    and time records is answered from them. Anything else takes the careful way:
    ``fstat`` first (a FIFO or a device, swapped in since the listing, is skipped; its
    one read was non-blocking and bounded, so it neither waited nor ran on), then the
    records are walked, the file size standing in for a missing size record.
    """
    try:
        descriptor = os.open(path, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        return None  # delivered or moved between listing and reading
    try:
        try:
            head = os.read(descriptor, HEAD_BYTES)
        except OSError:  # EAGAIN from a FIFO, EISDIR: skipped as before; a file's error is not
            if _regular(descriptor):
                raise
            return None
        leading = _leading_records(head)
        if leading is not None:
            return leading
        found = os.fstat(descriptor)
        if not stat.S_ISREG(found.st_mode):
            return None
        size, arrival = parse_queue_file_head(head)
        return (found.st_size if size is None else size), arrival
    finally:
        os.close(descriptor)


def _read_defer_log(name: str, directory: int, flags: int) -> bytes:
    """The first :data:`MAX_FIELD_BYTES` of a defer log listed as regular in ``directory``
    (open, read, close: the entry's type stands for ``fstat``); nothing if it vanished
    or a FIFO took its place. Whatever was swapped in since the listing is read at most
    once, without blocking, and no further than the bound, as any defer log is."""
    try:
        descriptor = os.open(name, flags, dir_fd=directory)
    except FileNotFoundError:
        return b""
    try:
        return os.read(descriptor, MAX_FIELD_BYTES)
    except OSError:
        if _regular(descriptor):
            raise
        return b""
    finally:
        os.close(descriptor)


def _deferrals_in(name: str, directory: int, flags: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The reason classes and the recipient domains of a defer log's deferred recipients."""
    reasons, domains = [], []
    for recipient, reason in parse_defer_log(_read_defer_log(name, directory, flags)):
        reasons.append(classify_reason(reason))
        domains.append(recipient_domain(recipient))
    return tuple(reasons), tuple(domains)


Message = tuple[int, int, "float | None", "int | None", tuple[str, ...], tuple[str, ...]]
"""What a scan remembers of a message, by queue id: its queue file's inode, message size
and arrival time, then its defer log's inode (``None``: no log read) and the reason
classes and recipient domains read from that log."""


@dataclass
class SpoolScanner:
    """Scans a queue directory, remembering what each queue file said.

    A queue file's size and arrival records never change, so they are read once per
    file (remembered by queue id with the inode, which both survive moves between
    queues). Postfix writes a new defer log for each delivery attempt, so a deferred
    message's reasons are read again only when its defer log's inode changed.
    Steady-state scans cost two directory walks and no per-file system calls; entries
    for files that are gone are dropped at each scan, so memory follows the queue.

    A first scan reads two files per deferred message, three system calls each
    (``openat``, ``read``, ``close``: see :func:`read_queue_file`), with ``O_NOATIME``:
    a deferred queue file's mtime is its next retry, in the future, so under
    ``relatime`` each read would write its access time (an inode made dirty, a journal
    entry on Postfix's disk) at every first scan, and cost a third more kernel time.
    Only the owner of the files or a process with ``CAP_FOWNER`` may ask for that; for
    anyone else the scan drops the flag at the first refusal and scans again.
    Per message a scan creates one tuple (:data:`Message`) and adds to per-queue
    totals kept in local variables; deferrals are counted at the end in one pass.

    Each of the five queue directories must exist: without one, ``queue_directory`` is
    not a Postfix queue directory (a typo, or Postfix not installed), and reporting
    empty queues would hide that. ``defer/`` only adds reasons and may be missing.
    """

    queue_directory: Path
    _messages: dict[str, Message] = field(default_factory=dict)
    _flags: int = _FILE_FLAGS | _NOATIME

    def scan(self) -> QueueSnapshot:
        try:
            return self._scan_once()
        except PermissionError:
            if not self._flags & _NOATIME:
                raise
            self._flags &= ~_NOATIME  # not the files' owner: read them as before
            return self._scan_once()

    def _scan_once(self) -> QueueSnapshot:
        with contextlib.ExitStack() as open_directories:
            return self._scan(open_directories)

    def _scan(self, open_directories: contextlib.ExitStack) -> QueueSnapshot:
        snapshot = QueueSnapshot("spool")
        flags, known = self._flags, self._messages
        messages: dict[str, Message] = {}
        reasons: list[str] = []
        domains: list[str] = []
        defer_logs = {
            entry.name: (directory, entry.inode())
            for directory, entries in _listings(
                os.path.join(self.queue_directory, "defer"), open_directories, missing_ok=True
            )
            for entry in entries
        }
        for queue in QUEUES:
            deferred = queue == "deferred"
            count = total = 0
            oldest: float | None = None
            for directory, entries in self._queue_listings(queue, open_directories):
                for entry in entries:
                    name, inode = entry.name, entry.inode()
                    message = known.get(name)
                    if message is None or message[0] != inode:
                        found = read_queue_file(name, directory, flags)
                        if found is None:
                            continue
                        message = (inode, found[0], found[1], None, (), ())
                    if deferred:
                        log = defer_logs.get(name)
                        if log is not None:
                            log_directory, log_inode = log
                            if message[3] != log_inode:
                                counted = _deferrals_in(name, log_directory, flags)
                                message = (*message[:3], log_inode, *counted)
                            reasons += message[4]
                            domains += message[5]
                    messages[name] = message
                    count += 1
                    total += message[1]
                    arrival = message[2]
                    if arrival is not None and (oldest is None or arrival < oldest):
                        oldest = arrival
            stats = snapshot.queues[queue]
            stats.messages, stats.size_bytes, stats.oldest_arrival = count, total, oldest
        snapshot.reasons.update(reasons)
        snapshot.domains.update(domains)
        self._messages = messages
        return snapshot

    def _queue_listings(self, queue: str, open_directories: contextlib.ExitStack) -> list[Listing]:
        try:  # only the queue directory itself may raise: see _listings
            return _listings(os.path.join(self.queue_directory, queue), open_directories)
        except FileNotFoundError:
            raise CollectorError(
                f"{self.queue_directory} has no {queue} directory: not a Postfix queue "
                "directory (check queue_directory)"
            ) from None


def spool_readable(queue_directory: Path) -> bool:
    return all(os.access(queue_directory / q, os.R_OK | os.X_OK) for q in ("deferred", "active"))
