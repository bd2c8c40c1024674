"""How fast and how costly each Postfix queue source is, at 1k, 10k and 50k queued messages.

A private Postfix (tests/realservers) is filled with real deferred mail
(``defer_transports = smtp``: queued, logged as deferred, never attempted).
At each size every source of the ``postfix_queue`` collector runs several
times and the script reports the median wall time, the CPU the exporter
side spent (this process plus children such as ``postqueue``) and the CPU
Postfix itself spent (its processes, showq included), side by side.

Targets (issue 3): 10,000 messages in under 100 ms by the spool scan and
under 1 s through showq; cost growing no faster than linearly.

    .venv/bin/python bench/postfix_queue.py           # 1k, 10k, 50k
    .venv/bin/python bench/postfix_queue.py --quick   # 1k, 5k
"""

from __future__ import annotations

import argparse
import resource
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Children, machine_line, median, print_table
from mail_exporter.collectors.postfix_queue.collector import PostfixQueueCollector
from mail_exporter.collectors.postfix_queue.config import PostfixQueueConfig
from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import create_pki
from tests.realservers.postfix import Postfix

SOURCES = ("spool", "showq", "postqueue")
RUNS = 5
SENDERS = 4
TARGET_SECONDS = {"spool": 0.1, "showq": 1.0}


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


def measure(
    server: Postfix, master_pid: int, source: str
) -> tuple[float, float, float, float, int]:
    """First run (cold: nothing remembered), then the medians of the rest (warm)."""
    settings = PostfixQueueConfig.model_validate(
        {"source": source, "timeout": "60s",
         "instances": [{"config_directory": str(server.config_dir),
                        "queue_directory": str(server.queue_dir)}]}
    )  # fmt: skip
    collector = PostfixQueueCollector(settings)
    walls, own, theirs, messages = [], [], [], 0
    for _ in range(RUNS):
        cpu_before, postfix_before = own_cpu_seconds(), postfix_cpu_seconds(master_pid)
        started = time.perf_counter()
        snapshot = collector.snapshot(settings.instances[0])
        walls.append(time.perf_counter() - started)
        own.append(own_cpu_seconds() - cpu_before)
        time.sleep(0.3)  # let Postfix's showq finish its accounting
        theirs.append(postfix_cpu_seconds(master_pid) - postfix_before)
        messages = snapshot.queues["deferred"].messages
    return walls[0], median(walls[1:]), median(own[1:]), median(theirs[1:]), messages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k and 5k messages only")
    sizes = [1000, 5000] if parser.parse_args().quick else [1000, 10000, 50000]
    print(machine_line())
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    rows = [("messages", "source", "first scan", "later scans", "exporter CPU", "Postfix CPU",
             "counted")]  # fmt: skip
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
            for source in SOURCES:
                first, wall, own, theirs, counted = measure(server, master_pid, source)
                figures = (first, wall, own, theirs)
                rows.append(
                    (str(size), source, *(f"{f * 1000:.1f} ms" for f in figures), str(counted))
                )
                if counted != size:
                    missed.append(f"{source} counted {counted} of {size}")
                target = TARGET_SECONDS.get(source)
                if size == 10000 and target is not None and wall > target:
                    missed.append(f"{source} took {wall:.3f}s for 10k (target {target}s)")
    print_table("Postfix queue collection (deferred queue; later scans: median of 4)", rows)
    for miss in missed:
        print(f"MISSED: {miss}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
