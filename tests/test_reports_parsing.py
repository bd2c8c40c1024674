"""Reading report messages: the RFC examples and reports built from them with known
counts, in every attachment form, through :func:`read_message` of whole MIME messages;
refusals with their reasons; hostile messages read in a child process whose time and
peak memory are measured (tests/reports_hostile.py); and arbitrary bytes never raising.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import random
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mail_exporter.collectors.reports.dmarc import parse_dmarc
from mail_exporter.collectors.reports.limits import Limits
from mail_exporter.collectors.reports.message import MessageContents, read_message
from mail_exporter.collectors.reports.rejection import Rejected
from mail_exporter.collectors.reports.tlsrpt import parse_tlsrpt

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "reports"
RFC7489 = (FIXTURES / "rfc7489-example.xml").read_bytes()
RFC8460 = (FIXTURES / "rfc8460-example.json").read_bytes()
LIMITS = Limits()
# Peak RSS of the child reading one hostile message (Python and the exporter's modules
# take some 65 MB of it; the 100 MB message itself is held while it is refused).
RSS_BUDGET_BYTES = 200 * 1024 * 1024
HANG_GUARD_SECONDS = 120


@dataclass(frozen=True)
class Row:
    source_ip: str
    count: int
    disposition: str
    dkim: str
    spf: str


def dmarc_xml(report_id: str, rows: list[Row], domain: str = "example.com") -> bytes:
    """The RFC 7489 example with its records replaced by ``rows``."""
    records = "".join(
        f"<record><row><source_ip>{r.source_ip}</source_ip><count>{r.count}</count>"
        f"<policy_evaluated><disposition>{r.disposition}</disposition><dkim>{r.dkim}</dkim>"
        f"<spf>{r.spf}</spf></policy_evaluated></row><identifiers><header_from>{domain}"
        "</header_from></identifiers><auth_results><spf><domain>example.com</domain>"
        "<result>pass</result></spf></auth_results></record>"
        for r in rows
    )
    text = RFC7489.decode()
    text = re.sub(r"<record>.*</record>", lambda _: records, text, flags=re.DOTALL)
    text = text.replace("<report_id>7489-c-1</report_id>", f"<report_id>{report_id}</report_id>")
    return text.replace("<domain>example.com</domain>", f"<domain>{domain}</domain>", 1).encode()


def random_rows(seed: int, count: int) -> list[Row]:
    chooser = random.Random(seed)
    return [
        Row(
            f"192.0.2.{chooser.randrange(1, 255)}",
            chooser.randrange(0, 5000),
            chooser.choice(["none", "quarantine", "reject"]),
            chooser.choice(["pass", "fail"]),
            chooser.choice(["pass", "fail"]),
        )
        for _ in range(count)
    ]


def tlsrpt_json(report_id: str, failures: list[tuple[str, int]], successful: int) -> bytes:
    """The RFC 8460 example with ``failures`` as its failure details."""
    document = json.loads(RFC8460)
    document["report-id"] = report_id
    policy = document["policies"][0]
    policy["summary"]["total-successful-session-count"] = successful
    policy["summary"]["total-failure-session-count"] = sum(n for _, n in failures)
    policy["failure-details"] = [
        {"result-type": kind, "sending-mta-ip": "198.51.100.1", "failed-session-count": n}
        for kind, n in failures
    ]
    return json.dumps(document).encode()


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data)


def zipped(*members: tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def mime(*attachments: tuple[bytes, str, str | None], subject: str = "Report") -> bytes:
    """A whole message as a reporter sends it: a text part and ``attachments``
    (content, content type, file name)."""
    mail = EmailMessage()
    mail["From"] = "DMARC Reporter <noreply-dmarc@receiver.example>"
    mail["To"] = "dmarc@example.com"
    mail["Subject"] = subject
    mail["Date"] = "Thu, 01 Jan 2015 12:00:00 +0000"
    mail.set_content("This is an aggregate report.\n")
    for content, content_type, name in attachments:
        maintype, subtype = content_type.split("/")
        mail.add_attachment(content, maintype=maintype, subtype=subtype, filename=name)
    return mail.as_bytes()


def dmarc_sums(contents: MessageContents) -> dict[tuple[str, bool, bool], int]:
    sums: dict[tuple[str, bool, bool], int] = {}
    for report in contents.dmarc:
        for r in report.records:
            key = (r.disposition, r.dkim_aligned, r.spf_aligned)
            sums[key] = sums.get(key, 0) + r.count
    return sums


def expected_sums(rows: list[Row]) -> dict[tuple[str, bool, bool], int]:
    sums: dict[tuple[str, bool, bool], int] = {}
    for r in rows:
        key = (r.disposition, r.dkim == "pass", r.spf == "pass")
        sums[key] = sums.get(key, 0) + r.count
    return sums


def reasons(contents: MessageContents) -> list[tuple[str, str]]:
    return [(r.kind, r.reason) for r in contents.rejected]


# ------------------------------------------------------------------------ the RFC examples


def test_rfc7489_example_counts_match_its_text() -> None:
    report = parse_dmarc(RFC7489, LIMITS)
    counts = [int(n) for n in re.findall(rb"<count>(\d+)</count>", RFC7489)]
    assert (report.reporter, report.report_id, report.domain) == (
        "receiver.example",
        "7489-c-1",
        "example.com",
    )
    assert (report.begin, report.end) == (1420070400.0, 1420156799.0)
    assert [r.count for r in report.records] == counts
    assert sum(r.count for r in report.records) == 18
    assert [(r.dkim_aligned, r.spf_aligned) for r in report.records] == [
        (True, True),
        (False, True),
        (False, False),
    ]
    assert [r.disposition for r in report.records] == ["none", "none", "quarantine"]


def test_rfc8460_example_counts_match_its_text() -> None:
    report = parse_tlsrpt(RFC8460, LIMITS)
    document = json.loads(RFC8460)
    details = document["policies"][0]["failure-details"]
    assert (report.reporter, report.report_id) == ("Company-X", document["report-id"])
    (policy,) = report.policies
    assert (policy.policy_type, policy.policy_domain) == ("sts", "company-y.example")
    assert (policy.successful, policy.failed) == (5326, 303)
    assert dict(policy.failures) == {d["result-type"]: d["failed-session-count"] for d in details}
    assert sum(n for _, n in policy.failures) == policy.failed


# ------------------------------------------------------------------------ attachment forms

ROWS = random_rows(7489, 40)
XML = dmarc_xml("built-1", ROWS)
TLS_FAILURES = [("certificate-expired", 17), ("starttls-not-supported", 4), ("dnssec-invalid", 9)]
JSON = tlsrpt_json("built-2", TLS_FAILURES, 1234)


@pytest.mark.parametrize(
    ("content", "content_type", "name"),
    [
        (XML, "application/xml", "receiver.example!example.com!1!2.xml"),
        (XML, "text/xml", None),
        (gzipped(XML), "application/gzip", "receiver.example!example.com!1!2.xml.gz"),
        (gzipped(XML), "application/x-gzip", None),
        (gzipped(XML), "application/octet-stream", "report.xml.gz"),
        (zipped(("report.xml", XML)), "application/zip", "report.zip"),
        (zipped(("report.xml", XML)), "application/x-zip-compressed", None),
    ],
    ids=["xml", "text-xml", "gzip", "x-gzip", "octet-stream-xml-gz", "zip", "x-zip"],
)
def test_dmarc_report_in_each_attachment_form(
    content: bytes, content_type: str, name: str | None
) -> None:
    contents = read_message(mime((content, content_type, name)), LIMITS)
    assert contents.rejected == ()
    (report,) = contents.dmarc
    assert (report.report_id, report.domain, len(report.records)) == ("built-1", "example.com", 40)
    assert dmarc_sums(contents) == expected_sums(ROWS)
    assert [r.source_ip for r in report.records] == [r.source_ip for r in ROWS]


@pytest.mark.parametrize(
    ("content", "content_type", "name"),
    [
        (gzipped(JSON), "application/tlsrpt+gzip", "company-x!example.com!1!2.json.gz"),
        (JSON, "application/tlsrpt+json", "company-x!example.com!1!2.json"),
        (JSON, "application/json", None),
        (gzipped(JSON), "application/gzip", "report.json.gz"),
    ],
    ids=["tlsrpt-gzip", "tlsrpt-json", "json", "gzip-json"],
)
def test_tlsrpt_report_in_each_attachment_form(
    content: bytes, content_type: str, name: str | None
) -> None:
    contents = read_message(mime((content, content_type, name)), LIMITS)
    assert contents.rejected == ()
    (report,) = contents.tlsrpt
    (policy,) = report.policies
    assert report.report_id == "built-2"
    assert (policy.successful, policy.failed) == (1234, sum(n for _, n in TLS_FAILURES))
    assert list(policy.failures) == TLS_FAILURES


def test_several_reports_in_one_message_all_count() -> None:
    batches = [random_rows(seed, 25 + seed) for seed in range(4)]
    documents = [dmarc_xml(f"multi-{n}", rows) for n, rows in enumerate(batches)]
    raw = mime(
        (documents[0], "text/xml", "a.xml"),
        (gzipped(documents[1]), "application/gzip", "b.xml.gz"),
        (zipped(("c.xml", documents[2]), ("d.xml", documents[3])), "application/zip", "cd.zip"),
        (gzipped(JSON), "application/tlsrpt+gzip", "e.json.gz"),
        (tlsrpt_json("built-3", [("validation-failure", 5)], 7), "application/tlsrpt+json", None),
    )
    contents = read_message(raw, LIMITS)
    assert contents.rejected == ()
    assert [r.report_id for r in contents.dmarc] == ["multi-0", "multi-1", "multi-2", "multi-3"]
    assert dmarc_sums(contents) == expected_sums([row for rows in batches for row in rows])
    assert sum(r.count for rep in contents.dmarc for r in rep.records) == sum(
        row.count for rows in batches for row in rows
    )
    assert [r.report_id for r in contents.tlsrpt] == ["built-2", "built-3"]
    assert sum(p.failed for r in contents.tlsrpt for p in r.policies) == 30 + 5


def test_one_bad_attachment_does_not_hide_the_good_ones() -> None:
    raw = mime(
        (b"<feedback><oops", "text/xml", "bad.xml"),
        (gzipped(XML), "application/gzip", "good.xml.gz"),
        (b"\x1f\x8bnot gzip", "application/gzip", "broken.xml.gz"),
        (JSON, "application/tlsrpt+json", None),
    )
    contents = read_message(raw, LIMITS)
    assert reasons(contents) == [("dmarc", "malformed"), ("dmarc", "compression")]
    assert len(contents.dmarc) == len(contents.tlsrpt) == 1


def test_namespaced_report_reads_as_plain() -> None:
    namespaced = XML.replace(b"<feedback>", b'<feedback xmlns="urn:ietf:params:xml:ns:dmarc-2.0">')
    report = parse_dmarc(namespaced, LIMITS)
    assert sum(r.count for r in report.records) == sum(r.count for r in ROWS)


def test_headers_and_body_for_notification_rules() -> None:
    mail = EmailMessage()
    mail["From"] = "=?utf-8?q?Backup_Server?= <backup@example.com>"
    mail["Subject"] = "=?utf-8?b?QmFja3VwIGpvYiBuaWdodGx5OiBTdWNjZXNzIOKckw==?="
    mail["Date"] = "Sat, 05 Dec 2026 03:15:00 +0100"
    mail.set_content(
        "<html><body><p>Job <b>nightly</b> &amp; friends: Success</p></body></html>", subtype="html"
    )
    contents = read_message(mail.as_bytes(), LIMITS)
    assert contents.sender == "Backup Server <backup@example.com>"
    assert contents.subject == "Backup job nightly: Success ✓"
    assert contents.date == 1796436900.0
    assert contents.body == "Job nightly & friends: Success"
    assert (contents.dmarc, contents.tlsrpt, contents.rejected) == ((), (), ())


def test_headers_cannot_forge_lines_and_bad_dates_are_none() -> None:
    raw = b"From: a@example.com\r\nSubject: ok\x1b[2J\r\nDate: yesterday\r\n\r\nplain body\r\n"
    contents = read_message(raw, LIMITS)
    assert contents.subject == "ok\\x1b[2J"
    long = read_message(b"Subject: " + b"=?utf-8?q?a?= b" * 100_000 + b"\r\n\r\n", LIMITS)
    assert long.subject.startswith("a b a b") and long.subject.endswith("…")
    assert len(long.subject) == 999
    assert contents.date is None
    assert contents.body == "plain body\r\n"


# ------------------------------------------------------------------------ refusals

REQUIRED_DMARC = [
    "org_name",
    "report_id",
    "date_range",
    "begin",
    "end",
    "policy_published",
    "source_ip",
    "count",
    "policy_evaluated",
    "disposition",
]


@pytest.mark.parametrize("element", REQUIRED_DMARC)
def test_dmarc_report_without_a_required_element_is_malformed(element: str) -> None:
    pattern = rf"<{element}>.*?</{element}>"
    stripped = re.sub(pattern.encode(), b"", RFC7489, flags=re.DOTALL)
    assert stripped != RFC7489
    with pytest.raises(Rejected) as refusal:
        parse_dmarc(stripped, LIMITS)
    assert (refusal.value.kind, refusal.value.reason) == ("dmarc", "malformed")


@pytest.mark.parametrize("count", ["-1", "1.5", "+3", "0x10", "", "1e3", "99999999999999999"])
def test_dmarc_count_that_is_not_a_count_is_malformed(count: str) -> None:
    document = RFC7489.replace(b"<count>2</count>", f"<count>{count}</count>".encode())
    with pytest.raises(Rejected) as refusal:
        parse_dmarc(document, LIMITS)
    assert refusal.value.reason == "malformed"


@pytest.mark.parametrize("count", [-1, 1.5, "3", True, None, 2**60])
def test_tlsrpt_count_that_is_not_a_count_is_malformed(count: object) -> None:
    document = json.loads(RFC8460)
    document["policies"][0]["summary"]["total-failure-session-count"] = count
    with pytest.raises(Rejected) as refusal:
        parse_tlsrpt(json.dumps(document).encode(), LIMITS)
    assert (refusal.value.kind, refusal.value.reason) == ("tlsrpt", "malformed")


@pytest.mark.parametrize(
    "path",
    [
        ("organization-name",),
        ("report-id",),
        ("policies",),
        ("policies", 0, "policy"),
        ("policies", 0, "policy", "policy-type"),
        ("policies", 0, "policy", "policy-domain"),
        ("policies", 0, "summary"),
        ("policies", 0, "summary", "total-successful-session-count"),
        ("policies", 0, "failure-details", 1, "result-type"),
        ("policies", 0, "failure-details", 2, "failed-session-count"),
    ],
)
def test_tlsrpt_report_without_a_required_member_is_malformed(path: tuple[str | int, ...]) -> None:
    document = json.loads(RFC8460)
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    del parent[path[-1]]
    with pytest.raises(Rejected) as refusal:
        parse_tlsrpt(json.dumps(document).encode(), LIMITS)
    assert refusal.value.reason == "malformed"


def test_failure_details_of_one_type_are_summed() -> None:
    document = tlsrpt_json("x", [("certificate-expired", 3), ("Certificate-Expired", 4)], 1)
    (policy,) = parse_tlsrpt(document, LIMITS).policies
    assert policy.failures == (("certificate-expired", 7),)


def test_too_many_reports_in_one_message() -> None:
    limits = Limits(max_reports_per_message=2)
    raw = mime(*[(dmarc_xml(f"r{n}", ROWS[:2]), "text/xml", f"{n}.xml") for n in range(3)])
    contents = read_message(raw, limits)
    assert len(contents.dmarc) == 2
    assert reasons(contents) == [("message", "too_many_records")]


def test_reports_of_a_message_share_one_inflation_budget() -> None:
    limits = Limits(max_report_bytes=len(XML), max_message_report_bytes=len(XML) * 2)
    raw = mime(*[(gzipped(XML), "application/gzip", f"{n}.xml.gz") for n in range(3)])
    contents = read_message(raw, limits)
    assert len(contents.dmarc) == 2
    assert reasons(contents) == [("dmarc", "attachment_too_large")]


def test_encrypted_zip_member_is_refused() -> None:
    archive = bytearray(zipped(("report.xml", XML)))
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = archive.find(signature) + offset
        archive[at] |= 0x1
    contents = read_message(mime((bytes(archive), "application/zip", "r.zip")), LIMITS)
    assert reasons(contents) == [("message", "archive")]


def test_refusals_keep_no_traceback() -> None:
    contents = read_message(mime((b"<feedback>", "text/xml", "r.xml")), LIMITS)
    (refusal,) = contents.rejected
    assert refusal.__traceback__ is None and refusal.__context__ is None


# ------------------------------------------------------------------------ hostile messages

HOSTILE = [
    ("zip_bomb", [("message", "attachment_too_large")]),
    ("zip_bomb_lying", [("message", "archive")]),
    ("zip_bomb_layers", [("message", "archive")]),
    ("gzip_bomb", [("dmarc", "attachment_too_large")]),
    ("gzip_bomb_layers", [("dmarc", "archive")]),
    ("billion_laughs", [("dmarc", "entities")]),
    ("external_entity", [("dmarc", "entities")]),
    ("huge_message", [("message", "too_large")]),
    ("invalid_xml", [("dmarc", "malformed")]),
    ("invalid_json", [("tlsrpt", "malformed")]),
    ("too_many_records", [("dmarc", "too_many_records")]),
    ("too_many_members", [("message", "archive")]),
    ("deep_xml", [("dmarc", "malformed")]),
    ("wide_xml", [("dmarc", "malformed")]),
    ("attribute_xml", [("dmarc", "malformed")]),
    ("many_names", [("dmarc", "malformed")]),
    ("json_objects", [("tlsrpt", "attachment_too_large")]),
    ("deep_mime", [("message", "malformed")]),
    ("deep_rfc822", [("message", "malformed")]),
    ("too_many_lines", [("message", "malformed")]),
    ("many_lines_nested", []),
    ("long_header", []),
]


@pytest.mark.parametrize(("case", "expected"), HOSTILE, ids=[case for case, _ in HOSTILE])
def test_hostile_message_is_refused_within_time_and_memory(
    case: str, expected: list[tuple[str, str]]
) -> None:
    child = subprocess.run(
        [sys.executable, "-m", "tests.reports_hostile", case],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_SECONDS,
        check=False,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    measured = json.loads(child.stdout)
    assert [tuple(r) for r in measured["rejected"]] == expected
    assert measured["reports"] == 0
    assert measured["peak_rss_bytes"] < RSS_BUDGET_BYTES, measured


# ------------------------------------------------------------------------ arbitrary input


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_read_message_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    assert isinstance(read_message(raw, LIMITS), MessageContents)


FORMS = ["text/xml", "application/gzip", "application/zip", "application/tlsrpt+json"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048), st.sampled_from(FORMS), st.booleans())
def test_any_attachment_content_is_read_or_refused(data: bytes, form: str, packed: bool) -> None:
    content = data
    if packed and form == "application/gzip":
        content = gzipped(data)
    elif packed and form == "application/zip":
        content = zipped(("r.xml", data))
    contents = read_message(mime((content, form, None)), LIMITS)
    assert len(contents.dmarc) + len(contents.tlsrpt) + len(contents.rejected) <= 1


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=2048),
        st.text(alphabet="<>/=\"'&;! abcdefrolgnt_x", max_size=300).map(str.encode),
    )
)
def test_parsers_raise_only_refusals(data: bytes) -> None:
    for parse in (parse_dmarc, parse_tlsrpt):
        with contextlib.suppress(Rejected):
            parse(data, LIMITS)
