"""A real exporter process for end-to-end tests and a plain HTTP(S) client to talk to it;
the Prometheus and Alertmanager beside it come from :mod:`tests.realservers.programs`.

The exporter is ``python -m mail_exporter`` with the flags a test gives, started as every
program there is (a free port, up once it answers and holds the port), on asyncio's event
loop or on uvloop's (:class:`EventLoop`, the ``served_loop`` fixture runs a test on
both). The client is :mod:`http.client` with whatever TLS context the test builds, so
what is tested is what any client sees on the wire.
"""

from __future__ import annotations

import base64
import http.client
import ssl
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

from tests.realservers.pki import PKI, ClientCert
from tests.realservers.programs import (
    Served,
    exporter_command,
    served_alertmanager,
    served_prometheus,
    served_snmp_exporter,
    start_program,
    stop_program,
)
from tests.realservers.runtime import start_with_fresh_ports

__all__ = [
    "EventLoop",
    "Reply",
    "Served",
    "basic",
    "client_context",
    "exporter_command",
    "get",
    "metrics_with",
    "served_alertmanager",
    "served_exporter",
    "served_prometheus",
    "served_snmp_exporter",
]


@dataclass(frozen=True)
class EventLoop:
    """The event loop an exporter process serves on: asyncio's own (``uvloop`` None), or
    uvloop's (the ``fast`` extra) from ``uvloop``, a directory on the process's PYTHONPATH
    that the suite installed it into. The venv keeps asyncio's loop, which the in-process
    tests and every other served exporter run on."""

    name: str
    uvloop: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": str(self.uvloop)} if self.uvloop is not None else {}

    def check(self, pid: int) -> None:
        """Fail unless process ``pid`` runs on this loop: uvloop's compiled loop is mapped
        in it exactly when it should serve on uvloop (the exporter takes uvloop whenever
        it can import it)."""
        maps = Path(f"/proc/{pid}/maps").read_text()
        if self.uvloop is None:
            assert "/uvloop/loop." not in maps, "uvloop serves, not asyncio's loop"
        else:
            assert f"{self.uvloop}/uvloop/loop." in maps, "asyncio's loop serves, not uvloop"


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
    loop: EventLoop | None = None,
) -> Iterator[Served]:
    """Start the exporter, wait for /-/healthy (over TLS with ``context``), stop it after;
    on another port if its first was taken meanwhile; on ``loop`` when given (checked).

    ``open_files`` is the soft and hard ``RLIMIT_NOFILE`` to start it with and
    ``address_space`` its ``RLIMIT_AS`` in bytes (set by util-linux's prlimit, which then
    runs it: a ``preexec_fn`` is unsafe while the test runs threads); ``pass_fds`` stay
    open in it."""
    limits = [f"--nofile={open_files[0]}:{open_files[1]}"] if open_files else []
    limits += [f"--as={address_space}"] if address_space else []
    prlimit = ["prlimit", *limits, "--"] if limits else []

    def command(port: int) -> list[str]:
        return [*prlimit, *exporter_command(config, port, *flags)]

    environment = {**(loop.env if loop is not None else {}), **(env or {})}
    served = start_with_fresh_ports(
        lambda: start_program(
            directory,
            "exporter",
            command,
            lambda port: _healthy(port, context),
            environment,
            pass_fds,
        )
    )
    try:
        if loop is not None:
            loop.check(served.process.pid)
        yield served
    finally:
        stop_program(served.process)
