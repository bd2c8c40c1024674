"""Collector work that runs on an interval of its own, in a thread of the collector's own.

For sources too slow or too touchy to read at every scrape: smartctl talks to every
disk, blocklists ban heavy queriers. The first scrape runs the work itself and waits for
it (bounded by the collector's timeout, as any collection), so that it has something to
report; after that, the first scrape past the interval starts the work in the
collector's own thread, and every scrape returns at once with what the last finished
run left. The work keeps its result itself: this only decides when it runs, and where.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

Runner = Callable[[Callable[[], None]], object]
"""Starts a run somewhere else than the scrape's thread (a thread of the collector's own)."""


class IntervalWork:
    """Runs ``work`` at most once per ``interval`` seconds, as scrapes come (see above)."""

    def __init__(
        self,
        name: str,
        interval: float,
        work: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        background: Runner | None = None,
    ) -> None:
        self.interval = interval
        self.work = work
        self.clock = clock
        self._thread: ThreadPoolExecutor | None = None
        if background is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix=name)
            background = self._thread.submit
        self.background = background
        self._due: float | None = None

    def tick(self) -> None:
        """A scrape: run the work now the first time, start it in the background when due."""
        if self._due is None:
            self._due = self.clock() + self.interval
            self.work()
        elif self.clock() >= self._due:
            self._due = self.clock() + self.interval
            self.background(self.work)

    def close(self) -> None:
        """Drop a run that has not started; one in progress ends at its own time limit."""
        if self._thread is not None:
            self._thread.shutdown(wait=False, cancel_futures=True)
