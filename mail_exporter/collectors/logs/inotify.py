"""Waking a file's follower when the file grows (Linux inotify), instead of at its next poll.

Polling every ``poll_interval`` leaves new lines unread for up to that long; the kernel
can say at once that the file was written. libc's ``inotify_init1`` and
``inotify_add_watch`` are called through :mod:`ctypes` (no dependency). The poll stays:
the wait ends at ``poll_interval`` at the latest whatever the kernel says, and rotations,
truncations and a file that does not exist yet are still found by looking, as before.
Where inotify cannot be had (another system, no libc symbol, the instance limit
reached) :func:`file_waker` returns None and the follower polls only.

* **Bounded**: one watch (the file currently at the path, by inode; the one it replaces
  is let go), one descriptor for inotify and two for the pipe that wakes the wait when
  the follower stops; all closed with the follower. Events are read and dropped, so the
  kernel's queue (consecutive identical events coalesced) never holds more than a few.
* **Only after a quiet poll**: the file wakes the follower only when the last wait found
  nothing new. A file being written steadily is read every ``poll_interval``, as before:
  waking on each write of a writer that logs line by line cost 2.5 to 7 times the CPU
  (1,000 lines a second, measured), for lines that no scrape would see sooner.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import threading

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_MOVE_SELF = 0x800
IN_DELETE_SELF = 0x400
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
WATCHED = IN_MODIFY | IN_ATTRIB | IN_MOVE_SELF | IN_DELETE_SELF
"""Written, truncated, renamed or removed: anything after which a look is worth it."""
READ_BYTES = 4096


class FileWaker:
    """An inotify instance watching one file, and a pipe to end a wait early."""

    def __init__(self, libc: ctypes.CDLL, descriptor: int) -> None:
        self._libc = libc
        self._inotify = descriptor
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._watch = -1
        self._lock = threading.Lock()  # wake() comes from another thread than close()
        self._closed = False

    def watch(self, path: str) -> None:
        """Watch the file now at ``path`` instead of the one before; a failure (e.g. the
        watch limit) leaves the poll alone to notice changes."""
        watch = int(self._libc.inotify_add_watch(self._inotify, os.fsencode(path), WATCHED))
        if watch != self._watch and self._watch >= 0:
            self._libc.inotify_rm_watch(self._inotify, self._watch)
        self._watch = watch

    def wait(self, seconds: float, on_write: bool) -> None:
        """Until :meth:`wake` is called or ``seconds`` pass, or with ``on_write`` until the
        file changes. Events are dropped after the wake, before the read they prompt: one
        dropped before the wait could be of a write not read yet. An event of a change
        read already costs a look that finds nothing."""
        watched = [self._wake_read, self._inotify] if on_write else [self._wake_read]
        ready, _, _ = select.select(watched, [], [], seconds)
        if self._inotify in ready:
            _drain(self._inotify)

    def wake(self) -> None:
        with self._lock:
            if not self._closed:
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wake_write, b"\0")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for descriptor in (self._inotify, self._wake_read, self._wake_write):
                with contextlib.suppress(OSError):
                    os.close(descriptor)


def _drain(descriptor: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(descriptor, READ_BYTES):
            pass


def file_waker() -> FileWaker | None:
    """A waker, or None where inotify is not to be had."""
    try:  # the process's own symbols, libc's among them (find_library would run ldconfig)
        libc = ctypes.CDLL(None, use_errno=True)
        init = libc.inotify_init1
    except (OSError, AttributeError):
        return None
    descriptor = int(init(IN_NONBLOCK | IN_CLOEXEC))
    if descriptor < 0:
        return None
    return FileWaker(libc, descriptor)
