"""DMARC aggregate reports (RFC 7489 section 7.2, the schema of appendix C).

The XML is read by defusedxml's ``iterparse`` with DTDs forbidden: a DOCTYPE, and so any
entity declaration (billion laughs, external entities), is refused as ``entities``
before anything is expanded or fetched. Work stays proportional to the input, and memory
to one record, by bounds checked as the parse goes (``iterparse`` feeds expat 16 KiB at
a time and hands over the elements of each piece):

- each top-level element (``report_metadata``, ``policy_published``, a ``record``) is
  read when it ends and then dropped from the tree, and may hold at most
  :data:`MAX_ENTRY_ELEMENTS` elements; the tree is at most :data:`MAX_DEPTH` deep;
- no tag may be longer than :data:`MAX_TAG_BYTES` (checked on the bytes first): expat
  builds a tag's attributes at once, and a 20 MiB tag of attributes would cost some
  ten times that;
- at most ``max_records`` records (``too_many_records``).

A report lacks a required field of the schema (``report_metadata``'s ``org_name``,
``report_id`` and ``date_range``, ``policy_published``'s ``domain``, a record's
``row`` with ``source_ip``, ``count`` and ``policy_evaluated`` with ``disposition``,
``dkim`` and ``spf``), or has a count or time that is not a non-negative integer:
``malformed``. Namespaces (DMARCbis reporters add one) are ignored. Strings are
stripped, cut and escaped (:func:`mail_exporter.printable.printable`).

Measured (bench/reports.py): iterparse with clearing is what keeps a large report's
memory to one record; parsing costs some 40 µs a record.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse

from mail_exporter.collectors.reports.limits import Limits
from mail_exporter.collectors.reports.rejection import Rejected
from mail_exporter.printable import printable

MAX_DEPTH = 8
MAX_ENTRY_ELEMENTS = 1000
MAX_TAG_BYTES = 4096
LONG_TAG = re.compile(rb"<[^>]{%d}" % MAX_TAG_BYTES)
# Counts and times: at most 2**53, which a float (a Prometheus sample) holds exactly.
MAX_NUMBER = 2**53
NUMBER = re.compile(r"[0-9]{1,16}")
# Longest kept text of a field: org_name and report_id, a domain, an address.
TEXT_LIMIT = 256
DOMAIN_LIMIT = 253
ADDRESS_LIMIT = 64


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


def malformed(detail: str) -> Rejected:
    return Rejected("dmarc", "malformed", detail)


def local_name(element: Element) -> str:
    return element.tag.rpartition("}")[2]


def child(parent: Element, name: str) -> Element:
    """The first child called ``name`` (in any namespace)."""
    for element in parent:
        if local_name(element) == name:
            return element
    raise malformed(f"{local_name(parent)} without {name}")


def text(parent: Element, name: str, limit: int) -> str:
    """The stripped text of ``parent``'s child ``name``, not empty, escaped and cut."""
    value = (child(parent, name).text or "").strip()
    if not value:
        raise malformed(f"{local_name(parent)} with an empty {name}")
    return value if len(value) <= limit and value.isprintable() else printable(value, limit)


def number(parent: Element, name: str) -> int:
    value = (child(parent, name).text or "").strip()
    if not NUMBER.fullmatch(value) or int(value) > MAX_NUMBER:
        raise malformed(f"{name} is not a count: {value[:40]!r}")
    return int(value)


def domain(parent: Element, name: str) -> str:
    value = text(parent, name, DOMAIN_LIMIT).lower().rstrip(".")
    if not value:
        raise malformed(f"{name} is empty")
    return value


class ReportBuilder:
    """The parts of one report, taken from its top-level elements as each ends."""

    def __init__(self, max_records: int) -> None:
        self.max_records = max_records
        self.metadata: tuple[str, str, float, float] | None = None
        self.domain: str | None = None
        self.records: list[DmarcRecord] = []
        # One string object for each disposition text, not one per record.
        self.shared: dict[str, str] = {}

    def take(self, element: Element) -> None:
        name = local_name(element)
        if name == "record":
            self.take_record(element)
        elif name == "report_metadata":
            if self.metadata is not None:
                raise malformed("two report_metadata")
            dates = child(element, "date_range")
            self.metadata = (
                text(element, "org_name", TEXT_LIMIT),
                text(element, "report_id", TEXT_LIMIT),
                float(number(dates, "begin")),
                float(number(dates, "end")),
            )
        elif name == "policy_published":
            if self.domain is not None:
                raise malformed("two policy_published")
            self.domain = domain(element, "domain")

    def take_record(self, record: Element) -> None:
        if len(self.records) >= self.max_records:
            raise Rejected("dmarc", "too_many_records", f"more than {self.max_records} records")
        row = child(record, "row")
        evaluated = child(row, "policy_evaluated")
        disposition = text(evaluated, "disposition", TEXT_LIMIT).lower()
        self.records.append(
            DmarcRecord(
                source_ip=text(row, "source_ip", ADDRESS_LIMIT),
                count=number(row, "count"),
                disposition=self.shared.setdefault(disposition, disposition),
                dkim_aligned=text(evaluated, "dkim", TEXT_LIMIT).lower() == "pass",
                spf_aligned=text(evaluated, "spf", TEXT_LIMIT).lower() == "pass",
            )
        )

    def report(self) -> DmarcReport:
        if self.metadata is None:
            raise malformed("no report_metadata")
        if self.domain is None:
            raise malformed("no policy_published")
        reporter, report_id, begin, end = self.metadata
        return DmarcReport(reporter, report_id, self.domain, begin, end, tuple(self.records))


def parse_dmarc(data: bytes, limits: Limits) -> DmarcReport:
    """The report in ``data`` (XML); raises :class:`.rejection.Rejected`."""
    if len(data) > limits.max_report_bytes:
        raise Rejected("dmarc", "attachment_too_large", f"{len(data)} bytes")
    if LONG_TAG.search(data):
        raise malformed(f"a tag longer than {MAX_TAG_BYTES} bytes")
    builder = ReportBuilder(limits.max_records)
    root: Element | None = None
    depth = elements = 0
    try:
        for event, element in iterparse(io.BytesIO(data), ("start", "end"), forbid_dtd=True):
            if event == "start":
                depth += 1
                elements += 1
                if root is None:
                    root = element
                    if local_name(root) != "feedback":
                        raise malformed(f"the root element is {local_name(root)[:40]!r}")
                if depth > MAX_DEPTH:
                    raise malformed(f"elements nested more than {MAX_DEPTH} deep")
                if elements > MAX_ENTRY_ELEMENTS:
                    raise malformed(f"more than {MAX_ENTRY_ELEMENTS} elements in one entry")
            else:
                depth -= 1
                if depth == 1 and root is not None:
                    builder.take(element)
                    root.clear()  # what was taken is not kept in the tree
                    elements = 1
    except DefusedXmlException as error:
        raise Rejected("dmarc", "entities", type(error).__name__) from None
    except ParseError as error:
        raise malformed(str(error)) from None
    if root is None:
        raise malformed("no XML element")
    return builder.report()
