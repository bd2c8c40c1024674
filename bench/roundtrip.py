"""Round trip speed: how soon a delivered message is seen, and what ten routes cost.

Starts a private Postfix (submission with STARTTLS and AUTH) delivering over LMTP into a
private Dovecot, both from tests/realservers on 127.0.0.1.

1. **Detection**, in this process: N round trips over IMAPS with the real
   :class:`RouteRunner`, in three modes: the default (IDLE, with early looks), IDLE alone
   (one IDLE wait until Dovecot's notification) and polling every second without IDLE.
   *Transit* is the runner's own figure, start of sending to seen. *Detection lag* is
   seen minus delivered, where delivered is the time Dovecot wrote into the message's
   Maildir file name (microseconds), read just before the runner deletes it. Target:
   median transit and median lag under 1 s in the default mode.
2. **Cost**, of the real ``mail-exporter`` process running ten routes (five IMAPS, five
   POP3S): its CPU time from /proc over a window with a round trip every 10 s per route,
   and over a window between runs (interval 1 h, after the first round). Target: under
   5% of one core between runs.

Run: ``.venv/bin/python bench/roundtrip.py`` (N=30 per mode, 60 s windows, about 3 min)
or ``--quick`` (N=10, 20 s windows). Needs root, postfix and dovecot. Exits 1 when a
target is missed or a round trip fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness import (
    LOOPBACK,
    REPO,
    SAMPLE,
    Children,
    cpu_seconds,
    fill_defaults,
    machine_line,
    mail_servers,
    median,
    not_installed,
    percentile,
    print_table,
    run_interruptibly,
    start_exporter,
)

sys.path.insert(0, str(REPO))
from mail_exporter.config.root import Config, parse_config
from mail_exporter.roundtrip import runner as runner_module
from mail_exporter.roundtrip import send as send_module
from mail_exporter.roundtrip.imap_mailbox import ImapMailbox
from mail_exporter.roundtrip.runner import RouteRunner
from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import PKI
from tests.realservers.postfix import Postfix

PASSWORD_VARIABLE = "MAIL_EXPORTER_BENCH_PASSWORD"
USER = "probe@test.local"
TARGET_SECONDS = 1.0
TARGET_CORE_SHARE = 0.05
ROUTES = 10
BUSY_INTERVAL = "10s"
_MAILDIR_TIME = re.compile(r"^(\d+)\.M(\d+)P")


def config_text(pki: PKI, dovecot: Dovecot, postfix: Postfix, routes: str) -> str:
    tls = f"{{ca_file: {pki.ca_file}}}"
    auth = f"{{username: {USER}, password_env: {PASSWORD_VARIABLE}}}"
    return f"""
modules:
  submission: {{protocol: smtp, tls: starttls, tls_config: {tls}, auth: {auth}}}
  imaps: {{protocol: imap, tls: implicit, tls_config: {tls}, auth: {auth}}}
  pop3s: {{protocol: pop3, tls: implicit, tls_config: {tls}, auth: {auth}}}
roundtrip:
{routes}"""


def route_entry(
    name: str, postfix: Postfix, receive: str, module: str, interval: str, **options: str
) -> str:
    extra = "".join(f", {key}: {value}" for key, value in options.items())
    send = f"{LOOPBACK}:{postfix.submission_port}"
    return f"""  - name: {name}
    interval: {interval}
    timeout: 10s
    send: {{address: "{send}", module: submission, from: {USER}, to: {USER}}}
    receive: {{address: "{receive}", module: {module}{extra}}}
"""


# 1. Detection


def delivered_at(maildir: Path, token: str) -> float | None:
    """When Dovecot delivered the message carrying ``token``, from its Maildir file name."""
    for folder in ("new", "cur"):
        for path in (maildir / folder).iterdir():
            match = _MAILDIR_TIME.match(path.name)
            if match and token.encode() in path.read_bytes():
                return int(match.group(1)) + int(match.group(2)) / 1e6
    return None


@contextmanager
def patched(target: Any, name: str, value: Any) -> Iterator[None]:
    original = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, original)


@contextmanager
def instrumented(maildir: Path, delivered: dict[str, float], sent: list[float]) -> Iterator[None]:
    """Note each message's delivery time before deletion, and each submission's start."""
    delete, submit = ImapMailbox.delete, send_module.submit

    async def noting_delete(self: ImapMailbox, messages: Any) -> None:
        for found in messages:
            moment = delivered_at(maildir, found.message.token)
            if moment is not None:
                delivered[found.message.token] = moment
        await delete(self, messages)

    async def noting_submit(*args: Any) -> None:
        sent.append(time.time())
        await submit(*args)

    with (
        patched(ImapMailbox, "delete", noting_delete),
        patched(runner_module, "submit", noting_submit),
    ):
        yield


@contextmanager
def mode(name: str) -> Iterator[None]:
    """The runner as it is, with IDLE alone, or polling without IDLE."""
    if name == "default":
        yield
        return
    with patched(runner_module, "FIRST_PAUSE_SECONDS", 3600.0):
        if name == "idle":
            yield
            return
        capabilities = ImapMailbox.capabilities.fget
        assert capabilities is not None
        without_idle = property(lambda self: capabilities(self) - {"IDLE"})
        with patched(ImapMailbox, "capabilities", without_idle):
            yield


MODES = {
    "default": ("IDLE with early looks (default)", "30s"),
    "idle": ("IDLE alone", "30s"),
    "poll": ("polling every 1 s, no IDLE", "1s"),
}


async def detection(
    config: Config, maildir: Path, name: str, attempts: int
) -> list[tuple[float, float]]:
    """(transit, lag) of each round trip in one mode."""
    route = config.roundtrip[0]
    runner = RouteRunner(route, config.modules["submission"], config.modules["imaps"])
    delivered: dict[str, float] = {}
    sent: list[float] = []
    results = []
    with instrumented(maildir, delivered, sent), mode(name):
        for _ in range(attempts):
            before = set(delivered)
            outcome = await runner.run_once()
            if not outcome.success or outcome.duration is None:
                raise RuntimeError(f"round trip failed in mode {name}: {outcome}")
            (token,) = set(delivered) - before
            results.append((outcome.duration, sent[-1] + outcome.duration - delivered[token]))
    return results


def run_detection(args: argparse.Namespace, pki: PKI, dovecot: Dovecot, postfix: Postfix) -> bool:
    maildir = dovecot.mail_dir / USER / "Maildir"
    rows = [("mode", "transit p50", "p90", "max", "lag p50", "p90", "max")]
    default_medians: tuple[float, float] = (0.0, 0.0)
    for name, (title, poll) in MODES.items():
        receive = f"{LOOPBACK}:{dovecot.imaps_port}"
        entry = route_entry(name, postfix, receive, "imaps", "1h", poll_interval=poll)
        config = parse_config(config_text(pki, dovecot, postfix, entry))
        results = asyncio.run(detection(config, maildir, name, args.n))
        transit = [t for t, _ in results]
        lag = [lag for _, lag in results]
        if name == "default":
            default_medians = (median(transit), median(lag))
        rows.append(
            (
                title,
                *(
                    f"{value * 1000:.0f} ms"
                    for value in (median(transit), percentile(transit, 0.9), max(transit))
                ),
                *(
                    f"{value * 1000:.0f} ms"
                    for value in (median(lag), percentile(lag, 0.9), max(lag))
                ),
            )
        )
    print_table(f"Detection over IMAPS, {args.n} round trips per mode", rows)
    return max(default_medians) < TARGET_SECONDS


# 2. Cost of ten routes


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def round_trips(port: int) -> tuple[float, float]:
    """(messages seen in time, failures) over all routes, from /metrics."""
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    seen = failed = 0.0
    for name, _, value in SAMPLE.findall(text):
        if name == "mail_roundtrip_delivery_seconds_count":
            seen += float(value)
        elif name == "mail_roundtrip_failures_total":
            failed += float(value)
    return seen, failed


def ten_routes(pki: PKI, dovecot: Dovecot, postfix: Postfix, interval: str) -> str:
    routes = []
    for index in range(ROUTES):
        module, port = ("imaps", dovecot.imaps_port) if index % 2 else ("pop3s", dovecot.pop3s_port)
        routes.append(route_entry(f"route{index}", postfix, f"{LOOPBACK}:{port}", module, interval))
    return config_text(pki, dovecot, postfix, "".join(routes))


def measure_window(
    children: Children, work: Path, config: str, warmup: float, window: float
) -> tuple[float, float, float, float]:
    """(CPU share of one core, round trips, failures, peak RSS MiB) of one exporter run."""
    path = work / f"ten-routes-{time.monotonic_ns()}.yml"
    path.write_text(config)
    process, port = start_exporter(children, path, work / "exporter.log")
    time.sleep(warmup)
    cpu_before, seen_before = cpu_seconds(process.pid), round_trips(port)[0]
    started = time.monotonic()
    time.sleep(window)
    share = (cpu_seconds(process.pid) - cpu_before) / (time.monotonic() - started)
    seen, failed = round_trips(port)
    rss = peak_rss_mib(process.pid)
    process.terminate()
    process.wait(10)
    return share, seen - seen_before, failed, rss


def run_cost(
    args: argparse.Namespace, children: Children, work: Path, servers: tuple[PKI, Dovecot, Postfix]
) -> bool:
    busy = measure_window(children, work, ten_routes(*servers, BUSY_INTERVAL), 8.0, args.window)
    idle = measure_window(children, work, ten_routes(*servers, "1h"), 8.0, args.window)
    rows = [("window", "CPU, share of one core", "round trips", "failures", "peak RSS")]
    for title, (share, seen, failed, rss) in (
        (f"a round trip every {BUSY_INTERVAL} per route", busy),
        ("between runs (interval 1h, after the first round)", idle),
    ):
        rows.append(
            (title, f"{share * 100:.2f}%", f"{seen:.0f}", f"{failed:.0f}", f"{rss:.0f} MiB")
        )
    print_table(f"Ten routes (5 IMAPS, 5 POP3S), {args.window:.0f} s windows", rows)
    if busy[1]:
        print(f"  CPU per round trip: {busy[0] * args.window / busy[1] * 1000:.1f} ms")
    return idle[0] < TARGET_CORE_SHARE and busy[2] == 0 and idle[2] == 0


def run_benchmark(args: argparse.Namespace, children: Children, work: Path) -> int:
    servers = mail_servers(children, work)
    os.environ[PASSWORD_VARIABLE] = servers[1].password
    print(f"machine: {machine_line()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    detected = run_detection(args, *servers)
    cheap = run_cost(args, children, work, servers)
    verdicts = {"detection": detected, "cost": cheap}
    print("\nverdict: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in verdicts.items()))
    return 0 if detected and cheap else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=10, 20 s windows")
    parser.add_argument("-n", type=int, help="round trips per mode (default 30, 10 with --quick)")
    parser.add_argument(
        "--window", type=float, help="seconds per CPU window (default 60, 20 with --quick)"
    )
    args = parser.parse_args()
    fill_defaults(args, n=(30, 10), window=(60.0, 20.0))
    if not_installed("postfix", "dovecot"):
        return 2
    return run_interruptibly(
        "bench-roundtrip-", lambda children, work: run_benchmark(args, children, work)
    )


if __name__ == "__main__":
    sys.exit(main())
