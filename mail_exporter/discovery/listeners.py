"""Which mail ports listen, on which local addresses, and with which TLS: the listening
sockets from ``/proc/net/tcp`` and ``tcp6`` (readable by any user, no process walk), then
one banner and capability peek per port through the probes' own code, never a login.

The ports peeked are the standard ones (:data:`STANDARD_PORTS`) and those the servers'
configs name, and only those that listen: nothing else of the host is touched, however
many sockets it has. A port bound to every address is peeked on loopback; a port bound
to some addresses on the first loopback one, else on the first it is bound to, which is
an address of this host: the peeks never leave it. Each peek has its own time limit and
:data:`PEEKS_AT_ONCE` run at once, so a port that accepts and never answers costs one
limit (twice: STARTTLS or plaintext first, implicit TLS second, unless the config said
implicit), not one per port. At most :data:`MAX_PEEKS` ports are peeked (the configs'
first); a host whose configs name more (thousands of master.cf services) gets the rest
noted, not peeked, so discovery's time stays within
``MAX_PEEKS / PEEKS_AT_ONCE`` times two limits.

A peek is the probe a scheduled target makes, without ``auth``: the banner, the
capabilities, STARTTLS and its handshake when offered (or the handshake first, for
implicit TLS), and QUIT. What it finds (TLS mode, STARTTLS offered, the certificate's
expiry) goes into the config's comments; a port whose peek fails with both TLS modes
is left out with the reason.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mail_exporter.config.probes import ModuleConfig, Protocol, TLSMode
from mail_exporter.discovery.facts import Port
from mail_exporter.durations import format_duration
from mail_exporter.probes import run_probe
from mail_exporter.probes.result import Phase, ProbeResult
from mail_exporter.targets import Address

STANDARD_PORTS: tuple[Port, ...] = (
    Port(25, "smtp", "smtp", "smtp", "the standard SMTP port"),
    Port(465, "smtp", "smtps", "submissions", "the standard submissions port", "implicit"),
    Port(587, "smtp", "submission", "submission", "the standard submission port", "starttls"),
    Port(143, "imap", "imap", "imap", "the standard IMAP port"),
    Port(993, "imap", "imaps", "imaps", "the standard IMAPS port", "implicit"),
    Port(110, "pop3", "pop3", "pop3", "the standard POP3 port"),
    Port(995, "pop3", "pop3s", "pop3s", "the standard POP3S port", "implicit"),
)
MAX_PEEKS = 64
PEEKS_AT_ONCE = 32
"""Connections open at once: far below any process's file limit."""
STANDARD_NUMBERS = frozenset(port.port for port in STANDARD_PORTS)
LISTEN_STATE = "0A"
PROC_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def listening_sockets(tables: Iterable[Path] = PROC_TABLES) -> dict[int, set[str]]:
    """The addresses of every listening TCP socket of this host's network namespace, by
    port (the tables hold every connection too: read line by line)."""
    found: dict[int, set[str]] = {}
    for table in tables:
        try:
            with table.open() as lines:
                next(lines, None)  # the header
                for line in lines:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == LISTEN_STATE:
                        address, _, port = fields[1].partition(":")
                        found.setdefault(int(port, 16), set()).add(_address(address))
        except OSError:
            continue
    return found


def _address(text: str) -> str:
    """The kernel's hex address: 32-bit words in host (little-endian) order."""
    words = [bytes.fromhex(text[i : i + 8])[::-1] for i in range(0, len(text), 8)]
    return str(ipaddress.ip_address(b"".join(words)))


@dataclass(frozen=True)
class Peek:
    """A listening port and what its peek found; ``tls`` None: no peek got a banner."""

    port: Port
    bound: tuple[str, ...]  # the addresses it listens on
    address: Address  # where it was peeked (and is to be probed)
    tls: TLSMode | None
    not_after: float | None  # the certificate chain's earliest expiry
    problem: str  # why no peek got through, when tls is None


def probe_address(port: Port, bound: Iterable[str]) -> Address | None:
    """Where to reach a port bound to ``bound``: loopback for a wildcard (IPv4 first),
    else its first loopback address, else its first address."""
    addresses = sorted(set(bound), key=lambda a: (":" in a, a))
    if port.host is not None:
        addresses = [a for a in addresses if a == port.host or a in WILDCARDS]
    if not addresses:
        return None
    for address in addresses:
        if address in WILDCARDS:
            return Address(WILDCARDS[address], port.port)
    loopback = [a for a in addresses if ipaddress.ip_address(a).is_loopback]
    return Address((loopback or addresses)[0], port.port)


def peek_module(protocol: Protocol, tls: TLSMode, timeout: float) -> ModuleConfig:
    """A probe of the banner and capabilities that fails on nothing TLS verification or
    a missing STARTTLS would fail: it is looking, not judging."""
    return ModuleConfig.model_validate(
        {
            "protocol": protocol,
            "tls": tls,
            "require_tls": False if tls == "starttls" else None,
            "timeout": format_duration(timeout),
            "tls_config": {"insecure_skip_verify": True},
        }
    )


async def _peek(port: Port, bound: tuple[str, ...], address: Address, seconds: float) -> Peek:
    modes: list[TLSMode] = (
        ["implicit", "starttls"] if port.tls == "implicit" else ["starttls", "implicit"]
    )
    problems = []
    for mode in modes:
        result: ProbeResult = await run_probe(
            address, peek_module(port.protocol, mode, seconds), seconds
        )
        if result.success:
            tls: TLSMode = "none" if mode == "starttls" and not result.starttls_offered else mode
            not_after = result.tls.earliest_not_after if result.tls else None
            return Peek(port, bound, address, tls, not_after, "")
        failure = result.failure
        problems.append(f"{mode}: {failure.phase.value}: {failure.detail}" if failure else mode)
        if failure is not None and failure.phase is Phase.CONNECT:
            break
    return Peek(port, bound, address, None, None, "; ".join(problems))


async def _peek_all(
    listening: list[tuple[Port, tuple[str, ...], Address]], seconds: float
) -> list[Peek]:
    slots = asyncio.Semaphore(PEEKS_AT_ONCE)

    async def peek(port: Port, bound: tuple[str, ...], address: Address) -> Peek:
        async with slots:
            return await _peek(port, bound, address, seconds)

    return list(await asyncio.gather(*(peek(*listener) for listener in listening)))


def peek_listeners(
    ports: Iterable[Port], timeout: float
) -> tuple[list[Peek], list[Port], list[Port]]:
    """The peeks of the given ports that listen (the first of several for one port
    number, the configs' before the standard ones), the ports that do not, and those
    that listen beyond :data:`MAX_PEEKS` (the standard ones are always peeked)."""
    sockets = listening_sockets()
    chosen: dict[int, tuple[Port, tuple[str, ...], Address]] = {}
    silent: list[Port] = []
    unpeeked: list[Port] = []
    for port in ports:
        if port.port in chosen:
            continue
        bound = tuple(sorted(sockets.get(port.port, ())))
        address = probe_address(port, bound)
        if address is None:
            silent.append(port)
        elif len(chosen) < MAX_PEEKS or port.port in STANDARD_NUMBERS:
            chosen[port.port] = (port, bound, address)
        else:
            unpeeked.append(port)
    return asyncio.run(_peek_all(list(chosen.values()), timeout)), silent, unpeeked
