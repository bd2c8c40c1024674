"""One message of the reports mailbox, read: its headers, body and reports."""

from __future__ import annotations

from dataclasses import dataclass

from mail_exporter.collectors.reports.dmarc import DmarcReport
from mail_exporter.collectors.reports.limits import Limits
from mail_exporter.collectors.reports.rejection import Rejected
from mail_exporter.collectors.reports.tlsrpt import TlsRptReport


@dataclass(frozen=True, slots=True)
class MessageContents:
    sender: str  # From: header as text (for notification rules)
    subject: str
    date: float | None  # Date: header, epoch seconds; None when missing or unparseable
    body: str  # the first text/plain part (else text/html stripped of tags), at most 64 KiB
    dmarc: tuple[DmarcReport, ...]
    tlsrpt: tuple[TlsRptReport, ...]
    rejected: tuple[Rejected, ...]  # each refused payload, with kind and reason


def read_message(raw: bytes, limits: Limits) -> MessageContents:
    """What ``raw`` (the message as the server sent it) holds; never raises."""
    raise NotImplementedError
