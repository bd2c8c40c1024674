"""Reading and verifying what a revocation check got: a CRL, an OCSP answer (a responder's,
or the one a server stapled). Pure work on bytes and certificates, no I/O: the checks of
:mod:`.revocation` fetch, keep and time; this module says what an answer means, or raises
:class:`RevocationError` saying why it means nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from mail_exporter.printable import printable
from mail_exporter.tls_facts import SHOWN_NAME_CHARACTERS

CLOCK_SKEW_SECONDS: Final = 300.0
"""How far in the future a thisUpdate may be (the responder's clock ahead of ours)."""
CRL_VERDICTS: Final = 1024
"""Most serials whose lookup is remembered per CRL kept."""


class RevocationError(Exception):
    """A method could not answer; the message says why, and ``stapled`` whether the server
    stapled an answer (the stapling method: it may staple one that is no answer)."""

    def __init__(self, message: str, stapled: bool | None = None) -> None:
        super().__init__(message)
        self.stapled = stapled


@dataclass
class VerifiedCRL:
    """A CRL verified against one issuer, and the verdicts already looked up in it."""

    crl: x509.CertificateRevocationList
    url: str
    next_update: datetime | None
    verdicts: dict[int, tuple[bool, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class OCSPAnswer:
    revoked: bool
    detail: str


def shown_name(name: x509.Name) -> str:
    return printable(name.rfc4514_string(), SHOWN_NAME_CHARACTERS)


def shown_time(moment: datetime | None) -> str:
    return "none" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def check_current(this_update: datetime, next_update: datetime | None, what: str) -> None:
    now = time.time()
    if this_update.timestamp() > now + CLOCK_SKEW_SECONDS:
        raise RevocationError(f"the {what} is dated in the future ({shown_time(this_update)})")
    if next_update is not None and next_update.timestamp() < now:
        raise RevocationError(
            f"the {what} is out of date (next update was {shown_time(next_update)})"
        )


def verified_crl(body: bytes, issuer: x509.Certificate, url: str) -> VerifiedCRL:
    """Parse the CRL and check it as :mod:`.revocation` says (in a worker thread)."""
    try:
        if body.lstrip().startswith(b"-----BEGIN"):
            crl = x509.load_pem_x509_crl(body)
        else:
            crl = x509.load_der_x509_crl(body)
    except ValueError:
        raise RevocationError(f"{url} sent no CRL") from None
    if crl.issuer != issuer.subject:
        raise RevocationError(
            f"the CRL of {url} is issued by {shown_name(crl.issuer)}, not the issuer"
        )
    try:
        usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.crl_sign:
        raise RevocationError("the issuer may not sign CRLs (no cRLSign in its key usage)")
    try:
        signed = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        signed = False
    if not signed:
        raise RevocationError(f"the signature of the CRL of {url} does not verify with the issuer")
    _check_scope(crl, url)
    check_current(crl.last_update_utc, crl.next_update_utc, f"CRL of {url}")
    return VerifiedCRL(crl, url, crl.next_update_utc)


def _check_scope(crl: x509.CertificateRevocationList, url: str) -> None:
    """Refuse a CRL that does not list every revoked certificate of its issuer."""
    try:
        extensions = crl.extensions
    except ValueError as error:
        raise RevocationError(f"unreadable extension in the CRL of {url}: {error}") from None
    for extension in extensions:
        value = extension.value
        if isinstance(value, x509.DeltaCRLIndicator):
            raise RevocationError(f"{url} holds a delta CRL, which alone lists only changes")
        if isinstance(value, x509.IssuingDistributionPoint) and (
            value.only_contains_ca_certs
            or value.only_contains_attribute_certs
            or value.only_some_reasons
            or value.indirect_crl
        ):
            raise RevocationError(f"the CRL of {url} covers only part of its issuer's certificates")


def crl_verdict(known: VerifiedCRL, serial: int) -> tuple[bool, str]:
    """Look ``serial`` up in the CRL (in a worker thread: a large CRL takes a while)."""
    entry = known.crl.get_revoked_certificate_by_serial_number(serial)
    if entry is None:
        verdict = (
            False,
            f"not on the CRL of {known.url} (next update {shown_time(known.next_update)})",
        )
    else:
        try:
            reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.value
        except (x509.ExtensionNotFound, ValueError):
            reason = "no reason given"
        revoked_at = shown_time(entry.revocation_date_utc)
        verdict = (True, f"revoked on {revoked_at} ({reason}), per the CRL of {known.url}")
    if len(known.verdicts) >= CRL_VERDICTS:  # leaves come and go; this must not grow with them
        known.verdicts.clear()
    known.verdicts[serial] = verdict
    return verdict


@dataclass(frozen=True)
class AnswerSource:
    """Where an OCSP answer came from, as reasons name it: ``answer`` after "the", and
    ``origin`` after "per"."""

    answer: str
    origin: str


STAPLED: Final = AnswerSource("stapled answer", "the server's staple")


def read_ocsp(
    body: bytes, leaf: x509.Certificate, issuer: x509.Certificate, source: AnswerSource
) -> tuple[OCSPAnswer, datetime | None]:
    """The verified answer about ``leaf`` from ``source``, and its nextUpdate."""
    try:
        response = ocsp.load_der_ocsp_response(body)
    except ValueError:
        raise RevocationError(f"the {source.answer} is no OCSP response") from None
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise RevocationError(f"the {source.answer} says {response.response_status.name.lower()}")
    single = single_about(response, leaf, issuer)
    if single is None:
        raise RevocationError(f"the {source.answer} is about another certificate")
    _check_signer(response, issuer, source)
    check_current(single.this_update_utc, single.next_update_utc, source.answer)
    next_update = shown_time(single.next_update_utc)
    status = single.certificate_status
    if status is ocsp.OCSPCertStatus.UNKNOWN:
        raise RevocationError(
            f"the {source.answer} says unknown: its responder does not know the certificate"
        )
    if status is ocsp.OCSPCertStatus.GOOD:
        return OCSPAnswer(False, f"good per {source.origin} (next update {next_update})"), (
            single.next_update_utc
        )
    reason = single.revocation_reason.value if single.revocation_reason else "no reason given"
    revoked_at = shown_time(single.revocation_time_utc)
    return OCSPAnswer(True, f"revoked on {revoked_at} ({reason}), per {source.origin}"), (
        single.next_update_utc
    )


def single_about(
    response: ocsp.OCSPResponse, leaf: x509.Certificate, issuer: x509.Certificate
) -> ocsp.OCSPSingleResponse | None:
    """The first SingleResponse about ``leaf``, matched by the CertID of ``leaf`` and
    ``issuer`` in that response's own hash algorithm: a responder answers in the one asked
    for, but a staple comes in the one its server was given."""
    expected: dict[str, ocsp.OCSPRequest | None] = {}
    for single in response.responses:
        try:
            algorithm = single.hash_algorithm
        except UnsupportedAlgorithm:
            continue
        if algorithm.name not in expected:
            try:
                builder = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, algorithm)
                expected[algorithm.name] = builder.build()
            except ValueError:  # not a hash a CertID may use (SHA-1 and SHA-2 only)
                expected[algorithm.name] = None
        cert_id = expected[algorithm.name]
        if (
            cert_id is not None
            and single.serial_number == cert_id.serial_number
            and single.issuer_key_hash == cert_id.issuer_key_hash
            and single.issuer_name_hash == cert_id.issuer_name_hash
        ):
            return single
    return None


def _check_signer(
    response: ocsp.OCSPResponse, issuer: x509.Certificate, source: AnswerSource
) -> None:
    """The answer is signed by the issuer, or by a responder it delegated (RFC 6960 4.2.2.2)."""
    signer = next((c for c in (issuer, *response.certificates) if _is_responder(response, c)), None)
    if signer is None:
        raise RevocationError(f"the {source.answer} is signed by a responder it does not include")
    if signer != issuer:
        _check_delegated(signer, issuer, source)
    if not _signature_valid(signer, response):
        raise RevocationError(f"the signature of the {source.answer} does not verify")


def _is_responder(response: ocsp.OCSPResponse, certificate: x509.Certificate) -> bool:
    if response.responder_name is not None:
        return response.responder_name == certificate.subject
    key_id = x509.SubjectKeyIdentifier.from_public_key(certificate.public_key())
    return response.responder_key_hash == key_id.digest


def _check_delegated(
    signer: x509.Certificate, issuer: x509.Certificate, source: AnswerSource
) -> None:
    shown = shown_name(signer.subject)
    try:
        signer.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        raise RevocationError(
            f"the {source.answer} is signed by {shown}, which the issuer did not issue"
        ) from None
    try:
        usages = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        usages = None
    if usages is None or ExtendedKeyUsageOID.OCSP_SIGNING not in usages:
        raise RevocationError(
            f"the {source.answer} is signed by {shown}, which may not sign OCSP answers"
        )
    now = time.time()
    if not signer.not_valid_before_utc.timestamp() <= now <= signer.not_valid_after_utc.timestamp():
        raise RevocationError(
            f"the responder certificate {shown} of the {source.answer} is not valid now"
        )


def _signature_valid(signer: x509.Certificate, response: ocsp.OCSPResponse) -> bool:
    key = signer.public_key()
    signature, data = response.signature, response.tbs_response_bytes
    algorithm = response.signature_hash_algorithm
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        else:
            return False
    except InvalidSignature:
        return False
    return True
