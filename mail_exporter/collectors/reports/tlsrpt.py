"""TLS-RPT reports (RFC 8460 section 4)."""

from __future__ import annotations

from dataclasses import dataclass

from mail_exporter.collectors.reports.limits import Limits


@dataclass(frozen=True, slots=True)
class TlsRptPolicy:
    policy_type: str  # policy/policy-type, lowercased
    policy_domain: str  # lowercased, trailing dot removed
    successful: int  # summary/total-successful-session-count
    failed: int  # summary/total-failure-session-count
    # (result-type lowercased, failed-session-count) from failure-details
    failures: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class TlsRptReport:
    reporter: str  # organization-name
    report_id: str  # report-id
    policies: tuple[TlsRptPolicy, ...]


def parse_tlsrpt(data: bytes, limits: Limits) -> TlsRptReport:
    """The report in ``data`` (JSON); raises :class:`.rejection.Rejected`."""
    raise NotImplementedError
