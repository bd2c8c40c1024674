"""The collector framework: the registry, and the set of collectors a config switches on.

Collectors follow the node_exporter pattern: registered by name, switched on, never
fatal. A collector module registers a factory with :func:`register_collector`, together
with its name, its help (the flag's) and the model of its config section, which becomes
``collectors.NAME`` in the config (see :mod:`mail_exporter.config.collectors`); the CLI
turns every registration into ``--collector.NAME`` / ``--no-collector.NAME``,
and a flag given on the command line wins over the section's ``enabled`` key.
At each scrape :class:`CollectorSet` runs the enabled collectors in worker
threads (never on the event loop), each within its section's ``timeout``, and
reports ``mail_exporter_collector_success`` and ``..._duration_seconds`` for
each: a failing or hanging collector costs its own metrics and nothing else.

A collection's duration is timed in the thread that runs it, so a slow collector
does not make the ones read after it look slow; one that has not ended (timed out,
or its previous collection still running) reports how long it has been waited for.

Each collector's collections run in a daemon thread of its own, started by the first
scrape that needs it and kept for the next ones (until the set is closed): starting a
thread at every scrape cost more than the host collectors' own work (0.7 ms of CPU a
scrape of four, mostly the new threads' start-up contending with the ones already
running). A collection stuck in a system call (a read from a FIFO or a hung mount, a command
that does not end) cannot be interrupted from outside; as a daemon thread it at least
does not keep the process alive at exit, and since at most one collection of each
collector runs at a time (see below), a stuck source holds one thread, not one per scrape.

Scrapes share collections. A scrape that finds a collection of a collector in flight
waits for that one, within the collector's timeout, instead of starting another or
failing: two Prometheus servers (an HA pair) scraping at once both get the result.
A collection that has overrun its timeout is not waited for: the scrape reports it as
still running.

A collector that does long work of its own (walking a directory tree) asks
:func:`collection_deadline` when its collection's time is up and stops there, raising
:class:`CollectorError`, so that a timeout ends the work and not only the wait for it.
The deadline travels in a context variable, set by the thread running the collection,
so that the ``collect()`` signature stays the same for every collector.

A reload keeps each collector whose section is unchanged (sections compare by
value), so caches and read positions survive a SIGHUP: the dns collector's answers
(blocklists ban heavy queriers), the log followers' offsets, smartctl's slow-interval
readings. A factory is given only its own section, typed as the collector registered it.
A collector whose section changed is rebuilt: its factory is handed the running one, its
predecessor, to take over what must outlive it (the log followers' positions and the
counters, which must neither start over nor count a line twice), and the predecessor is
closed once the new one runs. Those no longer enabled are closed. Nothing is handed
over any other way: no module keeps a collector's state.

Each collection's outcome is kept as the collector's :class:`CollectorHealth` (whether it
worked, since when it fails, its last error and when): the status page shows it, so that
a failing collector is seen with its own words ("… has no hold directory: not a Postfix
queue directory") and not guessed at. The same record decides what is logged: a failure
when it starts or changes, and the recovery, never every scrape while it lasts.
"""

from __future__ import annotations

import copy
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client.core import Metric

from mail_exporter.config.collectors import CollectorSection, CollectorSections
from mail_exporter.metric_spec import MetricSpec, as_is

logger = logging.getLogger(__name__)

COMMAND_TIME_SHARE = 0.8
"""Share of a collector's timeout that its own work (commands, scans) may use, leaving
time to say why it stopped before the scrape stops waiting."""


SUCCESS = MetricSpec(
    "mail_exporter_collector_success", "1 if the collector's last scrape worked.", "gauge",
    ("collector",), as_is,
)  # fmt: skip
DURATION = MetricSpec(
    "mail_exporter_collector_duration_seconds", "Seconds the collector's own last collection took "
    "(unfinished: waited so far).", "gauge", ("collector",), as_is,
)  # fmt: skip


class Collector(Protocol):
    """Anything that yields fresh metric families on each call."""

    def collect(self) -> Iterable[Metric]: ...


class CollectorError(Exception):
    """A collector could not read its source; the message says what and why."""


SectionT = TypeVar("SectionT", bound=CollectorSection)
Factory = Callable[[SectionT, Collector | None], Collector]
"""Builds a collector from its section and its predecessor (None at the first start)."""


@dataclass(frozen=True)
class CollectorSpec(Generic[SectionT]):
    name: str
    help: str
    section: type[SectionT]
    """The model of the collector's config section, ``collectors.NAME``."""
    factory: Factory[SectionT]

    def build(self, section: CollectorSection, previous: Collector | None) -> Collector:
        if not isinstance(section, self.section):
            raise TypeError(f"collector {self.name} takes {self.section.__name__}, not {section!r}")
        return self.factory(section, previous)


COLLECTORS: dict[str, CollectorSpec[Any]] = {}
"""By name, in the order the collectors register (the order of the config's sections)."""


def register_collector(
    name: str, help: str, section: type[SectionT]
) -> Callable[[Factory[SectionT]], Factory[SectionT]]:
    """Decorator for a collector factory, which takes its own section and its predecessor."""

    def register(factory: Factory[SectionT]) -> Factory[SectionT]:
        COLLECTORS[name] = CollectorSpec(name, help, section, factory)
        return factory

    return register


def enabled_collectors(
    configured: CollectorSections, flags: Mapping[str, bool | None]
) -> list[str]:
    """Names to run: the command-line flag where one was given, else the section's ``enabled``."""
    names = []
    for name in sorted(COLLECTORS):  # scrapes report them by name, as the flags list them
        flag = flags.get(name)
        if flag if flag is not None else configured.section(name).enabled:
            names.append(name)
    return names


_deadline: ContextVar[float] = ContextVar("collection_deadline", default=math.inf)


def collection_deadline() -> float:
    """When the running collection's work must stop, on the :func:`time.monotonic` clock.

    That is the share of the collector's timeout its commands get (``COMMAND_TIME_SHARE``),
    so that the collector can still say why it stopped before the scrape stops waiting.
    Infinite outside a collection (a collector called directly, as in its unit tests).
    """
    return _deadline.get()


@dataclass(frozen=True)
class CollectorHealth:
    """How a collector's collections went (wall-clock times), for the status page."""

    success: bool | None = None
    """None until a collection of it has ended (or been given up on) since it started."""
    checked: float | None = None
    failing_since: float | None = None
    """When the failures that go on now began; None while it works."""
    error: str = ""
    """The last failure's reason, kept after the collector works again."""
    error_time: float | None = None


class _Worker:
    """A collector's daemon thread: runs its collections one after the other."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[_Collection, Collector] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, name=f"collector {name}", daemon=True)
        self.thread.start()

    def run(self, collection: _Collection, collector: Collector) -> None:
        self._jobs.put((collection, collector))

    def stop(self) -> None:
        """End the thread once the collection it runs, if any, has ended."""
        self._jobs.put(None)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            collection, collector = job
            collection.run(collector)


class _Collection:
    """One collection, run and timed by its collector's worker thread."""

    def __init__(
        self, worker: _Worker, collector: Collector, submitted: float, timeout: float
    ) -> None:
        self.submitted = submitted  # the scrape's start: its wait and this deadline are one
        self.deadline = self.submitted + timeout
        """Until when scrapes wait for it."""
        self.work_deadline = self.submitted + timeout * COMMAND_TIME_SHARE
        """What :func:`collection_deadline` tells the collector."""
        self.took: float | None = None
        self.future: Future[list[Metric]] = Future()
        worker.run(self, collector)

    def run(self, collector: Collector) -> None:
        _deadline.set(self.work_deadline)  # the thread's own context: no other one sees it
        began = time.monotonic()
        try:
            try:
                families = list(collector.collect())
            finally:
                self.took = time.monotonic() - began  # before the outcome: scrapes read it then
        except BaseException as error:  # handed to the scrapes, which log it
            self.future.set_exception(error)
        else:
            self.future.set_result(families)

    def seconds(self) -> float:
        """Its own duration once ended; until then, how long it has been waited for."""
        return self.took if self.took is not None else time.monotonic() - self.submitted


class CollectorSet:
    """The enabled collectors of one config, and the collections of each in flight."""

    def __init__(self, configured: CollectorSections, flags: Mapping[str, bool | None]) -> None:
        self.flags = flags
        self.collectors: dict[str, Collector] = {}
        self.timeouts: dict[str, float] = {}
        self._sections: dict[str, CollectorSection] = {}
        # Scrapes run in worker threads, several at once: they take collectors and timeouts
        # as one pair, and start a collection only when none of that collector is in flight.
        self._lock = threading.Lock()
        # Kept across reloads, so a rebuilt collector whose source hangs stays one thread.
        self._running: dict[str, _Collection] = {}
        self._workers: dict[str, _Worker] = {}
        self._health: dict[str, CollectorHealth] = {}
        self.apply(configured)

    def apply(self, configured: CollectorSections) -> None:
        """Switch to the collectors a config's ``collectors`` section switches on, keeping
        those whose own section is unchanged."""
        names = enabled_collectors(configured, self.flags)
        sections = {name: configured.section(name) for name in names}
        kept = {
            name: self.collectors[name]
            for name in names
            if name in self.collectors and self._sections.get(name) == sections[name]
        }
        collectors = {
            name: kept[name]
            if name in kept
            else COLLECTORS[name].build(sections[name], self.collectors.get(name))
            for name in names
        }
        with self._lock:
            replaced, self.collectors = self.collectors, collectors
            self.timeouts = {name: float(section.timeout) for name, section in sections.items()}
            self._sections = sections
            idle = [self._workers.pop(name) for name in set(self._workers) - set(names)]
        for worker in idle:  # the threads of collectors no longer enabled
            worker.stop()
        for name, collector in replaced.items():
            if kept.get(name) is not collector:
                _close(collector)
        rebuilt = sorted(set(names) - set(kept))
        if rebuilt:
            logger.info("collectors started: %s", ", ".join(rebuilt))

    def health(self) -> dict[str, CollectorHealth]:
        """Each enabled collector's health, by name (kept across reloads while enabled)."""
        return {name: self._health.get(name, CollectorHealth()) for name in self.collectors}

    def close(self) -> None:
        """Close the collectors and end their threads; collections still running end on their
        own (daemon threads), and their threads after them."""
        for collector in self.collectors.values():
            _close(collector)
        with self._lock:
            workers, self._workers = self._workers, {}
        for worker in workers.values():
            worker.stop()

    def _collection(
        self, name: str, collector: Collector, started: float, timeout: float
    ) -> _Collection:
        """The collection of ``name`` in flight, or a new one when none is (call with the lock)."""
        running = self._running.get(name)
        if running is None or running.future.done():
            worker = self._workers.get(name)
            if worker is None:
                worker = self._workers[name] = _Worker(name)
            running = self._running[name] = _Collection(worker, collector, started, timeout)
        return running

    def collect(self) -> Iterable[Metric]:
        families, outcomes = self._gather(None)
        yield from families
        if outcomes:
            yield SUCCESS.family(((name,), worked) for name, worked, _ in outcomes)
            yield DURATION.family(((name,), seconds) for name, _, seconds in outcomes)

    def families_of(self, names: Collection[str]) -> list[Metric]:
        """The families the named collectors that run have now, for the pages that show them.

        A collection as a scrape's, shared with one in flight, and within the same timeouts
        (callers run it in a worker thread): what the collectors measure now, not what the
        last scrape left, so that a page opened before any scrape shows it too."""
        families, _ = self._gather(names)
        return families

    def _gather(
        self, names: Collection[str] | None
    ) -> tuple[list[Metric], list[tuple[str, bool, float]]]:
        """The families of the named collectors (all: None) merged, and whether each one
        worked and how long it took."""
        with self._lock:
            started = time.monotonic()
            timeouts = self.timeouts
            collections = {
                name: self._collection(name, collector, started, timeouts[name])
                for name, collector in self.collectors.items()
                if names is None or name in names
            }
        # Collectors may share metric names (every queue collector exports mail_queue_*):
        # their samples merge into one family, as the exposition format requires. The
        # merge works on copies: a shared collection's families belong to every scrape.
        # A family no other collector shares is passed on as it is, so that one rendered
        # once (exposition.RenderedFamily) keeps its text.
        merged: dict[str, Metric] = {}
        copies: set[str] = set()
        outcomes = []
        for name, collection in collections.items():
            families = self._result(name, collection, started, timeouts[name])
            outcomes.append((name, families is not None, collection.seconds()))
            for family in families or []:
                known = merged.get(family.name)
                if known is None:
                    merged[family.name] = family
                    continue
                if family.name not in copies:
                    copies.add(family.name)
                    known = merged[family.name] = copy.copy(known)
                    known.samples = list(known.samples)
                known.samples.extend(family.samples)
        return list(merged.values()), outcomes

    def _result(
        self, name: str, collection: _Collection, started: float, timeout: float
    ) -> list[Metric] | None:
        """The collection's families, waited for until its deadline or the scrape's own."""
        try:
            until = min(collection.deadline, started + timeout)
            families = collection.future.result(timeout=max(0.0, until - time.monotonic()))
        except FutureTimeout:
            if collection.deadline <= started:
                self._failed(name, "the previous collection is still running")
            else:
                self._failed(name, f"no result within {timeout:.3g}s")
        except CollectorError as error:
            self._failed(name, f"failed: {error}")
        except Exception as error:  # a broken collector must not break the scrape
            logger.exception("collector %s failed", name)
            self._failed(name, f"failed unexpectedly: {error!r}", logged=True)
        else:
            before = self._health.get(name, CollectorHealth())
            if before.success is False:
                logger.info("collector %s works again", name)
            self._health[name] = replace(
                before, success=True, checked=time.time(), failing_since=None
            )
            return families
        return None

    def _failed(self, name: str, reason: str, logged: bool = False) -> None:
        """Keep the failure; log it when it starts or changes, not at every scrape while it
        lasts (``logged``: the caller has logged it already)."""
        before, now = self._health.get(name, CollectorHealth()), time.time()
        going_on = before.success is False
        if not logged and not (going_on and before.error == reason):
            logger.warning("collector %s: %s", name, reason)
        since = before.failing_since if going_on else now
        self._health[name] = CollectorHealth(False, now, since, reason, now)


def _close(collector: Collector) -> None:
    close = getattr(collector, "close", None)  # collectors that own background work
    if close is not None:
        close()
