"""DMARC aggregate reports (RFC 7489 section 7.2, appendix C)."""

from __future__ import annotations

from dataclasses import dataclass

from mail_exporter.collectors.reports.limits import Limits


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """One ``record`` row: ``count`` messages from ``source_ip`` that got ``disposition``."""

    source_ip: str  # as written in the report, stripped (the collector validates)
    count: int  # >= 0
    disposition: str  # lowercased text of policy_evaluated/disposition
    dkim_aligned: bool  # policy_evaluated/dkim == "pass"
    spf_aligned: bool  # policy_evaluated/spf == "pass"


@dataclass(frozen=True, slots=True)
class DmarcReport:
    reporter: str  # report_metadata/org_name, stripped
    report_id: str  # report_metadata/report_id
    domain: str  # policy_published/domain, lowercased, trailing dot removed
    begin: float  # date_range/begin, epoch seconds
    end: float  # date_range/end
    records: tuple[DmarcRecord, ...]


def parse_dmarc(data: bytes, limits: Limits) -> DmarcReport:
    """The report in ``data`` (XML); raises :class:`.rejection.Rejected`."""
    raise NotImplementedError
