"""A small authoritative DNS server for tests: answers from a dict, on 127.0.0.1 UDP and TCP.

``records`` maps ``(name, type)`` to record texts (``{("example.test", "MX"): ["10 mx.example.test."]}``).
A name with records of some type answers NOERROR with no records for other types;
any other name is NXDOMAIN. Names under a ``silent`` suffix never get an answer (a
blocklist that times out), under a ``servfail`` suffix get SERVFAIL; names in
``signed`` come back with the AD bit, as from a validating resolver. Every query is
recorded in ``queries``, so tests can count what the exporter asked. With ``hold`` set,
each answer waits that many seconds, so that queries pile up: ``peak`` is the most
queries the server held at once, the exporter's queries in flight.
"""

from __future__ import annotations

import socketserver
import struct
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from tests.realservers.runtime import start_with_fresh_ports


def _key(name: str) -> str:
    return name.rstrip(".").lower()


def _under(name: str, suffixes: Iterable[str]) -> bool:
    return any(name == s or name.endswith("." + s) for s in map(_key, suffixes))


@dataclass
class Zone:
    records: Mapping[tuple[str, str], list[str]]
    silent: set[str] = field(default_factory=set)
    servfail: set[str] = field(default_factory=set)
    signed: set[str] = field(default_factory=set)
    queries: list[tuple[str, str]] = field(default_factory=list)
    hold: float = 0.0
    peak: int = 0
    _holding: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _wait(self) -> None:
        with self._lock:
            self._holding += 1
            self.peak = max(self.peak, self._holding)
        time.sleep(self.hold)
        with self._lock:
            self._holding -= 1

    def answer(self, wire: bytes) -> dns.message.Message | None:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        name = _key(question.name.to_text())
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        if self.hold:
            self._wait()
        if _under(name, self.silent):
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if _under(name, self.servfail):
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        records = {(_key(n), t.upper()): texts for (n, t), texts in self.records.items()}
        texts = records.get((name, rdtype))
        if texts:
            response.answer.append(
                dns.rrset.from_text_list(question.name, 300, "IN", rdtype, texts)
            )
        elif not any(n == name for n, _ in records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        if name in {_key(s) for s in self.signed}:
            response.flags |= dns.flags.AD
        return response


class _Udp(socketserver.BaseRequestHandler):
    server: _UdpServer

    def handle(self) -> None:
        wire, sock = self.request
        response = self.server.zone.answer(wire)
        if response is None:
            return
        limit = 512 if response.edns < 0 else max(512, response.payload)
        try:
            out = response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            response.answer.clear()
            response.flags |= dns.flags.TC
            out = response.to_wire()
        sock.sendto(out, self.client_address)


class _Tcp(socketserver.BaseRequestHandler):
    server: _TcpServer

    def handle(self) -> None:
        header = self.request.recv(2)
        if len(header) < 2:
            return
        (length,) = struct.unpack("!H", header)
        wire = b""
        while len(wire) < length:
            chunk = self.request.recv(length - len(wire))
            if not chunk:
                return
            wire += chunk
        response = self.server.zone.answer(wire)
        if response is not None:
            out = response.to_wire()
            self.request.sendall(struct.pack("!H", len(out)) + out)


class _UdpServer(socketserver.ThreadingUDPServer):
    daemon_threads = True
    zone: Zone


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    zone: Zone


class DnsServer:
    """Serves ``zone`` on 127.0.0.1:``port`` (UDP and TCP) until :meth:`close`.

    The UDP port comes from the kernel; TCP gets the same number, which may be taken:
    then the pair is tried again on another number.
    """

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.udp, self.tcp = start_with_fresh_ports(_bind_pair)
        self.port = self.udp.server_address[1]
        self.udp.zone = self.tcp.zone = zone
        for server in (self.udp, self.tcp):
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def close(self) -> None:
        for server in (self.udp, self.tcp):
            server.shutdown()
            server.server_close()


def _bind_pair() -> tuple[_UdpServer, _TcpServer]:
    udp = _UdpServer(("127.0.0.1", 0), _Udp)
    try:
        return udp, _TcpServer(("127.0.0.1", udp.server_address[1]), _Tcp)
    except OSError:
        udp.server_close()
        raise


def txt(text: str) -> str:
    """A TXT record's text form: quoted strings of at most 255 characters."""
    return " ".join(f'"{text[i : i + 255]}"' for i in range(0, len(text), 255))
