"""TLS scan speed, and the STARTTLS probe without it against the code before it.

(a) **Full scan.** Two private Postfix instances from tests/realservers/tls_policy.py, one
    ``legacy`` (accepts TLS 1.0 to 1.3, RSA key exchange and CBC with SHA-1: every
    handshake completes) and one ``modern`` (TLS 1.2 and 1.3 only, neither class: half of
    the handshakes are refused). ``-n`` probes of each STARTTLS port with ``tls_scan`` on
    and nothing kept, in this process: the scan's wall time (``TLSScan.duration_seconds``:
    4 versions and the weak cipher classes this host's OpenSSL can offer) and the whole
    probe's. Then ``-n`` probes that reuse a kept scan, against ``-n`` with ``tls_scan``
    off, alternating: wall time and this process's CPU time per probe. Target: the
    slowest full scan under 1 s.
(b) **tls_scan off, against the code before it.** Two exporters, the tree of ``--baseline``
    (default 89048b0, the commit before the TLS scan; ``git archive`` unpacked and run
    with ``python -P``) and the current tree, each with the same smtp/starttls module
    without ``tls_scan``, against the suite's usual Postfix. ``-n`` /probe requests to
    each, the order flipping every round: the exporter's own ``mail_probe_duration_seconds``,
    the client's wall time, and each exporter's CPU time (user + system, psutil) over its
    requests, per probe. For comparison only: the two should be level.

Run: ``.venv/bin/python bench/tls_scan.py`` (n=500, about a minute) or ``--quick`` (n=30).
Needs root, postfix, dovecot, git and openssl. Exits 1 when (a)'s target is missed or a
probe fails.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import (
    LOOPBACK,
    SAMPLE,
    Children,
    cpu_seconds,
    fill_defaults,
    mail_servers,
    median,
    not_installed,
    percentile,
    print_table,
    run_interruptibly,
    start_exporter,
    starttls_module,
    timed_get,
    unpack,
    verdict,
)

from mail_exporter.config.probes import ModuleConfig
from mail_exporter.probes import ProbeMemory, ProbeResult, run_probe
from mail_exporter.probes.tls_scan import TLSScans
from mail_exporter.probes.tls_scanner import local_plan
from mail_exporter.targets import parse_address

SCAN_TARGET_SECONDS = 1.0
MODULE = "smtp_starttls"


# ---------------------------------------------------------------- (a) the scan, in process


@dataclass
class Timed:
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    failed: int = 0


async def timed_probe(
    address: str, mod: ModuleConfig, into: Timed, scans: TLSScans | None = None
) -> ProbeResult:
    cpu, wall = time.process_time(), time.perf_counter()
    result = await run_probe(
        parse_address(address), mod, mod.timeout_seconds, ProbeMemory(tls_scans=scans)
    )
    into.wall_ms.append((time.perf_counter() - wall) * 1000)
    into.cpu_ms.append((time.process_time() - cpu) * 1000)
    scan_failed = result.tls_scan is not None and not result.tls_scan.success
    into.failed += (not result.success) or scan_failed
    return result


@dataclass
class Scans:
    scan_ms: list[float] = field(default_factory=list)
    probes: Timed = field(default_factory=Timed)
    answers: str = ""


async def full_scans(address: str, mod: ModuleConfig, n: int) -> Scans:
    """``n`` probes that each scan (nothing kept): scan wall times, the probes', the answers."""
    found = Scans()
    for _ in range(n):
        result = await timed_probe(address, mod, found.probes)
        if result.tls_scan is not None:
            found.scan_ms.append(result.tls_scan.duration_seconds * 1000)
            found.answers = result.tls_scan.summary()
    return found


async def kept_against_off(address: str, ca_file: Path, n: int) -> tuple[Timed, Timed]:
    """``n`` probes reusing a kept scan and ``n`` without tls_scan, alternating."""
    kept, off = Timed(), Timed()
    scans = TLSScans()
    scanned = starttls_module(ca_file, tls_scan={"interval": "1h"})
    plain = starttls_module(ca_file)
    await run_probe(
        parse_address(address), scanned, 5.0, ProbeMemory(tls_scans=scans)
    )  # the scan to keep
    for index in range(n):
        order: list[tuple[ModuleConfig, Timed]] = [(scanned, kept), (plain, off)]
        for mod, into in order if index % 2 else reversed(order):
            await timed_probe(address, mod, into, scans)
    return kept, off


def _ms(values: list[float]) -> tuple[str, str, str]:
    return f"{median(values):.1f}", f"{percentile(values, 0.9):.1f}", f"{max(values):.1f}"


def report_scans(n: int, runs: dict[str, Scans]) -> bool:
    plan = local_plan()
    offered = [o.label for o in (*plan.versions, *plan.weak_ciphers)]
    print(f"\nhandshakes per scan: {len(offered)} ({', '.join(offered)}); {plan.note or ''}")
    rows = [("Postfix STARTTLS, policy", "", "median ms", "p90 ms", "max ms", "failed")]
    ok = True
    for policy, found in runs.items():
        scan_ms, probes = found.scan_ms, found.probes
        rows.append((policy, "scan", *_ms(scan_ms), str(probes.failed)))
        rows.append(("", "probe with the scan", *_ms(probes.wall_ms), ""))
        ok &= bool(scan_ms) and max(scan_ms) < SCAN_TARGET_SECONDS * 1000 and not probes.failed
    print_table(f"(a) full TLS scan, nothing kept (n={n} each)", rows)
    for policy, found in runs.items():
        print(f"  {policy}: {found.answers}")
    return ok


def report_kept(n: int, kept: Timed, off: Timed) -> bool:
    rows = [("probe", "wall median ms", "wall p90 ms", "CPU median ms", "CPU mean ms", "failed")]
    for name, timed in (("tls_scan on, scan kept", kept), ("tls_scan off", off)):
        mean_cpu = sum(timed.cpu_ms) / len(timed.cpu_ms)
        rows.append(
            (
                name,
                f"{median(timed.wall_ms):.2f}",
                f"{percentile(timed.wall_ms, 0.9):.2f}",
                f"{median(timed.cpu_ms):.2f}",
                f"{mean_cpu:.2f}",
                str(timed.failed),
            )
        )
    print_table(f"(a) probes between scans against tls_scan off, alternating (n={n} each)", rows)
    return not kept.failed and not off.failed


# ---------------------------------------------------------------- (b) off, against before


def exporter_config(ca_file: Path) -> str:
    return f"""\
modules:
  {MODULE}:
    protocol: smtp
    tls: starttls
    timeout: 5s
    tls_config:
      ca_file: {ca_file}
"""


@dataclass
class Exporter:
    name: str
    port: int
    pid: int
    durations_ms: list[float] = field(default_factory=list)
    client_ms: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0
    failed: int = 0


def probe_once(exporter: Exporter, target: str) -> None:
    status, body, elapsed_ms = timed_get(exporter.port, f"/probe?target={target}&module={MODULE}")
    exporter.client_ms.append(elapsed_ms)
    found = {name: value for name, _, value in SAMPLE.findall(body)}
    exporter.durations_ms.append(float(found.get("mail_probe_duration_seconds", "nan")) * 1000)
    exporter.failed += status != 200 or found.get("mail_probe_success") != "1.0"


def off_against_before(
    args: argparse.Namespace, children: Children, work: Path, ca_file: Path, target: str
) -> list[Exporter]:
    config = work / "exporter.yml"
    config.write_text(exporter_config(ca_file))
    before = unpack(args.baseline, work / "baseline")
    exporters = []
    for name, code in ((f"before ({args.baseline})", before), ("current", None)):
        log = work / f"exporter-{len(exporters)}.log"
        process, port = start_exporter(children, config, log, code=code)
        exporters.append(Exporter(name, port, process.pid))
    for index in range(args.warmup):
        for exporter in exporters if index % 2 else reversed(exporters):
            probe_once(exporter, target)
    for exporter in exporters:
        exporter.durations_ms.clear()
        exporter.client_ms.clear()
    started = [cpu_seconds(exporter.pid) for exporter in exporters]
    for index in range(args.n):
        for exporter in exporters if index % 2 else reversed(exporters):
            probe_once(exporter, target)
    for exporter, cpu_before in zip(exporters, started, strict=True):
        exporter.cpu_seconds = cpu_seconds(exporter.pid) - cpu_before
    return exporters


def report_off(n: int, exporters: list[Exporter]) -> bool:
    rows = [
        (
            "exporter",
            "probe median ms",
            "probe p90 ms",
            "client median ms",
            "CPU per probe ms",
            "failed",
        )
    ]
    for exporter in exporters:
        rows.append(
            (
                exporter.name,
                f"{median(exporter.durations_ms):.2f}",
                f"{percentile(exporter.durations_ms, 0.9):.2f}",
                f"{median(exporter.client_ms):.2f}",
                f"{exporter.cpu_seconds / n * 1000:.2f}",
                str(exporter.failed),
            )
        )
    title = f"(b) /probe STARTTLS, tls_scan off, interleaved (n={n} each)"
    print_table(title, rows)
    return not any(exporter.failed for exporter in exporters)


# ---------------------------------------------------------------- the run


def run_benchmark(args: argparse.Namespace, children: Children, work: Path) -> int:
    pki, dovecot, postfix = mail_servers(children, work)  # puts the repository on sys.path
    from tests.realservers.tls_policy import POLICIES, PolicyPostfix

    policy_ports = {}
    for policy in POLICIES:
        server = PolicyPostfix(
            work / f"postfix-{policy}", pki, policy, dovecot.auth_port, dovecot.lmtp_port
        )
        children.on_exit(server.stop)
        server.start()
        policy_ports[policy] = server.smtp_port

    scanning = starttls_module(pki.ca_file, tls_scan=True)
    print(f"(a) {args.n} full scans of each Postfix STARTTLS port ...", flush=True)
    runs = {
        policy: asyncio.run(full_scans(f"{LOOPBACK}:{port}", scanning, args.n))
        for policy, port in policy_ports.items()
    }
    legacy = f"{LOOPBACK}:{policy_ports['legacy']}"
    kept, off = asyncio.run(kept_against_off(legacy, pki.ca_file, args.n))
    print(f"(b) {args.n} /probe requests to each exporter ...", flush=True)
    target = f"{LOOPBACK}:{postfix.smtp_port}"
    exporters = off_against_before(args, children, work, pki.ca_file, target)

    verdicts = [  # every table printed, whatever the verdicts
        report_scans(args.n, runs),
        report_kept(args.n, kept, off),
        report_off(args.n, exporters),
    ]
    ok = all(verdicts)
    return verdict(ok)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="n=30 with 5 warm-up rounds")
    parser.add_argument("-n", type=int, help="probes of each kind (default 500, 30 with --quick)")
    parser.add_argument("--warmup", type=int, help="unmeasured rounds of (b) first (default 10)")
    parser.add_argument("--baseline", default="89048b0", help="the commit to compare with")
    args = parser.parse_args()
    fill_defaults(args, n=(500, 30), warmup=(10, 5))
    if not_installed("postfix", "dovecot", "git"):
        return 2
    return run_interruptibly(
        "bench-tls-scan-", lambda children, work: run_benchmark(args, children, work)
    )


if __name__ == "__main__":
    sys.exit(main())
