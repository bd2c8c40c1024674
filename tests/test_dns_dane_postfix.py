"""DANE against the real Postfix of the test rig: its STARTTLS certificate and TLSA records.

The session's Postfix sends only its leaf certificate (names localhost and
mail.test.local, issued by the test CA); a second Postfix here sends the leaf, the test
CA and a stranger CA that issued nothing it sends, as a server with a misassembled
chain file would. Each case publishes TLSA records for one MX served by one of the two
and checks what a DANE sender would conclude (RFC 7672).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mail_exporter.collectors.dns.checks import Results, run_checks
from mail_exporter.collectors.dns.config import DnsConfig, DnsResolverConfig
from tests.conftest import new_postfix
from tests.dnsserver import DnsServer, Zone
from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import PKI, create_pki
from tests.realservers.postfix import Postfix

pytestmark = pytest.mark.integration


def _tlsa(parameters: str, pem: Path) -> str:
    """The TLSA record text ``"<usage> <selector> <mtype> <hex>"`` for a PEM certificate."""
    _, selector, mtype = (int(field) for field in parameters.split())
    certificate = x509.load_pem_x509_certificate(pem.read_bytes())
    if selector == 0:
        selected = certificate.public_bytes(Encoding.DER)
    else:
        selected = certificate.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
    digests = {0: bytes, 1: lambda b: hashlib.sha256(b).digest(),
               2: lambda b: hashlib.sha512(b).digest()}  # fmt: skip
    return f"{parameters} {digests[mtype](selected).hex()}"


def _checks(zone: Zone, domains: list[str], port: int) -> Results:
    """One pass of the DNS checks of ``domains``, with DANE against ``port``, served ``zone``."""
    server = DnsServer(zone)
    try:
        settings = DnsConfig(
            domains=domains,
            ip_blocklists=[],
            domain_blocklists=[],
            mta_sts=False,
            dane_port=port,
            resolver=DnsResolverConfig(nameservers=["127.0.0.1"], port=server.port, timeout="2s"),
        )
        return asyncio.run(run_checks(settings))
    finally:
        server.close()


def test_dane_against_postfix(pki: PKI, postfix: Postfix) -> None:
    zone = Zone(
        {
            ("right.test", "MX"): ["10 mx.right.test."],
            ("mx.right.test", "A"): ["127.0.0.1"],
            ("_25._tcp.mx.right.test", "TLSA"): [
                _tlsa("3 1 1", pki.expired_cert),  # an old key left behind
                _tlsa("3 0 2", pki.server_cert),
            ],
            ("wrong.test", "MX"): ["10 mx.wrong.test."],
            ("mx.wrong.test", "A"): ["127.0.0.1"],
            ("_25._tcp.mx.wrong.test", "TLSA"): [
                _tlsa("3 1 1", pki.wronghost_cert),
                # The leaf's issuer, but the server does not send it (nor is mx.wrong.test
                # a name of the leaf).
                _tlsa("2 1 1", pki.ca_file),
            ],
        },
        signed={"_25._tcp.mx.right.test"},
    )
    results = _checks(zone, ["right.test", "wrong.test"], postfix.smtp_port)
    right, wrong = results.dane["mx.right.test"], results.dane["mx.wrong.test"]
    assert (right.records, right.usable, right.matches, right.authenticated) == (2, 2, True, True)
    assert (wrong.records, wrong.usable, wrong.matches, wrong.authenticated) == (2, 2, False, False)
    assert results.check_errors() == []


@dataclasses.dataclass(frozen=True)
class Servers:
    leaf_only: Postfix  # sends the leaf
    chained: Postfix  # sends the leaf, the test CA and the stranger CA
    certificates: dict[str, Path]  # leaf, ca, stranger, expired


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, pki: PKI, dovecot: Dovecot, postfix: Postfix
) -> Iterator[Servers]:
    stranger = create_pki(tmp_path_factory.mktemp("stranger")).ca_file
    chain = tmp_path_factory.mktemp("chain") / "chain.pem"
    chain.write_bytes(b"".join(p.read_bytes() for p in (pki.server_cert, pki.ca_file, stranger)))
    chained = new_postfix(tmp_path_factory, dataclasses.replace(pki, server_cert=chain), dovecot)
    chained.start()
    certificates = {
        "leaf": pki.server_cert,
        "ca": pki.ca_file,
        "stranger": stranger,
        "expired": pki.expired_cert,
    }
    yield Servers(postfix, chained, certificates)
    chained.stop()


NAMED = "mail.test.local"  # a name in the leaf's subjectAltName
UNNAMED = "mx.elsewhere.test"  # a name that is not


@pytest.mark.parametrize(
    ("server", "mx", "records", "usable", "matches"),
    [
        pytest.param("chained", NAMED, [("3 1 1", "leaf")], 1, True, id="3 1 1 leaf"),
        pytest.param("chained", UNNAMED, [("3 1 1", "leaf")], 1, True, id="3 1 1 any MX name"),
        pytest.param("chained", NAMED, [("2 0 1", "ca")], 1, True, id="2 0 1 issuer"),
        pytest.param("chained", NAMED, [("2 1 1", "ca")], 1, True, id="2 1 1 issuer"),
        pytest.param("chained", NAMED, [("2 1 0", "ca")], 1, True, id="2 1 0 issuer"),
        pytest.param("chained", NAMED, [("2 1 1", "stranger")], 1, False,
                     id="2 1 1 sent CA that did not issue the leaf"),
        pytest.param("leaf_only", NAMED, [("2 1 1", "ca")], 1, False,
                     id="2 1 1 issuer not sent"),
        pytest.param("chained", UNNAMED, [("2 1 1", "ca")], 1, False,
                     id="2 1 1 issuer, MX not named in the leaf"),
        pytest.param("chained", NAMED, [("2 1 1", "leaf")], 1, False, id="2 1 1 leaf"),
        pytest.param("chained", NAMED,
                     [("0 0 1", "ca"), ("0 1 1", "ca"), ("1 1 1", "leaf"), ("1 0 2", "leaf")],
                     0, False, id="PKIX-TA and PKIX-EE only"),
        pytest.param("chained", NAMED,
                     [("1 1 1", "leaf"), ("3 1 1", "expired"), ("2 1 1", "stranger")],
                     2, False, id="nothing usable matches"),
        pytest.param("chained", NAMED,
                     [("1 1 1", "leaf"), ("3 1 1", "expired"), ("2 1 1", "ca")],
                     2, True, id="rollover: old key and issuer"),
    ],
)  # fmt: skip
def test_dane_usages_against_postfix(
    servers: Servers,
    server: str,
    mx: str,
    records: list[tuple[str, str]],
    usable: int,
    matches: bool,
) -> None:
    zone = Zone(
        {
            ("dane.test", "MX"): [f"10 {mx}."],
            (mx, "A"): ["127.0.0.1"],
            (f"_25._tcp.{mx}", "TLSA"): [
                _tlsa(parameters, servers.certificates[of]) for parameters, of in records
            ],
        }
    )
    smtp = servers.chained if server == "chained" else servers.leaf_only
    results = _checks(zone, ["dane.test"], smtp.smtp_port)
    dane = results.dane[mx]
    assert (dane.records, dane.usable, dane.matches) == (len(records), usable, matches)
    assert results.check_errors() == []
