"""Signed JWTs (RFC 7519) for the token sources: RS256 (RFC 7518 3.3) with an RSA key.

Two sources sign one. Client credentials with a certificate send a client assertion
(RFC 7523 2.2, ``private_key_jwt``), as Microsoft's app-only flow takes it: the
header names the certificate by its SHA-256 thumbprint (``x5t#S256``) and, for the
Entra ID versions that look up the older name only, its SHA-1 thumbprint (``x5t``),
which is an identifier here, never a signature. The JWT bearer grant (RFC 7523 2.1)
sends an assertion signed with a Google service account's key (``kid`` its
``private_key_id``) or another issuer's key.

RS256 and RSA only, of at least :data:`MIN_RSA_BITS` bits: it is the algorithm Google
takes and Entra ID accepts, and one algorithm keeps the choice out of the config.
Keys and certificates are PEM, read while the config is validated; an encrypted key is
refused (a passphrase would be one more secret to keep somewhere), as a key that does
not belong to its certificate is.

A :class:`SigningKey` compares by the PEM it was read from (two configs that read the
same files are equal, so a reload keeps what depends on them) and never shows it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm as UnsupportedAlgorithmError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

MIN_RSA_BITS: Final = 2048
ASSERTION_SECONDS: Final = 300
"""Lifetime of an assertion we sign: Microsoft asks for 5 to 10 minutes, Google at most 1 hour."""


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json_part(value: Mapping[str, object]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


@dataclass(frozen=True)
class SigningKey:
    """An RSA private key and the header fields that name it."""

    pem: bytes = field(repr=False)
    key: rsa.RSAPrivateKey = field(compare=False, repr=False)
    header: tuple[tuple[str, str], ...] = ()

    def sign(self, claims: Mapping[str, object]) -> str:
        """The compact serialization of a JWT with ``claims``, signed RS256."""
        header = {"alg": "RS256", "typ": "JWT", **dict(self.header)}
        signing_input = f"{_json_part(header)}.{_json_part(claims)}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"

    @property
    def secret(self) -> str:
        """The key as written, for the log redaction."""
        return self.pem.decode("ascii", "replace").strip()


def _private_key(pem: bytes) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise ValueError("is encrypted: give the key without a passphrase") from None
    except (ValueError, UnsupportedAlgorithmError):
        raise ValueError("holds no PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("is not an RSA key (RS256 needs one)")
    if key.key_size < MIN_RSA_BITS:
        raise ValueError(f"is an RSA key of {key.key_size} bits: RS256 needs {MIN_RSA_BITS}+")
    return key


def issuer_key(key_pem: bytes, key_name: str) -> SigningKey:
    """The key of ``private_key_file`` (``key_name`` says which, in the error)."""
    try:
        return SigningKey(key_pem, _private_key(key_pem))
    except ValueError as error:
        raise ValueError(f"{key_name} {error}") from None


def certificate_key(certificate_pem: bytes, key_pem: bytes) -> SigningKey:
    """The key of ``private_key_file``, named by the certificate of ``certificate_file``
    (the first one in the file), which must hold its public key."""
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem)
    except ValueError:
        raise ValueError("certificate_file holds no PEM certificate") from None
    key = issuer_key(key_pem, "private_key_file").key
    if certificate.public_key() != key.public_key():
        raise ValueError("private_key_file is not the key of the certificate in certificate_file")
    der = certificate.public_bytes(serialization.Encoding.DER)
    thumbprints = {
        "x5t#S256": b64url(_digest(hashes.SHA256(), der)),
        "x5t": b64url(_digest(hashes.SHA1(), der)),  # a name, not a signature
    }
    return SigningKey(key_pem, key, tuple(thumbprints.items()))


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    digest = hashes.Hash(algorithm)
    digest.update(data)
    return digest.finalize()


@dataclass(frozen=True)
class ServiceAccount:
    """What a Google service account's JSON key gives: who signs, and with what."""

    client_email: str
    key: SigningKey


def service_account(content: bytes) -> ServiceAccount:
    """The ``client_email`` and ``private_key`` (named by ``private_key_id``) of a Google
    service account's JSON key file."""
    try:
        data = json.loads(content)
    except ValueError:
        raise ValueError("service_account_file is not JSON") from None
    if not isinstance(data, dict) or data.get("type") != "service_account":
        raise ValueError(
            'service_account_file is not a service account key ("type": "service_account")'
        )
    email, pem = data.get("client_email"), data.get("private_key")
    key_id = data.get("private_key_id")
    if not isinstance(email, str) or not email or not isinstance(pem, str):
        raise ValueError("service_account_file lacks client_email or private_key")
    try:
        key = _private_key(pem.encode())
    except ValueError as error:
        raise ValueError(f"service_account_file's private_key {error}") from None
    header = (("kid", key_id),) if isinstance(key_id, str) and key_id else ()
    return ServiceAccount(email, SigningKey(pem.encode(), key, header))
