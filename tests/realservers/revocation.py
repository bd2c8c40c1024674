"""Loopback servers for the revocation checks: an HTTP server with the CRLs, OpenSSL's OCSP
responder behind it, and hostile answers; a Postfix presenting one chain per listener; an
Exim stapling an OCSP response made by the same responder, one chain per listener; and
OpenSSL's test server stapling one that says "revoked", which Exim cannot.

OpenSSL 3.0's ``openssl ocsp -port`` takes a port number only and listens on every
interface, so the responder is not run as a server here: each OCSP POST the HTTP server
(bound to 127.0.0.1) receives is answered by ``openssl ocsp -index ... -reqin REQ
-respout RESP`` (the same responder code: status from the CA database, signature,
nextUpdate), and only loopback is ever listened on.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.realservers.exim import EximDaemon
from tests.realservers.pki import LeafFiles
from tests.realservers.postfix import Postfix
from tests.realservers.runtime import (
    Endpoint,
    ServerStartError,
    free_port,
    listens_on,
    log_excerpt,
    loopback_endpoints,
    process_alive,
    start_with_fresh_ports,
    wait_for_endpoints,
)

HANG_SECONDS = 60.0
"""Hang guard: the longest a ``hang`` route holds a request (stop() releases it at once)."""
OCSP_NEXT_UPDATE_MINUTES = 60
MAX_REQUEST_BYTES = 64 * 1024


@dataclass(frozen=True)
class Document:
    """Answer GET with this body."""

    body: bytes
    content_type: str = "application/pkix-crl"


@dataclass(frozen=True)
class Responder:
    """Answer an OCSP POST from ``index`` as ``openssl ocsp`` does, signed by ``signer``."""

    index: Path
    issuer: Path
    signer: Path
    signer_key: Path


@dataclass(frozen=True)
class Endless:
    """Send zeros past ``size`` bytes: with a Content-Length saying so, or without one."""

    size: int
    announce_length: bool


@dataclass(frozen=True)
class Redirect:
    location: str


@dataclass(frozen=True)
class Hang:
    """Read the request, then answer nothing until the server stops."""


Route = Document | Responder | Endless | Redirect | Hang


class RevocationHTTPServer:
    """An HTTP/1.0 server on 127.0.0.1 (its port taken when it binds, so never raced for),
    answering each path by its :data:`Route`; ``hits`` counts the requests per path."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self._released = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def answer_ocsp(self, responder: Responder, request: bytes) -> bytes:
        with tempfile.TemporaryDirectory(dir=self.work_dir) as scratch:
            request_file, response_file = (
                Path(scratch, "request.der"),
                Path(scratch, "response.der"),
            )
            request_file.write_bytes(request)
            _openssl_ocsp(responder, response_file, "-reqin", str(request_file))
            return response_file.read_bytes()

    def hang(self) -> None:
        self._released.wait(HANG_SECONDS)


def _openssl_ocsp(responder: Responder, response_file: Path, *request: str) -> None:
    """``openssl ocsp`` answering ``request`` (its arguments) from the CA database into
    ``response_file`` (DER)."""
    subprocess.run(
        [
            "openssl", "ocsp", "-index", str(responder.index), "-CA", str(responder.issuer),
            "-rsigner", str(responder.signer), "-rkey", str(responder.signer_key),
            *request, "-respout", str(response_file), "-nmin", str(OCSP_NEXT_UPDATE_MINUTES),
        ],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip


def ocsp_response(responder: Responder, leaf: Path, response_file: Path) -> Path:
    """The responder's answer about ``leaf`` (PEM), as a server staples it: DER, in
    ``response_file``."""
    _openssl_ocsp(responder, response_file, "-issuer", str(responder.issuer), "-cert", str(leaf))
    return response_file


def _handler(server: RevocationHTTPServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer(b"")

        def do_POST(self) -> None:
            length = min(int(self.headers.get("Content-Length") or 0), MAX_REQUEST_BYTES)
            self._answer(self.rfile.read(length))

        def _answer(self, request: bytes) -> None:
            server.hits[self.path] += 1
            route = server.routes.get(self.path)
            try:
                if isinstance(route, Document):
                    self._send(route.body, route.content_type)
                elif isinstance(route, Responder):
                    self._send(server.answer_ocsp(route, request), "application/ocsp-response")
                elif isinstance(route, Endless):
                    self._endless(route)
                elif isinstance(route, Redirect):
                    self.send_response(302)
                    self.send_header("Location", route.location)
                    self.end_headers()
                elif isinstance(route, Hang):
                    server.hang()
                else:
                    self.send_error(404)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading, as it should past its bound

        def _send(self, body: bytes, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _endless(self, route: Endless) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/pkix-crl")
            if route.announce_length:
                self.send_header("Content-Length", str(route.size + 1))
            self.end_headers()
            chunk, sent = bytes(64 * 1024), 0
            while sent <= route.size:
                self.wfile.write(chunk)
                sent += len(chunk)

        def log_message(self, format: str, *args: object) -> None:
            pass  # requests are counted in hits; stderr stays the test's

    return Handler


class ChainPostfix(Postfix):
    """Postfix with one more SMTP listener (STARTTLS offered) per certificate chain:
    ``chain_ports[name]`` presents ``chains[name]`` (key file, chain file)."""

    def __init__(
        self,
        work_dir: Path,
        chains: Mapping[str, tuple[Path, Path]],
        dovecot_auth_port: int,
        dovecot_lmtp_port: int,
    ) -> None:
        self.chains = dict(chains)
        self.chain_ports: dict[str, int] = {}
        key, chain = next(iter(self.chains.values()))
        super().__init__(work_dir, chain, key, dovecot_auth_port, dovecot_lmtp_port)

    def _take_ports(self) -> None:
        super()._take_ports()
        self.chain_ports = {name: free_port() for name in self.chains}

    def _endpoints(self) -> list[Endpoint]:
        return super()._endpoints() + loopback_endpoints(*self.chain_ports.values())

    def _master_cf(self) -> str:
        listeners = "".join(
            f"{self.chain_ports[name]} inet n - n - - smtpd\n"
            f"  -o smtpd_tls_chain_files={key},{chain}\n"
            for name, (key, chain) in self.chains.items()
        )
        return super()._master_cf() + listeners


@dataclass(frozen=True)
class Stapled:
    """A listener of :class:`StaplingExim`: the chain it presents, and the DER OCSP response
    it staples (none: it staples nothing)."""

    key: Path
    chain: Path
    staple: Path | None


class StaplingExim(EximDaemon):
    """Exim with a STARTTLS listener per entry of ``listeners`` (``ports[name]``) and, for
    each name in ``implicit``, one more with implicit TLS (``ports[name + "_implicit"]``),
    each presenting its chain and stapling its response (``tls_ocsp_file``).

    Exim chooses them per connection by ``$received_port`` from lsearch files, so one
    daemon serves every case. The files are read by Exim's unprivileged processes: they
    must be readable by Debian-exim (a directory from ``exim_work_dir``, files 0644).
    """

    def __init__(
        self, work_dir: Path, listeners: Mapping[str, Stapled], implicit: tuple[str, ...] = ()
    ) -> None:
        self.listeners = {name: listeners[name] for name in listeners}
        self.listeners |= {f"{name}_implicit": listeners[name] for name in implicit}
        self._implicit = tuple(f"{name}_implicit" for name in implicit)
        super().__init__(work_dir, tuple(self.listeners))

    def listener_options(self) -> str:
        tables = {"certificate": "chain", "privatekey": "key", "ocsp_file": "staple"}
        options = []
        for option, field in tables.items():
            table = self.work_dir / f"{option}.lsearch"
            table.write_text(
                "".join(
                    f"{self.ports[name]}: {getattr(listener, field)}\n"
                    for name, listener in self.listeners.items()
                    if getattr(listener, field) is not None
                )
            )
            table.chmod(0o644)
            options.append(f"tls_{option} = ${{lookup{{$received_port}}lsearch{{{table}}}}}\n")
        implicit = " : ".join(str(self.ports[name]) for name in self._implicit)
        return (
            "tls_advertise_hosts = *\n"
            + "".join(options)
            + (f"tls_on_connect_ports = {implicit}\n" if implicit else "")
        )


class OpenSSLStaplingServer:
    """``openssl s_server`` on 127.0.0.1 with implicit TLS, presenting ``leaf`` with
    ``intermediate`` and stapling ``staple`` to every client that asks (``-status_file``),
    whatever it says.

    Exim's GnuTLS refuses to load a staple that says "revoked" (GnuTLS's
    ``_gnutls_ocsp_get_validity`` takes only "good" and "unknown": Exim logs "The session
    or certificate has expired" and staples nothing), so this real TLS server staples that
    one. It speaks HTTP (``-www``), not mail: a probe gets to its handshake and no further.
    """

    def __init__(self, work_dir: Path, leaf: LeafFiles, intermediate: Path, staple: Path) -> None:
        self._arguments = [
            "-cert", str(leaf.cert), "-key", str(leaf.key), "-cert_chain", str(intermediate),
            "-status_file", str(staple), "-www", "-quiet",
        ]  # fmt: skip
        self._log = work_dir / "s_server.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.port = free_port()

    def start(self, timeout: float = 10.0) -> None:
        start_with_fresh_ports(lambda: self._start(timeout), self._take_port)

    def _take_port(self) -> None:
        self.port = free_port()

    def _start(self, timeout: float) -> None:
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                ["openssl", "s_server", "-accept", f"127.0.0.1:{self.port}", *self._arguments],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        process = self._process
        pending = wait_for_endpoints(
            [("127.0.0.1", self.port)],
            lambda endpoint: listens_on(process.pid, endpoint[1]),
            timeout,
            lambda: process_alive(process.pid),
        )
        if pending:
            self.stop()
            raise ServerStartError(f"openssl s_server did not listen:\n{log_excerpt(self._log)}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None
