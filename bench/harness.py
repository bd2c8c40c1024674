"""What the benchmark scripts share: child processes in their own groups, ports, statistics.

Every process a benchmark starts goes through :class:`Children`, which puts it in a new
session (so its whole process group can be killed) and kills every group on exit, on an
exception, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from mail_exporter.config.probes import ModuleConfig
    from tests.realservers.dovecot import Dovecot
    from tests.realservers.pki import PKI
    from tests.realservers.postfix import Postfix

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
# How to install each program a benchmark may need (Debian packages).
INSTALL_HINTS = {
    "postfix": "apt-get install postfix (see /work/shared/docs/testenv.md for debconf answers)",
    "dovecot": "apt-get install dovecot-imapd dovecot-pop3d dovecot-lmtpd",
    "doveadm": "apt-get install dovecot-core",
    "prometheus-blackbox-exporter": "apt-get install prometheus-blackbox-exporter",
    "git": "apt-get install git",
    "openssl": "apt-get install openssl",
}
# A sample line of the text exposition: name, labels inside the braces ("" without), value.
SAMPLE = re.compile(r"^(\w+)(?:\{([^}]*)\})? (\S+)$", re.MULTILINE)


def not_installed(*programs: str) -> bool:
    """Whether any of ``programs`` is missing; each missing one is named, with how to
    install it, on stderr."""
    missing = [name for name in programs if shutil.which(name) is None]
    for name in missing:
        print(f"{name} is not installed: {INSTALL_HINTS[name]}", file=sys.stderr)
    return bool(missing)


def fill_defaults(args: argparse.Namespace, **defaults: tuple[object, object]) -> None:
    """Give each option the command line left out (None) its default for the run:
    ``(full, quick)``, the second with ``--quick``."""
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
    return port


def exporter_command(
    config: Path, port: int, *extra: str, code: Path | None = None, python: str | None = None
) -> list[str]:
    """The real mail_exporter, run by the interpreter running this benchmark (or ``python``,
    another environment's, with the package it has installed): the installed package, or
    the one in the source tree ``code`` (e.g. an older commit's, unpacked)."""
    # -P: no current directory (the checkout) ahead of PYTHONPATH or the installed package.
    interpreter = python or sys.executable
    if code:
        source = ["env", f"PYTHONPATH={code}", interpreter, "-P"]
    else:
        source = [interpreter, "-P"] if python else [interpreter]
    return [
        *source,
        "-m",
        "mail_exporter",
        "--config.file",
        str(config),
        "--web.listen-address",
        f"{LOOPBACK}:{port}",
        *extra,
    ]


def unpack(revision: str, into: Path) -> Path:
    """The tree of ``revision`` of this repository, unpacked into ``into``."""
    archive = into.with_suffix(".tar")
    subprocess.run(["git", "archive", "-o", str(archive), revision], cwd=REPO, check=True)
    into.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time process ``pid`` has used so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def machine_line() -> str:
    """nproc, CPU model, RAM, kernel and Python, for the results record."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram_gib = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = int(line.split()[1]) / 1024 / 1024
    return (
        f"{os.cpu_count()} CPUs ({model}), {ram_gib:.1f} GiB RAM, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )


def verdict(ok: bool) -> int:
    """Print the machine line and the verdict as every results record ends; the exit code."""
    print(f"\nmachine: {machine_line()}")
    print("verdict:", "target met" if ok else "TARGET MISSED")
    return 0 if ok else 1


def print_table(title: str, rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"\n{title}")
    for index, row in enumerate(rows):
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  " + "  ".join("-" * width for width in widths))


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, alive: Callable[[], bool] = lambda: True
) -> None:
    """Poll ``check`` every 50 ms; raise if it is not true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if not alive():
            raise RuntimeError(f"{what}: the process exited")
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not ready after {timeout:.0f}s")


def timed_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, str, float]:
    """GET ``path`` from the loopback ``port`` on a fresh connection: the status, the body,
    and the milliseconds until its last byte."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    elapsed_ms = (time.perf_counter() - started) * 1000
    return response.status, body.decode(), elapsed_ms


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class Children:
    """Child processes started in their own sessions and killed, group and all, on exit."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.cleanups: list[Callable[[], None]] = []

    def __enter__(self) -> Children:
        # SIGTERM becomes an exception, so the finally blocks run as on Ctrl-C.
        signal.signal(signal.SIGTERM, self._terminated)
        return self

    @staticmethod
    def _terminated(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    def start(
        self, command: list[str], stdout: int | None = None, log: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` in a new session; stderr (and stdout unless piped) go to ``log``."""
        sink = log.open("ab") if log else subprocess.DEVNULL
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=stdout if stdout is not None else sink,
                stderr=sink,
                start_new_session=True,
                cwd=REPO,
            )
        finally:
            if log:
                sink.close()  # type: ignore[union-attr]
        self.processes.append(process)
        return process

    def on_exit(self, cleanup: Callable[[], None]) -> None:
        """Run ``cleanup`` (e.g. stopping a server) when leaving, before killing the groups."""
        self.cleanups.append(cleanup)

    def __exit__(self, *exc: object) -> None:
        # Ignore further Ctrl-C while cleaning up, so nothing is left half-stopped.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for cleanup in reversed(self.cleanups):
                try:
                    cleanup()
                except Exception as error:  # one failed cleanup must not skip the others
                    print(f"cleanup failed: {error!r}", file=sys.stderr)
            for process in reversed(self.processes):
                self.stop(process)
        finally:
            signal.signal(signal.SIGINT, previous)

    @staticmethod
    def stop(process: subprocess.Popen[bytes]) -> None:
        """Stop one child's process group now (SIGTERM, then SIGKILL), as on exit."""
        # The child leads its own session, so its pid is its process group id.
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; kill what is left of its group (forked helpers).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            return


# ---------------------------------------------------------------- scripted loopback servers

ConnectionHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve_ports(handler: ConnectionHandler, ports: int) -> None:
    """Listen on ``ports`` loopback ports, print them as JSON, serve until the parent ends."""
    servers = [await asyncio.start_server(handler, LOOPBACK, 0, backlog=1024) for _ in range(ports)]
    print(json.dumps([s.sockets[0].getsockname()[1] for s in servers]), flush=True)
    await watch_parent()


async def watch_parent() -> None:
    """Return once the benchmark that started this helper is gone."""
    parent = os.getppid()
    while os.getppid() == parent:  # noqa: ASYNC110 - nothing to wait on but polling
        await asyncio.sleep(0.5)


async def serve_smtp(ports: int) -> None:
    """A minimal SMTP server: 220 banner, multi-line 250 to EHLO, 221 to QUIT."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"220 bench.test ESMTP scripted\r\n")
            while line := await reader.readline():
                verb = line.split(b" ", 1)[0].strip().upper()
                if verb in (b"EHLO", b"HELO"):
                    writer.write(b"250-bench.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"502 5.5.2 not implemented\r\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    await serve_ports(handler, ports)


def start_helper(children: Children, command: list[str], log: Path) -> list[int]:
    """Start a helper process that serves on loopback ports and prints them as JSON."""
    process = children.start(command, stdout=subprocess.PIPE, log=log)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"helper {command[1:]} exited: {log.read_text()[-2000:]}")
    listening: list[int] = json.loads(line)
    return listening


def start_exporter(
    children: Children,
    config: Path,
    log: Path,
    *extra: str,
    code: Path | None = None,
    python: str | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """The real mail_exporter (:func:`exporter_command`) on a free loopback port, started by
    ``children`` and ready (``/-/ready`` answers): its process and port."""
    port = free_port()
    command = exporter_command(config, port, *extra, code=code, python=python)
    process = children.start(command, log=log)
    wait_until(
        lambda: http_ok(f"http://{LOOPBACK}:{port}/-/ready"),
        30,
        f"exporter (log {log})",
        alive=lambda: process.poll() is None,
    )
    return process, port


def starttls_module(ca_file: Path, **settings: object) -> ModuleConfig:
    """An SMTP module with STARTTLS that trusts ``ca_file``, timeout 5 s; ``settings`` add
    or replace keys as a module of the config file has them."""
    from mail_exporter.config.probes import ModuleConfig

    return ModuleConfig.model_validate(
        {
            "protocol": "smtp",
            "tls": "starttls",
            "timeout": "5s",
            "tls_config": {"ca_file": str(ca_file)},
            **settings,
        }
    )


def mail_servers(children: Children, work: Path) -> tuple[PKI, Dovecot, Postfix]:
    """A test PKI, a Dovecot and a Postfix that logs in through it and delivers to it (the
    test suite's tests/realservers, all on loopback), stopped when ``children`` exits."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.realservers.dovecot import Dovecot
    from tests.realservers.pki import create_pki
    from tests.realservers.postfix import Postfix

    pki = create_pki(work / "pki")
    dovecot = Dovecot(work / "dovecot", pki.server_cert, pki.server_key)
    children.on_exit(dovecot.stop)
    dovecot.start()
    postfix = Postfix(
        work / "postfix",
        pki.server_cert,
        pki.server_key,
        dovecot_auth_port=dovecot.auth_port,
        dovecot_lmtp_port=dovecot.lmtp_port,
    )
    children.on_exit(postfix.stop)
    postfix.start()
    return pki, dovecot, postfix


def run_interruptibly(prefix: str, run: Callable[[Children, Path], int]) -> int:
    """Run a benchmark in a scratch directory; Ctrl-C or SIGTERM stops all it started."""
    try:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp, Children() as children:
            return run(children, Path(tmp))
    except KeyboardInterrupt as interrupt:
        print(
            f"interrupted ({str(interrupt) or 'Ctrl-C'}); every process started was stopped",
            file=sys.stderr,
        )
        return 130
