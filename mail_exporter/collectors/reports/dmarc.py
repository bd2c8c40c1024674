"""DMARC aggregate reports (RFC 7489 section 7.2, the schema of appendix C).

The XML is read by defusedxml's parser with DTDs forbidden: a DOCTYPE, and so any
entity declaration (billion laughs, external entities), is refused as ``entities``
before anything is expanded or fetched. No tree is built: expat hands each start, text
and end straight to :class:`ReportTarget`, which keeps only the texts of the fields it
needs and turns each ``record`` into a :class:`DmarcRecord` when it ends. Work stays
proportional to the input and memory to the records kept, by bounds checked as the
parse goes:

- at most :data:`MAX_DEPTH` levels and :data:`MAX_ENTRY_ELEMENTS` elements in one
  top-level element (``report_metadata``, a ``record``, …);
- at most :data:`MAX_NAMES` distinct element and attribute names: expat keeps each name
  it has seen for the whole parse (and ElementTree's handlers did too: 2 million
  distinct names cost 500 MB);
- no tag longer than :data:`MAX_TAG_BYTES` (checked on the bytes first): expat builds a
  tag's attributes at once, and a 20 MiB tag of attributes would cost some ten times that;
- at most ``max_records`` records (``too_many_records``).

A report that lacks a field the schema requires (``report_metadata``'s ``org_name``,
``report_id`` and ``date_range`` with ``begin`` and ``end``, ``policy_published``'s
``domain``, a record's ``row`` with ``source_ip``, ``count`` and ``policy_evaluated``
with ``disposition``, ``dkim`` and ``spf``), or has a count or time that is not a
non-negative integer, is ``malformed``. Namespaces (DMARCbis reporters add one) are
ignored. Strings are stripped, cut and escaped (:func:`mail_exporter.printable.printable`).

Measured (bench/reports.py, 1,000 reports of 100 records): ``iterparse``, clearing the
tree after each record, took 8.5 s; expat's events straight to the target take 4.2 s,
on a machine as loaded. Most of what is left is expat calling Python for each event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from mail_exporter.collectors.reports.limits import Limits
from mail_exporter.collectors.reports.rejection import Rejected
from mail_exporter.printable import printable

MAX_DEPTH = 8
MAX_ENTRY_ELEMENTS = 1000
MAX_NAMES = 256
MAX_TAG_BYTES = 4096
LONG_TAG = re.compile(rb"<[^>]{%d}" % MAX_TAG_BYTES)
# Counts and times: at most 2**53, which a float (a Prometheus sample) holds exactly.
MAX_NUMBER = 2**53
NUMBER = re.compile(r"[0-9]{1,16}")
# Longest kept text of a field: org_name and report_id, a domain, an address.
TEXT_LIMIT = 256
DOMAIN_LIMIT = 253
ADDRESS_LIMIT = 64
# The fields read, by their path from the root: a tree of element names whose leaves
# ({"": name}) name the field; EMPTY is every element outside it.
Trie = dict[str, Any]
EMPTY: Trie = {}
FIELDS: Trie = {
    "feedback": {
        "report_metadata": {
            "org_name": {"": "org_name"},
            "report_id": {"": "report_id"},
            "date_range": {"begin": {"": "begin"}, "end": {"": "end"}},
        },
        "policy_published": {"domain": {"": "domain"}},
        "record": {
            "row": {
                "source_ip": {"": "source_ip"},
                "count": {"": "count"},
                "policy_evaluated": {
                    "disposition": {"": "disposition"},
                    "dkim": {"": "dkim"},
                    "spf": {"": "spf"},
                },
            },
        },
    },
}


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


def field(entry: dict[str, str], name: str, limit: int = TEXT_LIMIT) -> str:
    """The text of field ``name``, not empty, escaped and cut."""
    value = entry.get(name, "").strip()
    if not value:
        raise malformed(f"no {name}")
    return value if len(value) <= limit and value.isprintable() else printable(value, limit)


def number(entry: dict[str, str], name: str) -> int:
    value = field(entry, name)
    if not NUMBER.fullmatch(value) or int(value) > MAX_NUMBER:
        raise malformed(f"{name} is not a count: {value[:40]!r}")
    return int(value)


class ReportTarget:
    """The parser's target: the fields of each top-level element, taken as it ends."""

    def __init__(self, max_records: int) -> None:
        self.max_records = max_records
        self.nodes: list[Trie] = [FIELDS]  # where each open element is in FIELDS
        self.names: dict[str, str] = {}  # every name seen, to its local part
        self.top = ""  # the open top-level element
        self.elements = 0
        self.pieces: list[str] = []  # text since the last start or end
        self.entry: dict[str, str] = {}  # fields of the current top-level element
        self.metadata: tuple[str, str, float, float] | None = None
        self.domain: str | None = None
        self.records: list[DmarcRecord] = []
        # One string object for each disposition text, not one per record.
        self.shared: dict[str, str] = {}

    def learn(self, name: str) -> str:
        if len(self.names) >= MAX_NAMES:
            raise malformed(f"more than {MAX_NAMES} element and attribute names")
        local = self.names[name] = name.rpartition("}")[2]
        return local

    def start(self, tag: str, attributes: list[str]) -> None:
        local = self.names.get(tag) or self.learn(tag)
        for name in attributes[::2]:
            if name not in self.names:
                self.learn(name)
        nodes = self.nodes
        nodes.append(nodes[-1].get(local, EMPTY))
        self.pieces = []
        self.elements += 1
        if self.elements > MAX_ENTRY_ELEMENTS or len(nodes) > MAX_DEPTH or len(nodes) < 4:
            self.check_shape(local)

    def check_shape(self, local: str) -> None:
        """The bounds, and the root's name; the top-level element's name kept."""
        depth = len(self.nodes) - 1
        if self.elements > MAX_ENTRY_ELEMENTS:
            raise malformed(f"more than {MAX_ENTRY_ELEMENTS} elements in one entry")
        if depth > MAX_DEPTH:
            raise malformed(f"elements nested more than {MAX_DEPTH} deep")
        if depth == 1 and local != "feedback":
            raise malformed(f"the root element is {local[:40]!r}")
        if depth == 2:
            self.top = local

    def data(self, text: str) -> None:
        self.pieces.append(text)

    def end(self, tag: str) -> None:
        name = self.nodes.pop().get("")
        if name is not None:
            self.entry.setdefault(name, "".join(self.pieces))
        self.pieces = []
        if len(self.nodes) == 2:  # a top-level element ended
            self.take(self.top)
            self.entry = {}
            self.elements = 0

    def take(self, name: str) -> None:
        entry = self.entry
        if name == "record":
            if len(self.records) >= self.max_records:
                raise Rejected("dmarc", "too_many_records", f"more than {self.max_records}")
            disposition = field(entry, "disposition").lower()
            self.records.append(
                DmarcRecord(
                    source_ip=field(entry, "source_ip", ADDRESS_LIMIT),
                    count=number(entry, "count"),
                    disposition=self.shared.setdefault(disposition, disposition),
                    dkim_aligned=field(entry, "dkim").lower() == "pass",
                    spf_aligned=field(entry, "spf").lower() == "pass",
                )
            )
        elif name == "report_metadata":
            if self.metadata is not None:
                raise malformed("two report_metadata")
            self.metadata = (
                field(entry, "org_name"),
                field(entry, "report_id"),
                float(number(entry, "begin")),
                float(number(entry, "end")),
            )
        elif name == "policy_published":
            if self.domain is not None:
                raise malformed("two policy_published")
            domain = field(entry, "domain", DOMAIN_LIMIT).lower().rstrip(".")
            if not domain:
                raise malformed("domain is empty")
            self.domain = domain

    def close(self) -> DmarcReport:
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
    target = ReportTarget(limits.max_records)
    parser = DefusedXMLParser(target=target, forbid_dtd=True)
    # Events straight from expat to the target (names "namespace}local", attributes a
    # flat list): ElementTree's own handlers only rename and build dicts for it.
    expat = parser.parser
    expat.StartElementHandler = target.start
    expat.EndElementHandler = target.end
    expat.CharacterDataHandler = target.data
    try:
        parser.feed(data)
        # close() returns what the target's close() built; typeshed types it as an Element.
        report = cast(DmarcReport, parser.close())
    except DefusedXmlException as error:
        raise Rejected("dmarc", "entities", type(error).__name__) from None
    except ParseError as error:
        raise malformed(str(error)) from None
    return report
