"""What every log follower shares: a background thread, a feed, a position, an up state.

A follower reads one source (:mod:`.files`, :mod:`.journal`, or standard input here) in
its own thread and hands complete lines to its :class:`Feed`, which runs them through
the dispatcher under the counters' lock, one batch at a time. After each batch the
follower records its position (``checkpoint``: plain JSON data) so that the state
file, and a reload's successor, resume exactly after the last line counted.

A source that cannot be read is never silent: ``up`` drops to 0 and the reason is
logged once, when it changes.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from mail_exporter.collectors.logs.config import LogsConfig, LogSource
from mail_exporter.collectors.logs.dispatch import BatchFeeder
from mail_exporter.collectors.logs.lines import LineSplitter

logger = logging.getLogger(__name__)
T = TypeVar("T")

CHUNK_BYTES = 256 * 1024
"""One read: about 1,300 lines of a mail log (262,144 if all are empty). A scrape waits for
the counters' lock at most while one read is dispatched: about 1 ms of mail log lines
compiled, 2 ms in pure Python, and some 25 to 55 ms for a read of empty lines."""
DISPATCH_LINES = 2048
"""Lines handed to the dispatcher in one call. Compiled (the image's build), the
dispatcher's loop over them never lets another thread run, as the interpreter does every
5 ms; between calls it can. 2,048 lines are about 2 ms of Postfix lines and 0.2 ms of empty
ones: with five reads' worth of empty lines (262,144 each), another thread waited at most
25 ms for its turn when each read went in one call, 8 ms in slices (the pure Python
dispatcher: 6 to 9 ms)."""
Position = dict[str, Any]


class Feed:
    """Where a follower's lines go: the dispatcher, under the counters' lock."""

    def __init__(
        self,
        feed_lines: BatchFeeder,
        feed_messages: Callable[[list[tuple[str, str]]], None],
        lock: threading.Lock,
        progress: Callable[[], None],
    ) -> None:
        self._feed_lines = feed_lines
        self._feed_messages = feed_messages
        self._lock = lock
        self.progress = progress

    def lines(self, lines: list[str]) -> None:
        with self._lock:
            _in_slices(self._feed_lines, lines)

    def messages(self, messages: list[tuple[str, str]]) -> None:
        with self._lock:
            _in_slices(self._feed_messages, messages)


def _in_slices(feed: Callable[[list[T]], None], items: list[T]) -> None:
    """``items`` to ``feed`` at most :data:`DISPATCH_LINES` at a time."""
    for start in range(0, len(items), DISPATCH_LINES):
        feed(items[start : start + DISPATCH_LINES])


class Follower:
    """Base of the followers: thread, stop flag, up state and problem reporting."""

    def __init__(self, source: LogSource, settings: LogsConfig) -> None:
        self.source = source
        self.label = source.label
        self.key = f"{source.type}:{source.label}"
        self.start_at = settings.start_at
        self.poll_interval = float(settings.poll_interval)
        self.max_line_bytes = settings.max_line_bytes
        self.up = False
        self.lines_read = 0
        self.too_long = 0
        self.rotations: dict[str, int] = {}
        self.checkpoint: Position = {}
        self.problem: str | None = "not started"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._feed: Feed | None = None

    def count_on(self, predecessor: Follower) -> None:
        """Go on with the counts of the follower this one succeeds (the same source)."""
        self.lines_read = predecessor.lines_read
        self.too_long = predecessor.too_long
        self.rotations = dict(predecessor.rotations)

    def start(self, feed: Feed, position: Position | None) -> None:
        self._feed = feed
        self.restore(position or {})
        self._thread = threading.Thread(target=self._run, name=f"logs {self.label}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            self.run()
        except Exception as error:  # the thread must not die silently
            logger.exception("log source %s stopped", self.label)
            self.report(f"stopped after an unexpected error: {error!r}")

    def run(self) -> None:
        raise NotImplementedError

    def restore(self, position: Position) -> None:
        """Resume from a position recorded by an earlier follower of the same source."""

    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def report(self, problem: str | None) -> None:
        """Record whether the source can be read; log the reason when it changes."""
        self.up = problem is None
        if problem == self.problem:
            return
        if problem is None:
            logger.info("log source %s: reading", self.label)
        else:
            logger.warning("log source %s: %s", self.label, problem)
        self.problem = problem

    def deliver(self, lines: list[str], splitter: LineSplitter) -> None:
        self.too_long += splitter.too_long
        splitter.too_long = 0
        if lines and self._feed is not None:
            self.lines_read += len(lines)
            self._feed.lines(lines)

    def progressed(self, checkpoint: Position) -> None:
        self.checkpoint = checkpoint
        if self._feed is not None:
            self._feed.progress()


class StdinFollower(Follower):
    """Lines piped into the exporter (``tail -F log | mail-exporter ...``) until EOF."""

    def __init__(self, source: LogSource, settings: LogsConfig, descriptor: int = 0) -> None:
        super().__init__(source, settings)
        self.descriptor = descriptor
        self.splitter = LineSplitter(self.max_line_bytes)

    def restore(self, position: Position) -> None:
        partial = position.get("partial")
        if isinstance(partial, str):
            self.splitter.partial = bytes.fromhex(partial)

    def run(self) -> None:
        self.report(None)
        while not self.stopping():
            ready, _, _ = select.select([self.descriptor], [], [], self.poll_interval)
            if not ready:
                continue
            data = os.read(self.descriptor, CHUNK_BYTES)
            if not data:
                self.deliver(self.splitter.flush(), self.splitter)
                self.report("standard input is closed")
                return
            self.deliver(self.splitter.feed(data), self.splitter)
            self.progressed({"partial": self.splitter.partial.hex()})
