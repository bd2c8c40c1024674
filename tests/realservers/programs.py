"""Prometheus, Alertmanager and the exporter as processes on loopback, for the end-to-end
tests and the local demo (``demo/``): started on a free port, up once they answer there.

A process counts as up only once it answers on its port and holds the port itself
(:func:`listens_on`): another server may have taken the port first and would answer the
same (a parallel session's exporter or Prometheus). A start that fails on a taken port is
tried again on a fresh one (:func:`start_with_fresh_ports`). Processes whose configs name
each other's ports are started in order, each once the ports it names are held, so only
the one that clashed starts again. Each process's stderr goes to a file (a pipe could fill
up at debug level and stall it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.realservers.runtime import (
    ServerStartError,
    free_port,
    http_ok,
    listens_on,
    start_with_fresh_ports,
)

STARTUP_SECONDS = 60.0
"""Hang guard for a start: far longer than any start takes on a loaded machine."""
STOP_SECONDS = 10.0


@dataclass(frozen=True)
class Served:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def stderr(self) -> str:
        return self.log.read_text()


def _wait_until_answering(served: Served, name: str, answers: Callable[[int], bool]) -> None:
    """Until ``answers(port)`` and this process holds the port (see the module docstring)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            raise ServerStartError(
                f"{name} exited with {served.process.returncode}:\n{served.stderr()}"
            )
        if answers(served.port) and listens_on(served.process.pid, served.port):
            return
        time.sleep(0.1)
    raise ServerStartError(
        f"{name} did not answer within {STARTUP_SECONDS:.0f}s:\n{served.stderr()}"
    )


def start_program(
    directory: Path,
    name: str,
    command: Callable[[int], Sequence[str]],
    answers: Callable[[int], bool],
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
) -> Served:
    """Start ``command(port)`` on a free port, its stderr in ``directory``; return once it
    ``answers(port)`` (it is stopped again when it never does)."""
    port = free_port()
    log = directory / f"{name}-{port}.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            command(port),
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            pass_fds=pass_fds,
        )
    served = Served(process, port, log)
    try:
        _wait_until_answering(served, name, answers)
    except BaseException:
        stop_program(process)
        raise
    return served


def stop_program(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_SECONDS)


def exporter_command(config: Path | None, port: int, *flags: str) -> list[str]:
    """The exporter on ``config``, or on what it discovers when that is None."""
    configured = ["--config.file", str(config)] if config is not None else []
    return [
        sys.executable, "-m", "mail_exporter", *configured,
        "--web.listen-address", f"127.0.0.1:{port}", *flags,
    ]  # fmt: skip


def served_prometheus(directory: Path, config: Path, *flags: str) -> AbstractContextManager[Served]:
    """Prometheus with ``config``, its TSDB in ``directory``, until the context ends."""
    return served_program(directory, "prometheus", lambda port: [
        "prometheus", f"--config.file={config}", f"--storage.tsdb.path={directory / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", *flags,
    ])  # fmt: skip


def served_alertmanager(directory: Path, config: Path) -> AbstractContextManager[Served]:
    """Alertmanager with ``config``, its data in ``directory`` and no cluster, until the
    context ends."""
    return served_program(directory, "alertmanager", lambda port: [
        "prometheus-alertmanager", f"--config.file={config}", f"--storage.path={directory / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
    ])  # fmt: skip


def served_snmp_exporter(directory: Path, config: Path) -> AbstractContextManager[Served]:
    """snmp_exporter with ``config`` (it has no /-/ready: its landing page says it is up)."""
    return served_program(directory, "snmp_exporter", lambda port: [
        "prometheus-snmp-exporter", f"--config.file={config}",
        f"--web.listen-address=127.0.0.1:{port}",
    ], ready_path="/")  # fmt: skip


@contextmanager
def served_program(
    directory: Path,
    name: str,
    command: Callable[[int], Sequence[str]],
    ready_path: str = "/-/ready",
) -> Iterator[Served]:
    """Start ``command(port)``, a server that listens on 127.0.0.1:port and answers
    ``ready_path``; stop it after. On another port if its first was taken meanwhile:
    whatever it names in its config must be up before."""
    served = start_with_fresh_ports(
        lambda: start_program(
            directory, name, command, lambda port: http_ok(f"http://127.0.0.1:{port}{ready_path}")
        )
    )
    try:
        yield served
    finally:
        stop_program(served.process)
