"""Background probing of the configured targets, and the results cache /metrics reads.

Each target has its own task: a random first delay spreads the targets over
their interval, then it probes on a fixed beat (a probe that overruns skips
the beats it missed rather than bunching up).  Slots (:mod:`mail_exporter.slots`)
bound the probes in flight to ``global.concurrency``; a probe's deadline starts
once it holds a slot.  ``/metrics`` reads the cache and never waits on a network probe.

A reload touches only what it changes.  A target whose entry, module and
effective interval are the same keeps its task: its probe in flight finishes
and is recorded, and its beat stays (no new random delay), so reloads however
frequent never starve a slow target of results.  A changed target restarts
with a fresh history, and a removed one stops; the probe either had in flight
is cancelled, since its result would describe a config no longer running (and
a removed target must leave /metrics at once).  A new ``global.concurrency``
resizes the one set of slots: probes in flight keep theirs and count against
the new bound, so lowering it starts no probe until those in flight are below
it, and raising it starts waiting probes at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import Metric

from mail_exporter.config.probes import ModuleConfig, TargetConfig
from mail_exporter.config.root import Config
from mail_exporter.exposition import header, sample_lines
from mail_exporter.latency import LATENCY, LatencyHistogram
from mail_exporter.metrics import PROBE_METRICS, probe_families
from mail_exporter.probes import ProbeMemory, ProbeResult, run_probe
from mail_exporter.slots import Slots
from mail_exporter.targets import parse_address

logger = logging.getLogger(__name__)

SCHEDULED_LABELS = ("target", "module", "protocol")
_LATENCY = LATENCY.after(SCHEDULED_LABELS)


@dataclass
class TargetState:
    """What the exporter remembers about one target between scrapes."""

    target: TargetConfig
    module: ModuleConfig
    result: ProbeResult | None = None
    last_success: float | None = None
    probed_at: float | None = None
    """When the last probe ended (wall clock)."""
    down_since: float | None = None
    """When the first of the failed probes since the last success ended."""
    failures: dict[str, float] = field(default_factory=dict)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    rendered: tuple[bytes, ...] = ()
    """This target's exposition lines of each family, in the order of :data:`_HEADERS`
    (empty where it has none), rendered and encoded when a result arrives."""

    @property
    def labels(self) -> tuple[str, str, str]:
        return (self.target.name, self.target.module, self.module.protocol)

    def record(self, result: ProbeResult) -> None:
        self.result = result
        self.probed_at = now = time.time()
        self.latency.observe(result.duration_seconds)
        if result.success:
            self.last_success = now
            self.down_since = None
        else:
            self.down_since = self.down_since or now
            if result.failure is not None:
                reason = result.failure.reason.value
                self.failures[reason] = self.failures.get(reason, 0.0) + 1.0
        series = self.module.series
        families = probe_families(
            SCHEDULED_LABELS,
            self.labels,
            result,
            self.failures,
            self.last_success,
            series.zero_failure_counters,
        )
        if series.latency_histogram:
            families.append(_LATENCY.family([(self.labels, self.latency)]))
        lines = {family.name: sample_lines(family).encode() for family in families}
        self.rendered = tuple(lines.get(name, b"") for name, _ in _HEADERS)


@dataclass
class _Scheduled:
    """A target's task and what it was started with."""

    state: TargetState
    interval: float
    task: asyncio.Task[None]

    def runs(self, target: TargetConfig, module: ModuleConfig, interval: float) -> bool:
        state = self.state
        return (state.target, state.module, self.interval) == (target, module, interval)


class Scheduler:
    """Runs every configured target on its interval; swap configs with :meth:`apply`."""

    def __init__(self, memory: ProbeMemory | None = None) -> None:
        self.states: dict[str, TargetState] = {}
        self._scheduled: dict[str, _Scheduled] = {}
        self._slots = Slots(64)
        self.memory = memory or ProbeMemory()
        """Revocation answers and TLS scans kept between probes (shared with /probe)."""

    def apply(self, config: Config) -> None:
        """Probe ``config``'s targets: unchanged ones go on undisturbed, others (re)start."""
        self._slots.resize(config.global_.concurrency)
        previous, scheduled = self._scheduled, {}
        for target in config.targets:
            module, interval = config.modules[target.module], config.interval_of(target)
            kept = previous.pop(target.name, None)
            if kept is None or not kept.runs(target, module, interval):
                if kept is not None:
                    kept.task.cancel()
                state = TargetState(target, module)
                task = asyncio.create_task(self._run(state, interval), name=f"probe {target.name}")
                kept = _Scheduled(state, interval, task)
            scheduled[target.name] = kept
        for gone in previous.values():
            gone.task.cancel()
        self._scheduled = scheduled
        self.states = {name: entry.state for name, entry in scheduled.items()}
        logger.info("scheduling %d targets", len(scheduled))

    def stop(self) -> None:
        for entry in self._scheduled.values():
            entry.task.cancel()
        self._scheduled = {}

    async def _run(self, state: TargetState, interval: float) -> None:
        loop = asyncio.get_running_loop()
        address = parse_address(state.target.address)
        await asyncio.sleep(random.uniform(0, interval))
        beat = loop.time()
        while True:
            async with self._slots.slot():
                result = await run_probe(
                    address, state.module, state.module.timeout_seconds, self.memory
                )
            state.record(result)
            if result.failure is not None:
                failure = result.failure
                logger.debug(
                    "target %s failed in %s: %s: %s",
                    state.target.name,
                    failure.phase.value,
                    failure.reason.value,
                    failure.detail,
                )
            beat += interval
            now = loop.time()
            if beat < now:  # the probe overran: skip the beats it missed
                beat += math.ceil((now - beat) / interval) * interval
            await asyncio.sleep(beat - now)

    def render(self) -> Iterator[bytes]:
        """Every target's latest result in the text format, family by family, in pieces
        (a family's header, then its lines): a gzipped scrape compresses them one by one
        and never holds the whole text, which is megabytes with thousands of targets.

        Safe from a worker thread: the event loop only ever replaces ``states`` and a
        state's ``rendered`` whole, never changes them in place."""
        rows = [state.rendered for state in self.states.values() if state.rendered]
        # zip(*rows) turns the targets' rows into the families' columns without a Python
        # step per target and family (5,000 targets: 5,000 steps, not 110,000).
        for (_, family_header), column in zip(_HEADERS, zip(*rows, strict=True), strict=False):
            body = b"".join(column)
            if body:
                yield family_header
                yield body


def scheduled_families() -> list[Metric]:
    """Every family of the scheduled probes, without samples, in the order /metrics shows them."""
    return [spec.after(SCHEDULED_LABELS).empty() for spec in (*PROBE_METRICS, LATENCY)]


_HEADERS = [(family.name, header(family).encode()) for family in scheduled_families()]
