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

A scrape reads each target's lines as they were rendered when its result came
(:attr:`TargetState.rendered`). Gzipped, as Prometheus asks for it, it would still
compress all of them again: 17 MiB in some 30 ms at 5,000 targets, and as long to
gather them family by family. So the targets are put in buckets by the time of their
last result within their interval (its phase), and each bucket's lines of each family
are kept compressed (:mod:`mail_exporter.gzip_body`) until a target of the bucket has a
new result. A target probes on a fixed beat, so a bucket's results come within a slice
of the interval, and a scrape compresses the buckets whose slice passed since the
scrape before: about a quarter of them with a 60 s interval scraped every 15 s.
Grouping by "changed since the previous scrape" instead would scatter a target's next
result into another group, leaving every old group to be compressed again without it.
The order of a family's series is free in the text format; a bucket's follow the
targets' order in the config.

There is a bucket per :data:`TARGETS_PER_BUCKET` targets, up to :data:`MAX_BUCKETS`:
a bucket's lines of a family are compressed on their own, and too few lines to a part
make a larger body (500 targets in 32 buckets: 136 KiB against 112 KiB in one stream;
in 3 buckets, 108 KiB). While gzipped scrapes come, a worker thread also compresses the
changed buckets once per slice (a bucket's share of the shortest interval), between
scrapes: a scrape is then left with the results of the last second or two, and its
latency does not depend on how far apart the scrapes are. That costs no more CPU than
the scrapes would spend (a bucket's results come within its slice, so it is compressed
about once or twice per interval).

A plain scrape writes the same lines uncompressed, bucket by bucket, so that the
whole text (megabytes) is never held at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import Metric

from mail_exporter.config.probes import ModuleConfig, TargetConfig
from mail_exporter.config.root import Config
from mail_exporter.exposition import header, sample_lines
from mail_exporter.gzip_body import Part, compress
from mail_exporter.latency import LATENCY, LatencyHistogram
from mail_exporter.metrics import PROBE_METRICS, probe_families
from mail_exporter.probes import ProbeMemory, ProbeResult, run_probe
from mail_exporter.slots import Slots
from mail_exporter.targets import parse_address

logger = logging.getLogger(__name__)

SCHEDULED_LABELS = ("target", "module", "protocol")
_LATENCY = LATENCY.after(SCHEDULED_LABELS)
MAX_BUCKETS = 32
"""At most this many slices of the interval by which the targets' compressed lines are
kept (see above)."""
TARGETS_PER_BUCKET = 128
"""Targets to a bucket, below :data:`MAX_BUCKETS` buckets: enough lines to a part that
compressing them apart costs little in size."""
REFRESH_WHILE_SCRAPED = 300.0
"""Seconds after a gzipped scrape during which changed buckets are compressed between
scrapes; without gzipped scrapes nothing is compressed."""


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
    phase: float = 0.0
    """When in its interval its last result came, from 0 to 1 (which bucket it is in)."""

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
        self._compressing = threading.Lock()
        self._compressed: list[tuple[list[tuple[bytes, ...]], tuple[Part | None, ...]]] = []
        """Each bucket's rows as last compressed, and its families' parts."""
        self._asked = -math.inf
        """When a scrape last asked for :meth:`compressed` (monotonic clock)."""
        self._refresher: asyncio.Task[None] | None = None
        self._tick = math.inf

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
        self._tick = min((entry.interval for entry in scheduled.values()), default=math.inf)
        self._tick /= _bucket_count(len(scheduled))
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh(), name="compress results")
        logger.info("scheduling %d targets", len(scheduled))

    def stop(self) -> None:
        for entry in self._scheduled.values():
            entry.task.cancel()
        self._scheduled = {}
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None

    async def _refresh(self) -> None:
        """Compress the changed buckets once per slice while gzipped scrapes come."""
        while True:
            await asyncio.sleep(min(self._tick, REFRESH_WHILE_SCRAPED))
            if time.monotonic() - self._asked < REFRESH_WHILE_SCRAPED:
                await asyncio.to_thread(self._compress)

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
            state.phase = loop.time() % interval / interval
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
        (a family's header, then the lines of each bucket's targets), never the whole text.

        Safe from a worker thread: the event loop only ever replaces ``states`` and a
        state's ``rendered`` whole, never changes them in place."""
        columns = [_columns(rows) for rows in self._rows() if rows]
        for family, (_, family_header) in enumerate(_HEADERS):
            if any(any(bucket[family]) for bucket in columns):  # any target's lines
                yield family_header
                for bucket in columns:
                    if body := b"".join(bucket[family]):
                        yield body

    def compressed(self) -> list[Part]:
        """What :meth:`render` yields, as compressed parts: those of the buckets whose
        targets' results are those of the last call are not compressed again."""
        self._asked = time.monotonic()
        cache = self._compress()
        parts = []
        for family, (_, family_header) in enumerate(_PARTS):
            found = [part for _, bucket in cache if (part := bucket[family]) is not None]
            if found:
                parts.append(family_header)
                parts += found
        return parts

    def _compress(self) -> list[tuple[list[tuple[bytes, ...]], tuple[Part | None, ...]]]:
        """Compress the buckets with new results; each bucket's rows and parts, as now."""
        with self._compressing:  # scrapes and the refresher share one cache
            buckets = self._rows()
            if len(self._compressed) != len(buckets):  # targets added or removed
                self._compressed = [([], _compressed_bucket([]))] * len(buckets)
            cache = self._compressed
            for index, rows in enumerate(buckets):
                if cache[index][0] != rows:  # new results: compared by identity first
                    cache[index] = (rows, _compressed_bucket(rows))
            return list(cache)

    def _rows(self) -> list[list[tuple[bytes, ...]]]:
        """The targets' rendered rows (in config order) by bucket."""
        states = list(self.states.values())
        count = _bucket_count(len(states))
        buckets: list[list[tuple[bytes, ...]]] = [[] for _ in range(count)]
        for state in states:
            rendered = state.rendered
            if rendered:
                buckets[min(int(state.phase * count), count - 1)].append(rendered)
        return buckets


def _bucket_count(targets: int) -> int:
    return max(1, min(MAX_BUCKETS, targets // TARGETS_PER_BUCKET))


def _columns(rows: list[tuple[bytes, ...]]) -> list[tuple[bytes, ...]]:
    """The rows' lines family by family: zip(*rows) turns targets' rows into families'
    columns without a Python step per target and family."""
    return list(zip(*rows, strict=True))


def _compressed_bucket(rows: list[tuple[bytes, ...]]) -> tuple[Part | None, ...]:
    """A bucket's lines of each family compressed (None where it has none)."""
    if not rows:
        return (None,) * len(_HEADERS)
    return tuple(
        compress(body) if (body := b"".join(column)) else None for column in _columns(rows)
    )


def scheduled_families() -> list[Metric]:
    """Every family of the scheduled probes, without samples, in the order /metrics shows them."""
    return [spec.after(SCHEDULED_LABELS).empty() for spec in (*PROBE_METRICS, LATENCY)]


_HEADERS = [(family.name, header(family).encode()) for family in scheduled_families()]
_PARTS = [(name, compress(text)) for name, text in _HEADERS]
