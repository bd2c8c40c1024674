"""The bounds of reading one message: every size and count a stranger's message could
inflate, with defaults that hold the biggest real reports with room to spare.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Bounds of :func:`.message.read_message`.

    ``max_message_bytes``: the raw message; ``max_report_bytes``: one report once
    decompressed; ``max_message_report_bytes``: all reports of a message together once
    decompressed (what a message's parsed records may cost); ``max_json_bytes``: one
    TLS-RPT report (JSON costs up to some 20 bytes of memory a byte once loaded, and
    real reports are a few kilobytes); ``max_zip_members``: members of one zip;
    ``max_records``: records of one report (DMARC records, TLS-RPT policies and failure
    details); ``max_reports_per_message``.
    """

    max_message_bytes: int = 10 * MIB
    max_report_bytes: int = 20 * MIB
    max_message_report_bytes: int = 40 * MIB
    max_json_bytes: int = 2 * MIB
    max_zip_members: int = 8
    max_records: int = 100_000
    max_reports_per_message: int = 16
