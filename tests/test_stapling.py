"""OCSP stapling: a real Exim stapling responses made by OpenSSL's responder (STARTTLS and
implicit TLS), a real Postfix that staples nothing, OpenSSL's test server stapling a
"revoked" answer (Exim's GnuTLS refuses to), scripted hostile servers, the staples kept
between probes, the report and the real exporter's /metrics.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mail_exporter.cli import main
from mail_exporter.config.probes import ModuleConfig
from mail_exporter.metrics import probe_families
from mail_exporter.probes import ProbeMemory, ProbeResult, run_probe
from mail_exporter.probes.revocation import MethodAnswer, RevocationMethod
from mail_exporter.probes.stapling import MAX_HANDSHAKE_BYTES, SUITES, client_hello
from mail_exporter.targets import parse_address
from tests.conftest import _require_binary, real_exim_or_fail
from tests.realservers.dovecot import Dovecot
from tests.realservers.exim import exim_work_dir
from tests.realservers.pki import PKI, RevocableLeaf, RevocationPKI, create_revocation_pki
from tests.realservers.revocation import (
    ChainPostfix,
    OpenSSLStaplingServer,
    Responder,
    Stapled,
    StaplingExim,
    ocsp_response,
)
from tests.scripted import scripted_server, send, server_context, upgrade
from tests.served import metrics_with, served_exporter
from tests.test_tls_scan import relay

pytestmark = pytest.mark.integration

STAPLING = RevocationMethod.STAPLING
PROBE_SECONDS = 10.0
"""Module timeout of the probes here: a hang guard (every check answers in milliseconds)."""
HANG_PROBE_SECONDS = 2.0
CLOSING_SECONDS = 1.5
"""Hang guard past a probe's deadline: closing its connections takes milliseconds."""
NO_STAPLE = "no stapled response: "


@dataclass(frozen=True)
class World:
    pki: RevocationPKI
    exim: StaplingExim
    postfix: ChainPostfix
    openssl: OpenSSLStaplingServer


@pytest.fixture(scope="module")
def world(dovecot: Dovecot) -> Iterator[World]:
    _require_binary("postfix")
    with exim_work_dir() as directory:  # Exim reads the certificates as Debian-exim
        files = directory / "pki"
        leaves = {
            name: RevocableLeaf(None, None, revoked=name == "revoked", listed=name != "unknown")
            for name in ("good", "revoked", "rogue", "unknown")
        }
        pki = create_revocation_pki(files, leaves)
        responder = Responder(pki.index, pki.intermediate, pki.responder_cert, pki.responder_key)
        rogue = Responder(
            pki.index, pki.intermediate, pki.rogue_responder_cert, pki.rogue_responder_key
        )
        staples = {
            name: ocsp_response(
                rogue if name == "rogue" else responder,
                pki.leaves[name].cert,
                files / f"{name}.ocsp",
            )
            for name in leaves
        }
        for path in files.iterdir():
            path.chmod(0o644)
        listeners = {
            name: Stapled(pki.leaves[name].key, pki.leaves[name].chain, staples[name])
            for name in ("good", "rogue", "unknown")
        }
        exim = real_exim_or_fail(
            lambda: StaplingExim(directory / "exim", listeners, implicit=("good",))
        )
        postfix = ChainPostfix(
            directory / "postfix",
            {"good": (pki.leaves["good"].key, pki.leaves["good"].chain)},
            dovecot.auth_port,
            dovecot.lmtp_port,
        )
        openssl = OpenSSLStaplingServer(
            directory, pki.leaves["revoked"], pki.intermediate, staples["revoked"]
        )
        started: list[Any] = []
        try:
            for server in (exim, postfix, openssl):
                server.start()
                started.append(server)
            yield World(pki, exim, postfix, openssl)
        finally:
            for server in reversed(started):
                server.stop()


def module(
    pki_root: Path,
    tls: str = "starttls",
    timeout: float = PROBE_SECONDS,
    server_name: str | None = None,
    **revocation: bool,
) -> ModuleConfig:
    tls_config = {"ca_file": str(pki_root)}
    if server_name is not None:
        tls_config["server_name"] = server_name
    return ModuleConfig.model_validate(
        {
            "protocol": "smtp",
            "tls": tls,
            "timeout": f"{round(timeout * 1000)}ms",
            "tls_config": tls_config,
            "revocation": revocation or {"stapling": True},
        }
    )


async def probe(
    address: str, chosen: ModuleConfig, memory: ProbeMemory | None = None
) -> ProbeResult:
    return await run_probe(
        parse_address(address), chosen, chosen.timeout_seconds, memory or ProbeMemory()
    )


def stapling(result: ProbeResult) -> MethodAnswer:
    assert result.revocation is not None, "\n".join(result.log)
    (answer,) = [a for a in result.revocation.answers if a.method is STAPLING]
    return answer


def samples(result: ProbeResult) -> dict[str, dict[tuple[str, ...], float]]:
    """The revocation families of /probe's exposition: name -> label values -> value."""
    found: dict[str, dict[tuple[str, ...], float]] = {}
    for family in probe_families(("protocol",), ["smtp"], result, {}, None):
        if family.name in (
            "mail_tls_cert_revoked",
            "mail_tls_revocation_check_success",
            "mail_tls_ocsp_stapled",
        ):
            found[family.name] = {tuple(s.labels.values())[1:]: s.value for s in family.samples}
    return found


def exim_address(world: World, listener: str) -> str:
    return f"127.0.0.1:{world.exim.ports[listener]}"


# --- real servers -------------------------------------------------------------------------


@pytest.mark.parametrize(("listener", "tls"), [("good", "starttls"), ("good_implicit", "implicit")])
async def test_good_staple_of_exim_reads_good(world: World, listener: str, tls: str) -> None:
    result = await probe(exim_address(world, listener), module(world.pki.root, tls))
    assert result.success, "\n".join(result.log)
    answer = stapling(result)
    assert answer.revoked is False, answer.detail
    assert answer.detail.startswith("good per the server's staple (next update ")
    assert samples(result) == {
        "mail_tls_cert_revoked": {(): 0.0},
        "mail_tls_revocation_check_success": {("stapling",): 1.0},
        "mail_tls_ocsp_stapled": {(): 1.0},
    }
    assert any("revocation by stapling: good" in line for line in result.log)


async def test_revoked_staple_reads_revoked(world: World, tmp_path: Path) -> None:
    """OpenSSL's server staples the "revoked" answer Exim's GnuTLS will not load. It speaks
    no mail: the probe trusts another CA, so it stops right after the handshake (failed:
    certificate not verified), and the checks run as after any probe that got that far."""
    other_ca = tmp_path / "not-the-root.pem"
    other_ca.write_bytes(world.pki.rogue_responder_cert.read_bytes())
    result = await probe(f"127.0.0.1:{world.openssl.port}", module(other_ca, "implicit"))
    assert result.failure is not None and "certificate not verified" in result.failure.detail
    answer = stapling(result)
    assert answer.revoked is True, answer.detail
    assert answer.detail.startswith("revoked on ")
    assert answer.detail.endswith("(keyCompromise), per the server's staple")
    assert samples(result) == {
        "mail_tls_cert_revoked": {(): 1.0},
        "mail_tls_revocation_check_success": {("stapling",): 1.0},
        "mail_tls_ocsp_stapled": {(): 1.0},
    }


async def test_postfix_staples_nothing(world: World) -> None:
    address = f"127.0.0.1:{world.postfix.chain_ports['good']}"
    result = await probe(address, module(world.pki.root))
    assert result.success
    answer = stapling(result)
    assert answer.revoked is None
    assert answer.detail == (
        NO_STAPLE + "the server did not promise one (no status_request in its ServerHello)"
    )
    assert samples(result) == {
        "mail_tls_cert_revoked": {},
        "mail_tls_revocation_check_success": {("stapling",): 0.0},
        "mail_tls_ocsp_stapled": {(): 0.0},
    }


async def test_staple_signed_by_a_rogue_responder_is_an_error(world: World) -> None:
    """GnuTLS staples what it is given if it names the certificate: a signature by a
    responder the issuer never delegated to must not pass for "good"."""
    answer = stapling(await probe(exim_address(world, "rogue"), module(world.pki.root)))
    assert (answer.revoked, answer.stapled) == (None, True)
    assert answer.detail == (
        "the stapled answer is signed by CN=rogue OCSP responder,O=mail_exporter tests, "
        "which the issuer did not issue"
    )


async def test_staple_of_an_unknown_certificate_is_an_error(world: World) -> None:
    result = await probe(exim_address(world, "unknown"), module(world.pki.root))
    answer = stapling(result)
    assert answer.revoked is None
    assert answer.detail == (
        "the stapled answer says unknown: its responder does not know the certificate"
    )
    assert samples(result)["mail_tls_ocsp_stapled"] == {(): 1.0}
    assert samples(result)["mail_tls_cert_revoked"] == {}


async def test_stapling_runs_beside_the_other_methods(world: World) -> None:
    """The leaf names no CRL or responder: those methods fail, the staple still answers."""
    chosen = module(world.pki.root, crl=True, ocsp=True, stapling=True)
    result = await probe(exim_address(world, "good"), chosen)
    assert result.revocation is not None
    said = {a.method.value: a.revoked for a in result.revocation.answers}
    assert said == {"crl": None, "ocsp": None, "stapling": False}
    assert result.revocation.revoked is False


async def test_a_staple_is_kept_so_later_probes_open_no_connection(world: World) -> None:
    chosen = module(world.pki.root)
    memory = ProbeMemory()
    async with relay(world.exim.ports["good"]) as seen:
        first = await probe(seen.address, chosen, memory)
        assert seen.connections == 2  # the probe's, the stapling check's
        second = await probe(seen.address, chosen, memory)
        assert seen.connections == 3  # the probe's only
    assert "kept" not in stapling(first).detail
    assert stapling(second).revoked is False
    assert stapling(second).detail.endswith("(kept from an earlier connection)")
    assert samples(second)["mail_tls_ocsp_stapled"] == {(): 1.0}


def test_report_and_cli_flag(world: World) -> None:
    """``probe --revocation`` asks for the staple as well."""
    outcome = CliRunner().invoke(
        main,
        ["probe", "--protocol", "smtp", "--tls", "starttls", "--ca-file", str(world.pki.root),
         "--revocation", exim_address(world, "good")],
    )  # fmt: skip
    assert outcome.exit_code == 0, outcome.output
    lines = outcome.output.splitlines()
    start = lines.index("Revocation:")
    assert lines[start + 3].startswith(
        "  stapling             good: good per the server's staple (next update "
    )
    assert lines[start + 4] == "  verdict              not revoked"


def test_exporter_metrics_carry_the_staples(world: World, tmp_path: Path) -> None:
    """The real exporter process: scheduled targets on /metrics."""
    targets = "".join(
        f"  - {{name: {name}, address: '{address}', module: stapled}}\n"
        for name, address in (
            ("exim", exim_address(world, "good")),
            ("postfix", f"127.0.0.1:{world.postfix.chain_ports['good']}"),
        )
    )
    config = tmp_path / "config.yml"
    config.write_text(
        "global: {interval: 1s}\n"
        "modules:\n  stapled:\n    protocol: smtp\n    tls: starttls\n    timeout: 10s\n"
        f"    tls_config: {{ca_file: {world.pki.root}}}\n"
        "    revocation: {stapling: true}\n"
        f"targets:\n{targets}"
    )
    labels = 'module="stapled",protocol="smtp"'
    expected = {
        f'mail_tls_ocsp_stapled{{target="exim",{labels}}} 1.0',
        f'mail_tls_revocation_check_success{{target="exim",{labels},method="stapling"}} 1.0',
        f'mail_tls_cert_revoked{{target="exim",{labels}}} 0.0',
        f'mail_tls_ocsp_stapled{{target="postfix",{labels}}} 0.0',
        f'mail_tls_revocation_check_success{{target="postfix",{labels},method="stapling"}} 0.0',
    }
    with served_exporter(tmp_path, config) as served:
        lines = metrics_with(served, expected)
        assert not any(
            line.startswith("mail_tls_cert_revoked{") and 'target="postfix"' in line
            for line in lines
        )


# --- hostile servers ----------------------------------------------------------------------

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def record(kind: int, body: bytes, version: int = 0x0303) -> bytes:
    return struct.pack("!BHH", kind, version, len(body)) + body


def handshake(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + len(body).to_bytes(3, "big") + body


def server_hello(version: int = 0x0303, promise: bool = True) -> bytes:
    extensions = b"\x00\x05\x00\x00" if promise else b""
    body = (
        version.to_bytes(2, "big") + os.urandom(32) + b"\x00" + b"\xc0\x2f" + b"\x00"
        + len(extensions).to_bytes(2, "big") + extensions
    )  # fmt: skip
    return handshake(2, body)


async def sends(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()
    await asyncio.sleep(30)  # the client ends it


async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(60)


def sending(data: bytes) -> Behaviour:
    async def behave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await sends(writer, data)

    return behave


async def closes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


CERTIFICATE_CHUNK = handshake(11, bytes(16000))

HOSTILE: dict[str, tuple[Behaviour, bool | None, str]] = {
    # name: (what the server does after the ClientHello, stapled, the reason)
    "garbage": (
        sending(b"<html>bad request</html>\r\n" * 4),
        None,
        "the server sent no TLS record (it began 3c6874)",
    ),
    "oversize-record": (
        sending(struct.pack("!BHH", 22, 0x0303, 2**14 + 1) + bytes(2**14 + 1)),
        None,
        "the server sent a TLS record of 16385 bytes",
    ),
    "oversize-message": (
        sending(record(22, server_hello()) + record(22, b"\x0b\xff\xff\xff" + bytes(100))),
        None,
        f"the server's handshake is longer than {MAX_HANDSHAKE_BYTES} bytes",
    ),
    "endless-handshake": (
        sending(record(22, server_hello()) + record(22, CERTIFICATE_CHUNK) * 8),
        None,
        f"the server's handshake is longer than {MAX_HANDSHAKE_BYTES} bytes",
    ),
    "application-data": (
        sending(record(22, server_hello()) + record(23, bytes(40))),
        None,
        "the server sent a record of type 23 in the handshake",
    ),
    "old-version": (
        sending(record(22, server_hello(version=0x0301))),
        None,
        "the server answered in TLS 1.0, not TLS 1.2 (the staple is asked in 1.2)",
    ),
    "malformed-status": (
        sending(record(22, server_hello() + handshake(22, b"\x01\x00\x00\x09abc"))),
        None,
        "the server sent a malformed CertificateStatus",
    ),
    "not-ocsp": (
        sending(record(22, server_hello() + handshake(22, b"\x02\x00\x00\x01a"))),
        None,
        "the server sent a CertificateStatus of another type than OCSP",
    ),
    "not-an-answer": (
        sending(record(22, server_hello() + handshake(22, b"\x01\x00\x00\x04abcd"))),
        True,
        "the stapled answer is no OCSP response",
    ),
    "alert": (
        sending(record(21, b"\x02\x46")),
        False,
        NO_STAPLE + "the server answered the ClientHello with the alert protocol_version",
    ),
    "close": (closes, False, NO_STAPLE + "the server closed the connection"),
    "promised-none": (
        sending(record(22, server_hello() + handshake(11, b"\x00\x00\x00") + handshake(14, b""))),
        False,
        NO_STAPLE + "the server promised one but sent none (RFC 6066 8 allows it)",
    ),
}


@dataclass
class Hostile:
    address: str = ""
    connections: int = 0
    hellos: list[bytes] = field(default_factory=list)


@asynccontextmanager
async def hostile_smtp(
    world: World, behaviour: Behaviour, probes: tuple[int, ...] = (1,)
) -> AsyncIterator[Hostile]:
    """SMTP with STARTTLS: the connections numbered in ``probes`` (the probes' own, which
    come first) get a real TLS handshake with the good leaf's chain, every other one
    ``behaviour`` after its ClientHello (which it keeps)."""
    leaf = world.pki.leaves["good"]
    context = server_context(leaf.chain, leaf.key)
    seen = Hostile()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        first = seen.connections in probes
        await send(writer, "220 hostile.test ESMTP")
        while line := await reader.readline():
            verb = line.decode().strip().split(" ")[0].upper()
            if verb == "EHLO":
                await send(writer, "250-hostile.test", "250 STARTTLS")
            elif verb == "STARTTLS":
                await send(writer, "220 go ahead")
                if first:
                    await upgrade(writer, context)
                    continue
                header = await reader.readexactly(5)
                seen.hellos.append(header + await reader.readexactly(int.from_bytes(header[3:])))
                await behaviour(reader, writer)
                return
            elif verb == "QUIT":
                await send(writer, "221 bye")
                return

    async with scripted_server(handler) as address:
        seen.address = address
        yield seen


@pytest.mark.parametrize("case", list(HOSTILE))
async def test_hostile_answers(world: World, case: str) -> None:
    behaviour, stapled, reason = HOSTILE[case]
    async with hostile_smtp(world, behaviour) as seen:
        started = time.monotonic()
        result = await probe(seen.address, module(world.pki.root))
        elapsed = time.monotonic() - started
    assert result.success, "\n".join(result.log)
    answer = stapling(result)
    assert (answer.revoked, answer.stapled, answer.detail) == (None, stapled, reason)
    assert samples(result)["mail_tls_revocation_check_success"] == {("stapling",): 0.0}
    assert samples(result)["mail_tls_ocsp_stapled"] == ({} if stapled is None else {(): stapled})
    assert samples(result)["mail_tls_cert_revoked"] == {}
    assert elapsed < PROBE_SECONDS


async def test_hang_after_the_client_hello_ends_at_the_deadline(world: World) -> None:
    """A server that never answers costs the stapling check, by the probe's deadline, and
    is kept as such: the next probe does not wait on it again."""
    chosen = module(world.pki.root, timeout=HANG_PROBE_SECONDS)
    memory = ProbeMemory()
    async with hostile_smtp(world, hang, probes=(1, 3)) as seen:
        started = time.monotonic()
        result = await probe(seen.address, chosen, memory)
        elapsed = time.monotonic() - started
        again = await probe(seen.address, chosen, memory)
        assert seen.connections == 3  # both probes' and one stapling connection
    assert elapsed < HANG_PROBE_SECONDS + CLOSING_SECONDS, elapsed
    assert result.success and result.duration_seconds < HANG_PROBE_SECONDS
    answer = stapling(result)
    assert answer.revoked is None and answer.stapled is None
    assert answer.detail == (
        "stapling connection: timeout in tls_handshake: no answer within the budget"
    )
    assert stapling(again).detail == answer.detail + " (kept from an earlier connection)"


@dataclass(frozen=True)
class Hello:
    """A ClientHello record as a server reads it."""

    version: int
    suites: list[int]
    extensions: dict[int, bytes]


def read_hello(data: bytes) -> Hello:
    assert data[0] == 22 and len(data) == 5 + int.from_bytes(data[3:5])  # one handshake record
    assert data[5] == 1 and int.from_bytes(data[6:9]) == len(data) - 9  # one ClientHello
    at = 9 + 2 + 32
    at += 1 + data[at]  # session id
    suites_length = int.from_bytes(data[at : at + 2])
    suites = [int.from_bytes(data[i : i + 2]) for i in range(at + 2, at + 2 + suites_length, 2)]
    at += 2 + suites_length
    at += 1 + data[at]  # compression methods
    end = at + 2 + int.from_bytes(data[at : at + 2])
    assert end == len(data)
    extensions, at = {}, at + 2
    while at < end:
        kind, length = int.from_bytes(data[at : at + 2]), int.from_bytes(data[at + 2 : at + 4])
        extensions[kind] = data[at + 4 : at + 4 + length]
        at += 4 + length
    return Hello(int.from_bytes(data[9:11]), suites, extensions)


async def test_client_hello_asks_for_the_staple(world: World) -> None:
    """What the check sends after STARTTLS, as a server reads it: TLS 1.2, status_request
    for OCSP, SNI with the configured name, the suites offered."""
    async with hostile_smtp(world, closes) as seen:
        await probe(seen.address, module(world.pki.root, server_name="localhost"))
    (data,) = seen.hellos
    hello = read_hello(data)
    assert hello.version == 0x0303
    assert hello.extensions[5] == b"\x01\x00\x00\x00\x00"  # ocsp, no responder ids or extensions
    assert hello.extensions[0] == b"\x00\x0c\x00\x00\x09localhost"
    assert {10, 11, 13} <= set(hello.extensions)  # groups, point formats, signature algorithms
    assert hello.suites == list(SUITES)


def test_client_hello_sends_no_address_as_server_name() -> None:
    assert 0 not in read_hello(client_hello("127.0.0.1")).extensions
    assert 0 not in read_hello(client_hello("::1")).extensions
    assert 0 not in read_hello(client_hello(None)).extensions
    named = read_hello(client_hello("bücher.example")).extensions[0]
    assert named.endswith(b"\x00\x15xn--bcher-kva.example")


def test_stapling_alone_fetches_nothing_for_probe_endpoint(pki: PKI) -> None:
    """A staple comes from the server itself: a module checking only that is no active
    check /probe keeps to known targets (CRL and OCSP are: they fetch the certificate's URLs)."""
    chosen = module(pki.ca_file, stapling=True)
    assert chosen.active_checks == ()
    assert module(pki.ca_file, stapling=True, ocsp=True).active_checks == ("revocation",)
