"""Limits that keep web clients from blinding the exporter: open connections, the time a
connection has to send its request head, concurrent /probe runs, and the file descriptors
kept for scheduled probes and collectors.

Every web connection holds a file descriptor, and so does every socket a probe opens.
Without limits, enough clients that connect and send nothing (or a byte now and then) take
every descriptor the process may open: scheduled probes then fail to open sockets (false
"down" alerts), /metrics cannot accept Prometheus, and asyncio logs a traceback for each
failed accept. So:

- **Open files.** At start the soft ``RLIMIT_NOFILE`` is raised to the hard limit, as Go
  programs do; ``LimitNOFILE=`` in the systemd unit (or ``ulimit -Hn``) says how far. The
  commands collectors run inherit it (unlike Go, which restores it for them): they open
  few files, so a high limit costs them nothing.
- **A descriptor budget** (:func:`descriptor_budget`), from that limit and the running
  config, recomputed when a reload changes the config::

      reserved    = 32                                  stdio, epoll, the loop's pipe, thread
                                                        pools, config, state and cert files
                  + 64 * listening sockets              one accept burst (up to the backlog
                                                        is accepted before any is closed)
                  + 2 * min(global.concurrency, targets) a scheduled probe's socket and its
                                                        resolver's
                  + 3 * round-trip routes               submission, mailbox, resolver
                  + 4 * enabled collectors              a command's pipes, the files it reads
                  + 4 * log sources (logs collector)    a file, or journalctl's pipes
                  + dns.max_in_flight (dns collector)   its queries in flight
      available   = open files limit - reserved
      /probe runs = --probe.max-concurrency, else min(128, available // 8)
                    (2 descriptors each: a quarter of what is available)
      connections = min(--web.max-connections, available - 2 * /probe runs but at least 8)

  A limit too low for the config is logged as a warning that says by how much.
- **Read timeout.** A connection must deliver a complete request head within
  ``--web.read-timeout`` of opening (its TLS handshake included) or of its previous
  response; otherwise it is closed. This is done here rather than with aiohttp's
  ``keepalive_timeout``, which older aiohttp versions arm only after a first request and
  which cannot say why it closed a connection.
- **Connection cap.** Past the cap, the connection that has waited longest for its next
  request head (a slow client, or an idle keep-alive one) is closed to admit the new one,
  so a prompt client such as Prometheus gets in while slow ones hold every slot. Only when
  every connection is inside a request is the new one closed at once. Closing, not a 503:
  a 503 needs the request head first, which a slow client never finishes, and until then
  its descriptor stays taken; accepting and closing at once also keeps the listen backlog
  from piling up with clients that would each wait to be refused.
- **/probe cap.** Past ``/probe runs`` in flight, /probe answers 503 with ``Retry-After``.
- **A log line per condition**, not per event: "at the cap" once when it starts, once when
  it has not happened for a minute (with counts). Accept failures for lack of descriptors
  are such a condition too: each closes the longest-waiting connection so that the next
  try, a second later, finds a descriptor.
- **Accepting is done here**, on asyncio's loop and uvloop's alike, rather than by the
  loop's ``create_server``: the listening sockets are opened as ``create_server`` opens
  them, read with ``add_reader``, and each accepted socket is admitted (or closed) before
  ``connect_accepted_socket`` opens it, with the TLS handshake of the running web
  config's context when there is one. The loops' own servers differ where it matters:
  asyncio logs a traceback for every accept that fails for lack of descriptors; uvloop
  (libuv) then accepts and closes at once every connection waiting, Prometheus's scrape
  among them, and says nothing; an accept error it cannot absorb that way closes its
  listening socket for good. A TLS handshake is the loop's own (``ssl=`` of
  ``connect_accepted_socket``), not ``start_tls`` on an accepted plain connection:
  uvloop starts reading a new connection right after ``connection_made``, whatever
  ``pause_reading`` asked, so the ClientHello could reach the plain protocol before
  ``start_tls`` took over (a handshake the client then waits on until it gives up), and
  its ``start_tls`` returns a closed transport for a connection lost in the handshake,
  where asyncio's returns None. A connection still in its handshake is closed (read
  timeout, eviction, shutdown) by cancelling what opens it: both loops then abort it.
  The cost, measured with a new connection per request: as much CPU as asyncio's own
  server on its loop (about 190 us a connection), and about 15 us more than uvloop's on
  uvloop (165 against 150 us), nothing beside a scrape's rendering.

Exposition::

    mail_exporter_web_connections 3.0
    mail_exporter_web_connections_max 512.0
    mail_exporter_probe_requests_in_flight 1.0
    mail_exporter_probe_requests_concurrent_max 128.0
    mail_exporter_web_rejected_total{reason="connection_limit"} 0.0
    mail_exporter_web_rejected_total{reason="evicted"} 12.0
    mail_exporter_web_rejected_total{reason="read_timeout"} 4.0
    mail_exporter_web_rejected_total{reason="probe_limit"} 0.0
    mail_exporter_web_rejected_total{reason="auth_busy"} 0.0
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket
import ssl
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import cast

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from mail_exporter.collectors.base import enabled_collectors
from mail_exporter.collectors.dns.config import DnsConfig
from mail_exporter.collectors.logs.config import LogsConfig
from mail_exporter.config.root import Config
from mail_exporter.durations import format_duration
from mail_exporter.exporter import Exporter

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 512  # Prometheus's own --web.max-connections default
DEFAULT_MAX_PROBES = 128
DEFAULT_READ_TIMEOUT_SECONDS = 10.0
MINIMUM_CONNECTIONS = 8
ACCEPT_BACKLOG = 64
BASE_DESCRIPTORS = 32
PROBE_RETRY_AFTER_SECONDS = 5  # probes end within their module's timeout, often sooner
CONDITION_QUIET_SECONDS = 60.0
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_RETRY_SECONDS = 1.0  # asyncio's own accept loop waits as long


class Rejection(StrEnum):
    """Why a web client was turned away: ``mail_exporter_web_rejected_total{reason}``."""

    CONNECTION_LIMIT = "connection_limit"
    EVICTED = "evicted"
    READ_TIMEOUT = "read_timeout"
    PROBE_LIMIT = "probe_limit"
    AUTH_BUSY = "auth_busy"


def raise_open_files_limit() -> int:
    """Raise the soft open-files limit to the hard one; return the limit now in force
    (``sys.maxsize`` when there is none)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard not in (soft, resource.RLIM_INFINITY):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as error:
            logger.warning(
                "could not raise the open files limit from %d to %d: %s", soft, hard, error
            )
        else:
            logger.info("open files limit raised from %d to %d (the hard limit)", soft, hard)
            soft = hard
    return sys.maxsize if soft == resource.RLIM_INFINITY else soft


@dataclass(frozen=True)
class DescriptorBudget:
    """How the open-files limit is shared out (see the module docstring for the formula)."""

    open_files: int
    reserved: int
    probes: int
    connections: int

    @property
    def short(self) -> int:
        """Descriptors missing for the minimum of web connections (0 when none)."""
        return max(0, self.reserved + 2 * self.probes + MINIMUM_CONNECTIONS - self.open_files)


def descriptor_budget(
    config: Config,
    collectors: Sequence[str],
    open_files: int,
    listeners: int,
    max_connections: int,
    max_probes: int | None,
) -> DescriptorBudget:
    reserved = (
        BASE_DESCRIPTORS
        + ACCEPT_BACKLOG * listeners
        + 2 * min(config.global_.concurrency, len(config.targets))
        + 3 * len(config.roundtrip)
        + 4 * len(collectors)
    )
    logs, dns = config.collectors.section("logs"), config.collectors.section("dns")
    if "logs" in collectors and isinstance(logs, LogsConfig):
        reserved += 4 * len(logs.sources)
    if "dns" in collectors and isinstance(dns, DnsConfig):
        reserved += dns.max_in_flight
    available = open_files - reserved
    if max_probes is None:
        max_probes = max(1, min(DEFAULT_MAX_PROBES, available // 8))
    connections = min(max_connections, max(MINIMUM_CONNECTIONS, available - 2 * max_probes))
    return DescriptorBudget(open_files, reserved, max_probes, connections)


async def _listening_sockets(host: str | None, port: int) -> list[socket.socket]:
    """Listening sockets on ``host:port``, as asyncio's ``create_server`` opens them: one per
    address ``host`` resolves to (the IPv4 and IPv6 wildcards when it is None), IPv6 ones
    IPv6 only, an address family the kernel lacks skipped."""
    loop = asyncio.get_running_loop()
    found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    listening: list[socket.socket] = []
    try:
        for family, kind, protocol, _, address in dict.fromkeys(found):
            try:
                sock = socket.socket(family, kind, protocol)
            except OSError:
                continue
            listening.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(ACCEPT_BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in listening:
            sock.close()
        raise
    if not listening:
        raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))
    return listening


class Condition:
    """Something that goes on for a while, logged when it starts and when it has not happened
    for ``CONDITION_QUIET_SECONDS`` (with what happened how often), never per occurrence."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._description = ""
        self._started: float | None = None
        self._last = 0.0

    def occurred(self, what: str, description: str) -> None:
        """Count ``what``; log ``description`` if the condition starts with it."""
        loop = asyncio.get_running_loop()
        self._last = loop.time()
        self._counts[what] += 1
        if self._started is None:
            self._description, self._started = description, self._last
            logger.warning("%s (logged again once it stops)", description)
            loop.call_at(self._last + CONDITION_QUIET_SECONDS, self._check)

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._last < CONDITION_QUIET_SECONDS:
            loop.call_at(self._last + CONDITION_QUIET_SECONDS, self._check)
            return
        assert self._started is not None
        counts = ", ".join(f"{count} {what}" for what, count in self._counts.items())
        lasted = format_duration(max(1, round(self._last - self._started)))
        logger.info("over after %s (%s): %s", lasted, counts, self._description)
        self._counts.clear()
        self._started = None


class _Connection(asyncio.Protocol):
    """One accepted web connection: admitted or closed at once, opened by the event loop
    (TLS when configured), then aiohttp's protocol, whose events pass through here so the
    limits see it end."""

    def __init__(self, limits: WebLimits, serve: Callable[[], asyncio.Protocol]) -> None:
        self._limits = limits
        self._serve = serve
        self.transport: asyncio.Transport | None = None
        self.app: asyncio.Protocol | None = None
        self.requests = 0
        self.deadline: asyncio.TimerHandle | None = None
        self._opening: asyncio.Task[None] | None = None
        self._unopened: socket.socket | None = None  # until the opening task runs
        self._aborted = False

    def open(self, sock: socket.socket, tls: ssl.SSLContext | None) -> None:
        """Hand the accepted ``sock`` to the event loop, with a TLS handshake first when
        ``tls`` is given; aiohttp's protocol starts once it is open."""
        self._unopened = sock
        self._opening = asyncio.get_running_loop().create_task(self._open(tls))

    async def _open(self, tls: ssl.SSLContext | None) -> None:
        sock, self._unopened = self._unopened, None
        assert sock is not None
        loop = asyncio.get_running_loop()
        timeout = self._limits.read_timeout
        try:
            if tls is None:
                await loop.connect_accepted_socket(lambda: self, sock)
            else:
                await loop.connect_accepted_socket(
                    lambda: self,
                    sock,
                    ssl=tls,
                    # A backstop: the read timeout, running since the accept, ends it first.
                    ssl_handshake_timeout=2 * timeout,
                    ssl_shutdown_timeout=timeout,
                )
        except OSError:  # a failed handshake: the loop has closed the connection
            pass
        finally:
            if self.transport is None:  # never opened: no connection_lost will come
                self._limits.release(self)

    def abort(self) -> None:
        """Close the connection now, opened or not."""
        self._aborted = True
        if self.transport is not None:
            self.transport.abort()  # now: close() could wait on a client that reads nothing
        elif self._opening is not None:
            self._opening.cancel()  # the loop closes what it was opening
            if self._unopened is not None:  # cancelled before it ran: the socket is ours
                self._unopened.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        if self._aborted:  # closed while the loop opened it
            self.transport.abort()
            return
        self.app = self._serve()
        self._limits.serving(self, self.app)
        self.app.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.app is not None:
            self.app.data_received(data)

    def eof_received(self) -> bool | None:
        return self.app.eof_received() if self.app is not None else None

    def pause_writing(self) -> None:
        if self.app is not None:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.app is not None:
            self.app.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._limits.release(self)
        if self.app is not None:
            self.app.connection_lost(exc)


class WebLimits:
    """The web server's limits for one exporter; a collector of its own metrics."""

    def __init__(
        self,
        exporter: Exporter,
        open_files: int,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_probes: int | None = None,
        read_timeout: float = DEFAULT_READ_TIMEOUT_SECONDS,
    ) -> None:
        self._exporter = exporter
        self._open_files = open_files
        self._max_connections = max_connections
        self._max_probes = max_probes
        self.read_timeout = read_timeout
        self._serve_http: web.Server | None = None
        self._listening: list[socket.socket] = []
        self._budget_config: Config | None = None
        self._budget: DescriptorBudget | None = None
        self._connections: set[_Connection] = set()
        self._waiting: dict[_Connection, None] = {}  # longest-waiting first: evicted first
        self._served: dict[object, _Connection] = {}  # by aiohttp's protocol, for requests
        self.probes_in_flight = 0
        self.rejected: dict[Rejection, int] = dict.fromkeys(Rejection, 0)
        self._connections_at_cap = Condition()
        self._probes_at_cap = Condition()
        self._accept_failing = Condition()

    async def serve(self, runner: web.BaseRunner, host: str | None, port: int) -> None:
        """Listen on ``host:port`` (every address when None) with ``runner``'s app, over TLS
        when the web config has it (each connection gets the running config's context)."""
        server = runner.server
        assert server is not None, "runner.setup() comes first"
        self._serve_http = server
        self._listening = await _listening_sockets(host, port)
        self._log(self.budget)  # planned now: the listening sockets are part of the reserve
        for sock in self._listening:
            self._accept_from(sock)

    def stop_listening(self) -> None:
        """Close the listening sockets; connections already accepted stay."""
        loop = asyncio.get_running_loop()
        for sock in self._listening:
            loop.remove_reader(sock)
            sock.close()

    def close(self) -> None:
        """Close every connection still open (after the app's own graceful shutdown)."""
        for connection in list(self._connections):
            self.release(connection)
            connection.abort()

    def _accept_from(self, sock: socket.socket) -> None:
        if sock.fileno() >= 0:  # not closed while accepting paused
            asyncio.get_running_loop().add_reader(sock, self._accept, sock)

    def _accept(self, sock: socket.socket) -> None:
        """Accept what waits on ``sock``, at most a backlog's worth per wake-up (as asyncio
        does, so that a flood cannot keep the loop here)."""
        server = self._serve_http
        assert server is not None
        for _ in range(ACCEPT_BACKLOG):
            try:
                accepted, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # reset while it waited: take the next
                continue
            except OSError as error:
                if error.errno not in _OUT_OF_RESOURCES:
                    raise  # the event loop logs it; the next wake-up tries again
                self._accept_failed(sock, error)
                return
            accepted.setblocking(False)
            connection = _Connection(self, server)
            if self.admit(connection):
                connection.open(accepted, self._exporter.web_config.tls_context)
            else:
                accepted.close()

    def _accept_failed(self, sock: socket.socket, error: OSError) -> None:
        """Out of descriptors: a condition; close the longest-waiting connection to free one
        and try again in ``ACCEPT_RETRY_SECONDS`` (the socket stays readable meanwhile)."""
        self._accept_failing.occurred(
            errno.errorcode.get(error.errno or 0, "error"),
            f"accepting web connections fails: {error.strerror}; retrying each second, "
            "closing the longest-waiting connection at each failure",
        )
        if self._waiting:
            self._close(next(iter(self._waiting)), Rejection.EVICTED)
        loop = asyncio.get_running_loop()
        loop.remove_reader(sock)
        loop.call_later(ACCEPT_RETRY_SECONDS, self._accept_from, sock)

    @property
    def budget(self) -> DescriptorBudget:
        """The budget for the running config, logged when a reload changes it."""
        config = self._exporter.config
        if self._budget is None or config is not self._budget_config:
            budget = self._plan(config)
            if self._budget is not None and budget != self._budget:
                self._log(budget)
            self._budget, self._budget_config = budget, config
        return self._budget

    def _plan(self, config: Config) -> DescriptorBudget:
        return descriptor_budget(
            config,
            enabled_collectors(config.collectors, self._exporter.collector_flags),
            self._open_files,
            len(self._listening),
            self._max_connections,
            self._max_probes,
        )

    def _log(self, budget: DescriptorBudget) -> None:
        limits = (
            f"at most {budget.connections} web connections and {budget.probes} /probe runs "
            f"at once, request heads within {format_duration(self.read_timeout)}"
        )
        if budget.short:
            logger.warning(
                "open files limit %d is %d short of what this config needs (%d reserved for "
                "probes, collectors and the rest, 2 per /probe run, %d web connections): "
                "raise LimitNOFILE= or ulimit -n; %s",
                budget.open_files,
                budget.short,
                budget.reserved,
                MINIMUM_CONNECTIONS,
                limits,
            )
        else:
            logger.info(
                "%s (open files limit %d, %d reserved for probes, collectors and the rest)",
                limits,
                budget.open_files,
                budget.reserved,
            )

    def admit(self, connection: _Connection) -> bool:
        """Whether a new connection may stay open, closing longest-waiting ones to make room."""
        cap = self.budget.connections
        while len(self._connections) >= cap:
            if not self._waiting:
                self._at_cap(cap, Rejection.CONNECTION_LIMIT)
                return False
            self._close(next(iter(self._waiting)), Rejection.EVICTED)
            self._at_cap(cap, Rejection.EVICTED)
        self._connections.add(connection)
        self._wait(connection)
        return True

    def _at_cap(self, cap: int, rejection: Rejection) -> None:
        self._connections_at_cap.occurred(
            rejection.value,
            f"web connections at their cap of {cap}: each new one closes the one that has "
            "waited longest for its request, or is closed itself when all are in a request",
        )

    def serving(self, connection: _Connection, protocol: object) -> None:
        """``protocol`` (aiohttp's) now speaks HTTP on ``connection``."""
        if connection in self._connections:
            self._served[protocol] = connection

    def release(self, connection: _Connection) -> None:
        """Forget a closed connection; closing twice is fine."""
        self._connections.discard(connection)
        self._waiting.pop(connection, None)
        if connection.app is not None:
            self._served.pop(connection.app, None)
        if connection.deadline is not None:
            connection.deadline.cancel()

    def _wait(self, connection: _Connection) -> None:
        """Start the connection's read timeout: it waits for a request head."""
        loop = asyncio.get_running_loop()
        connection.deadline = loop.call_later(
            self.read_timeout, self._close, connection, Rejection.READ_TIMEOUT
        )
        self._waiting[connection] = None

    def _close(self, connection: _Connection, rejection: Rejection) -> None:
        self.rejected[rejection] += 1
        self.release(connection)
        connection.abort()

    @web.middleware
    async def track_requests(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A connection inside a request is neither timed out nor evicted."""
        connection = self._served.get(request.protocol)
        if connection is None:  # closed already; aiohttp still runs its handler
            return await handler(request)
        connection.requests += 1
        if connection.deadline is not None:
            connection.deadline.cancel()
        self._waiting.pop(connection, None)
        try:
            return await handler(request)
        finally:
            connection.requests -= 1
            if connection.requests == 0 and connection in self._connections:
                self._wait(connection)

    def limit_probes(self, probe: Handler) -> Handler:
        """``probe`` answering 503 with ``Retry-After`` past the budget's /probe runs."""

        async def limited(request: web.Request) -> web.StreamResponse:
            cap = self.budget.probes
            if self.probes_in_flight >= cap:
                self.rejected[Rejection.PROBE_LIMIT] += 1
                self._probes_at_cap.occurred(
                    "answered 503", f"/probe at its cap of {cap} probes at once: answering 503"
                )
                raise web.HTTPServiceUnavailable(
                    headers={hdrs.RETRY_AFTER: str(PROBE_RETRY_AFTER_SECONDS)},
                    text=f"{cap} probes are running, the most this exporter runs at once "
                    "(--probe.max-concurrency); retry later\n",
                )
            self.probes_in_flight += 1
            try:
                return await probe(request)
            finally:
                self.probes_in_flight -= 1

        return limited

    def collect(self) -> Iterable[Metric]:
        budget = self.budget
        yield GaugeMetricFamily(
            "mail_exporter_web_connections",
            "Open web connections.",
            value=len(self._connections),
        )
        yield GaugeMetricFamily(
            "mail_exporter_web_connections_max",
            "Web connections kept open at most: --web.max-connections, or fewer as the "
            "open files limit allows.",
            value=budget.connections,
        )
        yield GaugeMetricFamily(
            "mail_exporter_probe_requests_in_flight",
            "/probe requests running now.",
            value=self.probes_in_flight,
        )
        yield GaugeMetricFamily(
            "mail_exporter_probe_requests_concurrent_max",
            "/probe requests run at once at most; past it /probe answers 503.",
            value=budget.probes,
        )
        rejected = CounterMetricFamily(
            "mail_exporter_web_rejected",
            "Web clients turned away, by reason.",
            labels=["reason"],
        )
        for reason, count in self.rejected.items():
            rejected.add_metric([reason.value], float(count))
        yield rejected
