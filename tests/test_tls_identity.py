"""Certificate identity and the presented chain: what each certificate says, whether the
probed name is covered, and that a hostile certificate or chain gives bounded, printable
labels through /probe and /metrics."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mail_exporter.config.probes import ModuleConfig
from mail_exporter.probes import run_probe
from mail_exporter.report import render_report
from mail_exporter.targets import parse_address
from mail_exporter.tls_facts import (
    CHAIN_LIMIT,
    LABEL_CHARACTERS,
    certificate_identity,
    name_covered,
    session_facts,
)
from tests.promtool import check_metrics
from tests.realservers.pki import (
    ChainPKI,
    Issuer,
    ServerKey,
    create_ca,
    create_chain_pki,
    issue_server_cert,
    new_rsa_key,
)
from tests.scripted import scripted_server, server_context, smtp_script
from tests.test_exposition import labelled, scrape_both

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
DAY = datetime.timedelta(days=1)


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def chain_pki(tmp_path_factory: pytest.TempPathFactory) -> ChainPKI:
    return create_chain_pki(tmp_path_factory.mktemp("chain"))


def test_identity_of_an_ec_leaf_and_its_intermediate(chain_pki: ChainPKI) -> None:
    leaf = certificate_identity(chain_pki.leaf, der(chain_pki.leaf))
    assert leaf.subject_cn == "localhost"
    assert leaf.issuer_cn == "mail_exporter test intermediate"
    assert leaf.serial == format(chain_pki.leaf.serial_number, "x")
    assert leaf.sha256_fingerprint == chain_pki.leaf.fingerprint(hashes.SHA256()).hex()
    assert (leaf.key_type, leaf.key_bits) == ("ec", 256)
    assert leaf.signature_algorithm == "ecdsa-with-SHA256"
    assert leaf.san_count == 5  # three DNS names, two addresses
    assert leaf.not_after == chain_pki.leaf.not_valid_after_utc.timestamp()
    intermediate = certificate_identity(chain_pki.intermediate, der(chain_pki.intermediate))
    assert intermediate.subject_cn == "mail_exporter test intermediate"
    assert intermediate.issuer_cn == "mail_exporter test root"
    assert intermediate.san_count == 0
    assert intermediate.not_after == chain_pki.intermediate.not_valid_after_utc.timestamp()


def test_identity_of_an_rsa_certificate_signed_with_rsa() -> None:
    root = create_ca("rsa root", NOW - DAY, NOW + 30 * DAY, key=new_rsa_key())
    cert, _ = issue_server_cert(
        root, [x509.DNSName("mx.example.com")], NOW - DAY, NOW + DAY, key=new_rsa_key(3072)
    )
    found = certificate_identity(cert, der(cert))
    assert (found.key_type, found.key_bits) == ("rsa", 3072)
    assert found.signature_algorithm == "sha256WithRSAEncryption"
    assert (found.subject_cn, found.issuer_cn, found.san_count) == ("mx.example.com", "rsa root", 1)


@pytest.mark.parametrize(
    ("name", "covered"),
    [
        ("localhost", True),
        ("LocalHost", True),  # DNS names compare without case
        ("mail.test.local.", True),  # the root's dot
        ("a.mx.test.local", True),  # *.mx.test.local: one label
        ("MX1.mx.test.local", True),
        ("mx.test.local", False),  # the wildcard stands for a label, never for none
        ("a.b.mx.test.local", False),  # nor for two
        ("test.local", False),
        ("other.example.net", False),
        ("127.0.0.1", True),  # addresses against iPAddress entries
        ("::1", True),
        ("0:0::1", True),  # the same address written otherwise
        ("127.0.0.2", False),
    ],
)
def test_probed_name_covered(chain_pki: ChainPKI, name: str, covered: bool) -> None:
    assert name_covered(chain_pki.leaf, name) is covered


@pytest.mark.parametrize(
    ("names", "probed"),
    [
        ([x509.DNSName("127.0.0.1")], "127.0.0.1"),  # an address in a DNS name does not count
        ([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], "localhost"),
        ([x509.DNSName("*.test")], "example.test"),  # a wildcard over a top-level domain
        ([x509.DNSName("m*.example.com")], "mx.example.com"),  # a partial-label wildcard
        ([x509.DNSName("mx.*.com")], "mx.example.com"),  # a wildcard not leftmost
        ([], "mx.example.com"),  # no subjectAltName: the common name is not consulted
    ],
)
def test_probed_name_not_covered(names: list[x509.GeneralName], probed: str) -> None:
    root = create_ca("root", NOW - DAY, NOW + DAY)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, probed)])
    cert, _ = issue_server_cert(root, names, NOW - DAY, NOW + DAY, subject=subject)
    assert name_covered(cert, probed) is False


def presenting(
    directory: Path, certificates: list[x509.Certificate], key: ServerKey
) -> ssl.SSLContext:
    """A scripted server's context that presents ``certificates`` in this order."""
    path = directory / "presented.pem"
    path.write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return server_context(path, path)


def long_chain(length: int) -> tuple[list[x509.Certificate], ServerKey]:
    """A leaf under ``length - 1`` intermediates, as presented: leaf first, up to the root's
    child; each a day apart in expiry, so every position has its own NotAfter."""
    issuer: Issuer = create_ca("root", NOW - DAY, NOW + 60 * DAY)
    intermediates = []
    for depth in range(1, length):
        issuer = create_ca(f"intermediate {depth}", NOW - DAY, NOW + (40 - depth) * DAY, issuer)
        intermediates.append(issuer.cert)
    leaf, key = issue_server_cert(issuer, [x509.DNSName("localhost")], NOW - DAY, NOW + 5 * DAY)
    return [leaf, *reversed(intermediates)], key


HOSTILE_CN = 'a\r\nmail_probe_success 1\x1b[2J"}\\' + "x" * 300
"""A line break, a forged sample, a screen clear, a label's end and 300 more characters."""


def hostile_chain() -> tuple[list[x509.Certificate], ServerKey]:
    """A leaf and an intermediate whose common names are HOSTILE_CN (cryptography only
    warns about the length when told not to validate it, as a hostile CA would)."""
    root = create_ca("root", NOW - DAY, NOW + 30 * DAY)
    key = ec.generate_private_key(ec.SECP256R1())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hostile = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTILE_CN, _validate=False)])
        intermediate = (
            x509.CertificateBuilder(
                subject_name=hostile,
                issuer_name=root.cert.subject,
                public_key=key.public_key(),
                serial_number=x509.random_serial_number(),
                not_valid_before=NOW - DAY,
                not_valid_after=NOW + 10 * DAY,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(root.key, hashes.SHA256())
        )
        leaf, leaf_key = issue_server_cert(
            Issuer(intermediate, key), [x509.DNSName("localhost")], NOW - DAY, NOW + DAY,
            subject=hostile,
        )  # fmt: skip
    return [leaf, intermediate], leaf_key


def tls_module() -> ModuleConfig:
    # The probe's verdict is no matter here: the facts are reported either way.
    return ModuleConfig.model_validate(
        {"protocol": "smtp", "tls": "implicit", "tls_config": {"insecure_skip_verify": True}}
    )


async def test_a_chain_of_fifteen_is_described_up_to_ten(tmp_path: Path) -> None:
    certificates, key = long_chain(15)
    context = presenting(tmp_path, certificates, key)
    async with scripted_server(smtp_script(["220 hi"]), context) as address:
        result = await run_probe(parse_address(address), tls_module(), 5.0)
    assert result.success, result.log
    assert result.tls is not None
    assert result.tls.chain_length == 15
    assert [c.not_after for c in result.tls.chain] == [
        c.not_valid_after_utc.timestamp() for c in certificates[:CHAIN_LIMIT]
    ]
    assert [c.subject_cn for c in result.tls.chain][:3] == [
        "localhost",
        "intermediate 14",
        "intermediate 13",
    ]
    report = render_report(address, "smtps", result)
    assert "Chain (15 presented, leaf first; name covered: no):" in report  # 127.0.0.1
    assert "  9  intermediate 6\n" in report
    assert "… 5 more not shown" in report


async def test_long_chain_gives_ten_series_through_probe_and_metrics(tmp_path: Path) -> None:
    certificates, key = long_chain(15)
    async with scripted_server(
        smtp_script(["220 hi"]), presenting(tmp_path, certificates, key)
    ) as address:
        texts = await scrape_both(tmp_path, address, "{insecure_skip_verify: true}")
    for endpoint, text in texts.items():
        chain = labelled(text, "mail_tls_chain_cert_expiry_timestamp_seconds")
        assert sorted(int(labels["position"]) for labels, _ in chain) == list(range(10)), endpoint
        for labels, value in chain:
            expected = certificates[int(labels["position"])].not_valid_after_utc.timestamp()
            assert value == expected, endpoint
        assert [value for _, value in labelled(text, "mail_tls_chain_length")] == [15.0], endpoint
        assert len(labelled(text, "mail_tls_cert_info")) == 1, endpoint
        await check_metrics(text)


@pytest.mark.filterwarnings("error")  # not even a warning on stderr for each probe
async def test_hostile_names_become_bounded_printable_labels(tmp_path: Path) -> None:
    certificates, key = hostile_chain()
    async with scripted_server(
        smtp_script(["220 hi"]), presenting(tmp_path, certificates, key)
    ) as address:
        texts = await scrape_both(tmp_path, address, "{insecure_skip_verify: true}")
        result = await run_probe(parse_address(address), tls_module(), 5.0)
    for endpoint, text in texts.items():
        assert "\nmail_probe_success 1" not in text, endpoint
        ((info, _),) = labelled(text, "mail_tls_cert_info")
        chain = labelled(text, "mail_tls_chain_cert_expiry_timestamp_seconds")
        values = [
            info["subject_cn"],
            info["issuer_cn"],
            *(labels["subject_cn"] for labels, _ in chain),
        ]
        assert len(values) == 4, endpoint
        for value in values:
            assert value.startswith('a\\r\\nmail_probe_success 1\\x1b[2J"}\\'), (endpoint, value)
            assert value.isprintable() and len(value) == LABEL_CHARACTERS + 1, (endpoint, value)
            assert value.endswith("…"), (endpoint, value)
        await check_metrics(text)
    report = render_report(address, "smtps", result)
    assert all(character.isprintable() for character in report.replace("\n", "")), repr(report)


class PresentedChain:
    """What :func:`session_facts` reads of a finished handshake, with a chosen chain: for
    certificates OpenSSL passes on but cryptography cannot read in full."""

    def __init__(self, chain: list[bytes]) -> None:
        self.chain = chain

    def get_unverified_chain(self) -> list[bytes]:
        return self.chain

    def cipher(self) -> tuple[str, str, int]:
        return ("TLS_AES_128_GCM_SHA256", "TLSv1.3", 128)

    def version(self) -> str:
        return "TLSv1.3"


def test_undecodable_subject_is_an_unreadable_certificate() -> None:
    """A common name that is no UTF-8 (cryptography finds out when the name is first read):
    reported as an unreadable certificate, never as a crash of the probe."""
    root = create_ca("root", NOW - DAY, NOW + DAY)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "QQQQQQQQ")])
    cert, _ = issue_server_cert(root, [x509.DNSName("localhost")], NOW - DAY, NOW + DAY,
                                subject=subject)  # fmt: skip
    broken = der(cert).replace(b"QQQQQQQQ", b"\xff\xfe" * 4)
    facts = session_facts(PresentedChain([broken]), "localhost", None)  # type: ignore[arg-type]
    assert facts.verify_error is not None
    assert facts.verify_error.startswith("unreadable certificate"), facts.verify_error
    assert facts.chain == () and facts.earliest_not_after is None and not facts.verified
