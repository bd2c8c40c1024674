"""A real exporter process for end-to-end tests, the Prometheus and Alertmanager beside it,
and a plain HTTP(S) client to talk to them.

The exporter is ``python -m mail_exporter`` with the flags a test gives; each process's
stderr goes to a file (a pipe could fill up at debug level and stall it). The client is
:mod:`http.client` with whatever TLS context the test builds, so what is tested is
what any client sees on the wire.

Every process is started on a port from :func:`free_port` and counts as up only once
it answers there and holds the port itself (:func:`listens_on`): another server may have
taken the port first and would answer the same (a parallel session's exporter or
Prometheus). A start that fails on a taken port is tried again on a fresh one
(:func:`start_with_fresh_ports`). Processes whose configs name each other's ports are
started in order, each once the ports it names are held, so only the one that clashed
starts again.
"""

from __future__ import annotations

import base64
import http.client
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest

from tests.realservers.pki import PKI, ClientCert
from tests.realservers.runtime import (
    ServerStartError,
    free_port,
    http_ok,
    listens_on,
    start_with_fresh_ports,
)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Message
    body: str
    tls_version: str | None  # as ssl.SSLSocket.version() says: TLSv1.2, TLSv1.3
    peer_names: tuple[str, ...]  # the server certificate's DNS names


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def client_context(
    pki: PKI,
    cert: ClientCert | None = None,
    maximum: ssl.TLSVersion | None = None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A client that trusts the test CA, optionally with a client certificate."""
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    context.check_hostname = check_hostname
    if cert is not None:
        context.load_cert_chain(cert.cert, cert.key)
    if maximum is not None:
        context.maximum_version = maximum
    return context


def get(
    port: int,
    path: str,
    context: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
) -> Reply:
    """One request on a new connection; HTTPS when ``context`` is given."""
    connection = (
        http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        if context is not None
        else http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    )
    try:
        connection.connect()
        tls = connection.sock if isinstance(connection.sock, ssl.SSLSocket) else None
        version = tls.version() if tls else None
        certificate = tls.getpeercert() if tls else None
        names = tuple(v for k, v in (certificate or {}).get("subjectAltName", ()) if k == "DNS")
        connection.request(method, path, headers=dict(headers or {}))
        response = connection.getresponse()
        body = response.read().decode()
        return Reply(response.status, response.headers, body, version, names)
    finally:
        connection.close()


@dataclass(frozen=True)
class Served:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def stderr(self) -> str:
        return self.log.read_text()


def metrics_with(served: Served, expected: set[str], seconds: float = 30.0) -> set[str]:
    """The lines of /metrics once they hold all of ``expected`` (scheduled probes have run);
    fails with the last body after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        body = get(served.port, "/metrics").body
        lines = set(body.splitlines())
        if expected <= lines or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    assert expected <= lines, body
    return lines


STARTUP_SECONDS = 60.0
"""Hang guard for a start: far longer than any start takes on a loaded machine."""


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
    pytest.fail(f"{name} did not answer within {STARTUP_SECONDS:.0f}s:\n{served.stderr()}")


def _start(
    directory: Path,
    name: str,
    command: Callable[[int], Sequence[str]],
    answers: Callable[[int], bool],
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
) -> Served:
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
        _stop(process)
        raise
    return served


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(10)


def exporter_command(config: Path | None, port: int, *flags: str) -> list[str]:
    """The exporter on ``config``, or on what it discovers when that is None."""
    configured = ["--config.file", str(config)] if config is not None else []
    return [
        sys.executable, "-m", "mail_exporter", *configured,
        "--web.listen-address", f"127.0.0.1:{port}", *flags,
    ]  # fmt: skip


def _healthy(port: int, context: ssl.SSLContext | None) -> bool:
    try:
        return get(port, "/-/healthy", context).status == 200
    except (OSError, http.client.HTTPException):
        return False


@contextmanager
def served_exporter(
    directory: Path,
    config: Path | None,
    *flags: str,
    context: ssl.SSLContext | None = None,
    env: Mapping[str, str] | None = None,
    open_files: tuple[int, int] | None = None,
    address_space: int | None = None,
    pass_fds: Sequence[int] = (),
) -> Iterator[Served]:
    """Start the exporter, wait for /-/healthy (over TLS with ``context``), stop it after;
    on another port if its first was taken meanwhile.

    ``open_files`` is the soft and hard ``RLIMIT_NOFILE`` to start it with and
    ``address_space`` its ``RLIMIT_AS`` in bytes (set by util-linux's prlimit, which then
    runs it: a ``preexec_fn`` is unsafe while the test runs threads); ``pass_fds`` stay
    open in it."""
    limits = [f"--nofile={open_files[0]}:{open_files[1]}"] if open_files else []
    limits += [f"--as={address_space}"] if address_space else []
    prlimit = ["prlimit", *limits, "--"] if limits else []

    def command(port: int) -> list[str]:
        return [*prlimit, *exporter_command(config, port, *flags)]

    served = start_with_fresh_ports(
        lambda: _start(
            directory, "exporter", command, lambda port: _healthy(port, context), env, pass_fds
        )
    )
    try:
        yield served
    finally:
        _stop(served.process)


def served_prometheus(directory: Path, config: Path, *flags: str) -> AbstractContextManager[Served]:
    """Prometheus with ``config``, its TSDB in ``directory``, until the context ends."""
    return _served_program(directory, "prometheus", lambda port: [
        "prometheus", f"--config.file={config}", f"--storage.tsdb.path={directory / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", *flags,
    ])  # fmt: skip


def served_alertmanager(directory: Path, config: Path) -> AbstractContextManager[Served]:
    """Alertmanager with ``config``, its data in ``directory`` and no cluster, until the
    context ends."""
    return _served_program(directory, "alertmanager", lambda port: [
        "prometheus-alertmanager", f"--config.file={config}", f"--storage.path={directory / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
    ])  # fmt: skip


def served_snmp_exporter(directory: Path, config: Path) -> AbstractContextManager[Served]:
    """snmp_exporter with ``config`` (it has no /-/ready: its landing page says it is up)."""
    return _served_program(directory, "snmp_exporter", lambda port: [
        "prometheus-snmp-exporter", f"--config.file={config}",
        f"--web.listen-address=127.0.0.1:{port}",
    ], ready_path="/")  # fmt: skip


@contextmanager
def _served_program(
    directory: Path,
    name: str,
    command: Callable[[int], Sequence[str]],
    ready_path: str = "/-/ready",
) -> Iterator[Served]:
    """Start ``command(port)``, a server that listens on 127.0.0.1:port and answers
    ``ready_path``; stop it after. On another port if its first was taken meanwhile:
    whatever it names in its config must be up before."""
    served = start_with_fresh_ports(
        lambda: _start(
            directory, name, command, lambda port: http_ok(f"http://127.0.0.1:{port}{ready_path}")
        )
    )
    try:
        yield served
    finally:
        _stop(served.process)
