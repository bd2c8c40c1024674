"""The certificate files the mail servers use, read for their expiry: a certificate is
watched from the moment it is installed, before any probe reaches a port that shows it
(a service that does not listen yet, a port only the outside reaches, a renewal that
was written but not loaded: the file's expiry moves, the probe's does not).

Each scrape reads every file (at most :data:`MAX_FILE_BYTES`; a few small files). A file
may hold the key too (Postfix's ``smtpd_tls_chain_files``): only its certificates count,
and the earliest NotAfter among them is the file's expiry, as the probes report the
earliest of the chain. A file that cannot be read, or holds no certificate, is
``mail_tls_cert_file_readable 0`` without the timestamps: the other files still report.
The ``path`` label is the configured path: bounded by the config.

Sample output::

    mail_tls_cert_file_readable{path="/etc/ssl/certs/mail.pem"} 1.0
    mail_tls_cert_file_expiry_timestamp_seconds{path="/etc/ssl/certs/mail.pem"} 1.79e+09
    mail_tls_cert_file_not_before_timestamp_seconds{path="/etc/ssl/certs/mail.pem"} 1.76e+09
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from prometheus_client.core import Metric
from pydantic import Field

from mail_exporter.collectors.base import Collector, register_collector
from mail_exporter.config.collectors import CollectorSection
from mail_exporter.metric_spec import MetricSpec, attribute, families

logger = logging.getLogger(__name__)

MAX_FILE_BYTES = 1 << 20
PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
NO_CERTIFICATE = "no PEM certificate in it"


class CertificatesConfig(CollectorSection):
    """Certificate files (PEM) to watch."""

    files: list[Path] = Field(default_factory=list)


@dataclass(frozen=True)
class CertificateFile:
    """What a file says, or why it says nothing (``problem``)."""

    path: Path
    not_after: float | None = None  # the earliest of its certificates
    not_before: float | None = None  # of its first certificate (the leaf)
    subject: str = ""
    problem: str = ""

    @property
    def readable(self) -> int:
        return 0 if self.problem else 1


def read_certificate_file(path: Path) -> CertificateFile:
    """The certificates of a PEM file; never raises."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES)
    except OSError as error:
        return CertificateFile(path, problem=error.strerror or str(error))
    if PEM_CERTIFICATE not in data:
        return CertificateFile(path, problem=NO_CERTIFICATE)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as error:
        return CertificateFile(path, problem=f"not a readable PEM certificate: {error}")
    leaf = certificates[0]
    return CertificateFile(
        path,
        not_after=min(c.not_valid_after_utc.timestamp() for c in certificates),
        not_before=leaf.not_valid_before_utc.timestamp(),
        subject=leaf.subject.rfc4514_string(),
    )


SPECS = (
    MetricSpec("mail_tls_cert_file_readable", "1 if the file was read and holds a certificate.",
               "gauge", ("path",), attribute("readable")),
    MetricSpec("mail_tls_cert_file_expiry_timestamp_seconds",
               "Earliest NotAfter of the certificates in the file.", "gauge", ("path",),
               attribute("not_after")),
    MetricSpec("mail_tls_cert_file_not_before_timestamp_seconds",
               "NotBefore of the file's first certificate.", "gauge", ("path",),
               attribute("not_before")),
)  # fmt: skip


class CertificatesCollector:
    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.logged: set[tuple[Path, str]] = set()  # each file's problem once, not per scrape

    def collect(self) -> Iterable[Metric]:
        read = [read_certificate_file(path) for path in self.files]
        for found in read:
            if found.problem and (found.path, found.problem) not in self.logged:
                self.logged.add((found.path, found.problem))
                logger.warning("certificate file %s: %s", found.path, found.problem)
        return families(SPECS, [([str(found.path)], found) for found in read])


@register_collector("certificates", "Expiry of the certificate files (PEM)", CertificatesConfig)
def _certificates(section: CertificatesConfig, previous: Collector | None) -> CertificatesCollector:
    return CertificatesCollector(list(section.files))
