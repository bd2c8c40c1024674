"""Scheduled probing at scale: 500 to 5,000 targets, half of them servers that never answer.

Measures, against the real exporter run as a subprocess with a generated config:

(a) every scheduled target gets one result per interval (no cycle is missed or bunched),
    and a probe of a silent server ends at its timeout: ``mail_probe_duration_seconds``
    of every silent target stays within [timeout - 0.1 s, timeout + 0.5 s];
(b) ``/metrics`` latency while probes hang, as Prometheus scrapes it (``Accept-Encoding:
    gzip``): median < 20 ms, p95 < 50 ms; every other scrape asks for the plain text,
    whose latency is reported too;
(c) the exporter's peak RSS: target < 150 MB.

``--targets 500,1000,2000,5000`` runs each count in turn (a fresh exporter each, the same
helpers) and ends with a table of how the cost grows: CPU per probe, RSS per target,
``/metrics`` latency gzipped and plain, series per target. ``--compare DIR`` runs the
source tree in DIR (e.g. a checkout of the previous commit) at the same time against the same
targets, its scrapes taking turns with this code's, so that both meet the same machine load,
and prints both in that table.

Two helper processes (so their CPU is not the exporter's) serve the targets on 127.0.0.1:
one asyncio process accepts connections on many ports and never says a word, another
answers like a minimal SMTP server (banner, EHLO, QUIT). Target names are distinct;
silent targets spread over the silent ports, answering ones over a few SMTP ports.

Run: ``.venv/bin/python bench/scheduled_targets.py`` (about 2.5 minutes) or ``--quick``
(200 targets, 15 s interval, 2 cycles, about 40 s). Exits 1 when a target of this code is
missed, and prints each figure's ratio to its target.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import math
import re
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from harness import (
    LOOPBACK,
    Children,
    cpu_seconds,
    fill_defaults,
    machine_line,
    median,
    percentile,
    print_table,
    run_interruptibly,
    serve_ports,
    serve_smtp,
    start_exporter,
    start_helper,
)

METRICS_MEDIAN_TARGET_MS = 20.0
METRICS_P95_TARGET_MS = 50.0
RSS_TARGET_MB = 150.0
OVERRUN_ALLOWANCE_S = 0.5
UNDERRUN_ALLOWANCE_S = 0.1
# A cycle's result may land this long after interval + timeout (event loop, scrape spacing).
RESULT_SLACK_S = 1.5

# ---------------------------------------------------------------- helper servers


async def _serve_silent(ports: int) -> None:
    """Accept on ``ports`` listening sockets and never send a byte."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(4096):
                pass
        except ConnectionError:
            pass
        finally:
            writer.close()

    await serve_ports(handler, ports)


def _start_helper(children: Children, role: str, ports: int, log: Path) -> list[int]:
    command = [sys.executable, __file__, "--role", role, "--ports", str(ports)]
    return start_helper(children, command, log)


# ---------------------------------------------------------------- /metrics reading

_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\} (\S+)$")
_TARGET = re.compile(r'target="([^"]*)"')
WANTED = (
    "mail_probe_duration_seconds",
    "mail_probe_success",
    "mail_probe_latency_seconds_count",
    "mail_probe_failure_info",
    "mail_probe_last_success_timestamp_seconds",
)


def parse_metrics(text: str) -> dict[str, dict[str, tuple[str, float]]]:
    """``{metric: {target: (label text, value)}}`` for the few metrics this benchmark reads."""
    found: dict[str, dict[str, tuple[str, float]]] = {name: {} for name in WANTED}
    for line in text.splitlines():
        if not line.startswith("mail_probe_"):
            continue
        match = _SAMPLE.match(line)
        if match is None or match.group(1) not in found:
            continue
        target = _TARGET.search(match.group(2))
        if target:
            found[match.group(1)][target.group(1)] = (match.group(2), float(match.group(3)))
    return found


@dataclass
class TargetSeen:
    """Every result of one target seen over the run: latency count → duration."""

    silent: bool
    durations: dict[int, float] = field(default_factory=dict)
    successes: dict[int, float] = field(default_factory=dict)
    ended: dict[int, float] = field(default_factory=dict)  # wall clock, successes only
    failure_labels: set[str] = field(default_factory=set)
    count: int = 0


@dataclass
class Run:
    interval: float
    timeout: float
    cycles: int
    spawned: float = 0.0
    ready: float = 0.0
    seen: dict[str, TargetSeen] = field(default_factory=dict)
    latencies_ms: dict[bool, list[float]] = field(default_factory=lambda: {True: [], False: []})
    """By whether the scrape asked for gzip."""
    body_bytes: dict[bool, list[int]] = field(default_factory=lambda: {True: [], False: []})
    """As sent (compressed where it was), by whether the scrape asked for gzip."""
    series_per_target: float = 0.0
    hanging: list[int] = field(default_factory=list)
    scrape_windows: list[tuple[float, float]] = field(default_factory=list)  # wall clock
    late: list[str] = field(default_factory=list)
    bunched: list[str] = field(default_factory=list)

    def record(self, scrape: dict[str, dict[str, tuple[str, float]]], at: float) -> None:
        """Check each target's result count against the schedule at time ``at``."""
        counts = scrape["mail_probe_latency_seconds_count"]
        # Lower bound from readiness (after the scheduler started), upper bound from the
        # spawn (before it): both err on the lenient side.
        since_ready, since_spawn = at - self.ready, at - self.spawned
        due = max(0, math.floor((since_ready - self.timeout - RESULT_SLACK_S) / self.interval))
        allowed = math.floor(since_spawn / self.interval) + 1
        for name, state in self.seen.items():
            count = int(counts.get(name, ("", 0.0))[1])
            state.count = count
            if count < due and len(self.late) < 50:
                self.late.append(f"{name}: {count} results at {since_ready:.1f}s, {due} due")
            if count > allowed and len(self.bunched) < 50:
                self.bunched.append(f"{name}: {count} results at {since_spawn:.1f}s, max {allowed}")
            if count and name in scrape["mail_probe_duration_seconds"]:
                state.durations[count] = scrape["mail_probe_duration_seconds"][name][1]
                state.successes[count] = scrape["mail_probe_success"].get(name, ("", -1.0))[1]
                if state.successes[count] == 1.0:
                    last = scrape["mail_probe_last_success_timestamp_seconds"].get(name)
                    state.ended[count] = last[1] if last else 0.0
            if name in scrape["mail_probe_failure_info"]:
                labels = scrape["mail_probe_failure_info"][name][0]
                state.failure_labels.add(re.sub(r'(target|module|protocol)="[^"]*",?', "", labels))


# ---------------------------------------------------------------- the benchmark


def write_config(
    path: Path,
    silent_ports: list[int],
    smtp_ports: list[int],
    targets: int,
    interval: float,
    timeout: float,
    concurrency: int,
) -> dict[str, bool]:
    """The exporter's config; returns target name → silent."""
    lines = [
        "global:",
        f"  interval: {interval:g}s",
        f"  concurrency: {concurrency}",
        "modules:",
        "  smtp_plain:",
        "    protocol: smtp",
        "    tls: none",
        f"    timeout: {timeout:g}s",
        "targets:",
    ]
    names: dict[str, bool] = {}
    for index in range(targets):
        silent = index % 2 == 0
        ports = silent_ports if silent else smtp_ports
        name = f"{'silent' if silent else 'smtp'}-{index // 2:03d}"
        port = ports[(index // 2) % len(ports)]
        lines.append(f"  - {{name: {name}, address: '{LOOPBACK}:{port}', module: smtp_plain}}")
        names[name] = silent
    path.write_text("\n".join(lines) + "\n")
    return names


class RssSampler(threading.Thread):
    """Samples the exporter's RSS and open connections of the silent helper every 0.2 s."""

    def __init__(self, exporter: psutil.Process) -> None:
        super().__init__(daemon=True)
        self.exporter = exporter
        self.rss: list[tuple[float, int]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            try:
                self.rss.append((time.monotonic(), self.exporter.memory_info().rss))
            except psutil.Error:
                return


def scrape(port: int, gzip: bool) -> tuple[float, str, int]:
    """One GET /metrics on a fresh connection, asking for gzip as Prometheus does or for
    the plain text: (milliseconds to the last byte, the text, the bytes sent)."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
    try:
        connection.request("GET", "/metrics", headers={"Accept-Encoding": "gzip" if gzip else ""})
        response = connection.getresponse()
        sent = response.read()
    finally:
        connection.close()
    elapsed_ms = (time.perf_counter() - started) * 1000
    if response.status != 200:
        raise RuntimeError(f"/metrics answered {response.status}")
    body = sent
    if response.getheader("Content-Encoding") == "gzip":
        body = zlib.decompress(sent, 16 + zlib.MAX_WBITS)
    return elapsed_ms, body.decode(), len(sent)


def series_per_target(text: str, targets: int) -> float:
    """Samples labelled with a scheduled target, per target."""
    return sum(1 for line in text.splitlines() if 'target="' in line) / targets


@dataclass
class Row:
    """One run's figures for the table of target counts."""

    code: str
    targets: int
    ok: bool
    cpu_per_probe_ms: float
    cpu_share: float
    rss_peak_mb: float
    latencies_ms: dict[bool, list[float]]
    body_bytes: dict[bool, list[int]]
    series_per_target: float


def run_counts(args: argparse.Namespace, children: Children, work: Path) -> int:
    """Every target count in turn, with the compared code first; the table; the verdict."""
    silent_ports = _start_helper(children, "silent", args.silent_ports, work / "silent.log")
    smtp_ports = _start_helper(children, "smtp", args.smtp_ports, work / "smtp.log")
    silent_helper = psutil.Process(children.processes[0].pid)
    codes: list[tuple[str, Path | None]] = [("this", None)]
    if args.compare:
        codes.insert(0, (args.compare.name, args.compare))
    rows = []
    for targets in args.targets:
        print(f"\n=== {targets} targets", flush=True)
        run_dir = work / str(targets)
        run_dir.mkdir()
        helpers = (silent_ports, smtp_ports, silent_helper)
        rows += run_benchmark(args, children, run_dir, helpers, targets, codes)
    print_table(
        "Cost by target count (gzip: Accept-Encoding: gzip, as Prometheus scrapes)",
        [
            (
                "code",
                "targets",
                "CPU per probe",
                "CPU",
                "RSS peak",
                "RSS per target",
                "/metrics gzip p50 / p95",
                "/metrics plain p50 / p95",
                "body gzip / plain",
                "series per target",
            ),
            *(
                (
                    row.code,
                    f"{row.targets:,}",
                    f"{row.cpu_per_probe_ms:.2f} ms",
                    f"{row.cpu_share * 100:.0f}% of a core",
                    f"{row.rss_peak_mb:.0f} MB",
                    f"{row.rss_peak_mb * 1000 / row.targets:.1f} kB",
                    _p50_p95(row.latencies_ms[True]),
                    _p50_p95(row.latencies_ms[False]),
                    f"{_kib(row.body_bytes[True])} / {_kib(row.body_bytes[False])}",
                    f"{row.series_per_target:.1f}",
                )
                for row in rows
            ),
        ],
    )
    print(f"\nmachine: {machine_line()}")
    ok = all(row.ok for row in rows if row.code == "this")
    print("verdict:", "all targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


def _p50_p95(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{median(values):.1f} / {percentile(values, 0.95):.1f} ms"


def _kib(sizes: list[int]) -> str:
    return f"{median(sizes) / 1024:,.0f} KiB" if sizes else "-"


@dataclass
class Arm:
    """One code's exporter in a run, and what was seen of it."""

    label: str
    run: Run
    exporter: subprocess.Popen[bytes]
    port: int
    sampler: RssSampler
    cpu_start: float
    log: Path


def run_benchmark(
    args: argparse.Namespace,
    children: Children,
    work: Path,
    helpers: tuple[list[int], list[int], psutil.Process],
    targets: int,
    codes: list[tuple[str, Path | None]],
) -> list[Row]:
    """Every code's exporter at once on the same targets, scraped in turn, so that each
    meets the same load from the rest of the machine."""
    silent_ports, smtp_ports, silent_helper = helpers
    idle_fds = silent_helper.num_fds()  # listening sockets, stdio, the event loop's own
    config = work / "mail_exporter.yml"
    names = write_config(
        config,
        silent_ports,
        smtp_ports,
        targets,
        args.interval,
        args.timeout,
        args.concurrency,
    )
    arms = []
    for label, code in codes:
        run = Run(args.interval, args.timeout, args.cycles)
        run.seen = {name: TargetSeen(silent) for name, silent in names.items()}
        log = work / f"exporter-{label}.log"
        run.spawned = time.monotonic()
        exporter, port = start_exporter(children, config, log, code=code)
        run.ready = time.monotonic()
        sampler = RssSampler(psutil.Process(exporter.pid))
        sampler.start()
        arms.append(Arm(label, run, exporter, port, sampler, cpu_seconds(exporter.pid), log))
    duration = args.cycles * args.interval + args.timeout + RESULT_SLACK_S + 0.5
    print(
        f"{targets} targets ({targets // 2 + targets % 2} silent on "
        f"{len(silent_ports)} ports, {targets // 2} answering on {len(smtp_ports)} ports), "
        f"interval {args.interval:g}s, timeout {args.timeout:g}s, concurrency "
        f"{args.concurrency}; running {duration:.0f}s with {args.scrapes} scrapes of each of "
        f"{', '.join(arm.label for arm in arms)}",
        flush=True,
    )
    ready = arms[-1].run.ready
    try:
        for index in range(args.scrapes):
            due = ready + duration * (index + 1) / args.scrapes
            time.sleep(max(0.0, due - time.monotonic()))
            gzip = args.gzip_only or index % 2 == 0
            for arm in arms if index % 4 < 2 else arms[::-1]:
                if arm.exporter.poll() is not None:
                    raise RuntimeError(f"exporter exited with {arm.exporter.returncode}")
                try:
                    hanging = silent_helper.num_fds() - idle_fds
                except psutil.Error:
                    hanging = -1
                run = arm.run
                started = time.time()
                elapsed_ms, body, sent = scrape(arm.port, gzip)
                run.scrape_windows.append((started, started + elapsed_ms / 1000))
                run.latencies_ms[gzip].append(elapsed_ms)
                run.body_bytes[gzip].append(sent)
                run.hanging.append(hanging)
                run.record(parse_metrics(body), time.monotonic())
                run.series_per_target = series_per_target(body, targets)
    finally:
        for arm in arms:
            arm.sampler.stopped.set()
            arm.sampler.join()
    rows = []
    for arm in arms:
        cpu_used = cpu_seconds(arm.exporter.pid) - arm.cpu_start
        elapsed = time.monotonic() - arm.run.ready
        children.stop(arm.exporter)
        print(f"\n--- {targets} targets, code: {arm.label}")
        ok = report(args, targets, arm.run, arm.sampler, cpu_used, elapsed, arm.log)
        probes = sum(state.count for state in arm.run.seen.values())
        rows.append(
            Row(
                arm.label,
                targets,
                ok,
                cpu_used / max(1, probes) * 1000,
                cpu_used / elapsed,
                max(rss for _, rss in arm.sampler.rss) / 1e6,
                arm.run.latencies_ms,
                arm.run.body_bytes,
                arm.run.series_per_target,
            )
        )
    return rows


def report(
    args: argparse.Namespace,
    targets: int,
    run: Run,
    sampler: RssSampler,
    cpu_seconds: float,
    elapsed: float,
    exporter_log: Path,
) -> bool:
    silent = [s for s in run.seen.values() if s.silent]
    answering = [s for s in run.seen.values() if not s.silent]
    silent_durations = [d for s in silent for d in s.durations.values()]
    answering_durations = [d for s in answering for d in s.durations.values()]
    during, outside = _split_by_scrapes(answering, run.scrape_windows)
    answering_failed = sum(1 for s in answering for ok in s.successes.values() if ok != 1.0)
    silent_succeeded = sum(1 for s in silent for ok in s.successes.values() if ok != 0.0)
    counts = [s.count for s in run.seen.values()]
    missing = [name for name, s in run.seen.items() if s.count < args.cycles]
    unseen = sum(
        1 for s in run.seen.values() for count in range(1, s.count + 1) if count not in s.durations
    )
    rss_mb = [rss / 1e6 for _, rss in sampler.rss]
    lat, plain = run.latencies_ms[True], run.latencies_ms[False]
    hanging = [h for h in run.hanging if h >= 0]
    silent_failures = sorted({label for s in silent for label in s.failure_labels})

    results: list[tuple[str, str, str, str, str]] = [
        ("check", "measured", "target", "ratio", "verdict")
    ]

    def check(name: str, measured: str, target: str, ok: bool, ratio: float | None = None) -> bool:
        shown = f"{ratio:.2f}x" if ratio is not None else ""
        results.append((name, measured, target, shown, "ok" if ok else "MISSED"))
        return ok

    ok = True
    ok &= check(
        "results per target (min..max)",
        f"{min(counts)}..{max(counts)}",
        f">= {args.cycles} each",
        not missing,
    )
    ok &= check("late results (cycle missed)", str(len(run.late)), "0", not run.late)
    ok &= check("bunched results (extra cycle)", str(len(run.bunched)), "0", not run.bunched)
    ok &= check(
        "silent probe duration max",
        f"{max(silent_durations):.3f} s",
        f"<= {args.timeout + OVERRUN_ALLOWANCE_S:.1f} s",
        max(silent_durations) <= args.timeout + OVERRUN_ALLOWANCE_S,
    )
    ok &= check(
        "silent probe duration min",
        f"{min(silent_durations):.3f} s",
        f">= {args.timeout - UNDERRUN_ALLOWANCE_S:.1f} s",
        min(silent_durations) >= args.timeout - UNDERRUN_ALLOWANCE_S,
    )
    ok &= check("silent probes reported success", str(silent_succeeded), "0", silent_succeeded == 0)
    ok &= check("answering probes failed", str(answering_failed), "0", answering_failed == 0)
    ok &= check(
        "/metrics latency median, gzip",
        f"{median(lat):.1f} ms",
        f"< {METRICS_MEDIAN_TARGET_MS:.0f} ms",
        median(lat) < METRICS_MEDIAN_TARGET_MS,
        median(lat) / METRICS_MEDIAN_TARGET_MS,
    )
    ok &= check(
        "/metrics latency p95, gzip",
        f"{percentile(lat, 0.95):.1f} ms",
        f"< {METRICS_P95_TARGET_MS:.0f} ms",
        percentile(lat, 0.95) < METRICS_P95_TARGET_MS,
        percentile(lat, 0.95) / METRICS_P95_TARGET_MS,
    )
    ok &= check(
        "exporter RSS peak",
        f"{max(rss_mb):.1f} MB",
        f"< {RSS_TARGET_MB:.0f} MB",
        max(rss_mb) < RSS_TARGET_MB,
        max(rss_mb) / RSS_TARGET_MB,
    )
    print_table("Results", results)

    info = [
        ("figure", "value"),
        ("targets / cycles / run", f"{targets} / {args.cycles} / {elapsed:.0f} s"),
        ("results seen per target", f"{sum(counts)} total, {unseen} overwritten between scrapes"),
        ("silent duration min/median/p99/max", _spread(silent_durations, "s", 3)),
        ("silent failure label sets", "; ".join(silent_failures) or "none"),
        (
            "answering duration min/median/p99/max",
            _spread([d * 1000 for d in answering_durations], "ms", 1),
        ),
        (
            "answering median/p99, probe overlapped a scrape",
            f"{_median_p99(during)} ms ({len(during)} results)",
        ),
        (
            "answering median/p99, no scrape overlap",
            f"{_median_p99(outside)} ms ({len(outside)} results)",
        ),
        (
            "/metrics latency median / p95 / max, gzip",
            f"{median(lat):.1f} / {percentile(lat, 0.95):.1f} / {max(lat):.1f} ms"
            f" ({len(lat)} GETs)",
        ),
        ("/metrics latency median / p95, plain", f"{_p50_p95(plain)} ({len(plain)} GETs)"),
        (
            "/metrics body sent, gzip / plain",
            f"{_kib(run.body_bytes[True])} / {_kib(run.body_bytes[False])}",
        ),
        ("series per target", f"{run.series_per_target:.1f}"),
        (
            "silent connections open at scrapes",
            f"median {median(hanging):.0f}, min {min(hanging)}" if hanging else "unknown",
        ),
        ("RSS first / last / peak", f"{rss_mb[0]:.1f} / {rss_mb[-1]:.1f} / {max(rss_mb):.1f} MB"),
        ("RSS growth, 2nd half of run", _growth(sampler.rss)),
        (
            "exporter CPU",
            f"{cpu_seconds:.1f} s over {elapsed:.0f} s "
            f"({cpu_seconds / elapsed * 100:.0f}% of one core; "
            f"{cpu_seconds / max(1, sum(counts)) * 1000:.2f} ms per probe incl. scrapes)",
        ),
    ]
    print_table("Figures", info)
    for title, problems in (
        ("late", run.late),
        ("bunched", run.bunched),
        ("missing", missing[:20]),
    ):
        if problems:
            print(f"\n{title} (first {min(20, len(problems))}):")
            print("\n".join(f"  {p}" for p in problems[:20]))
    if not ok:
        print(f"\nexporter log: {exporter_log}")
        print(exporter_log.read_text(errors="replace")[-3000:])
    print(f"verdict for {targets} targets:", "all targets met" if ok else "TARGET MISSED")
    return ok


def _spread(values: list[float], unit: str, digits: int) -> str:
    if not values:
        return "none"
    parts = (min(values), median(values), percentile(values, 0.99), max(values))
    return " / ".join(f"{v:.{digits}f}" for v in parts) + f" {unit} ({len(values)} results)"


def _split_by_scrapes(
    answering: list[TargetSeen], windows: list[tuple[float, float]]
) -> tuple[list[float], list[float]]:
    """Answering probe durations (ms) that overlapped a /metrics request, and the others.

    A probe's end is its ``mail_probe_last_success_timestamp_seconds``; it overlapped a
    scrape when [end - duration, end] meets the wall-clock window of a GET /metrics.
    """
    during: list[float] = []
    outside: list[float] = []
    for state in answering:
        for count, ended in state.ended.items():
            duration = state.durations[count]
            overlaps = any(ended - duration <= end and ended >= start for start, end in windows)
            (during if overlaps else outside).append(duration * 1000)
    return during, outside


def _median_p99(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{median(values):.1f} / {percentile(values, 0.99):.1f}"


def _growth(samples: list[tuple[float, int]]) -> str:
    """RSS change over the second half of the run (first half includes warm-up)."""
    if len(samples) < 4:
        return "too few samples"
    half = samples[len(samples) // 2 :]
    first = median([rss for _, rss in half[: max(1, len(half) // 10)]])
    last = median([rss for _, rss in half[-max(1, len(half) // 10) :]])
    return f"{(last - first) / 1e6:+.1f} MB over {half[-1][0] - half[0][0]:.0f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 targets, 15 s interval, 2 cycles")
    parser.add_argument(
        "--targets",
        type=lambda text: [int(count) for count in text.split(",")],
        help="a count, or counts run in turn (500,1000,2000,5000); default 500 (200 with --quick)",
    )
    parser.add_argument(
        "--compare", type=Path, help="also run this source tree (its mail_exporter package)"
    )
    parser.add_argument("--interval", type=float, help="seconds; default 30 (15 with --quick)")
    parser.add_argument("--cycles", type=int, help="default 4 (2 with --quick)")
    parser.add_argument("--timeout", type=float, default=5.0, help="module timeout, seconds")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--scrapes", type=int, help="GET /metrics count; default 200 (60 quick)")
    parser.add_argument(
        "--gzip-only", action="store_true", help="every scrape asks for gzip, as Prometheus does"
    )
    parser.add_argument("--silent-ports", type=int, default=50)
    parser.add_argument("--smtp-ports", type=int, default=10)
    parser.add_argument("--role", choices=["silent", "smtp"], help=argparse.SUPPRESS)
    parser.add_argument("--ports", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        serve = _serve_silent if args.role == "silent" else serve_smtp
        asyncio.run(serve(args.ports))
        return 0
    fill_defaults(
        args, targets=([500], [200]), interval=(30.0, 15.0), cycles=(4, 2), scrapes=(200, 60)
    )
    return run_interruptibly(
        "bench-scheduled-", lambda children, work: run_counts(args, children, work)
    )


if __name__ == "__main__":
    sys.exit(main())
