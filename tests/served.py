"""A real exporter process for end-to-end tests, and a plain HTTP(S) client to talk to it.

The process is ``python -m mail_exporter`` with the flags a test gives; its stderr goes
to a file (a pipe could fill up at debug level and stall it). The client is
:mod:`http.client` with whatever TLS context the test builds, so what is tested is
what any client sees on the wire.
"""

from __future__ import annotations

import base64
import http.client
import os
import ssl
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest

from tests.realservers.pki import PKI, ClientCert
from tests.realservers.runtime import (
    ServerStartError,
    free_port,
    listens_on,
    start_with_fresh_ports,
)
from tests.test_cli import exporter_command


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


def _wait_until_healthy(served: Served, context: ssl.SSLContext | None) -> None:
    """Until /-/healthy answers 200 from this process: the port may have been taken by
    another server first (an exporter of a parallel test session answers the same)."""
    for _ in range(150):
        if served.process.poll() is not None:
            raise ServerStartError(
                f"the exporter exited with {served.process.returncode}:\n{served.stderr()}"
            )
        try:
            healthy = get(served.port, "/-/healthy", context).status == 200
        except (OSError, http.client.HTTPException):
            healthy = False
        if healthy and listens_on(served.process.pid, served.port):
            return
        time.sleep(0.1)
    pytest.fail(f"the exporter did not answer:\n{served.stderr()}")


def _start(
    directory: Path,
    config: Path,
    flags: tuple[str, ...],
    context: ssl.SSLContext | None,
    env: Mapping[str, str] | None,
    open_files: tuple[int, int] | None,
    pass_fds: Sequence[int],
) -> Served:
    port = free_port()
    log = directory / f"exporter-{port}.log"
    limits = ["prlimit", f"--nofile={open_files[0]}:{open_files[1]}", "--"] if open_files else []
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [*limits, *exporter_command(config, port, *flags)],
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            pass_fds=pass_fds,
        )
    served = Served(process, port, log)
    try:
        _wait_until_healthy(served, context)
    except BaseException:
        _stop(process)
        raise
    return served


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(10)


@contextmanager
def served_exporter(
    directory: Path,
    config: Path,
    *flags: str,
    context: ssl.SSLContext | None = None,
    env: Mapping[str, str] | None = None,
    open_files: tuple[int, int] | None = None,
    pass_fds: Sequence[int] = (),
) -> Iterator[Served]:
    """Start the exporter, wait for /-/healthy (over TLS with ``context``), stop it after;
    on another port if its first was taken meanwhile.

    ``open_files`` is the soft and hard ``RLIMIT_NOFILE`` to start it with (set by util-linux's
    prlimit, which then runs it: a ``preexec_fn`` is unsafe while the test runs threads);
    ``pass_fds`` stay open in it."""
    served = start_with_fresh_ports(
        lambda: _start(directory, config, flags, context, env, open_files, pass_fds)
    )
    try:
        yield served
    finally:
        _stop(served.process)
