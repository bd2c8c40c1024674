"""A throw-away certificate authority and server certificates for tests against real servers.

The certificates follow RFC 5280 closely enough for strict verifiers
(``cryptography.x509.verification``, OpenSSL with X509_V_FLAG_X509_STRICT), so a probe
that verifies strictly fails only for the reason a test intends: expiry or a wrong host.
"""

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_DNS_NAMES = ("localhost", "mail.test.local")
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
class _Issuer:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


LeafKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256 keys take well under a millisecond to generate; RSA would slow every session.
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mail_exporter tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _create_ca(now: datetime.datetime) -> _Issuer:
    key = _new_key()
    name = _name("mail_exporter test CA")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return _Issuer(cert=cert, key=key)


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


def _create_leaf(
    issuer: _Issuer,
    names: list[x509.GeneralName],
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH,
    key: LeafKey | None = None,
) -> tuple[x509.Certificate, LeafKey]:
    key = key or _new_key()
    issuer_ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    first_dns_name = next(n.value for n in names if isinstance(n, x509.DNSName))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(first_dns_name))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_encipherment=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski.value),
            critical=False,
        )
        .sign(issuer.key, hashes.SHA256())
    )
    return cert, key


def _server_names() -> list[x509.GeneralName]:
    dns: list[x509.GeneralName] = [x509.DNSName(name) for name in SERVER_DNS_NAMES]
    return dns + [x509.IPAddress(address) for address in SERVER_IP_ADDRESSES]


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(path: Path, key: LeafKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def create_pki(directory: Path) -> PKI:
    """Write a CA and good, expired and wrong-host server certificates into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    # X.509 stores whole seconds: dropping the microseconds lets tests compare the
    # validity a probe reports with these attributes for equality.
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    ca = _create_ca(now)
    # Backdated a little so that a server clock a few seconds behind still accepts it.
    not_before = now - datetime.timedelta(minutes=5)
    not_after = now + datetime.timedelta(days=7)
    server, server_key = _create_leaf(ca, _server_names(), not_before, not_after)
    expired, expired_key = _create_leaf(
        ca, _server_names(), now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)
    )
    wronghost, wronghost_key = _create_leaf(
        ca, [x509.DNSName(WRONG_HOST_NAME)], not_before, not_after
    )
    return PKI(
        ca_file=_write_cert(directory / "ca.pem", ca.cert),
        server_cert=_write_cert(directory / "server.pem", server),
        server_key=_write_key(directory / "server.key", server_key),
        expired_cert=_write_cert(directory / "expired.pem", expired),
        expired_key=_write_key(directory / "expired.key", expired_key),
        wronghost_cert=_write_cert(directory / "wronghost.pem", wronghost),
        wronghost_key=_write_key(directory / "wronghost.key", wronghost_key),
        server_not_before=server.not_valid_before_utc,
        server_not_after=server.not_valid_after_utc,
        ca_key=_write_key(directory / "ca.key", ca.key),
    )


def _issuer(pki: PKI) -> _Issuer:
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    return _Issuer(cert=x509.load_pem_x509_certificate(pki.ca_file.read_bytes()), key=ca_key)


def create_rsa_server_cert(pki: PKI, directory: Path) -> tuple[Path, Path]:
    """Write an RSA server certificate for the test names, signed by ``pki``'s CA, and its
    key: what the static RSA key exchange suites (``kRSA``) need. Returns (cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert, _ = _create_leaf(
        _issuer(pki),
        _server_names(),
        now - datetime.timedelta(minutes=5),
        now + datetime.timedelta(days=7),
        key=key,
    )
    return _write_cert(directory / "rsa.pem", cert), _write_key(directory / "rsa.key", key)


def create_client_cert(pki: PKI, directory: Path, name: str) -> ClientCert:
    """Write a client certificate for ``name`` (its DNS SAN), signed by ``pki``'s CA."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    cert, key = _create_leaf(
        _issuer(pki),
        [x509.DNSName(name)],
        now - datetime.timedelta(minutes=5),
        now + datetime.timedelta(days=7),
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    return ClientCert(
        cert=_write_cert(directory / f"{name}.pem", cert),
        key=_write_key(directory / f"{name}.key", key),
    )
