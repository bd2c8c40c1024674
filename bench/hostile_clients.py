"""Hostile web clients: slow clients under a small open-files limit, and a bcrypt flood.

Each scenario runs against two builds of the real exporter in one run, one after the other:
the code of ``--baseline`` (default 9b408af, before the web limits and the bounded password
checks; unpacked with ``git archive`` and run from that tree) and the current tree.

(a) **Slow clients.** The exporter runs under ``prlimit --nofile=256:256`` with one scheduled
    SMTP target (a scripted loopback server in a helper process, probed every second). A
    second helper opens ``--clients`` connections to the web port, each sending one byte of a
    request head every ``--byte-interval`` seconds and reconnecting a second after the
    exporter closes it, for ``--seconds``. Meanwhile /metrics is requested every 0.5 s on a
    fresh connection with a 2 s timeout (each request in its own thread, so a hung one does
    not delay the next). Measured: /metrics answered / attempted and its latency, the
    scheduled probe's ``mail_probe_success`` and ``mail_probe_failures_total`` before and
    after, what the exporter logged meanwhile, its peak RSS and open descriptors.
(b) **bcrypt flood.** Basic auth with a cost-12 hash for ``prometheus`` and a cost-4 one for
    ``grafana``. ``--guesses`` requests with distinct wrong passwords for ``prometheus`` at
    once, then, 0.5 s later, the first request ``grafana`` ever makes, with its password.
    Measured: grafana's wait, the guesses' answers, the exporter's CPU seconds until the
    last guess is answered.

Run: ``.venv/bin/python bench/hostile_clients.py`` (about 2.5 minutes) or ``--quick`` (slow
clients for 8 s, 100 guesses; about 1 minute). Needs git and util-linux ``prlimit``. Exits 1
when the current code misses a target; the baseline's figures are for comparison only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import math
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import bcrypt
import psutil
from harness import (
    LOOPBACK,
    REPO,
    Children,
    exporter_command,
    free_port,
    http_ok,
    machine_line,
    median,
    percentile,
    print_table,
    run_interruptibly,
    serve_smtp,
    start_helper,
    unpack,
    wait_until,
    watch_parent,
)

OPEN_FILES = 256
SCRAPE_EVERY_S = 0.5
SCRAPE_TIMEOUT_S = 2.0
PROBE_INTERVAL_S = 1.0
RECONNECT_AFTER_S = 1.0
TARGET = "smtp-local"
GUESSED_USER, GUESSED_COST = "prometheus", 12
NEW_USER, NEW_USER_COST, NEW_USER_PASSWORD = "grafana", 4, "grafana's password"
# Targets for the current code.
ANSWERED_TARGET = 0.95  # share of /metrics requests answered within the timeout
LOG_LINES_TARGET = 20  # lines logged during the slow-client phase
NEW_USER_WAIT_TARGET_S = 5.0

# ---------------------------------------------------------------- the slow clients (helper)

REQUEST_HEAD = b"GET /metrics HTTP/1.1\r\nHost: bench\r\nUser-Agent: slow\r\n\r\n"


@dataclass
class SlowStats:
    connected: int = 0
    connect_failed: int = 0
    closed_by_exporter: int = 0
    answered: int = 0
    bytes_sent: int = 0


async def _slow_client(port: int, until: float, pause: float, stats: SlowStats) -> None:
    """Keep one connection open sending a byte of a request head every ``pause`` seconds;
    reconnect after the exporter closes it."""
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), 5)
        except (OSError, TimeoutError):
            stats.connect_failed += 1
            await asyncio.sleep(RECONNECT_AFTER_S)
            continue
        stats.connected += 1
        try:
            for index in range(len(REQUEST_HEAD) - 2):  # never the final CRLF
                writer.write(REQUEST_HEAD[index : index + 1])
                await writer.drain()
                stats.bytes_sent += 1
                left = until - time.monotonic()
                if left <= 0:
                    break
                try:
                    data = await asyncio.wait_for(reader.read(4096), min(pause, left))
                except TimeoutError:
                    continue  # still open: send the next byte
                if data:
                    stats.answered += 1  # e.g. a 408 or 400; the head was never finished
                else:
                    stats.closed_by_exporter += 1
                break
        except ConnectionError:
            stats.closed_by_exporter += 1
        finally:
            writer.close()
        await asyncio.sleep(RECONNECT_AFTER_S)


async def _run_slow_clients(port: int, clients: int, seconds: float, pause: float) -> None:
    """Run the clients for ``seconds`` and print their counts as JSON."""
    stats = SlowStats()
    until = time.monotonic() + seconds
    watcher = asyncio.create_task(watch_parent())
    await asyncio.gather(*(_slow_client(port, until, pause, stats) for _ in range(clients)))
    watcher.cancel()
    print(json.dumps(stats.__dict__), flush=True)


# ---------------------------------------------------------------- the exporter under test


@dataclass
class Build:
    name: str
    code: Path


_SAMPLE = re.compile(r"^([a-z_]+)(?:\{([^}]*)\})? (\S+)$")


def samples(text: str, name: str, target: str | None = TARGET) -> dict[str, float]:
    """Label text → value of the samples of ``name`` (of ``target``, if given)."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match.group(1) == name:
            labels = match.group(2) or ""
            if target is None or f'target="{target}"' in labels:
                found[labels] = float(match.group(3))
    return found


@dataclass
class ProbeState:
    success: float
    failures: dict[str, float]  # reason → count
    results: float

    @classmethod
    def read(cls, text: str) -> ProbeState:
        return cls(
            success=sum(samples(text, "mail_probe_success").values()),
            failures=by_reason(samples(text, "mail_probe_failures_total")),
            results=sum(samples(text, "mail_probe_latency_seconds_count").values()),
        )

    def __str__(self) -> str:
        reasons = ", ".join(
            f"{reason} {count:g}" for reason, count in self.failures.items() if count
        )
        total = sum(self.failures.values())
        return f"success {self.success:g}, failures {total:g}" + (
            f" ({reasons})" if reasons else ""
        )


def by_reason(found: dict[str, float]) -> dict[str, float]:
    """The samples' values by their ``reason`` label."""
    return {
        match.group(1): value
        for labels, value in found.items()
        if (match := re.search(r'reason="([^"]*)"', labels))
    }


def get(port: int, path: str, timeout: float, headers: dict[str, str] | None = None) -> str:
    """The body of a 200 answer to GET ``path``, on a fresh connection."""
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        body = response.read().decode()
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"{path} answered {response.status}")
    return body


def get_within(port: int, path: str, seconds: float) -> str:
    """GET ``path`` until it answers, for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return get(port, path, timeout=max(0.5, deadline - time.monotonic()))
        except (OSError, RuntimeError, http.client.HTTPException):
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


class Sampler(threading.Thread):
    """The exporter's RSS and open descriptors every 0.1 s, and its CPU time at the ends."""

    def __init__(self, process: psutil.Process) -> None:
        super().__init__(daemon=True)
        self.process = process
        self.rss: list[int] = []
        self.fds: list[int] = []
        self.stopped = threading.Event()
        times = process.cpu_times()
        self.cpu_start = times.user + times.system
        self.cpu_seconds = 0.0

    def run(self) -> None:
        while not self.stopped.wait(0.1):
            try:
                with self.process.oneshot():
                    self.rss.append(self.process.memory_info().rss)
                    self.fds.append(self.process.num_fds())
            except psutil.Error:
                return

    def stop(self) -> None:
        self.stopped.set()
        self.join()
        times = self.process.cpu_times()
        self.cpu_seconds = times.user + times.system - self.cpu_start


def start_exporter(
    children: Children, build: Build, work: Path, config: Path, *extra: str, nofile: int = 0
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """The exporter of ``build``, ready; its process, port and log file."""
    port = free_port()
    log = work / f"exporter-{build.name}-{port}.log"
    command = exporter_command(config, port, *extra, code=build.code)
    if nofile:
        command = ["prlimit", f"--nofile={nofile}:{nofile}", "--", *command]
    exporter = children.start(command, log=log)
    wait_until(
        lambda: http_ok(f"http://{LOOPBACK}:{port}/-/healthy"),
        30,
        f"{build.name} exporter",
        alive=lambda: exporter.poll() is None,
    )
    return exporter, port, log


# ---------------------------------------------------------------- (a) slow clients


@dataclass
class SlowRun:
    build: str
    latencies: list[float] = field(default_factory=list)  # math.inf: not answered in time
    success_during: list[float] = field(default_factory=list)
    before: ProbeState | None = None
    after: ProbeState | None = None
    log_lines: int = 0
    log_bytes: int = 0
    log_sample: list[str] = field(default_factory=list)
    peak_rss: int = 0
    peak_fds: int = 0
    cpu_seconds: float = 0.0
    clients: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, float] = field(default_factory=dict)

    @property
    def answered(self) -> int:
        return sum(1 for latency in self.latencies if latency <= SCRAPE_TIMEOUT_S)


def write_probe_config(path: Path, smtp_port: int) -> Path:
    path.write_text(
        "global:\n"
        f"  interval: {PROBE_INTERVAL_S:g}s\n"
        "modules:\n"
        "  smtp_plain: {protocol: smtp, tls: none, timeout: 2s}\n"
        "targets:\n"
        f"  - {{name: {TARGET}, address: '{LOOPBACK}:{smtp_port}', module: smtp_plain}}\n"
    )
    return path


def timed_scrape(port: int) -> tuple[float, float | None]:
    """Seconds to the last byte of /metrics (inf past the timeout or on an error), and the
    probe's success in it."""
    started = time.perf_counter()
    try:
        body = get(port, "/metrics", SCRAPE_TIMEOUT_S)
    except (OSError, RuntimeError, http.client.HTTPException):
        return math.inf, None
    elapsed = time.perf_counter() - started
    return (elapsed if elapsed <= SCRAPE_TIMEOUT_S else math.inf), ProbeState.read(body).success


def slow_clients(
    args: argparse.Namespace, children: Children, work: Path, build: Build, smtp_port: int
) -> SlowRun:
    run = SlowRun(build.name)
    config = write_probe_config(work / f"probe-{build.name}.yml", smtp_port)
    exporter, port, log = start_exporter(children, build, work, config, nofile=OPEN_FILES)
    # Two probe results first, so "before" is a settled state.
    wait_until(
        lambda: ProbeState.read(get(port, "/metrics", 5)).results >= 2,
        30,
        f"{build.name}: first probe results",
    )
    run.before = ProbeState.read(get(port, "/metrics", 5))
    log_offset = log.stat().st_size
    sampler = Sampler(psutil.Process(exporter.pid))
    sampler.start()
    helper = children.start(
        [
            sys.executable,
            __file__,
            "--role",
            "slow-clients",
            "--port",
            str(port),
            "--clients",
            str(args.clients),
            "--seconds",
            str(args.seconds),
            "--byte-interval",
            str(args.byte_interval),
        ],
        stdout=subprocess.PIPE,
        log=work / "slow-clients.log",
    )
    started = time.monotonic()
    ticks = int(args.seconds / SCRAPE_EVERY_S)
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = []
        for tick in range(ticks):
            time.sleep(max(0.0, started + (tick + 1) * SCRAPE_EVERY_S - time.monotonic()))
            futures.append(pool.submit(timed_scrape, port))
        for future in futures:
            latency, success = future.result()
            run.latencies.append(latency)
            if success is not None:
                run.success_during.append(success)
    output, _ = helper.communicate(timeout=args.seconds + 30)
    run.clients = json.loads(output)
    # The clients are gone: the exporter has a few seconds to recover and report.
    after = get_within(port, "/metrics", 15)
    sampler.stop()
    run.after = ProbeState.read(after)
    run.rejected = by_reason(samples(after, "mail_exporter_web_rejected_total", target=None))
    run.peak_rss = max(sampler.rss, default=0)
    run.peak_fds = max(sampler.fds, default=0)
    run.cpu_seconds = sampler.cpu_seconds
    logged = log.read_bytes()[log_offset:]
    run.log_bytes = len(logged)
    lines = logged.decode(errors="replace").splitlines()
    run.log_lines = len(lines)
    run.log_sample = [line[:150] for line in lines[:3]]
    Children.stop(exporter)
    return run


# ---------------------------------------------------------------- (b) bcrypt flood


@dataclass
class FloodRun:
    build: str
    new_user_status: int = 0
    new_user_wait: float = 0.0
    answers: dict[str, int] = field(default_factory=dict)
    flood_seconds: float = 0.0
    cpu_seconds: float = 0.0


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def _flood(port: int, guesses: int) -> tuple[int, float, list[str], float]:
    """Grafana's status and wait, each guess's answer, seconds until the last one."""
    url = f"http://{LOOPBACK}:{port}/metrics"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=300)
    ) as session:

        async def request(user: str, password: str) -> str:
            headers = {"Authorization": basic(user, password)}
            try:
                async with session.get(url, headers=headers) as response:
                    await response.read()
                    return str(response.status)
            except (aiohttp.ClientError, TimeoutError) as error:
                return type(error).__name__

        started = time.monotonic()
        tasks = [
            asyncio.create_task(request(GUESSED_USER, f"guess {index}")) for index in range(guesses)
        ]
        await asyncio.sleep(0.5)  # every guess is in: answered at once or waiting
        asked = time.monotonic()
        status = await request(NEW_USER, NEW_USER_PASSWORD)
        waited = time.monotonic() - asked
        answers = await asyncio.gather(*tasks)
        return int(status) if status.isdigit() else 0, waited, answers, time.monotonic() - started


def bcrypt_flood(
    args: argparse.Namespace, children: Children, work: Path, build: Build, web_config: Path
) -> FloodRun:
    run = FloodRun(build.name)
    config = work / "empty.yml"
    config.write_text("modules:\n  smtp_plain: {protocol: smtp}\n")
    exporter, port, _ = start_exporter(
        children, build, work, config, "--web.config.file", str(web_config)
    )
    sampler = Sampler(psutil.Process(exporter.pid))
    sampler.start()
    status, run.new_user_wait, answers, run.flood_seconds = asyncio.run(_flood(port, args.guesses))
    sampler.stop()
    run.new_user_status = status
    run.cpu_seconds = sampler.cpu_seconds
    run.answers = {answer: answers.count(answer) for answer in sorted(set(answers))}
    Children.stop(exporter)
    return run


# ---------------------------------------------------------------- report


def _latency(values: list[float], fraction: float) -> str:
    value = median(values) if fraction == 0.5 else percentile(values, fraction)
    return f"> {SCRAPE_TIMEOUT_S:g} s" if math.isinf(value) else f"{value * 1000:.1f} ms"


def report(args: argparse.Namespace, slow: list[SlowRun], floods: list[FloodRun]) -> int:
    names = [run.build for run in slow]
    rows: list[tuple[str, ...]] = [("(a) slow clients", *names)]

    def row(label: str, cells: list[str]) -> None:
        rows.append((label, *cells))

    row("/metrics answered / attempted", [f"{r.answered} / {len(r.latencies)}" for r in slow])
    row("/metrics latency median", [_latency(r.latencies, 0.5) for r in slow])
    row("/metrics latency p95", [_latency(r.latencies, 0.95) for r in slow])
    row("probe before", [str(r.before) for r in slow])
    row("probe after", [str(r.after) for r in slow])
    row(
        "probe results during",
        [f"{r.after.results - r.before.results:g}" if r.after and r.before else "-" for r in slow],
    )
    row(
        "probe success seen during (min)",
        [f"{min(r.success_during):g}" if r.success_during else "none seen" for r in slow],
    )
    row("log lines / bytes", [f"{r.log_lines:,} / {r.log_bytes:,}" for r in slow])
    row("peak RSS", [f"{r.peak_rss / 1e6:.1f} MB" for r in slow])
    row("peak open descriptors", [str(r.peak_fds) for r in slow])
    row("exporter CPU", [f"{r.cpu_seconds:.1f} s" for r in slow])
    row(
        "client connects / closed by exporter",
        [
            f"{r.clients['connected']} / {r.clients['closed_by_exporter']} "
            f"(connect failed {r.clients['connect_failed']}, answered {r.clients['answered']})"
            for r in slow
        ],
    )
    row(
        "web_rejected_total",
        [
            ", ".join(f"{reason} {count:g}" for reason, count in r.rejected.items() if count) or "-"
            for r in slow
        ],
    )
    print_table(
        f"(a) {args.clients} slow clients for {args.seconds:g} s, one byte every "
        f"{args.byte_interval:g} s; open files {OPEN_FILES}; /metrics every "
        f"{SCRAPE_EVERY_S:g} s, {SCRAPE_TIMEOUT_S:g} s timeout",
        rows,
    )
    for run in slow:
        print(f"\n{run.build} log, first lines of {run.log_lines:,}:")
        print("\n".join(f"  {line}" for line in run.log_sample) or "  (none)")

    flood_rows: list[tuple[str, ...]] = [("(b) bcrypt flood", *[r.build for r in floods])]
    flood_rows.append(
        (
            "new user: status, wait",
            *[f"{r.new_user_status}, {r.new_user_wait:.2f} s" for r in floods],
        )
    )
    flood_rows.append(
        (
            "guesses answered",
            *[", ".join(f"{k}: {v}" for k, v in r.answers.items()) for r in floods],
        )
    )
    flood_rows.append(("last guess answered after", *[f"{r.flood_seconds:.1f} s" for r in floods]))
    flood_rows.append(("exporter CPU", *[f"{r.cpu_seconds:.1f} s" for r in floods]))
    print_table(
        f"(b) {args.guesses} wrong passwords of {GUESSED_USER} (cost {GUESSED_COST}), then "
        f"{NEW_USER} (cost {NEW_USER_COST}) for the first time",
        flood_rows,
    )

    current, flood = slow[-1], floods[-1]
    results: list[tuple[str, str, str, str]] = [("current code", "measured", "target", "verdict")]

    def check(name: str, measured: str, target: str, ok: bool) -> bool:
        results.append((name, measured, target, "ok" if ok else "MISSED"))
        return ok

    ok = check(
        "/metrics answered",
        f"{current.answered / len(current.latencies):.0%}",
        f">= {ANSWERED_TARGET:.0%}",
        current.answered >= ANSWERED_TARGET * len(current.latencies),
    )
    failed = math.nan
    if current.after and current.before:
        failed = sum(current.after.failures.values()) - sum(current.before.failures.values())
    successful = bool(current.after and current.after.success == 1.0) and failed == 0
    ok &= check("scheduled probe failures", f"{failed:g}", "0", successful)
    ok &= check(
        "log lines",
        str(current.log_lines),
        f"<= {LOG_LINES_TARGET}",
        current.log_lines <= LOG_LINES_TARGET,
    )
    ok &= check(
        "new user's wait",
        f"{flood.new_user_wait:.2f} s",
        f"< {NEW_USER_WAIT_TARGET_S:g} s, 200",
        flood.new_user_status == 200 and flood.new_user_wait < NEW_USER_WAIT_TARGET_S,
    )
    print_table("Targets", results)
    print(f"\nmachine: {machine_line()}")
    print("verdict:", "all targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


def run_benchmark(args: argparse.Namespace, children: Children, work: Path) -> int:
    baseline = Build(f"before ({args.baseline})", unpack(args.baseline, work / "baseline"))
    builds = [baseline, Build("current", REPO)]
    smtp_port = start_helper(
        children, [sys.executable, __file__, "--role", "smtp"], work / "smtp.log"
    )[0]
    slow = []
    for build in builds:
        print(f"(a) slow clients against {build.name} ...", flush=True)
        slow.append(slow_clients(args, children, work, build, smtp_port))
    guessed = bcrypt.hashpw(b"never guessed", bcrypt.gensalt(GUESSED_COST)).decode()
    new_user = bcrypt.hashpw(NEW_USER_PASSWORD.encode(), bcrypt.gensalt(NEW_USER_COST)).decode()
    web_config = work / "web.yml"
    web_config.write_text(
        f"basic_auth_users:\n  {GUESSED_USER}: '{guessed}'\n  {NEW_USER}: '{new_user}'\n"
    )
    floods = []
    for build in builds:
        print(f"(b) bcrypt flood against {build.name} ...", flush=True)
        floods.append(bcrypt_flood(args, children, work, build, web_config))
    return report(args, slow, floods)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="slow clients for 8 s, 100 guesses")
    parser.add_argument("--baseline", default="9b408af", help="the commit to compare with")
    parser.add_argument("--clients", type=int, default=300, help="slow clients (default 300)")
    parser.add_argument("--seconds", type=float, help="slow-client phase; default 20 (8 quick)")
    parser.add_argument("--byte-interval", type=float, default=3.0, help="seconds between bytes")
    parser.add_argument("--guesses", type=int, help="wrong passwords; default 300 (100 quick)")
    parser.add_argument("--role", choices=["smtp", "slow-clients"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "smtp":
        asyncio.run(serve_smtp(1))
        return 0
    if args.role == "slow-clients":
        asyncio.run(_run_slow_clients(args.port, args.clients, args.seconds, args.byte_interval))
        return 0
    if args.seconds is None:
        args.seconds = 8.0 if args.quick else 20.0
    if args.guesses is None:
        args.guesses = 100 if args.quick else 300
    return run_interruptibly(
        "bench-hostile-", lambda children, work: run_benchmark(args, children, work)
    )


if __name__ == "__main__":
    sys.exit(main())
