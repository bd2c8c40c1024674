"""The certificate files the servers' configs name, read as the certificates collector
reads them (:func:`~mail_exporter.collectors.certificates.read_certificate_file`).

A file that holds no certificate (a key of Postfix's ``smtpd_tls_chain_files``) is left
out; one that does not exist is only noted; one this user cannot read is noted with the
reason and kept off the collector's list, where it would only report 0.
"""

from __future__ import annotations

from pathlib import Path

from mail_exporter.collectors.certificates import (
    NO_CERTIFICATE,
    CertificateFile,
    read_certificate_file,
)
from mail_exporter.discovery.rights import unreadable


def read_certificates(files: list[tuple[Path, str]]) -> list[tuple[CertificateFile, str]]:
    """Each (path, server) once, in order, with the file's facts, or the reason it could
    not be read; files without a certificate left out."""
    found: list[tuple[CertificateFile, str]] = []
    seen: set[Path] = set()
    for path, used_by in files:
        if path in seen:
            continue
        seen.add(path)
        if problem := unreadable(path):
            found.append((CertificateFile(path, problem=problem), used_by))
            continue
        certificate = read_certificate_file(path)
        if certificate.problem != NO_CERTIFICATE:  # else a key file
            found.append((certificate, used_by))
    return found
