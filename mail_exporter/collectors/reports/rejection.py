"""A report or message refused, and why: the ``kind`` and ``reason`` labels of
``mail_reports_rejected_total`` (docs/metrics.md) and a short text for the log.

A refusal is raised inside the parsers and returned, as a value, in
:attr:`.message.MessageContents.rejected`: one refused attachment never hides the
others of the same message.
"""

from __future__ import annotations

from mail_exporter.printable import printable

KINDS: tuple[str, ...] = ("dmarc", "tlsrpt", "message")
REASONS: tuple[str, ...] = (
    "too_large",
    "attachment_too_large",
    "archive",
    "compression",
    "entities",
    "malformed",
    "too_many_records",
    "unknown_domain",
)
# How much of a refusal's detail (parser messages quote the input) reaches the log.
DETAIL_LIMIT = 200


class Rejected(Exception):
    """A refused report: ``kind`` (one of :data:`KINDS`), ``reason`` (one of
    :data:`REASONS`) and ``detail``, printable and short."""

    def __init__(self, kind: str, reason: str, detail: str) -> None:
        if kind not in KINDS or reason not in REASONS:
            raise ValueError(f"unknown rejection {kind}/{reason}")
        self.kind = kind
        self.reason = reason
        self.detail = printable(detail, DETAIL_LIMIT)
        super().__init__(kind, reason, self.detail)

    def __str__(self) -> str:
        return f"{self.kind} report rejected ({self.reason}): {self.detail}"

    def detached(self) -> Rejected:
        """The same refusal with no traceback or context: a refusal kept as a value must
        not hold the frames (and the buffers) it was raised in."""
        return Rejected(self.kind, self.reason, self.detail)
