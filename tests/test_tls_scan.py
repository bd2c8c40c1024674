"""The TLS scan's costs and bounds: kept between probes (scheduled and /probe alike), nothing
run when off, no login in its sessions, and hostile servers that hang or reset on old
versions, through a scripted loopback relay in front of the real Postfix and Dovecot."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from mail_exporter.config.probes import ModuleConfig
from mail_exporter.metrics import TLS_SCAN_METRICS, probe_families
from mail_exporter.probes import ProbeMemory, ProbeResult, run_probe
from mail_exporter.probes.tls_scan import TLSScan, TLSScans, scan_key
from mail_exporter.probes.tls_scanner import local_plan
from mail_exporter.targets import parse_address
from tests import test_web
from tests.promtool import check_metrics
from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import PKI
from tests.realservers.postfix import Postfix
from tests.scripted import scripted_server, send, upgrade
from tests.test_web import sample

pytestmark = pytest.mark.integration

HELLO_VERSIONS = {b"\x03\x01": "TLS 1.0", b"\x03\x02": "TLS 1.1", b"\x03\x03": "TLS 1.2"}
"""A ClientHello's client_version (TLS 1.3 says 1.2 there and lists 1.3 in an extension)."""
OLD = ("TLS 1.0", "TLS 1.1")
CLOSING_SECONDS = 0.75
"""Past its deadline a probe only closes its connections, which takes milliseconds; a close
that waited on the hung connection would take a second more."""

OnOld = Literal["relay", "hang", "reset"]

client_for = test_web.client_for  # the exporter behind aiohttp's test server, as for /probe


@dataclass
class Relay:
    """What a relay saw: connections, and ClientHellos by the version they offered."""

    address: str = ""
    connections: int = 0
    hellos: Counter[str] = field(default_factory=Counter)


def offered_version(record: bytes) -> str | None:
    """The client_version of a TLS record holding a ClientHello, else None."""
    if len(record) < 11 or record[0] != 0x16 or record[5] != 0x01:
        return None
    return HELLO_VERSIONS.get(record[9:11], "other")


@asynccontextmanager
async def relay(upstream_port: int, on_old: OnOld = "relay") -> AsyncIterator[Relay]:
    """A loopback relay to ``upstream_port`` that counts what it sees and, on a ClientHello
    for TLS 1.0 or 1.1, relays it, hangs (reads and drops all that follows) or resets."""
    seen = Relay()

    async def client_to_server(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: asyncio.StreamWriter
    ) -> None:
        while data := await reader.read(65536):
            if data[:1] == b"\x16" and len(data) < 11:
                data += await reader.readexactly(11 - len(data))
            version = offered_version(data)
            if version is not None:
                seen.hellos[version] += 1
            if version in OLD and on_old == "hang":
                while await reader.read(65536):
                    pass
                return
            if version in OLD and on_old == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            upstream.write(data)
            await upstream.drain()

    async def server_to_client(
        upstream: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while data := await upstream.read(65536):
            writer.write(data)
            await writer.drain()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        directions = [
            asyncio.create_task(client_to_server(reader, writer, up_writer)),
            asyncio.create_task(server_to_client(up_reader, writer)),
        ]
        try:
            await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for direction in directions:
                direction.cancel()
            up_writer.close()

    async with scripted_server(handler) as address:
        seen.address = address
        yield seen


def scan_module(protocol: str, tls: str, pki: PKI, **settings: Any) -> ModuleConfig:
    return ModuleConfig.model_validate(
        {
            "protocol": protocol,
            "tls": tls,
            "timeout": "5s",
            "tls_config": {"ca_file": str(pki.ca_file), "server_name": "localhost"},
            "tls_scan": True,
            **settings,
        }
    )


async def probe(address: str, module: ModuleConfig, scans: TLSScans | None = None) -> ProbeResult:
    return await run_probe(
        parse_address(address), module, module.timeout_seconds, ProbeMemory(tls_scans=scans)
    )


def handshakes() -> int:
    plan = local_plan()
    return len(plan.versions) + len(plan.weak_ciphers)


def scan_of(result: ProbeResult) -> TLSScan:
    assert result.tls_scan is not None, "\n".join(result.log)
    return result.tls_scan


# --- what it costs ------------------------------------------------------------------------


async def test_a_scan_is_kept_for_its_interval(postfix: Postfix, pki: PKI) -> None:
    scans = TLSScans()
    module = scan_module("smtp", "starttls", pki, tls_scan={"interval": "1h"})
    async with relay(postfix.smtp_port) as seen:
        first = await probe(seen.address, module, scans)
        assert seen.connections == 1 + handshakes(), first.log
        second = await probe(seen.address, module, scans)
        assert seen.connections == 2 + handshakes()  # the probe's own connection only
    assert first.success and second.success, second.log
    assert scan_of(second) is scan_of(first)
    assert any("tls_scan" in line and "kept from" in line for line in second.log), second.log


async def test_a_scan_is_made_again_after_its_interval(postfix: Postfix, pki: PKI) -> None:
    scans = TLSScans()
    module = scan_module("smtp", "starttls", pki, tls_scan={"interval": "1s"})
    async with relay(postfix.smtp_port) as seen:
        first = await probe(seen.address, module, scans)
        await asyncio.sleep(1.2)
        second = await probe(seen.address, module, scans)
        assert seen.connections == 2 * (1 + handshakes())
    assert scan_of(second).started > scan_of(first).started


def test_kept_scans_are_bounded(pki: PKI) -> None:
    scans = TLSScans(entries=2)
    module = scan_module("smtp", "implicit", pki)
    found = TLSScan(0.0, 0.0, {}, {}, None, ())
    keys = [scan_key(parse_address(f"mx{n}.example.net:465"), module) for n in range(3)]
    for key in keys:
        scans.keep(key, time.monotonic(), found)
    assert len(scans) == 2
    assert scans.fresh(keys[0], 3600) is None
    assert scans.fresh(keys[2], 3600) is found


async def test_off_costs_nothing(postfix: Postfix, pki: PKI) -> None:
    """Without tls_scan the probe makes its one connection and reports no scan family."""
    module = scan_module("smtp", "starttls", pki, tls_scan=False)
    async with relay(postfix.smtp_port) as seen:
        result = await probe(seen.address, module, TLSScans())
        assert seen.connections == 1
    assert result.success and result.tls_scan is None
    families = probe_families(("protocol",), ["smtp"], result, {}, None)
    scan_names = {spec.name for spec in TLS_SCAN_METRICS}
    assert [f.name for f in families if f.name in scan_names and f.samples] == []


async def test_scheduled_probes_and_probe_endpoint_share_the_scans(
    client_for: Any, postfix: Postfix, pki: PKI
) -> None:
    """One scan for the scheduled target, none more for its next probes or /probe."""
    async with relay(postfix.smtp_port) as seen:
        client, exporter = await client_for(
            f"""\
            global: {{interval: 1s}}
            modules:
              scanned:
                protocol: smtp
                tls: starttls
                timeout: 5s
                tls_config: {{ca_file: {pki.ca_file}}}
                tls_scan: {{interval: 1h}}
            targets:
              - {{name: mx, address: "{seen.address}", module: scanned}}
            """
        )
        state = exporter.scheduler.states["mx"]
        for _ in range(100):
            if state.result is not None and seen.connections >= 2 + handshakes():
                break
            await asyncio.sleep(0.1)
        assert state.result is not None and state.result.tls_scan is not None
        response = await client.get("/probe", params={"target": seen.address, "module": "scanned"})
        exposition = await response.text()
        metrics = await (await client.get("/metrics")).text()
        assert seen.hellos["TLS 1.0"] == 1, seen.hellos  # one scan in all
    scheduled = {"target": "mx", "module": "scanned", "protocol": "smtp"}
    kept = state.result.tls_scan
    assert sample(exposition, "mail_tls_scan_timestamp_seconds", protocol="smtp") == kept.started
    assert sample(metrics, "mail_tls_scan_timestamp_seconds", scheduled) == kept.started
    assert sample(exposition, "mail_tls_scan_success", protocol="smtp") == 1.0
    for version in ("TLS 1.2", "TLS 1.3"):
        assert sample(metrics, "mail_tls_version_accepted", scheduled, version=version) == 1.0
        assert sample(exposition, "mail_tls_version_accepted", protocol="smtp", version=version)
    await check_metrics(metrics)
    await check_metrics(exposition)


# --- what it says and sends ---------------------------------------------------------------


def all_versions_context(pki: PKI) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.set_ciphers("ALL:@SECLEVEL=0")
    return context


async def test_scan_sessions_never_log_in(pki: PKI, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe logs in once; the scan's sessions stop at the handshake and say goodbye."""
    context = all_versions_context(pki)
    commands: list[str] = []

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await send(writer, "220 scripted ESMTP")
        while line := await reader.readline():
            verb = line.decode().split(" ")[0].strip().upper()
            commands.append(verb)
            if verb == "EHLO":
                await send(writer, "250-scripted", "250-STARTTLS", "250 AUTH PLAIN")
            elif verb == "STARTTLS":
                await send(writer, "220 go ahead")
                await upgrade(writer, context)
            elif verb == "AUTH":
                await send(writer, "235 ok")
            elif verb == "QUIT":
                await send(writer, "221 bye")
                return

    monkeypatch.setenv("SCAN_TEST_PASSWORD", "scan-secret")
    auth = {"username": "probe", "password_env": "SCAN_TEST_PASSWORD"}
    module = scan_module("smtp", "starttls", pki, auth=auth)
    async with scripted_server(server) as address:
        result = await probe(address, module)
    assert result.success, result.log
    assert commands.count("AUTH") == 1
    assert commands.count("STARTTLS") == 1 + handshakes()
    accepted = sum(scan_of(result).versions.values()) + sum(scan_of(result).weak_ciphers.values())
    assert commands.count("QUIT") == 1 + accepted  # a goodbye after each accepted handshake


async def test_no_scan_when_the_probe_does_not_reach_tls(pki: PKI) -> None:
    """A server without STARTTLS, which this module accepts: the probe passes in
    plaintext, and no scan is tried (each of its handshakes would fail the same way)."""
    connections = 0

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await send(writer, "220 scripted ESMTP")
        while line := await reader.readline():
            verb = line.decode().split(" ")[0].strip().upper()
            await send(writer, "221 bye" if verb == "QUIT" else "250 scripted")

    module = scan_module("smtp", "starttls", pki, require_tls=False)
    async with scripted_server(server) as address:
        result = await probe(address, module, TLSScans())
    assert result.success, result.log
    assert result.tls_scan is None and connections == 1
    assert any("did not reach TLS" in line for line in result.log), result.log


async def test_starttls_refused_to_the_scan_fails_the_scan_only(pki: PKI) -> None:
    """STARTTLS refused after the probe's own session (454, as under a TLS rate limit):
    the scan fails with the server's answer; the probe's verdict stands."""
    context = all_versions_context(pki)
    connections = 0

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await send(writer, "220 scripted ESMTP")
        while line := await reader.readline():
            verb = line.decode().split(" ")[0].strip().upper()
            if verb == "EHLO":
                await send(writer, "250-scripted", "250 STARTTLS")
            elif verb == "STARTTLS" and connections == 1:
                await send(writer, "220 go ahead")
                await upgrade(writer, context)
            elif verb == "STARTTLS":
                await send(writer, "454 4.7.0 TLS not available due to local problem")
            elif verb == "QUIT":
                await send(writer, "221 bye")
                return

    async with scripted_server(server) as address:
        result = await probe(address, scan_module("smtp", "starttls", pki))
    found = scan_of(result)
    assert result.success, result.log
    assert not found.success and found.versions == {}
    assert found.failure == (
        "version TLS 1.3: starttls_unavailable in starttls: 454 4.7.0 TLS not available due "
        "to local problem"
    )
    assert connections == 2  # the scan stopped at its first refusal


# --- hostile servers ----------------------------------------------------------------------


@dataclass(frozen=True)
class Upstream:
    """The real server behind a hostile relay, and how a module reaches it."""

    protocol: str
    tls: str
    port: int


@pytest.fixture(params=["smtp-starttls", "imaps"])
def upstream(request: pytest.FixtureRequest, postfix: Postfix, dovecot: Dovecot) -> Upstream:
    if request.param == "smtp-starttls":
        return Upstream("smtp", "starttls", postfix.smtp_port)
    return Upstream("imap", "implicit", dovecot.imaps_port)


async def test_reset_on_old_versions_reads_not_accepted(upstream: Upstream, pki: PKI) -> None:
    module = scan_module(upstream.protocol, upstream.tls, pki)
    async with relay(upstream.port, on_old="reset") as seen:
        result = await probe(seen.address, module)
    found = scan_of(result)
    assert result.success and found.success, result.log
    assert found.versions == {"TLS 1.3": True, "TLS 1.2": True, "TLS 1.1": False, "TLS 1.0": False}
    assert seen.hellos["TLS 1.0"] == seen.hellos["TLS 1.1"] == 1
    assert any("TLS 1.0 not accepted" in line for line in result.log), result.log


async def test_hang_after_an_old_client_hello_ends_within_the_timeout(
    upstream: Upstream, pki: PKI
) -> None:
    module = scan_module(upstream.protocol, upstream.tls, pki, timeout="3s")
    async with relay(upstream.port, on_old="hang") as seen:
        started = time.monotonic()
        result = await probe(seen.address, module, TLSScans())
        elapsed = time.monotonic() - started
    found = scan_of(result)
    assert elapsed < module.timeout_seconds + CLOSING_SECONDS, elapsed
    assert result.success, result.log  # availability does not depend on the scan
    assert not found.success
    assert found.failure is not None and "timeout" in found.failure
    assert "TLS 1.1" in found.failure and "tls_handshake" in found.failure
    assert found.versions == {"TLS 1.3": True, "TLS 1.2": True}  # a timeout is no "refused"
    families = probe_families(("protocol",), [upstream.protocol], result, {}, None)
    success = next(f for f in families if f.name == "mail_tls_scan_success")
    assert [s.value for s in success.samples] == [0.0]
