"""A throw-away certificate authority and server certificates for tests against real servers.

The certificates follow RFC 5280 closely enough for strict verifiers
(``cryptography.x509.verification``, OpenSSL with X509_V_FLAG_X509_STRICT), so a probe
that verifies strictly fails only for the reason a test intends: expiry or a wrong host.

Besides the one-CA set every real server uses (:func:`create_pki`), the builders
(:func:`create_ca`, :func:`issue_server_cert`, :func:`new_rsa_key`) make chains of any
depth, EC or RSA keys and chosen names for the certificate identity tests, and
:func:`create_chain_pki` a root, an intermediate expiring in three days and a leaf that
a real server presents with the intermediate.
"""

import datetime
import ipaddress
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

SERVER_DNS_NAMES = ("localhost", "mail.test.local")
CHAIN_DNS_NAMES = ("localhost", "mail.test.local", "*.mx.test.local")
"""The chain's leaf names: host names and a wildcard for one label under mx.test.local."""
SERVER_IP_ADDRESSES = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
WRONG_HOST_NAME = "other.example.net"


@dataclass(frozen=True)
class PKI:
    """Paths of the generated PEM files and the validity window of the good server cert."""

    ca_file: Path
    server_cert: Path
    server_key: Path
    expired_cert: Path
    expired_key: Path
    wronghost_cert: Path
    wronghost_key: Path
    server_not_before: datetime.datetime
    server_not_after: datetime.datetime
    ca_key: Path  # for create_client_cert


@dataclass(frozen=True)
class ClientCert:
    """A client certificate (ExtendedKeyUsage clientAuth) and its key, for mutual TLS."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class ChainPKI:
    """A root, an intermediate expiring in three days, and a server certificate under it.

    ``chain_file`` holds the leaf then the intermediate, as a server presents them
    (Postfix's ``smtpd_tls_chain_files``, after ``leaf_key``); ``root_file`` is the CA
    file a client trusts. The leaf names :data:`CHAIN_DNS_NAMES` and the loopback
    addresses."""

    root_file: Path
    chain_file: Path
    leaf_key: Path
    root: x509.Certificate
    intermediate: x509.Certificate
    leaf: x509.Certificate


@dataclass(frozen=True)
class Issuer:
    """A CA certificate and the key it signs with."""

    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes


ServerKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
"""The key types the builders use: P-256 by default, RSA where a test asks for it."""


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256 keys take well under a millisecond to generate; RSA would slow every session.
    return ec.generate_private_key(ec.SECP256R1())


def new_rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    """An RSA key (a tenth of a second or so for 2048 bits: make few)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mail_exporter tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def create_ca(
    common_name: str,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    parent: Issuer | None = None,
    key: ServerKey | None = None,
) -> Issuer:
    """A self-signed root, or with ``parent`` an intermediate it signs; with a new P-256
    key unless ``key`` is given."""
    key = key or _new_key()
    name = _name(common_name)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if parent is None else parent.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ski, critical=False)
    )
    if parent is not None:
        builder = builder.add_extension(_authority_key_id(parent), critical=False)
    return Issuer(cert=builder.sign(parent.key if parent else key, hashes.SHA256()), key=key)


def _authority_key_id(issuer: Issuer) -> x509.AuthorityKeyIdentifier:
    issuer_ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski.value)


def _key_usage(
    *,
    digital_signature: bool = False,
    key_encipherment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def issue_server_cert(
    issuer: Issuer,
    names: list[x509.GeneralName],
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    *,
    key: ServerKey | None = None,
    subject: x509.Name | None = None,
    usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH,
    common_name: str | None = None,
    extensions: Sequence[x509.ExtensionType] = (),
) -> tuple[x509.Certificate, ServerKey]:
    """A certificate for ``names`` (its subjectAltName; none: no extension) signed by
    ``issuer``, with a new P-256 key unless ``key`` is given, its common name
    ``common_name`` (default: the first DNS name) unless ``subject`` is given, and
    ``extensions`` added."""
    key = key or _new_key()
    if subject is None:
        subject = _name(common_name or next(n.value for n in names if isinstance(n, x509.DNSName)))
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_encipherment=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_id(issuer), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(issuer.key, hashes.SHA256()), key


def _server_names(dns_names: tuple[str, ...] = SERVER_DNS_NAMES) -> list[x509.GeneralName]:
    dns: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    return dns + [x509.IPAddress(address) for address in SERVER_IP_ADDRESSES]


def write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def write_key(path: Path, key: PrivateKeyTypes) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def create_pki(directory: Path, server_days: int = 7) -> PKI:
    """Write a CA and good, expired and wrong-host server certificates into ``directory``;
    the good ones valid for ``server_days`` (the tests' 7 is the critical expiry threshold:
    the demo takes longer, so that it starts without alerts)."""
    directory.mkdir(parents=True, exist_ok=True)
    # X.509 stores whole seconds: dropping the microseconds lets tests compare the
    # validity a probe reports with these attributes for equality.
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    ca_days = max(30, 2 * server_days)
    ca = create_ca(
        "mail_exporter test CA",
        now - datetime.timedelta(days=1),
        now + datetime.timedelta(days=ca_days),
    )
    # Backdated a little so that a server clock a few seconds behind still accepts it.
    not_before = now - datetime.timedelta(minutes=5)
    not_after = now + datetime.timedelta(days=server_days)
    server, server_key = issue_server_cert(ca, _server_names(), not_before, not_after)
    expired, expired_key = issue_server_cert(
        ca, _server_names(), now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)
    )
    wronghost, wronghost_key = issue_server_cert(
        ca, [x509.DNSName(WRONG_HOST_NAME)], not_before, not_after
    )
    return PKI(
        ca_file=write_cert(directory / "ca.pem", ca.cert),
        server_cert=write_cert(directory / "server.pem", server),
        server_key=write_key(directory / "server.key", server_key),
        expired_cert=write_cert(directory / "expired.pem", expired),
        expired_key=write_key(directory / "expired.key", expired_key),
        wronghost_cert=write_cert(directory / "wronghost.pem", wronghost),
        wronghost_key=write_key(directory / "wronghost.key", wronghost_key),
        server_not_before=server.not_valid_before_utc,
        server_not_after=server.not_valid_after_utc,
        ca_key=write_key(directory / "ca.key", ca.key),
    )


def _issuer(pki: PKI) -> Issuer:
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    return Issuer(cert=x509.load_pem_x509_certificate(pki.ca_file.read_bytes()), key=ca_key)


def create_rsa_server_cert(pki: PKI, directory: Path) -> tuple[Path, Path]:
    """Write an RSA server certificate for the test names, signed by ``pki``'s CA, and its
    key: what the static RSA key exchange suites (``kRSA``) need. Returns (cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    key = new_rsa_key()
    cert, _ = issue_server_cert(
        _issuer(pki),
        _server_names(),
        now - datetime.timedelta(minutes=5),
        now + datetime.timedelta(days=7),
        key=key,
    )
    return write_cert(directory / "rsa.pem", cert), write_key(directory / "rsa.key", key)


def with_server_names(pki: PKI, directory: Path, dns_names: Sequence[str]) -> PKI:
    """``pki`` with a new server certificate (and key) for ``dns_names`` from its CA."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    cert, key = issue_server_cert(
        _issuer(pki),
        [x509.DNSName(name) for name in dns_names],
        now - datetime.timedelta(minutes=5),
        now + datetime.timedelta(days=7),
    )
    return replace(
        pki,
        server_cert=write_cert(directory / "server.pem", cert),
        server_key=write_key(directory / "server.key", key),
    )


def create_client_cert(pki: PKI, directory: Path, name: str) -> ClientCert:
    """Write a client certificate for ``name`` (its DNS SAN), signed by ``pki``'s CA."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    cert, key = issue_server_cert(
        _issuer(pki),
        [x509.DNSName(name)],
        now - datetime.timedelta(minutes=5),
        now + datetime.timedelta(days=7),
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    return ClientCert(
        cert=write_cert(directory / f"{name}.pem", cert),
        key=write_key(directory / f"{name}.key", key),
    )


def create_chain_pki(directory: Path) -> ChainPKI:
    """Write a root (30 days), an intermediate expiring in three days and a leaf (seven
    days, so the intermediate expires first) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    root = create_ca(
        "mail_exporter test root",
        now - datetime.timedelta(days=1),
        now + datetime.timedelta(days=30),
    )
    intermediate = create_ca(
        "mail_exporter test intermediate",
        now - datetime.timedelta(days=1),
        now + datetime.timedelta(days=3),
        parent=root,
    )
    leaf, leaf_key = issue_server_cert(
        intermediate,
        _server_names(CHAIN_DNS_NAMES),
        now - datetime.timedelta(minutes=5),
        now + datetime.timedelta(days=7),
    )
    chain_file = directory / "chain.pem"
    chain_file.write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, intermediate.cert))
    )
    return ChainPKI(
        root_file=write_cert(directory / "root.pem", root.cert),
        chain_file=chain_file,
        leaf_key=write_key(directory / "leaf.key", leaf_key),
        root=root.cert,
        intermediate=intermediate.cert,
        leaf=leaf,
    )


# Revocation: a root, an intermediate issuing the leaves, an OCSP responder the
# intermediate delegates to, a rogue responder it does not, and the CA database (index.txt)
# that `openssl ca -gencrl` makes the CRL from and `openssl ocsp` answers from.


@dataclass(frozen=True)
class RevocableLeaf:
    """A leaf to issue: where it says its CRL and OCSP responder are, and whether it is revoked."""

    crl_url: str | None
    ocsp_url: str | None
    revoked: bool = False
    listed: bool = True  # in the CA database; OCSP answers "unknown" for one that is not


@dataclass(frozen=True)
class LeafFiles:
    cert: Path  # the leaf alone
    chain: Path  # leaf and intermediate, as a server presents them
    key: Path
    serial: int


@dataclass(frozen=True)
class RevocationPKI:
    """PEM files (and the DER CRLs) of the revocation test CA; ``root`` is the trust anchor."""

    root: Path
    intermediate: Path
    intermediate_key: Path
    leaves: Mapping[str, LeafFiles]
    index: Path
    responder_cert: Path
    responder_key: Path
    rogue_responder_cert: Path
    rogue_responder_key: Path
    crl: Path  # by openssl ca -gencrl, signed by the intermediate
    wrong_key_crl: Path  # the intermediate's name, another key's signature, nobody revoked
    stale_crl: Path  # the intermediate's, nobody revoked, its nextUpdate a day past


def _revocation_extensions(leaf: RevocableLeaf) -> list[x509.ExtensionType]:
    extensions: list[x509.ExtensionType] = []
    if leaf.crl_url is not None:
        uri = x509.UniformResourceIdentifier(leaf.crl_url)
        extensions.append(
            x509.CRLDistributionPoints([x509.DistributionPoint([uri], None, None, None)])
        )
    if leaf.ocsp_url is not None:
        uri = x509.UniformResourceIdentifier(leaf.ocsp_url)
        extensions.append(
            x509.AuthorityInformationAccess(
                [x509.AccessDescription(AuthorityInformationAccessOID.OCSP, uri)]
            )
        )
    return extensions


def _index_line(cert: x509.Certificate, revoked_at: datetime.datetime | None) -> str:
    """A line of OpenSSL's CA database: status, expiry, revocation, serial, file, subject."""

    def stamp(moment: datetime.datetime) -> str:
        return moment.strftime("%y%m%d%H%M%SZ")

    serial = f"{cert.serial_number:X}"
    serial = serial if len(serial) % 2 == 0 else "0" + serial  # as OpenSSL prints serials
    subject = "".join(
        f"/{attribute.rfc4514_attribute_name}={attribute.value}" for attribute in cert.subject
    )
    status, revocation = ("R", f"{stamp(revoked_at)},keyCompromise") if revoked_at else ("V", "")
    return (
        f"{status}\t{stamp(cert.not_valid_after_utc)}\t{revocation}\t{serial}\tunknown\t{subject}\n"
    )


def openssl_crl(directory: Path, intermediate: Path, intermediate_key: Path) -> Path:
    """The intermediate's CRL made by ``openssl ca -gencrl`` from index.txt, in DER."""
    config = directory / "ca.cnf"
    config.write_text(
        "[ca]\ndefault_ca = test_ca\n[test_ca]\n"
        f"database = {directory / 'index.txt'}\ncertificate = {intermediate}\n"
        f"private_key = {intermediate_key}\ndefault_md = sha256\ndefault_crl_days = 1\n"
        "unique_subject = no\n"
    )
    pem, der = directory / "crl.pem", directory / "crl.der"
    for command in (
        ["openssl", "ca", "-batch", "-config", str(config), "-gencrl", "-out", str(pem)],
        ["openssl", "crl", "-in", str(pem), "-outform", "DER", "-out", str(der)],
    ):
        subprocess.run(command, check=True, capture_output=True, timeout=30)
    return der


def create_revocation_pki(directory: Path, leaves: Mapping[str, RevocableLeaf]) -> RevocationPKI:
    """Write the revocation test CA, one server leaf per entry of ``leaves`` (named
    ``localhost`` and 127.0.0.1), the responders' certificates, index.txt and the CRLs."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    root = create_ca(
        "mail_exporter test CA", now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)
    )
    intermediate = create_ca(
        "mail_exporter test intermediate",
        now - datetime.timedelta(hours=1),
        now + datetime.timedelta(days=20),
        parent=root,
    )
    not_before, not_after = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=7)
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    intermediate_pem = intermediate.cert.public_bytes(serialization.Encoding.PEM)
    files, index = {}, []
    for name, leaf in leaves.items():
        cert, key = issue_server_cert(
            intermediate, names, not_before, not_after,
            common_name=f"{name} leaf", extensions=_revocation_extensions(leaf),
        )  # fmt: skip
        chain = directory / f"{name}-chain.pem"
        chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + intermediate_pem)
        files[name] = LeafFiles(
            cert=write_cert(directory / f"{name}.pem", cert),
            chain=chain,
            key=write_key(directory / f"{name}.key", key),
            serial=cert.serial_number,
        )
        if leaf.listed:
            revoked_at = now - datetime.timedelta(hours=1) if leaf.revoked else None
            index.append(_index_line(cert, revoked_at))
    (directory / "index.txt").write_text("".join(index))
    responder, responder_key = issue_server_cert(
        intermediate, [x509.DNSName("ocsp.test.local")], not_before, not_after,
        usage=ExtendedKeyUsageOID.OCSP_SIGNING, common_name="mail_exporter test OCSP responder",
    )  # fmt: skip
    rogue_ca = create_ca(
        "mail_exporter test CA", now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)
    )
    rogue, rogue_key = issue_server_cert(
        rogue_ca, [x509.DNSName("ocsp.test.local")], not_before, not_after,
        usage=ExtendedKeyUsageOID.OCSP_SIGNING, common_name="rogue OCSP responder",
    )  # fmt: skip
    crl = x509.CertificateRevocationListBuilder().issuer_name(intermediate.cert.subject)
    day = datetime.timedelta(days=1)
    wrong_key_crl = crl.last_update(now).next_update(now + day).sign(rogue_ca.key, hashes.SHA256())
    stale_crl = crl.last_update(now - 2 * day).next_update(now - day)
    for name, made in (
        ("wrong-key.crl", wrong_key_crl),
        ("stale.crl", stale_crl.sign(intermediate.key, hashes.SHA256())),
    ):
        (directory / name).write_bytes(made.public_bytes(serialization.Encoding.DER))
    intermediate_file = write_cert(directory / "intermediate.pem", intermediate.cert)
    intermediate_key = write_key(directory / "intermediate.key", intermediate.key)
    return RevocationPKI(
        root=write_cert(directory / "root.pem", root.cert),
        intermediate=intermediate_file,
        intermediate_key=intermediate_key,
        leaves=files,
        index=directory / "index.txt",
        responder_cert=write_cert(directory / "responder.pem", responder),
        responder_key=write_key(directory / "responder.key", responder_key),
        rogue_responder_cert=write_cert(directory / "rogue-responder.pem", rogue),
        rogue_responder_key=write_key(directory / "rogue-responder.key", rogue_key),
        crl=openssl_crl(directory, intermediate_file, intermediate_key),
        wrong_key_crl=directory / "wrong-key.crl",
        stale_crl=directory / "stale.crl",
    )
