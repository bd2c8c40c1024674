"""DANE against the real Postfix of the test rig: its STARTTLS certificate and TLSA records."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mail_exporter.collectors.dns.checks import run_checks
from mail_exporter.config import DnsConfig, DnsResolverConfig
from tests.dnsserver import DnsServer, Zone
from tests.realservers.pki import PKI
from tests.realservers.postfix import Postfix


def _spki_sha256(pem: Path) -> str:
    certificate = x509.load_pem_x509_certificate(pem.read_bytes())
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def _cert_sha512(pem: Path) -> str:
    der = x509.load_pem_x509_certificate(pem.read_bytes()).public_bytes(Encoding.DER)
    return hashlib.sha512(der).hexdigest()


@pytest.fixture
def server(pki: PKI) -> Iterator[DnsServer]:
    zone = Zone(
        {
            ("right.test", "MX"): ["10 mx.right.test."],
            ("mx.right.test", "A"): ["127.0.0.1"],
            ("_25._tcp.mx.right.test", "TLSA"): [
                f"3 1 1 {_spki_sha256(pki.expired_cert)}",  # an old key left behind
                f"3 0 2 {_cert_sha512(pki.server_cert)}",
            ],
            ("wrong.test", "MX"): ["10 mx.wrong.test."],
            ("mx.wrong.test", "A"): ["127.0.0.1"],
            ("_25._tcp.mx.wrong.test", "TLSA"): [
                f"3 1 1 {_spki_sha256(pki.wronghost_cert)}",
                f"2 1 1 {_spki_sha256(pki.ca_file)}",  # trust anchors are not compared
            ],
        },
        signed={"_25._tcp.mx.right.test"},
    )
    dns = DnsServer(zone)
    yield dns
    dns.close()


def test_dane_against_postfix(postfix: Postfix, server: DnsServer) -> None:
    settings = DnsConfig(
        domains=["right.test", "wrong.test"],
        ip_blocklists=[],
        domain_blocklists=[],
        mta_sts=False,
        dane_port=postfix.smtp_port,
        resolver=DnsResolverConfig(nameservers=["127.0.0.1"], port=server.port, timeout="2s"),
    )
    results = asyncio.run(run_checks(settings))
    right, wrong = results.dane["mx.right.test"], results.dane["mx.wrong.test"]
    assert (right.records, right.matches, right.authenticated) == (2, True, True)
    assert (wrong.records, wrong.matches, wrong.authenticated) == (2, False, False)
    assert results.check_errors() == []
