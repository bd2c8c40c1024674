"""SMTP STARTTLS probe speed: mail_exporter against blackbox_exporter on the same Postfix.

Starts a private Postfix (with the Dovecot it authenticates through) from tests/realservers,
Debian's prometheus-blackbox-exporter with a tcp query_response STARTTLS module, and
mail_exporter with an smtp/starttls module, all on 127.0.0.1, both verifying the server
certificate against the generated test CA. Then it sends N /probe requests to each,
sequentially and interleaved (the order flips every round), and compares each exporter's
own probe duration: ``probe_duration_seconds`` from blackbox, ``mail_probe_duration_seconds``
from mail_exporter, and the CPU each exporter process spent serving each /probe request (the
sum over its threads of ``/proc/<pid>/task/*/schedstat``, nanoseconds, user and kernel, read
just before and after the request). Python's smtplib doing the same session in this process
is shown as a floor. ``--against DIR`` adds a third exporter run from the source tree DIR (the
code before a change), in the same rounds. Targets: our CPU per probe <= 1.0 x blackbox's,
and our median of the probes that did not stall <= 1.0 x blackbox's.

Run: ``.venv/bin/python bench/starttls_vs_blackbox.py`` (N=200, about 15 s) or ``--quick``
(N=30). Needs root, postfix, dovecot and prometheus-blackbox-exporter. Exits 1 when a
target is missed or a probe fails.
"""

from __future__ import annotations

import argparse
import math
import re
import smtplib
import ssl
import sys
import time
from collections import defaultdict
from pathlib import Path
from statistics import mean

from harness import (
    LOOPBACK,
    SAMPLE,
    Children,
    fill_defaults,
    free_port,
    http_ok,
    machine_line,
    mail_servers,
    median,
    not_installed,
    percentile,
    print_table,
    run_interruptibly,
    start_exporter,
    timed_get,
    wait_until,
)

BLACKBOX = "prometheus-blackbox-exporter"
RATIO_TARGET = 1.0
"""Both for CPU per probe and for the median of the probes that did not stall."""
MODULE = "smtp_starttls"
# A probe this much slower than the session's usual few milliseconds has stalled: the
# ~42 ms Nagle/delayed-ACK stall of peers.md, or a Postfix smtpd process being replaced.
STALL_MS = 30.0
_SESSION_LINE = re.compile(r"^\s*([\d.]+)ms (.*)$")

_PHASE = re.compile(r'phase="([^"]+)"')


def blackbox_config(ca_file: Path) -> str:
    # The STARTTLS example of blackbox's own documentation, with the CA of the test PKI.
    return f"""\
modules:
  {MODULE}:
    prober: tcp
    timeout: 5s
    tcp:
      preferred_ip_protocol: ip4
      query_response:
        - expect: "^220"
        - send: "EHLO prober\\r"
        - expect: "^250[ -]STARTTLS"
        - send: "STARTTLS\\r"
        - expect: "^220"
        - starttls: true
        - send: "EHLO prober\\r"
        - expect: "^250 "
        - send: "QUIT\\r"
      tls_config:
        ca_file: {ca_file}
"""


def exporter_config(ca_file: Path) -> str:
    return f"""\
modules:
  {MODULE}:
    protocol: smtp
    tls: starttls
    require_tls: true
    timeout: 5s
    tls_config:
      ca_file: {ca_file}
"""


def probe(port: int, target: str, debug: bool = False) -> tuple[float, str]:
    """GET /probe on a fresh connection: (client-side milliseconds, body)."""
    path = f"/probe?target={target}&module={MODULE}" + ("&debug=true" if debug else "")
    status, body, elapsed = timed_get(port, path)
    if status != 200:
        raise RuntimeError(f"{path} on port {port} answered {status}: {body[:300]}")
    return elapsed, body


def values(body: str) -> dict[str, list[tuple[str, float]]]:
    found: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for name, labels, value in SAMPLE.findall(body):
        found[name].append((labels, float(value)))
    return found


def cpu_ns(pid: int) -> int:
    """CPU time the process's live threads have run, nanoseconds (user and kernel)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            continue
    return total


def smtplib_session(port: int, context: ssl.SSLContext) -> float:
    """The same session with Python's smtplib, for a floor: milliseconds."""
    started = time.perf_counter()
    with smtplib.SMTP(LOOPBACK, port, "prober", timeout=5) as smtp:
        smtp.ehlo()
        smtp.starttls(context=context)
        smtp.ehlo()
    return (time.perf_counter() - started) * 1000


def run_benchmark(args: argparse.Namespace, children: Children, work: Path) -> int:
    pki, _, postfix = mail_servers(children, work)
    target = f"{LOOPBACK}:{postfix.smtp_port}"
    (work / "blackbox.yml").write_text(blackbox_config(pki.ca_file))
    (work / "mail_exporter.yml").write_text(exporter_config(pki.ca_file))
    ours, ours_port = start_exporter(
        children, work / "mail_exporter.yml", work / "mail_exporter.log", python=args.python
    )
    exporters = [("ours", ours_port, ours.pid)]
    if args.against:
        before, before_port = start_exporter(
            children,
            work / "mail_exporter.yml",
            work / "before.log",
            code=args.against,
            python=args.python,
        )
        exporters.append(("before", before_port, before.pid))
    theirs_port = free_port()
    theirs = children.start(
        [
            BLACKBOX,
            "--config.file",
            str(work / "blackbox.yml"),
            "--web.listen-address",
            f"{LOOPBACK}:{theirs_port}",
        ],
        log=work / "blackbox.log",
    )
    wait_until(
        lambda: http_ok(f"http://{LOOPBACK}:{theirs_port}/-/healthy"),
        20,
        "blackbox_exporter /-/healthy",
        alive=lambda: theirs.poll() is None,
    )
    exporters.append(("blackbox", theirs_port, theirs.pid))
    context = ssl.create_default_context(cafile=pki.ca_file)

    durations: dict[str, list[float]] = defaultdict(list)
    client_ms: dict[str, list[float]] = defaultdict(list)
    cpu_ms: dict[str, list[float]] = defaultdict(list)
    failures: dict[str, int] = defaultdict(int)
    phases: dict[str, list[float]] = defaultdict(list)
    total = args.warmup + args.n
    print(
        f"Postfix smtpd STARTTLS on {target}; {args.warmup} warm-up + {args.n} probes each, "
        "interleaved",
        flush=True,
    )
    for round_index in range(total):
        measured = round_index >= args.warmup
        order = (
            exporters[round_index % len(exporters) :] + exporters[: round_index % len(exporters)]
        )
        if round_index % 2:
            order.reverse()
        for name, port, pid in order:
            cpu_before = cpu_ns(pid)
            elapsed, body = probe(port, target)
            cpu_spent = (cpu_ns(pid) - cpu_before) / 1e6
            found = values(body)
            if name != "blackbox":
                success = found["mail_probe_success"][0][1]
                duration = found["mail_probe_duration_seconds"][0][1]
                if measured and name == "ours":
                    for labels, seconds in found["mail_probe_phase_duration_seconds"]:
                        phase = _PHASE.search(labels)
                        if phase:
                            phases[phase.group(1)].append(seconds * 1000)
            else:
                success = found["probe_success"][0][1]
                duration = found["probe_duration_seconds"][0][1]
            if not measured:
                continue
            durations[name].append(duration * 1000)
            client_ms[name].append(elapsed)
            cpu_ms[name].append(cpu_spent)
            if success != 1.0:
                failures[name] += 1
        if measured:
            durations["smtplib"].append(smtplib_session(postfix.smtp_port, context))
    return report(
        args,
        durations,
        client_ms,
        cpu_ms,
        failures,
        phases,
        slowest_session(ours_port, target, args.debug_tries),
    )


def slowest_session(port: int, target: str, tries: int) -> str:
    """The session log of the slowest of ``tries`` debug probes, with its longest wait marked."""
    worst: tuple[float, list[str], int] = (-1.0, [], 0)
    for _ in range(tries):
        _, body = probe(port, target, debug=True)
        lines = body.split("Session log:", 1)[-1].split("Verdict:", 1)[0].strip("\n").splitlines()
        stamps = [(float(m.group(1)), line) for line in lines if (m := _SESSION_LINE.match(line))]
        for index in range(1, len(stamps)):
            gap = stamps[index][0] - stamps[index - 1][0]
            if gap > worst[0]:
                worst = (gap, [line for _, line in stamps], index)
        if worst[0] > STALL_MS:
            break
    gap, lines, index = worst
    marked = [
        f"{line}   <-- {gap:.1f} ms wait" if i == index else line for i, line in enumerate(lines)
    ]
    return "\n".join(marked)


def report(
    args: argparse.Namespace,
    durations: dict[str, list[float]],
    client_ms: dict[str, list[float]],
    cpu_ms: dict[str, list[float]],
    failures: dict[str, int],
    phases: dict[str, list[float]],
    session_log: str,
) -> int:
    rows = [
        (
            "probe",
            "median ms",
            "p90 ms",
            "min ms",
            "max ms",
            f"> {STALL_MS:.0f} ms",
            f"median of <= {STALL_MS:.0f} ms",
            "client-side median ms",
            "CPU ms per probe (mean)",
            "failed",
        )
    ]
    names = [name for name in ("ours", "before", "blackbox", "smtplib") if durations[name]]
    for name in names:
        data = durations[name]
        client = f"{median(client_ms[name]):.2f}" if client_ms[name] else "-"
        cpu = f"{mean(cpu_ms[name]):.3f}" if cpu_ms[name] else "-"
        rows.append(
            (
                {"ours": "mail_exporter", "before": "mail_exporter before"}.get(name, name),
                f"{median(data):.2f}",
                f"{percentile(data, 0.9):.2f}",
                f"{min(data):.2f}",
                f"{max(data):.2f}",
                str(sum(1 for ms in data if ms > STALL_MS)),
                _unstalled_median(data),
                client,
                cpu,
                str(failures[name]) if name != "smtplib" else "-",
            )
        )
    print_table(f"STARTTLS SMTP probe duration as each exporter reports it (N={args.n})", rows)
    phase_rows = [("mail_exporter phase", "median ms", "p90 ms")]
    for phase, data in phases.items():
        phase_rows.append((phase, f"{median(data):.3f}", f"{percentile(data, 0.9):.3f}"))
    print_table("mail_exporter phase durations", phase_rows)
    ratio = median(durations["ours"]) / median(durations["blackbox"])
    ratio_p90 = percentile(durations["ours"], 0.9) / percentile(durations["blackbox"], 0.9)
    unstalled = _unstalled_ratio(durations["ours"], durations["blackbox"])
    cpu_ratio = mean(cpu_ms["ours"]) / mean(cpu_ms["blackbox"])
    print(
        f"\nratio ours/blackbox: CPU per probe {cpu_ratio:.2f}, median without stalled probes "
        f"{unstalled:.2f} (targets: both <= {RATIO_TARGET}); all probes: median {ratio:.2f}, "
        f"p90 {ratio_p90:.2f}"
    )
    if durations["before"]:
        print(
            f"ours/before: CPU per probe {mean(cpu_ms['ours']) / mean(cpu_ms['before']):.2f}, "
            f"median without stalled probes "
            f"{_unstalled_ratio(durations['ours'], durations['before']):.2f}"
        )
    print("\nslowest of a few mail_exporter sessions (/probe?debug=true), longest wait marked:")
    print("\n".join("  " + line for line in session_log.splitlines()))
    print(f"\nmachine: {machine_line()}")
    ok = (
        cpu_ratio <= RATIO_TARGET
        and unstalled <= RATIO_TARGET
        and not failures["ours"]
        and not failures["blackbox"]
    )
    if failures["ours"] or failures["blackbox"]:
        print(f"FAILED PROBES: mail_exporter {failures['ours']}, blackbox {failures['blackbox']}")
    print("verdict:", "target met" if ok else "TARGET MISSED")
    return 0 if ok else 1


def _unstalled(data: list[float]) -> list[float]:
    return [ms for ms in data if ms <= STALL_MS]


def _unstalled_median(data: list[float]) -> str:
    kept = _unstalled(data)
    return f"{median(kept):.2f}" if kept else "-"


def _unstalled_ratio(ours: list[float], theirs: list[float]) -> float:
    """Medians of the probes that did not stall: the cost of the session itself (infinite
    when one side always stalled)."""
    if not _unstalled(ours) or not _unstalled(theirs):
        return math.inf
    return median(_unstalled(ours)) / median(_unstalled(theirs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=30 with 5 warm-up rounds")
    parser.add_argument("-n", type=int, help="probes per exporter (default 200, 30 with --quick)")
    parser.add_argument("--warmup", type=int, help="unmeasured rounds first (default 10)")
    parser.add_argument(
        "--debug-tries",
        type=int,
        default=40,
        help="debug probes to find a stalled session to show (default 40)",
    )
    parser.add_argument(
        "--against",
        type=Path,
        help="also probe with an exporter run from this source tree (the code before)",
    )
    parser.add_argument(
        "--python",
        help="run the exporters with this interpreter: ours as its environment has it installed "
        "(e.g. .cache/shipped/bin/python, the image's build: make shipped), --against's tree on "
        "it too",
    )
    args = parser.parse_args()
    fill_defaults(args, n=(200, 30), warmup=(10, 5))
    if not_installed(BLACKBOX, "postfix", "dovecot"):
        return 2
    return run_interruptibly(
        "bench-starttls-", lambda children, work: run_benchmark(args, children, work)
    )


if __name__ == "__main__":
    sys.exit(main())
