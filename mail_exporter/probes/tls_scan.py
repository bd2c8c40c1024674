"""What a TLS scan found (:class:`TLSScan`), and the scans kept between probes (:class:`TLSScans`).

A module with ``tls_scan`` has its probe, after the usual session, try one short handshake
per TLS version and per weak cipher class (:mod:`mail_exporter.probes.tls_scanner`). The
answer changes when the server's configuration does, not from one probe to the next, so
a scan is kept for the module's ``interval`` (default 1 h) per server (protocol, host,
port, TLS mode and server name) and the probes in between report it again: a 30 s probe
interval does not hammer the server with handshakes. The scheduled probes and ``/probe``
share one :class:`TLSScans`, owned by the exporter and handed to them.

A failed scan is kept as long as a good one: a server that hangs mid-scan costs one
timeout per interval, not one per probe, and ``mail_tls_scan_success 0`` says so meanwhile.
Two probes of one server whose scan is due at the same moment may both scan; the later
one's result is kept. The number of servers kept is bounded (:data:`MAX_SCANS`), the
least recently used dropped first, so /probe on ever new targets cannot grow memory.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from mail_exporter.config.probes import ModuleConfig
from mail_exporter.targets import Address

MAX_SCANS: Final = 4096
"""Servers whose latest scan is kept."""


@dataclass(frozen=True)
class TLSScan:
    """One scan's answers: each version and weak cipher class tried and answered, accepted
    or not. One the local OpenSSL cannot offer, or the scan did not reach, is absent.

    ``failure`` says why the scan stopped short (a timeout, a refused STARTTLS, a lost
    connection before the handshake), ``None`` when every handshake was answered; the
    answers gathered before a failure are kept. ``notes`` has a line per handshake and
    one for what this host cannot offer, for the probe's log.
    """

    started: float
    """When the scan began, in Unix seconds."""
    duration_seconds: float
    versions: Mapping[str, bool]
    weak_ciphers: Mapping[str, bool]
    failure: str | None
    notes: tuple[str, ...]

    @property
    def success(self) -> bool:
        return self.failure is None

    def summary(self) -> str:
        """One line for people: what was accepted, or why the scan failed."""
        accepted = [version for version, yes in self.versions.items() if yes] or ["none"]
        weak = [name for name, yes in self.weak_ciphers.items() if yes] or ["none"]
        text = f"versions accepted: {', '.join(accepted)}; weak ciphers accepted: {', '.join(weak)}"
        return text if self.failure is None else f"{text}; failed: {self.failure}"


ScanKey = tuple[str, str, int, str, str | None]
"""Protocol, host, port, TLS mode and server name: what decides the server's answers."""


def scan_key(address: Address, module: ModuleConfig) -> ScanKey:
    host = address.host.lower()
    return (module.protocol, host, address.port, module.tls, module.tls_config.server_name)


class TLSScans:
    """The latest scan of each server with when it began (monotonic), least recently used first."""

    def __init__(self, entries: int = MAX_SCANS) -> None:
        self._entries = entries
        self._scans: OrderedDict[ScanKey, tuple[float, TLSScan]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._scans)

    def fresh(self, key: ScanKey, interval: float) -> TLSScan | None:
        """The kept scan of ``key`` if it began less than ``interval`` seconds ago."""
        kept = self._scans.get(key)
        if kept is None or time.monotonic() - kept[0] >= interval:
            return None
        self._scans.move_to_end(key)
        return kept[1]

    def keep(self, key: ScanKey, began: float, scan: TLSScan) -> None:
        """Keep ``scan`` of ``key``, begun at monotonic time ``began``."""
        self._scans[key] = (began, scan)
        self._scans.move_to_end(key)
        if len(self._scans) > self._entries:
            self._scans.popitem(last=False)
