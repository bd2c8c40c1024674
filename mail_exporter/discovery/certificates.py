"""The certificate files the servers' configs name, read for their expiry.

A file may hold the key as well (Postfix's ``smtpd_tls_chain_files`` lists key and chain,
in one file or several): only the certificates in it count, and a file with none (the
key alone) is left out. A file this user cannot read is listed with the reason: the
probes still see the certificate the server presents.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

MAX_CERTIFICATE_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class CertificateFile:
    path: Path
    used_by: str
    not_after: float | None  # the earliest expiry in the file
    subject: str
    problem: str  # why it could not be read, or ""


def read_certificates(files: list[tuple[Path, str]]) -> list[CertificateFile]:
    """Each (path, server) once, in order; files without a certificate left out."""
    found: list[CertificateFile] = []
    seen: set[Path] = set()
    for path, used_by in files:
        if path in seen:
            continue
        seen.add(path)
        try:
            with path.open("rb") as file:
                data = file.read(MAX_CERTIFICATE_FILE_BYTES)
        except OSError as error:
            found.append(CertificateFile(path, used_by, None, "", error.strerror or str(error)))
            continue
        if b"-----BEGIN CERTIFICATE-----" not in data:
            continue
        try:
            certificates = x509.load_pem_x509_certificates(data)
        except ValueError as error:
            found.append(CertificateFile(path, used_by, None, "", f"not PEM: {error}"))
            continue
        leaf = certificates[0]
        not_after = min(c.not_valid_after_utc.timestamp() for c in certificates)
        found.append(CertificateFile(path, used_by, not_after, leaf.subject.rfc4514_string(), ""))
    return found
