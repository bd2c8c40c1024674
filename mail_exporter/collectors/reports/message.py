"""One message of the reports mailbox, read: its headers, body and reports.

:func:`read_message` is what the collector calls for each message it downloads. It
never raises: what it cannot use is either left out (a header it cannot decode is kept
as written, a body part in an unknown charset is read as UTF-8) or returned as a
:class:`.rejection.Rejected` with its reason, one per refused payload, so one bad
attachment does not hide the good ones beside it.

The message is parsed with the stdlib's ``compat32`` policy: it never raises on a
malformed header (``email.policy.default`` parses every header into objects, raising
on some malformed ones in some Python versions) and it is the faster of the two
(bench/reports.py: parsing the 1,000 report messages takes 0.5 s with it, 2.6 s with
``default``). Headers are decoded (RFC 2047),
unfolded, escaped and cut to :data:`HEADER_LIMIT` characters. At most :data:`MAX_PARTS`
parts are looked at.

The stdlib parser has two costs a message's author controls, both refused as
``malformed`` before or while parsing. Each line is compared with the boundary of every
enclosing multipart, so its time grows with lines times depth (measured: 10 MiB of
3-byte lines takes 1.1 s flat, 3.2 s one multipart deep, 5.2 s 8 deep, 10.5 s 16 deep,
118 s 300 deep): a message that declares more than :data:`MAX_BOUNDARIES` multipart
boundaries (``boundary=`` in any case, RFC 2231 forms included; real reports use one
or two) is refused unparsed. And it recurses once per nested ``message/rfc822``, so a
message nested deeper than Python's recursion limit is refused rather than crashing the
reader. Its memory grows with lines, some 100 bytes a line whatever its length (measured:
3.3 million 3-byte lines, 10 MiB, cost 330 MB): a message of more than
:data:`MAX_LINES` lines (a 10 MiB message in base64 has 140,000) is refused unparsed.

A message of more than ``max_message_bytes`` is refused as ``too_large`` unparsed (the
collector does not download one, going by the size the server states; this guards the
case where the statement was wrong). At most ``max_reports_per_message`` reports are
read; a further one is refused as ``too_many_records``, of kind ``message``. Together
the reports of a message may inflate to ``max_message_report_bytes``.
"""

from __future__ import annotations

import email
import html
import re
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import Message
from email.policy import compat32
from email.utils import parsedate_to_datetime

from mail_exporter.collectors.reports.attachments import report_hint, unpack
from mail_exporter.collectors.reports.dmarc import DmarcReport, parse_dmarc
from mail_exporter.collectors.reports.limits import Limits
from mail_exporter.collectors.reports.rejection import Rejected
from mail_exporter.collectors.reports.tlsrpt import TlsRptReport, parse_tlsrpt
from mail_exporter.printable import printable

HEADER_LIMIT = 998  # RFC 5322's line length: no real From or Subject is longer
HEADER_READ = 4 * HEADER_LIMIT  # encoded words take up to some 4 characters for one
BODY_LIMIT = 64 * 1024
MAX_PARTS = 256
MAX_NESTING = 16
MAX_BOUNDARIES = 8
MAX_LINES = 400_000
BOUNDARY = re.compile(rb"boundary[\s*0-9]*=", re.IGNORECASE)
TAG = re.compile(r"<[^>]*>")
SPACE = re.compile(r"\s+")
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class MessageContents:
    sender: str  # From: header as text (for notification rules)
    subject: str
    date: float | None  # Date: header, epoch seconds; None when missing or unparseable
    body: str  # the first text/plain part (else text/html stripped of tags), at most 64 KiB
    dmarc: tuple[DmarcReport, ...]
    tlsrpt: tuple[TlsRptReport, ...]
    rejected: tuple[Rejected, ...]  # each refused payload, with kind and reason


def header_text(message: Message, name: str) -> str:
    """Header ``name`` decoded, unfolded, escaped and cut; "" when missing. Only its
    first :data:`HEADER_READ` characters are read (escaping all of a 9 MB header took
    5 s)."""
    value = message.get(name)
    if value is None:
        return ""
    text = str(value)[:HEADER_READ]
    try:
        decoded = str(make_header(decode_header(text)))
    except (ValueError, LookupError, TypeError, AssertionError):  # bad encoded words
        decoded = text
    return printable(SPACE.sub(" ", decoded[:HEADER_READ]).strip(), HEADER_LIMIT)


def header_date(message: Message) -> float | None:
    value = message.get("Date")
    if value is None:
        return None
    try:
        return parsedate_to_datetime(str(value)).timestamp()
    except (ValueError, TypeError, IndexError, OverflowError):
        return None


def leaves(message: Message) -> list[Message]:
    """The non-multipart parts, in order, at most :data:`MAX_PARTS`."""
    found: list[Message] = []
    stack = [(message, 0)]
    while stack and len(found) < MAX_PARTS:
        part, depth = stack.pop()
        payload = part.get_payload()
        if isinstance(payload, list):
            if depth < MAX_NESTING:
                # A parsed multipart's payload holds Message parts only; typeshed's type
                # allows str too.
                stack.extend(
                    (sub, depth + 1) for sub in reversed(payload) if isinstance(sub, Message)
                )
        else:
            found.append(part)
    return found


def part_text(part: Message, limit: int) -> str:
    """The decoded text of ``part``, from at most ``4 * limit`` bytes."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    data = payload[: 4 * limit]
    try:
        return data.decode(part.get_content_charset() or "utf-8", "replace")
    except (LookupError, ValueError, TypeError):  # unknown or non-text charset names
        return data.decode("utf-8", "replace")


def body_text(parts: list[Message]) -> str:
    inline = [p for p in parts if p.get_content_maintype() == "text" and not is_attachment(p)]
    for part in inline:
        if part.get_content_subtype() == "plain":
            return part_text(part, BODY_LIMIT)[:BODY_LIMIT]
    for part in inline:
        if part.get_content_subtype() == "html":
            stripped = html.unescape(TAG.sub(" ", part_text(part, 4 * BODY_LIMIT)))
            return SPACE.sub(" ", stripped).strip()[:BODY_LIMIT]
    return ""


def is_attachment(part: Message) -> bool:
    return str(part.get("Content-Disposition", "")).strip().lower().startswith("attachment")


def filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except (ValueError, LookupError, TypeError):
        return None
    return name if isinstance(name, str) else None


def document_kind(document: bytes, hint: str) -> str:
    """ "dmarc" or "tlsrpt" by the document's first character, else the part's ``hint``."""
    start = document[:4096].removeprefix(UTF8_BOM).lstrip()[:1]
    return {b"<": "dmarc", b"{": "tlsrpt"}.get(start, hint)


class Reader:
    """The reports of one message, read part by part within the message's budgets."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.budget = limits.max_message_report_bytes
        self.reports = 0
        self.dmarc: list[DmarcReport] = []
        self.tlsrpt: list[TlsRptReport] = []
        self.rejected: list[Rejected] = []

    def refuse(self, error: Rejected) -> None:
        self.rejected.append(error.detached())

    def read_part(self, part: Message) -> None:
        hint = report_hint(part.get_content_type(), filename(part))
        if hint is None:
            return
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            return
        cap = min(self.limits.max_report_bytes, self.budget)
        try:
            documents = unpack(payload, hint, cap, self.limits.max_zip_members)
        except Rejected as error:
            self.refuse(error)
            return
        for document in documents:
            self.budget -= len(document)
            self.read_document(document, hint)

    def read_document(self, document: bytes, hint: str) -> None:
        kind = document_kind(document, hint)
        self.reports += 1
        if self.reports > self.limits.max_reports_per_message:
            limit = self.limits.max_reports_per_message
            self.refuse(Rejected("message", "too_many_records", f"more than {limit} reports"))
            return
        try:
            if kind == "dmarc":
                self.dmarc.append(parse_dmarc(document, self.limits))
            elif kind == "tlsrpt":
                self.tlsrpt.append(parse_tlsrpt(document, self.limits))
            else:
                self.refuse(Rejected("message", "malformed", "neither XML nor JSON"))
        except Rejected as error:
            self.refuse(error)


def boundaries_over(raw: bytes, limit: int) -> bool:
    """Whether ``raw`` declares more than ``limit`` multipart boundaries."""
    return any(n > limit for n, _ in enumerate(BOUNDARY.finditer(raw), 1))


def refused(reason: str, detail: str) -> MessageContents:
    """The contents of a message refused whole, unread."""
    return MessageContents("", "", None, "", (), (), (Rejected("message", reason, detail),))


def read_message(raw: bytes, limits: Limits) -> MessageContents:
    """What ``raw`` (the message as the server sent it) holds; never raises."""
    if len(raw) > limits.max_message_bytes:
        return refused("too_large", f"{len(raw)} bytes")
    lines = raw.count(b"\n") + raw.count(b"\r") - raw.count(b"\r\n")  # as the parser splits
    if lines > MAX_LINES:
        return refused("malformed", f"{lines} lines, more than {MAX_LINES}")
    if boundaries_over(raw, MAX_BOUNDARIES):
        return refused("malformed", f"more than {MAX_BOUNDARIES} multipart boundaries")
    try:
        message = email.message_from_bytes(raw, policy=compat32)
    except RecursionError:
        return refused("malformed", "messages nested too deep")
    parts = leaves(message)
    reader = Reader(limits)
    for part in parts:
        reader.read_part(part)
    return MessageContents(
        sender=header_text(message, "From"),
        subject=header_text(message, "Subject"),
        date=header_date(message),
        body=body_text(parts),
        dmarc=tuple(reader.dmarc),
        tlsrpt=tuple(reader.tlsrpt),
        rejected=tuple(reader.rejected),
    )
