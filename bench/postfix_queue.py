"""How fast and how costly each Postfix queue source is, at 1k, 10k and 100k queued messages.

A private Postfix (tests/realservers) is filled with real deferred mail
(``defer_transports = smtp``: queued, logged as deferred, never attempted).
At each size every source of the ``postfix_queue`` collector runs several
times and the script reports the median wall time, the CPU the exporter
side spent (this process plus children such as ``postqueue``) and the CPU
Postfix itself spent (its processes, showq included), side by side.

Targets: the spool scan of 10,000 messages under 150 ms the first time (nothing
remembered: after a start or a reload) and under 50 ms later, 100,000 messages under
1.5 s the first time; showq under 1 s for 10,000; every source's counts (messages per
queue, deferral reasons and domains) equal to ``postqueue -j``'s. Exits 1 when one is
missed and prints the ratio to the target.

``--compare DIR`` also scans with the spool scanner of the source tree in DIR (e.g. a
checkout of the previous commit), taking turns with this one on the same queue.

    .venv/bin/python bench/postfix_queue.py           # 1k, 10k, 100k
    .venv/bin/python bench/postfix_queue.py --quick   # 1k, 5k
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Children, machine_line, median, print_table
from mail_exporter.collectors.postfix_queue.collector import PostfixQueueCollector
from mail_exporter.collectors.postfix_queue.config import PostfixQueueConfig
from mail_exporter.collectors.postfix_queue.snapshot import QueueSnapshot
from mail_exporter.collectors.postfix_queue.spool import SpoolScanner
from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import create_pki
from tests.realservers.postfix import Postfix

SOURCES = ("spool", "showq", "postqueue")
RUNS = 5
SENDERS = 4
COLD_RUNS = 3
# (source, messages, first or later scan) -> seconds
TARGET_SECONDS = {
    ("spool", 10000, "first"): 0.15,
    ("spool", 10000, "later"): 0.05,
    ("spool", 100000, "first"): 1.5,
    ("showq", 10000, "later"): 1.0,
}


def postfix_cpu_seconds(master_pid: int) -> float:
    """CPU of the Postfix master and every process it started, living or reaped."""
    master = psutil.Process(master_pid)
    times = master.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in master.children(recursive=True):
        try:
            child_times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += child_times.user + child_times.system
    return total


def own_cpu_seconds() -> float:
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def fill(server: Postfix, count: int) -> None:
    """Queue ``count`` more messages over SMTP from a few parallel connections."""

    def send(share: int, sender_index: int) -> None:
        with smtplib.SMTP("127.0.0.1", server.smtp_port) as client:
            for index in range(share):
                domain = f"d{(sender_index * share + index) % 37}.example"
                body = f"Subject: bench {index}\r\n\r\n" + "x" * (200 + index % 800)
                client.sendmail("bench@test.local", [f"user{index}@{domain}"], body)

    shares = [count // SENDERS + (1 if i < count % SENDERS else 0) for i in range(SENDERS)]
    threads = [threading.Thread(target=send, args=(share, i)) for i, share in enumerate(shares)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def deferred_count(server: Postfix) -> int:
    return sum(1 for path in (server.queue_dir / "deferred").rglob("*") if path.is_file())


def counts(snapshot: QueueSnapshot) -> tuple[object, ...]:
    """What a source counted: messages per queue, deferrals by reason and by domain."""
    queues = {name: stats.messages for name, stats in snapshot.queues.items()}
    return queues, dict(snapshot.reasons), dict(snapshot.domains)


def spool_module(tree: Path) -> ModuleType:
    """The spool scanner module of another source tree, loaded beside this one's."""
    path = tree / "mail_exporter" / "collectors" / "postfix_queue" / "spool.py"
    spec = importlib.util.spec_from_file_location("compared_spool", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def measure_scanners(
    server: Postfix, scanners: list[tuple[str, type]]
) -> dict[str, tuple[float, float, float, float, QueueSnapshot]]:
    """Each spool scanner's first scan (median of fresh scanners) and later scans (median),
    wall and CPU, the scanners taking turns so that each meets the same load."""
    walls: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name, _ in scanners}
    cpus: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name, _ in scanners}
    last: dict[str, QueueSnapshot] = {}
    for turn in range(COLD_RUNS):
        for name, scanner_class in scanners if turn % 2 == 0 else scanners[::-1]:
            scanner = scanner_class(server.queue_dir)
            for index in range(RUNS):
                cpu_before, started = own_cpu_seconds(), time.perf_counter()
                last[name] = scanner.scan()
                kind = 0 if index == 0 else 1
                walls[name][kind].append(time.perf_counter() - started)
                cpus[name][kind].append(own_cpu_seconds() - cpu_before)
    return {
        name: (
            median(walls[name][0]),
            median(walls[name][1]),
            median(cpus[name][0]),
            median(cpus[name][1]),
            last[name],
        )
        for name, _ in scanners
    }


def measure(
    server: Postfix, master_pid: int, source: str
) -> tuple[float, float, float, float, QueueSnapshot]:
    """First run (cold: nothing remembered), then the medians of the rest (warm)."""
    settings = PostfixQueueConfig.model_validate(
        {"source": source, "timeout": "60s",
         "instances": [{"config_directory": str(server.config_dir),
                        "queue_directory": str(server.queue_dir)}]}
    )  # fmt: skip
    collector = PostfixQueueCollector(settings)
    walls, own, theirs = [], [], []
    for _ in range(RUNS):
        cpu_before, postfix_before = own_cpu_seconds(), postfix_cpu_seconds(master_pid)
        started = time.perf_counter()
        snapshot = collector.snapshot(settings.instances[0])
        walls.append(time.perf_counter() - started)
        own.append(own_cpu_seconds() - cpu_before)
        time.sleep(0.3)  # let Postfix's showq finish its accounting
        theirs.append(postfix_cpu_seconds(master_pid) - postfix_before)
    return walls[0], median(walls[1:]), median(own[1:]), median(theirs[1:]), snapshot


def measure_size(
    server: Postfix,
    master_pid: int,
    size: int,
    scanners: list[tuple[str, type]],
    rows: list[tuple[str, ...]],
) -> list[str]:
    """Every source, then the spool scanners side by side, on the queue as it is; a row
    each in ``rows``; the targets missed."""
    missed = []
    found: dict[str, QueueSnapshot] = {}
    for source in SOURCES:
        first, wall, own, theirs, found[source] = measure(server, master_pid, source)
        figures = (first, wall, own, theirs)
        counted = found[source].queues["deferred"].messages
        rows.append((str(size), source, *(f"{f * 1000:.1f} ms" for f in figures), str(counted)))
        missed += check(source, size, {"later": wall})
    measured = measure_scanners(server, scanners)
    for name, (first, later, first_cpu, later_cpu, snapshot) in measured.items():
        counted = snapshot.queues["deferred"].messages
        cpu = f"first / later {first_cpu * 1000:.1f} / {later_cpu * 1000:.1f} ms"
        label = f"{name} scanner, fresh x{COLD_RUNS}"
        first_text, later_text = f"{first * 1000:.1f} ms", f"{later * 1000:.1f} ms"
        rows.append((str(size), label, first_text, later_text, cpu, "0", str(counted)))
        found[f"{name} scanner"] = snapshot
        if name == "spool":
            missed += check("spool", size, {"first": first, "later": later})
    expected = counts(found["postqueue"])
    for source, snapshot in found.items():
        counted = snapshot.queues["deferred"].messages
        if counts(snapshot) != expected:
            missed.append(f"{source} counts differ from postqueue -j's at {size}")
        if counted != size:
            missed.append(f"{source} counted {counted} of {size}")
    return missed


def check(source: str, size: int, seconds: dict[str, float]) -> list[str]:
    """The targets ``source`` missed at ``size`` messages, each with its ratio."""
    missed = []
    for scan, taken in seconds.items():
        target = TARGET_SECONDS.get((source, size, scan))
        if target is None:
            continue
        verdict = "ok" if taken < target else "MISSED"
        ratio = taken / target
        print(
            f"{source} {scan} scan of {size}: {taken * 1000:.1f} ms, "
            f"target {target * 1000:.0f} ms: ratio {ratio:.2f} {verdict}",
            flush=True,
        )
        if taken >= target:
            missed.append(f"{source} {scan} scan took {taken:.3f}s for {size} (target {target}s)")
    return missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k and 5k messages only")
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(size) for size in text.split(",")],
        help="queue sizes in turn; default 1000,10000,100000",
    )
    parser.add_argument("--compare", type=Path, help="also scan with this source tree's spool")
    args = parser.parse_args()
    sizes = args.sizes or ([1000, 5000] if args.quick else [1000, 10000, 100000])
    scanners: list[tuple[str, type]] = [("spool", SpoolScanner)]
    if args.compare:
        scanners.insert(
            0, (f"spool ({args.compare.name})", spool_module(args.compare).SpoolScanner)
        )
    print(machine_line())
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    header = ("messages", "source", "first scan", "later scans", "exporter CPU", "Postfix CPU")
    rows: list[tuple[str, ...]] = [(*header, "counted")]
    missed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as scratch, Children() as children:
        work = Path(scratch)
        pki = create_pki(work)
        (work / "dovecot").mkdir()
        dovecot = Dovecot(work / "dovecot", pki.server_cert, pki.server_key)  # Postfix's SASL
        dovecot.start()
        children.on_exit(dovecot.stop)
        (work / "postfix").mkdir()
        server = Postfix(work / "postfix", pki.server_cert, pki.server_key,
                         dovecot_auth_port=dovecot.auth_port,
                         dovecot_lmtp_port=dovecot.lmtp_port)  # fmt: skip
        server.start()
        children.on_exit(server.stop)
        subprocess.run(["postconf", "-c", str(server.config_dir), "-e", "defer_transports = smtp"],
                       check=True)  # fmt: skip
        subprocess.run(["postfix", "-c", str(server.config_dir), "reload"], check=True,
                       capture_output=True)  # fmt: skip
        master_pid = int((server.queue_dir / "pid" / "master.pid").read_text().split()[0])
        queued = 0
        for size in sizes:
            started = time.monotonic()
            fill(server, size - queued)
            queued = size
            while deferred_count(server) < size:
                time.sleep(0.5)
            print(f"queued {size} messages in {time.monotonic() - started:.0f}s", flush=True)
            missed += measure_size(server, master_pid, size, scanners, rows)
    print_table("Postfix queue collection (deferred queue; later scans: median)", rows)
    for miss in missed:
        print(f"MISSED: {miss}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
