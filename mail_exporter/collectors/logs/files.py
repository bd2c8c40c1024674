"""Following a log file through both kinds of rotation, a late start and a restart.

The file is polled (``poll_interval``) and read from the last offset to its end; on
Linux the follower is also woken as soon as the file is written (:mod:`.inotify`), and
it reads on without waiting while there is more:

* **Rename and create** (logrotate's default, rsyslog/postlogd reopening on HUP): when
  the path names another inode, the old file is read to its end and kept open for
  ``ROTATE_WAIT`` seconds more, since a writer may append to it until it reopens; the
  new file is read from its start meanwhile.
* **copytruncate**: the file shrinks below our offset, or the bytes just before our
  offset (``TAIL_BYTES`` of them, remembered) changed. What was appended between our
  last read and the copy is read from the rotated copy (``PATH.1`` or a dateext
  ``PATH-*`` whose bytes at our offset match what we last read), then the truncated file
  from its start. Lines written between logrotate's copy and its truncate are lost:
  that race is copytruncate's own.
* **A file that does not exist yet**: waited for (``up`` 0, logged once); once it
  appears it is read from its start, everything in it being new.
* **Start**: at the end (``start_at: end``, the default) or the beginning of a file that
  exists at start; a recorded position (state file or a reload's predecessor) wins when
  it still fits: same inode, bytes before the offset unchanged. If the file was rotated
  while the exporter was down, the rest of the old file is read from its rotated name
  (found by inode) before the new one.

Positions are (device, inode, offset, the bytes before the offset, the unfinished
line), so a restart neither recounts nor skips a line.

A container runtime's log (``runtime``) is the same kind of file, rotated the same two
ways: Docker renames ``ID-json.log`` to ``ID-json.log.1`` (gzipping it later with
``compress``), the kubelet renames ``0.log`` to ``0.log.YYYYMMDD-HHMMSS`` and gzips the
one before, and podman's conmon writes a new ``ctr.log.tmp`` and renames it over
``ctr.log``, keeping nothing; each then writes to a new file at the path. So the old
file, held open, is read to its end whatever name it has now or whether it is gone.
Each file's records are opened by an :class:`~.envelopes.Envelope`, one for the path
(not for each file), since a line split into several records may straddle a rotation;
what it holds goes into the position. A runtime's record is read whole up to
:func:`~.envelopes.record_bytes`, the line inside it is held to ``max_line_bytes``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mail_exporter.collectors.logs.config import LogsConfig, LogSource
from mail_exporter.collectors.logs.envelopes import Envelope, record_bytes
from mail_exporter.collectors.logs.follower import CHUNK_BYTES, Feed, Follower, Position
from mail_exporter.collectors.logs.inotify import FileWaker, file_waker
from mail_exporter.collectors.logs.lines import LineSplitter

TAIL_BYTES = 64
ROTATE_WAIT = 30.0
READ_BUDGET = 16 * CHUNK_BYTES
"""Bytes read from one file per cycle before rotations are looked for again."""
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4")


@dataclass
class OpenFile:
    """A file being read: its identity, how far we are, and the unfinished line."""

    descriptor: int
    device: int
    inode: int
    splitter: LineSplitter
    offset: int = 0
    tail: bytes = b""  # the TAIL_BYTES bytes before offset
    deadline: float = field(default=0.0)  # rotated away: read until then

    def fits(self) -> bool:
        """Whether the bytes before ``offset`` are still the ones we read."""
        if not self.tail:
            return True
        start = self.offset - len(self.tail)
        return start >= 0 and os.pread(self.descriptor, len(self.tail), start) == self.tail

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.descriptor)


def open_file(path: str, splitter: LineSplitter) -> OpenFile:
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    status = os.fstat(descriptor)
    return OpenFile(descriptor, status.st_dev, status.st_ino, splitter)


def rotated_names(path: str) -> list[str]:
    """Where the previous file goes, newest first: logrotate's ``PATH.1`` or ``PATH-DATE``,
    Docker's ``PATH.1``, the kubelet's ``PATH.YYYYMMDD-HHMMSS``."""
    names = [*glob.glob(glob.escape(path) + ".*"), *glob.glob(glob.escape(path) + "-*")]
    found = [name for name in names if os.path.isfile(name) and not name.endswith(COMPRESSED)]
    return sorted(found, key=lambda name: os.stat(name).st_mtime, reverse=True)[:4]


class FileFollower(Follower):
    """Reads one log file as it grows, rotates and is replaced."""

    def __init__(self, source: LogSource, settings: LogsConfig) -> None:
        super().__init__(source, settings)
        assert source.path is not None
        self.path = str(source.path)
        self.envelope = (
            Envelope(source.runtime, self.max_line_bytes) if source.runtime is not None else None
        )
        self.record_bytes = (
            self.max_line_bytes if self.envelope is None else record_bytes(self.max_line_bytes)
        )
        self.current: OpenFile | None = None
        self.rotated: list[OpenFile] = []
        self._resume: Position = {}
        self._opened_before = False
        self.waker: FileWaker | None = None  # only a follower with a thread of its own

    def start(self, feed: Feed, position: Position | None) -> None:
        self.waker = file_waker()
        super().start(feed, position)

    def stop(self) -> None:
        self._stop.set()
        if self.waker is not None:
            self.waker.wake()
        super().stop()

    def restore(self, position: Position) -> None:
        self._resume = position
        if self.envelope is not None:
            self.envelope.restore(position.get("envelope"))

    def deliver(self, lines: list[str], splitter: LineSplitter) -> None:
        """A runtime's records are opened first; the lines that they held too long count too."""
        if self.envelope is not None:
            lines = self.envelope.open(lines)
            splitter.too_long += self.envelope.take_too_long()
        self.count(lines, splitter)

    def count(self, lines: list[str], splitter: LineSplitter) -> None:
        super().deliver(lines, splitter)

    def run(self) -> None:
        written = False  # since the last wait: then the next one is a plain poll
        try:
            while not self.stopping():
                try:
                    busy = self.cycle()
                except OSError as error:
                    self.report(f"cannot read {self.path}: {error}")
                    self._drop_current()
                    busy = False
                if busy:
                    written = True
                    continue  # read on to the end before any wait
                if self.waker is None:
                    self.wait(self.poll_interval)
                else:
                    self.waker.wait(self.poll_interval, on_write=not written)
                written = False
            self._finish()
        finally:
            if self.waker is not None:
                self.waker.close()

    def cycle(self) -> bool:
        """Read what is new; True if anything was."""
        busy = self._drain_rotated()
        if self.current is None and not self._open():
            return busy
        assert self.current is not None
        self._check_truncation(self.current)
        if self._read(self.current):
            self.progressed(self._position(self.current))
            return True
        self._check_rename(self.current)
        return busy

    # --- opening -----------------------------------------------------------------------

    def _open(self) -> bool:
        first = not self._opened_before
        self._opened_before = True
        try:
            current = open_file(self.path, LineSplitter(self.record_bytes))
        except FileNotFoundError:
            self.report(f"waiting for {self.path} to appear")
            self._resume = {}  # a file that comes later is read whole
            return False
        except OSError as error:
            self.report(f"cannot open {self.path}: {error.strerror}")
            return False
        self.current = current
        if self.waker is not None:
            self.waker.watch(self.path)
        if self._resume:
            self._resume_at(current, self._resume)
            self._resume = {}
        elif first and self.start_at == "end":
            self._skip_to(current, os.fstat(current.descriptor).st_size)
        self.report(None)
        self.progressed(self._position(current))
        return True

    def _skip_to(self, opened: OpenFile, offset: int) -> None:
        opened.offset = offset
        start = max(0, offset - TAIL_BYTES)
        opened.tail = os.pread(opened.descriptor, offset - start, start)

    def _resume_at(self, current: OpenFile, position: Position) -> None:
        """Continue from a recorded position, wherever its bytes are now."""
        try:
            device, inode, offset = (int(position[k]) for k in ("device", "inode", "offset"))
            tail, partial = (bytes.fromhex(position[k]) for k in ("tail", "partial"))
        except (KeyError, TypeError, ValueError):
            return  # not a file position: read the file whole
        if (device, inode) == (current.device, current.inode):
            current.offset, current.tail = offset, tail
            current.splitter.partial = partial
            if current.fits() and os.fstat(current.descriptor).st_size >= offset:
                return
            # truncated while we were away: the rest may be in the copy
            current.offset, current.tail = 0, b""
            current.splitter = LineSplitter(self.record_bytes)
        old = self._find_rotated(lambda found: (found.device, found.inode) == (device, inode))
        if old is None:
            old = self._find_rotated(lambda candidate: candidate.inode != current.inode)
            if old is not None and not self._reposition(old, offset, tail):
                old.close()
                old = None
        if old is not None:
            old.offset, old.tail = offset, tail
            old.splitter.partial = partial
            self._keep_draining(old)

    # --- rotation ----------------------------------------------------------------------

    def _check_truncation(self, current: OpenFile) -> None:
        size = os.fstat(current.descriptor).st_size
        if size == current.offset or (size > current.offset and current.fits()):
            return
        copy = self._find_rotated(lambda candidate: candidate.inode != current.inode)
        if copy is not None and self._reposition(copy, current.offset, current.tail):
            copy.splitter = current.splitter
            self._read(copy)
            self.deliver(copy.splitter.flush(), copy.splitter)
        if copy is not None:
            copy.close()
        current.offset, current.tail = 0, b""
        current.splitter = LineSplitter(self.record_bytes)
        self._count_rotation("truncate")
        self.progressed(self._position(current))

    def _check_rename(self, current: OpenFile) -> None:
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return  # moved away and not recreated yet: the old file is still the one
        if (status.st_dev, status.st_ino) == (current.device, current.inode):
            return
        self.current = None
        self._keep_draining(current)
        self._count_rotation("rename")
        self._open()

    def _keep_draining(self, old: OpenFile) -> None:
        old.deadline = time.monotonic() + ROTATE_WAIT
        self.rotated.append(old)

    def _drain_rotated(self, final: bool = False) -> bool:
        busy = False
        for old in list(self.rotated):
            if self._read(old):
                busy = True
            elif final or time.monotonic() > old.deadline:
                self.deliver(old.splitter.flush(), old.splitter)
                old.close()
                self.rotated.remove(old)
        return busy

    def _find_rotated(self, wanted: Callable[[OpenFile], bool]) -> OpenFile | None:
        """The first rotated copy that ``wanted`` accepts, opened."""
        for name in rotated_names(self.path):
            try:
                candidate = open_file(name, LineSplitter(self.record_bytes))
            except OSError:
                continue
            if wanted(candidate):
                return candidate
            candidate.close()
        return None

    @staticmethod
    def _reposition(opened: OpenFile, offset: int, tail: bytes) -> bool:
        """Place ``opened`` at ``offset`` if it holds ``tail`` just before it."""
        opened.offset, opened.tail = offset, tail
        return os.fstat(opened.descriptor).st_size >= offset and opened.fits()

    def _count_rotation(self, kind: str) -> None:
        self.rotations[kind] = self.rotations.get(kind, 0) + 1

    # --- reading -----------------------------------------------------------------------

    def _read(self, opened: OpenFile) -> bool:
        """Read what ``opened`` has past its offset (up to READ_BUDGET); True if anything."""
        total = 0
        while total < READ_BUDGET:
            data = os.pread(opened.descriptor, CHUNK_BYTES, opened.offset)
            if not data:
                break
            total += len(data)
            opened.offset += len(data)
            opened.tail = (opened.tail + data[-TAIL_BYTES:])[-TAIL_BYTES:]
            self.deliver(opened.splitter.feed(data), opened.splitter)
        return total > 0

    def _position(self, opened: OpenFile) -> Position:
        position: Position = {
            "device": opened.device,
            "inode": opened.inode,
            "offset": opened.offset,
            "tail": opened.tail.hex(),
            "partial": opened.splitter.partial.hex(),
        }
        if self.envelope is not None:
            position["envelope"] = self.envelope.state()
        return position

    def _drop_current(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None

    def _finish(self) -> None:
        """Stopping: read rotated files to their end; the current one's position is kept."""
        with contextlib.suppress(OSError):
            self._drain_rotated(final=True)
        for old in self.rotated:
            old.close()
        self.rotated.clear()
        self._drop_current()
