"""A real DNS server for the tests and benchmarks: dnsmasq (Debian's dnsmasq-base) on loopback.

:class:`Zones` collects records as dnsmasq options; :class:`Dnsmasq` writes them to its
own config file in a work directory, runs dnsmasq in the foreground on 127.0.0.1 and a
free port (UDP and TCP), waits until it answers, and counts the queries it received
from its query log (``log-queries``), so tests can tell that a cached pass sent none.

Names under a zone given to :meth:`Zones.local` are answered from the records only:
any other name there is NXDOMAIN, a name with records of other types is NODATA. A
zone given to :meth:`Zones.silent` is forwarded to a UDP socket that the server object
holds open and never reads: dnsmasq forwards each query there and never answers the
client, which is what a blocklist that drops queries looks like to the exporter.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query

from tests.realservers.runtime import (
    ServerStartError,
    free_port,
    log_excerpt,
    start_with_fresh_ports,
)

BINARY = "dnsmasq"
INSTALL_HINT = "apt-get install dnsmasq-base"
START_TIMEOUT_SECONDS = 10.0
READY_NAME = "ready.dnsmasq.invalid"
_QUERY_LINE = re.compile(r"query\[(?P<type>[A-Z0-9]+)\] (?P<name>\S+) from ")


def _quoted(text: str) -> str:
    if '"' in text or "\\" in text or "\n" in text:
        raise ValueError(f"TXT text with quotes, backslashes or newlines: {text!r}")
    return f'"{text}"'


class Zones:
    """Records for dnsmasq, one config line each (see dnsmasq(8) for the options)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.silent_zones: list[str] = []

    def local(self, *zones: str) -> Zones:
        """Answer names under ``zones`` from these records only (NXDOMAIN otherwise)."""
        self.lines += [f"local=/{zone.strip('.')}/" for zone in zones]
        return self

    def silent(self, *zones: str) -> Zones:
        """Never answer names under ``zones`` (forwarded to a socket that never replies)."""
        self.silent_zones += [zone.strip(".") for zone in zones]
        return self

    def txt(self, name: str, *texts: str) -> Zones:
        """One TXT record per text, split into strings of at most 255 characters."""
        for text in texts:
            strings = [text[i : i + 255] for i in range(0, len(text), 255)] or [""]
            self.lines.append(f"txt-record={name}," + ",".join(map(_quoted, strings)))
        return self

    def mx(self, domain: str, host: str, preference: int = 10) -> Zones:
        self.lines.append(f"mx-host={domain},{host},{preference}")
        return self

    def host(self, name: str, *addresses: str) -> Zones:
        """A and AAAA records (at most one of each), and the PTR records that go with them."""
        self.lines.append(f"host-record={name}," + ",".join(addresses))
        return self

    def a(self, name: str, *addresses: str) -> Zones:
        """A records without PTRs, as many as given (for blocklist answers)."""
        self.lines += [f"address=/{name}/{address}" for address in addresses]
        return self

    def ptr(self, reverse_name: str, target: str) -> Zones:
        self.lines.append(f"ptr-record={reverse_name},{target}")
        return self

    def tlsa(self, name: str, usage: int, selector: int, mtype: int, data_hex: str) -> Zones:
        """A TLSA record (type 52), given as its wire form in hex."""
        rdata = bytes([usage, selector, mtype]).hex() + data_hex.lower()
        self.lines.append(f"dns-rr={name},52,{rdata}")
        return self


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_udp_and_tcp_port() -> int:
    while True:
        port = free_port()
        if _udp_free(port):
            return port


class Dnsmasq:
    """dnsmasq serving ``zones`` on 127.0.0.1:``port`` until :meth:`stop`."""

    def __init__(self, work_dir: Path, zones: Zones) -> None:
        self.work_dir = work_dir
        self.zones = zones
        self.config_file = work_dir / "dnsmasq.conf"
        self.log_file = work_dir / "dnsmasq.log"
        self.output_file = work_dir / "dnsmasq.out"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._silent: socket.socket | None = None

    @staticmethod
    def installed() -> bool:
        return shutil.which(BINARY) is not None

    def _config(self) -> str:
        user = pwd.getpwuid(os.getuid()).pw_name
        lines = [
            f"port={self.port}",
            "listen-address=127.0.0.1",
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            "no-poll",
            "keep-in-foreground",
            "log-queries",
            f"log-facility={self.log_file}",
            "pid-file=",
            f"user={user}",
            "dns-forward-max=1000",
            *self.zones.lines,
        ]
        if self.zones.silent_zones:
            assert self._silent is not None
            silent_port = self._silent.getsockname()[1]
            lines += [f"server=/{zone}/127.0.0.1#{silent_port}" for zone in self.zones.silent_zones]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        """Start dnsmasq on a free port (another one if that was taken meanwhile)."""
        binary = shutil.which(BINARY)
        if binary is None:
            raise ServerStartError(f"{BINARY} is not installed: {INSTALL_HINT}")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        start_with_fresh_ports(lambda: self._start(binary))

    def _start(self, binary: str) -> None:
        if self.zones.silent_zones:
            self._silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._silent.bind(("127.0.0.1", 0))
        self.port = _free_udp_and_tcp_port()
        self.config_file.write_text(self._config())
        with self.output_file.open("ab") as output:
            self.process = subprocess.Popen(
                [binary, f"--conf-file={self.config_file}", "--no-daemon"],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(
                    f"dnsmasq did not answer on 127.0.0.1:{self.port}\n"
                    + log_excerpt(self.output_file, self.log_file)
                )
            time.sleep(0.02)

    def _answers(self) -> bool:
        query = dns.message.make_query(READY_NAME, "A")
        try:
            dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.2)
        except (dns.exception.DNSException, OSError):
            return False
        return True

    def queries(self) -> list[tuple[str, str]]:
        """(name, type) of every query dnsmasq logged so far, readiness probes left out."""
        if not self.log_file.exists():
            return []
        found = []
        for line in self.log_file.read_text(errors="replace").splitlines():
            match = _QUERY_LINE.search(line)
            if match and match["name"] != READY_NAME:
                found.append((match["name"].lower(), match["type"]))
        return found

    def settled_query_count(self, quiet: float = 0.3, timeout: float = 10.0) -> int:
        """The number of queries logged, once the log has not grown for ``quiet`` seconds."""
        count = len(self.queries())
        deadline = time.monotonic() + timeout
        still_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = len(self.queries())
            if now != count:
                count, still_since = now, time.monotonic()
            elif time.monotonic() - still_since >= quiet:
                break
        return count

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
            self.process = None
        if self._silent is not None:
            with contextlib.suppress(OSError):
                self._silent.close()
            self._silent = None

    def __enter__(self) -> Dnsmasq:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
