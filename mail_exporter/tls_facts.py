"""TLS as the exporter's client sees it: a context that accepts any server, and the facts
of a session (:class:`TLSFacts`), for probes, round trips and the DANE checks alike.

The handshake itself never verifies (``CERT_NONE``), so that the presented chain
can always be read: an expired certificate or a wrong host name must show up as
``mail_tls_cert_verified 0`` with the real expiry, not as a dead server.  The
chain and host name are then verified here with ``cryptography``'s X.509
verifier against the configured CA file or the system store.

Server names are taken as DNS writes them too: ``mail.example.com.`` (the root's
trailing dot) is ``mail.example.com`` both in SNI (RFC 6066 3 forbids the dot) and in
the host-name check (:func:`tls_name`). A name the verifier cannot hold as a DNS name
(``mail_1.example.com``: an underscore, which no certificate may carry as a host name
either) is reported as not verified, with the reason, never as an error of the probe.

Whatever a certificate says (subject, issuer, and the verifier's errors, which quote
the subject) is made printable before it leaves this module: it reaches terminals
and logs, where a name holding a line break or an escape sequence could forge lines.

Each presented certificate is also described by its identity
(:class:`CertificateIdentity`: common names, serial, fingerprint, key, signature
algorithm, NotAfter), for the certificate and chain metrics and the report. Its text
becomes label values, so it is printable and at most :data:`LABEL_CHARACTERS` long (a
cut value ends in ``…``), and only the first :data:`CHAIN_LIMIT` certificates are
described: a server chooses how many it sends. Whether the probed name is covered
(:func:`name_covered`) is read from subjectAltName alone, as the verifier reads it, so
that ``mail_tls_cert_name_covered 0`` tells a wrong name from an untrusted chain. A field
that cannot be read (a malformed extension, an unknown key algorithm) reads as empty,
``other`` or not covered, never as a failed probe. All of it is computed with the
verification and cached with it, per chain.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import os
import re
import ssl
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509 import DNSName, IPAddress
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    ServerVerifier,
    Store,
    VerificationError,
)

from mail_exporter.config.files import MAX_CONFIG_BYTES, read_bounded
from mail_exporter.printable import printable

CHAIN_LIMIT = 10
"""Most presented certificates described one by one (positions 0 to 9). Real chains hold
two to four; a server sending more has its length reported and its first ten described."""

LABEL_CHARACTERS = 64
"""Longest certificate text kept for a label value (RFC 5280's bound on a common name)."""


@dataclass(frozen=True)
class CertificateIdentity:
    """Who one presented certificate says it is, with its key and expiry.

    Text fields are printable and at most :data:`LABEL_CHARACTERS` long (plus ``…`` when
    cut); an absent common name is ``""``. ``key_type`` is ``rsa``, ``ec``, ``ed25519``,
    ``ed448``, ``dsa`` or ``other``, and ``key_bits`` ``None`` for ``other``; ``not_after``
    is Unix seconds.
    """

    subject_cn: str
    issuer_cn: str
    serial: str
    """Lower-case hexadecimal without leading zeros (``openssl x509 -serial`` prints it in
    upper case, padded to whole bytes)."""
    sha256_fingerprint: str
    """Lower-case hexadecimal SHA-256 of the certificate's DER encoding."""
    key_type: str
    key_bits: int | None
    signature_algorithm: str
    """OpenSSL's name (``sha256WithRSAEncryption``, ``ecdsa-with-SHA256``), else the OID."""
    san_count: int
    not_after: float


@dataclass(frozen=True)
class TLSFacts:
    """What one TLS session showed about the server.

    Timestamps are Unix seconds and ``None`` when the chain could not be read:
    an unknown expiry is never reported as zero.
    """

    version: str
    cipher: str
    earliest_not_after: float | None
    leaf_not_before: float | None
    leaf_not_after: float | None
    leaf_subject: str
    leaf_issuer: str
    verified: bool
    verify_error: str | None
    chain: tuple[CertificateIdentity, ...] = ()
    """The presented certificates, leaf first, at most :data:`CHAIN_LIMIT`; empty when the
    chain could not be read."""
    chain_length: int | None = None
    """How many certificates the server presented (``None``: the chain could not be read)."""
    name_covered: bool | None = None
    """Whether the leaf's subjectAltName covers the probed name (:func:`name_covered`)."""

    @property
    def leaf(self) -> CertificateIdentity | None:
        return self.chain[0] if self.chain else None


def tls_version_label(version: str) -> str:
    """``TLSv1.3`` as ``TLS 1.3``, the form blackbox_exporter users already query for
    (Go's names: OpenSSL's ``TLSv1`` is ``TLS 1.0``)."""
    if version == "TLSv1":
        return "TLS 1.0"
    return version.replace("TLSv", "TLS ") if version.startswith("TLSv") else version


_DER = 2  # _ssl.ENCODING_DER, the private constant behind Certificate.public_bytes

_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)

_SYSTEM_CA_CANDIDATES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/cert.pem",  # BSDs, macOS
)


@functools.cache
def client_context() -> ssl.SSLContext:
    """A context that completes a handshake with any server, old TLS versions included.

    Monitoring must see a server offering TLS 1.0 in order to report it, so the
    floor and the OpenSSL security level are lowered; verification happens
    afterwards in :func:`session_facts`. Built once: it holds no per-server state.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.set_ciphers("ALL:@SECLEVEL=0")
    return context


def system_ca_file() -> str | None:
    """The system's CA bundle, or ``None`` when this host has none."""
    default = ssl.get_default_verify_paths().cafile
    for candidate in (default, *_SYSTEM_CA_CANDIDATES):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=16)
def _trust_store(ca_file: str, mtime_ns: int) -> Store:
    """Parsed trust anchors, cached per file version (the mtime is part of the key)."""
    del mtime_ns
    anchors = []
    # One by one: a system bundle may hold a certificate that today's cryptography only warns
    # about (a non-positive serial) and a later one refuses; it must not cost the others.
    for block in _PEM_BLOCK.findall(read_bounded(Path(ca_file), MAX_CONFIG_BYTES)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                anchors.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                continue
    if not anchors:
        raise ValueError("no certificate in the file")
    return Store(anchors)


def peer_chain(ssl_object: ssl.SSLObject) -> tuple[bytes, ...]:
    """The chain as the server presented it, leaf first, in DER, read without verification."""
    getter = getattr(ssl_object, "get_unverified_chain", None)  # public from Python 3.13
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if getter is not None:
        # Python 3.13 returns DER bytes; 3.11/3.12 return _ssl.Certificate objects.
        return tuple(c if isinstance(c, bytes) else c.public_bytes(_DER) for c in getter() or [])
    leaf = ssl_object.getpeercert(binary_form=True)
    return (leaf,) if leaf else ()


SHOWN_NAME_CHARACTERS = 512
"""Longest subject, issuer or verify error kept: longer ones are cut (they are for people)."""


def tls_name(server_name: str) -> str:
    """``server_name`` as SNI carries it and certificates name it: without a trailing dot."""
    return server_name.removesuffix(".")


def _subject_for(server_name: str) -> DNSName | IPAddress:
    try:
        return IPAddress(ipaddress.ip_address(server_name))
    except ValueError:
        return DNSName(tls_name(server_name))


def verify_chain(
    chain: list[x509.Certificate], server_name: str, ca_file: str | None
) -> str | None:
    """Verify chain and name; return ``None`` when they verify, else the reason."""
    anchors = ca_file or system_ca_file()
    if anchors is None:
        return "no CA file configured and no system CA bundle found"
    try:
        store = _trust_store(anchors, Path(anchors).stat().st_mtime_ns)
    except (OSError, ValueError) as error:
        return f"cannot load CA file {anchors}: {error}"
    try:
        verifier = server_verifier(store, server_name)
    except ValueError:
        return (
            f"cannot check the certificate against {server_name!r}: not a DNS name a "
            "certificate can carry (letters, digits, hyphens and dots)"
        )
    try:
        verifier.verify(chain[0], chain[1:])
    except VerificationError as error:  # quotes the certificate's subject
        return printable(verification_problem(str(error), chain[0], server_name, anchors),
                         SHOWN_NAME_CHARACTERS)  # fmt: skip
    return None


_CERTIFICATE_REPR = re.compile(
    r"\s*\(encountered processing <Certificate\(.*?\)>\)|<Certificate\(.*?\)>"
)
"""cryptography's repr of a certificate in its errors (``<Certificate(subject=<Name(...)>,
...)>``): the message says which certificate in words instead."""


def verification_problem(
    message: str, leaf: x509.Certificate, server_name: str, anchors: str
) -> str:
    """The verifier's ``message`` as a mail admin would say it, with what to do.

    The three failures that make up nearly all of them (an untrusted issuer, a name the
    certificate lacks, a date outside its validity) are named in words; any other keeps
    the verifier's text without its ``validation failed:`` prefix and certificate reprs.
    A name that is an address gets the hint that matters most: probing by IP verifies
    the address, which certificates rarely carry, unless ``tls_config.server_name`` says
    which name to expect."""
    subject = leaf.subject.rfc4514_string() or "without a subject"
    if "no matching subjectAltName" in message:
        names = ", ".join(_san_names(leaf)) or "no subjectAltName"
        problem = f"the certificate ({subject}) is for {names}, not {tls_name(server_name)}"
        if _is_address(server_name):
            problem += (
                "; probing by IP address: set tls_config.server_name (probe: --server-name) "
                "to the name the certificate carries (the MX host name)"
            )
        return problem
    if "not valid at validation time" in message:
        now = datetime.now(UTC)
        not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
        if not_after < now:
            return f"the certificate ({subject}) expired on {_day(not_after)}"
        if not_before > now:
            return f"the certificate ({subject}) is valid only from {_day(not_before)}"
        return f"a certificate of the chain sent with {subject} has expired or is not yet valid"
    if "candidates exhausted" in message:
        issuer = leaf.issuer.rfc4514_string() or "an issuer without a name"
        return (
            f"the certificate ({subject}) is issued by {issuer}, which does not chain to a "
            f"CA in {anchors} (self-signed, a private CA, or an intermediate the server does "
            "not send): set tls_config.ca_file to the CA that issued it"
        )
    return _CERTIFICATE_REPR.sub("", message).removeprefix("validation failed: ")


def _san_names(leaf: x509.Certificate) -> list[str]:
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return []
    return [str(name.value) for name in names if isinstance(name, DNSName | IPAddress)]


def _is_address(server_name: str) -> bool:
    try:
        ipaddress.ip_address(server_name)
    except ValueError:
        return False
    return True


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def server_verifier(store: Store, server_name: str) -> ServerVerifier:
    """A verifier of chains up to ``store`` for ``server_name`` (a host name or an address).

    Leaf extensions are not held to the Web PKI profile: mail servers often use
    certificates that browsers would reject for cosmetic reasons only. The name must
    still be in subjectAltName: a CN-only certificate does not verify. A trailing dot is
    dropped (:func:`tls_name`). Raises ``ValueError`` for a name that is neither a valid
    DNS name nor an address."""
    leaf_policy = ExtensionPolicy.permit_all().require_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
    )
    return (
        PolicyBuilder()
        .store(store)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=leaf_policy)
        .build_server_verifier(_subject_for(server_name))
    )


def _timestamp(moment: datetime) -> float:
    return moment.astimezone(UTC).timestamp()


_SIGNATURE_ALGORITHMS = {
    SignatureAlgorithmOID.RSA_WITH_MD5: "md5WithRSAEncryption",
    SignatureAlgorithmOID.RSA_WITH_SHA1: "sha1WithRSAEncryption",
    SignatureAlgorithmOID.RSA_WITH_SHA224: "sha224WithRSAEncryption",
    SignatureAlgorithmOID.RSA_WITH_SHA256: "sha256WithRSAEncryption",
    SignatureAlgorithmOID.RSA_WITH_SHA384: "sha384WithRSAEncryption",
    SignatureAlgorithmOID.RSA_WITH_SHA512: "sha512WithRSAEncryption",
    SignatureAlgorithmOID.RSA_WITH_SHA3_224: "RSA-SHA3-224",
    SignatureAlgorithmOID.RSA_WITH_SHA3_256: "RSA-SHA3-256",
    SignatureAlgorithmOID.RSA_WITH_SHA3_384: "RSA-SHA3-384",
    SignatureAlgorithmOID.RSA_WITH_SHA3_512: "RSA-SHA3-512",
    SignatureAlgorithmOID.RSASSA_PSS: "rsassaPss",
    SignatureAlgorithmOID.ECDSA_WITH_SHA1: "ecdsa-with-SHA1",
    SignatureAlgorithmOID.ECDSA_WITH_SHA224: "ecdsa-with-SHA224",
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: "ecdsa-with-SHA256",
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: "ecdsa-with-SHA384",
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: "ecdsa-with-SHA512",
    SignatureAlgorithmOID.ECDSA_WITH_SHA3_224: "ecdsa_with_SHA3-224",
    SignatureAlgorithmOID.ECDSA_WITH_SHA3_256: "ecdsa_with_SHA3-256",
    SignatureAlgorithmOID.ECDSA_WITH_SHA3_384: "ecdsa_with_SHA3-384",
    SignatureAlgorithmOID.ECDSA_WITH_SHA3_512: "ecdsa_with_SHA3-512",
    SignatureAlgorithmOID.DSA_WITH_SHA1: "dsaWithSHA1",
    SignatureAlgorithmOID.DSA_WITH_SHA224: "dsa_with_SHA224",
    SignatureAlgorithmOID.DSA_WITH_SHA256: "dsa_with_SHA256",
    SignatureAlgorithmOID.DSA_WITH_SHA384: "dsa_with_SHA384",
    SignatureAlgorithmOID.DSA_WITH_SHA512: "dsa_with_SHA512",
    SignatureAlgorithmOID.ED25519: "ED25519",
    SignatureAlgorithmOID.ED448: "ED448",
}
"""The long names OpenSSL prints (``openssl x509 -text``), which admins already search for."""


def _label(text: str) -> str:
    return printable(text, LABEL_CHARACTERS)


def _common_name(name: x509.Name) -> str:
    """The first common name of ``name``, ``""`` without one."""
    found = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not found:
        return ""
    value = found[0].value
    return _label(value if isinstance(value, str) else value.decode("utf-8", "replace"))


def _subject_alt_names(certificate: x509.Certificate) -> x509.SubjectAlternativeName | None:
    """The subjectAltName extension, ``None`` when absent or unreadable."""
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, x509.DuplicateExtension, ValueError):  # ValueError: malformed
        return None


def _key(certificate: x509.Certificate) -> tuple[str, int | None]:
    """Key type and size in bits (Ed25519 counts 256, as for DKIM keys)."""
    try:
        key = certificate.public_key()
    except (UnsupportedAlgorithm, ValueError):
        return "other", None
    if isinstance(key, rsa.RSAPublicKey):
        return "rsa", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ec", key.curve.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "ed448", 448
    if isinstance(key, dsa.DSAPublicKey):
        return "dsa", key.key_size
    return "other", None


def certificate_identity(certificate: x509.Certificate, der: bytes) -> CertificateIdentity:
    """Describe ``certificate`` (whose encoding is ``der``) for labels and reports."""
    key_type, key_bits = _key(certificate)
    algorithm = certificate.signature_algorithm_oid
    names = _subject_alt_names(certificate)
    return CertificateIdentity(
        subject_cn=_common_name(certificate.subject),
        issuer_cn=_common_name(certificate.issuer),
        serial=_label(format(certificate.serial_number, "x")),
        sha256_fingerprint=hashlib.sha256(der).hexdigest(),
        key_type=key_type,
        key_bits=key_bits,
        signature_algorithm=_SIGNATURE_ALGORITHMS.get(algorithm) or _label(algorithm.dotted_string),
        san_count=0 if names is None else len(names),
        not_after=_timestamp(certificate.not_valid_after_utc),
    )


def _dns_name_matches(pattern: str, host: str) -> bool:
    """RFC 6125 6.4: equal ignoring case, or ``*.rest`` where ``*`` stands for exactly
    the leftmost label of ``host`` (not for none, and not for a partial label)."""
    pattern = pattern.lower().removesuffix(".")
    if pattern == host:
        return True
    label, _, rest = host.partition(".")
    return pattern.startswith("*.") and pattern[2:] == rest and bool(label) and "." in rest


def name_covered(certificate: x509.Certificate, server_name: str) -> bool:
    """Whether the certificate's subjectAltName covers ``server_name``: an address one of
    its iPAddress entries, a host name (a trailing dot ignored) one of its dNSName entries,
    a wildcard covering one leftmost label. The common name is not consulted (RFC 6125
    6.4.4: not when subjectAltName has DNS names; the verifier never does)."""
    names = _subject_alt_names(certificate)
    if names is None:
        return False
    try:
        address = ipaddress.ip_address(server_name)
    except ValueError:
        host = tls_name(server_name).lower()
        return any(_dns_name_matches(p, host) for p in names.get_values_for_type(DNSName))
    return address in names.get_values_for_type(IPAddress)


@dataclass(frozen=True)
class _CertificateFacts:
    earliest_not_after: float | None
    leaf_not_before: float | None
    leaf_not_after: float | None
    leaf_subject: str
    leaf_issuer: str
    verify_error: str | None
    chain: tuple[CertificateIdentity, ...] = ()
    chain_length: int | None = None
    name_covered: bool | None = None


_CACHE_SECONDS = 300.0
_CACHE_ENTRIES = 256
_certificate_cache: OrderedDict[tuple[object, ...], tuple[float, _CertificateFacts]] = OrderedDict()


def _examine(
    chain_der: tuple[bytes, ...], server_name: str, ca_file: str | None
) -> _CertificateFacts:
    """Parse, describe and verify a presented chain."""
    if not chain_der:
        return _CertificateFacts(
            None, None, None, "", "", "server presented no certificate", chain_length=0
        )
    try:
        with warnings.catch_warnings():
            # A name longer than X.509 allows warns on every read; the facts show it, cut.
            warnings.simplefilter("ignore")
            chain = [x509.load_der_x509_certificate(der) for der in chain_der]
            return _described(chain, chain_der, server_name, ca_file)
    except ValueError as error:  # also a name that is no text, found when first read
        return _CertificateFacts(None, None, None, "", "", f"unreadable certificate: {error}")


def _described(
    chain: list[x509.Certificate],
    chain_der: tuple[bytes, ...],
    server_name: str,
    ca_file: str | None,
) -> _CertificateFacts:
    leaf = chain[0]
    return _CertificateFacts(
        earliest_not_after=min(_timestamp(c.not_valid_after_utc) for c in chain),
        leaf_not_before=_timestamp(leaf.not_valid_before_utc),
        leaf_not_after=_timestamp(leaf.not_valid_after_utc),
        leaf_subject=printable(leaf.subject.rfc4514_string(), SHOWN_NAME_CHARACTERS),
        leaf_issuer=printable(leaf.issuer.rfc4514_string(), SHOWN_NAME_CHARACTERS),
        verify_error=verify_chain(chain, server_name, ca_file),
        chain=tuple(map(certificate_identity, chain[:CHAIN_LIMIT], chain_der)),
        chain_length=len(chain),
        name_covered=name_covered(leaf, server_name),
    )


def _certificate_facts(
    chain_der: tuple[bytes, ...], server_name: str, ca_file: str | None
) -> _CertificateFacts:
    """:func:`_examine`, remembered for a few minutes per chain, name and CA file version.

    A server presents the same chain to every probe; verifying it again each time cost
    about a fifth of a STARTTLS probe. An entry never outlives the chain's validity.
    """
    anchors = ca_file or system_ca_file()
    try:
        anchors_version = os.stat(anchors).st_mtime_ns if anchors else 0
    except OSError:
        anchors_version = -1
    key = (chain_der, server_name, anchors, anchors_version)
    now = time.time()
    cached = _certificate_cache.get(key)
    if cached is not None and cached[0] > now:
        return cached[1]
    facts = _examine(chain_der, server_name, ca_file)
    expires = min(now + _CACHE_SECONDS, facts.earliest_not_after or now)
    _certificate_cache[key] = (expires, facts)
    if len(_certificate_cache) > _CACHE_ENTRIES:
        _certificate_cache.popitem(last=False)
    return facts


def session_facts(ssl_object: ssl.SSLObject, server_name: str, ca_file: str | None) -> TLSFacts:
    """Read version, cipher and certificate facts from a finished handshake."""
    cipher = ssl_object.cipher()
    certificate = _certificate_facts(peer_chain(ssl_object), server_name, ca_file)
    return TLSFacts(
        version=ssl_object.version() or "unknown",
        cipher=cipher[0] if cipher else "unknown",
        earliest_not_after=certificate.earliest_not_after,
        leaf_not_before=certificate.leaf_not_before,
        leaf_not_after=certificate.leaf_not_after,
        leaf_subject=certificate.leaf_subject,
        leaf_issuer=certificate.leaf_issuer,
        verified=certificate.verify_error is None,
        verify_error=certificate.verify_error,
        chain=certificate.chain,
        chain_length=certificate.chain_length,
        name_covered=certificate.name_covered,
    )
