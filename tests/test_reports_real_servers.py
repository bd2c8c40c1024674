"""The reports collector against real servers: Postfix delivers report mails into Dovecot
over LMTP, as a receiver's mail would arrive, and the collector reads them over IMAPS.

The reports are the RFC 7489 and RFC 8460 examples (tests/fixtures/reports/) and
reports the tests build with known counts, attached in every form reporters use; the
expected counters are summed here from the records the tests wrote, independently of
the collector's code. The servers are private to this module, and each test starts
from an empty mailbox and a state file of its own.
"""

from __future__ import annotations

import asyncio
import gzip
import imaplib
import io
import itertools
import json
import os
import smtplib
import ssl
import stat
import time
import tracemalloc
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mail_exporter.cli import main
from mail_exporter.collectors.base import CollectorError
from mail_exporter.collectors.reports.collector import ReportsCollector
from mail_exporter.collectors.reports.config import ReportsConfig
from mail_exporter.config.root import parse_config
from tests.conftest import new_postfix
from tests.promtool import check_metrics
from tests.realservers.dovecot import Dovecot
from tests.realservers.oauth import TokenServer
from tests.realservers.pki import PKI
from tests.realservers.postfix import Postfix
from tests.served import get, metrics_with, served_exporter
from tests.test_dashboards import METRICS_DOC, documented_metrics
from tests.test_oauth2_logins import client_credentials
from tests.test_roundtrip_real_servers import RestrictedDovecot

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent / "fixtures" / "reports"
PASSWORD_VARIABLE = "REPORTS_PASSWORD"
PROCESSED = "Processed"
DOMAINS = ("example.com", "company-y.example")
ARRIVAL_SECONDS = 30.0
"""Hang guard for a delivery through Postfix into Dovecot (about 0.03 s on loopback)."""
HOSTILE_PASS_BYTES = 24 * 1024 * 1024
"""What a pass over the hostile messages may allocate at its peak (Python's allocations)."""
PASS_SECONDS = 60.0
"""Hang guard for one pass (a few hundred milliseconds here)."""

Record = tuple[str, int, str, bool, bool]
"""A DMARC record as the tests write it: source IP, count, disposition, DKIM, SPF aligned."""


@dataclass
class Mail:
    dovecot: Dovecot
    postfix: Postfix
    pki: PKI


@pytest.fixture(scope="module")
def mail(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[Mail]:
    dovecot = Dovecot(tmp_path_factory.mktemp("reports-dovecot"), pki.server_cert, pki.server_key)
    dovecot.start()
    postfix = new_postfix(tmp_path_factory, pki, dovecot, name="reports-postfix")
    try:
        postfix.start()
        yield Mail(dovecot, postfix, pki)
    finally:
        postfix.stop()
        dovecot.stop()


@pytest.fixture
def empty(mail: Mail, monkeypatch: pytest.MonkeyPatch) -> Mail:
    """The mail servers with an empty INBOX and no other mailbox."""
    monkeypatch.setenv(PASSWORD_VARIABLE, mail.dovecot.password)
    with imap(mail.dovecot) as client:
        _, listing = client.list()
        for line in listing:
            name = bytes(line).decode().rsplit(" ", 1)[-1].strip('"')
            if name != "INBOX":
                client.delete(f'"{name}"')
        _, count = client.select("INBOX")
        if int(count[0] or 0):
            client.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
            client.expunge()
    return mail


# --- The mailbox from the side, with Python's imaplib ----------------------------------


@contextmanager
def imap(dovecot: Dovecot) -> Iterator[imaplib.IMAP4_SSL]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client = imaplib.IMAP4_SSL("127.0.0.1", dovecot.imaps_port, ssl_context=context)
    client.login(dovecot.user, dovecot.password)
    try:
        yield client
    finally:
        client.logout()


def contents(dovecot: Dovecot, mailbox: str) -> dict[str, str]:
    """Subject → flags of every message in ``mailbox`` (none when it does not exist)."""
    with imap(dovecot) as client:
        status, _ = client.select(f'"{mailbox}"', readonly=True)
        if status != "OK":
            return {}
        _, data = client.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    found = {}
    for item in data:
        if isinstance(item, tuple):
            flags = item[0].decode()
            subject = item[1].decode().split(":", 1)[1].strip()
            listed = flags[flags.index("FLAGS (") + 7 : flags.index(")")].split()
            found[subject] = " ".join(flag for flag in listed if flag != "\\Recent")
    return found


def deliver(mail: Mail, *messages: EmailMessage) -> None:
    """Send through the real Postfix and wait until Dovecot has them all."""
    with imap(mail.dovecot) as client:
        client.select("INBOX", readonly=True)
        before = len(client.search(None, "ALL")[1][0].split())
    with smtplib.SMTP("127.0.0.1", mail.postfix.smtp_port, timeout=30) as smtp:
        for message in messages:
            smtp.send_message(message, "reports@receiver.example", [mail.dovecot.user])
    deadline = time.monotonic() + ARRIVAL_SECONDS
    while True:
        with imap(mail.dovecot) as client:
            client.select("INBOX", readonly=True)
            now = len(client.search(None, "ALL")[1][0].split())
        if now >= before + len(messages):
            return
        assert time.monotonic() < deadline, f"{now - before} of {len(messages)} arrived"
        time.sleep(0.1)


# --- Reports and messages the tests build -------------------------------------------


def dmarc_xml(reporter: str, report_id: str, domain: str, records: list[Record]) -> bytes:
    rows = "".join(
        f"<record><row><source_ip>{ip}</source_ip><count>{count}</count><policy_evaluated>"
        f"<disposition>{disposition}</disposition><dkim>{'pass' if dkim else 'fail'}</dkim>"
        f"<spf>{'pass' if spf else 'fail'}</spf></policy_evaluated></row>"
        f"<identifiers><header_from>{domain}</header_from></identifiers>"
        f"<auth_results><spf><domain>{domain}</domain><result>pass</result></spf></auth_results>"
        "</record>"
        for ip, count, disposition, dkim, spf in records
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><feedback><version>1.0</version>'
        f"<report_metadata><org_name>{reporter}</org_name><email>d@{reporter}</email>"
        f"<report_id>{report_id}</report_id><date_range><begin>1700000000</begin>"
        "<end>1700086399</end></date_range></report_metadata>"
        f"<policy_published><domain>{domain}</domain><adkim>r</adkim><aspf>r</aspf>"
        f"<p>none</p><sp>none</sp><pct>100</pct></policy_published>{rows}</feedback>"
    ).encode()


def tlsrpt_json(
    reporter: str, report_id: str, domain: str, successful: int, failures: dict[str, int]
) -> bytes:
    details = [
        {"result-type": kind, "sending-mta-ip": "192.0.2.9", "failed-session-count": count}
        for kind, count in failures.items()
    ]
    report = {
        "organization-name": reporter,
        "date-range": {
            "start-datetime": "2026-01-01T00:00:00Z",
            "end-datetime": "2026-01-01T23:59:59Z",
        },
        "contact-info": f"tlsrpt@{reporter}",
        "report-id": report_id,
        "policies": [
            {
                "policy": {"policy-type": "sts", "policy-domain": domain},
                "summary": {
                    "total-successful-session-count": successful,
                    "total-failure-session-count": sum(failures.values()),
                },
                "failure-details": details,
            }
        ],
    }
    return json.dumps(report).encode()


def zipped(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


Attachment = tuple[bytes, str, str]
"""Data, content type, file name."""


def message(
    subject: str, *attachments: Attachment, body: str = "", sender: str = ""
) -> EmailMessage:
    built = EmailMessage()
    built["From"] = sender or "noreply-dmarc@receiver.example"
    built["To"] = "dmarc@test.local"
    built["Subject"] = subject
    built["Date"] = formatdate(localtime=False)
    built.set_content(body or f"{subject}\n")
    for data, content_type, filename in attachments:
        maintype, subtype = content_type.split("/")
        built.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return built


def as_xml(data: bytes, name: str) -> Attachment:
    return data, "application/xml", f"{name}.xml"


def as_gzip(data: bytes, name: str) -> Attachment:
    return gzip.compress(data), "application/gzip", f"{name}.xml.gz"


def as_zip(data: bytes, name: str) -> Attachment:
    return zipped(f"{name}.xml", data), "application/zip", f"{name}.zip"


def as_tlsrpt_gzip(data: bytes, name: str) -> Attachment:
    return gzip.compress(data), "application/tlsrpt+gzip", f"{name}.json.gz"


def as_tlsrpt_json(data: bytes, name: str) -> Attachment:
    return data, "application/tlsrpt+json", f"{name}.json"


_ids = itertools.count(1)


def built_dmarc(
    reporter: str, records: list[Record], domain: str = "example.com"
) -> tuple[bytes, str]:
    report_id = f"test-{next(_ids)}"
    return dmarc_xml(reporter, report_id, domain, records), report_id


# --- The expected counters, from what the tests wrote --------------------------------


@dataclass
class Expected:
    messages: Counter[tuple[str, str, str, str, str]]
    unaligned: Counter[tuple[str, str]]
    reports: Counter[tuple[str, str]]

    @classmethod
    def empty(cls) -> Expected:
        return cls(Counter(), Counter(), Counter())

    def add(self, reporter: str, records: list[Record], domain: str = "example.com") -> None:
        self.reports[domain, reporter.lower()] += 1
        for ip, count, disposition, dkim, spf in records:
            flags = ("true" if dkim else "false", "true" if spf else "false")
            self.messages[(domain, reporter.lower(), disposition, *flags)] += count
            if not (dkim or spf):
                self.unaligned[domain, ip] += count


RFC7489_RECORDS: list[Record] = [
    ("192.0.2.1", 2, "none", True, True),
    ("198.51.100.7", 5, "none", False, True),
    ("203.0.113.99", 11, "quarantine", False, False),
]
"""What tests/fixtures/reports/rfc7489-example.xml holds (its README says so too)."""


def samples(collector: ReportsCollector) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Family name (as exposed) → label pairs → value, of one collection."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in collector.collect():
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def by(
    found: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, *labels: str
) -> Counter[tuple[str, ...]]:
    """The samples of ``name`` summed by ``labels``, zeros left out."""
    summed: Counter[tuple[str, ...]] = Counter()
    for pairs, value in found.get(name, {}).items():
        if value:
            values = dict(pairs)
            summed[tuple(values[label] for label in labels)] += int(value)
    return summed


# --- The collector under test --------------------------------------------------------


def config_text(
    dovecot: Dovecot,
    pki: PKI,
    state_file: Path,
    mailbox: str = "INBOX",
    processed: str | None = PROCESSED,
    **extra: object,
) -> str:
    section = {
        "enabled": True,
        "address": f"127.0.0.1:{dovecot.imaps_port}",
        "module": "reports_imaps",
        "mailbox": mailbox,
        "state_file": str(state_file),
        "domains": list(DOMAINS),
        "timeout": "60s",
        "notifications": [
            {
                "name": "nightly-backup",
                "from": r"backup@example\.com",
                "subject": "^Backup job nightly",
                "statuses": {"success": "Success", "failure": "Failed|Error"},
            }
        ],
        **extra,
    }
    if processed is not None:
        section["processed_mailbox"] = processed
    module = {
        "protocol": "imap",
        "tls": "implicit",
        "timeout": "10s",
        "tls_config": {"ca_file": str(pki.ca_file)},
        "auth": {"username": dovecot.user, "password_env": PASSWORD_VARIABLE},
    }
    return json.dumps({"modules": {"reports_imaps": module}, "collectors": {"reports": section}})


def section(mail: Mail, state_file: Path, **options: Any) -> ReportsConfig:
    config = parse_config(config_text(mail.dovecot, mail.pki, state_file, **options))
    reports = config.collectors.section("reports")
    assert isinstance(reports, ReportsConfig)
    return reports


def collector(
    settings: ReportsConfig, previous: ReportsCollector | None = None
) -> ReportsCollector:
    """A collector that runs a pass, in the caller's thread, at every collection."""
    ticks = itertools.count()
    return ReportsCollector(
        settings,
        previous=previous,
        clock=lambda: next(ticks) * 1e9,
        background=lambda work: work(),
    )


def run_pass(reports: ReportsCollector) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    started = time.monotonic()
    found = samples(reports)
    assert time.monotonic() - started < PASS_SECONDS
    return found


# --- Tests ---------------------------------------------------------------------------


def test_every_report_form_is_counted_and_filed(empty: Mail, tmp_path: Path) -> None:
    expected = Expected.empty()
    rfc7489 = (FIXTURES / "rfc7489-example.xml").read_bytes()
    rfc8460 = (FIXTURES / "rfc8460-example.json").read_bytes()
    expected.add("receiver.example", RFC7489_RECORDS)
    gz_records: list[Record] = [
        ("192.0.2.10", 40, "none", True, True),
        ("192.0.2.66", 7, "reject", False, False),
        ("2001:db8::66", 3, "quarantine", False, False),
    ]
    zip_records: list[Record] = [
        ("192.0.2.10", 100, "none", True, False),
        ("192.0.2.66", 9, "reject", False, False),
    ]
    sub_records: list[Record] = [("198.51.100.20", 4, "none", False, False)]
    gz_report, _ = built_dmarc("Mail.Example", gz_records)
    zip_report, _ = built_dmarc("Outlook.example", zip_records)
    # a subdomain's report counts for the configured domain it is under
    sub_report, _ = built_dmarc("Mail.Example", sub_records, domain="lists.example.com")
    expected.add("Mail.Example", gz_records)
    expected.add("Outlook.example", zip_records)
    expected.add("Mail.Example", sub_records)
    tls_plain = tlsrpt_json(
        "Company-Z", "tls-1", "company-y.example", 1000, {"certificate-expired": 4}
    )
    unknown, _ = built_dmarc(
        "Mail.Example", [("192.0.2.1", 5, "none", True, True)], "elsewhere.example"
    )
    backup = message(
        "Backup job nightly: Success", body="All files saved.", sender="Backup <backup@example.com>"
    )
    deliver(
        empty,
        message("Report domain: example.com (RFC 7489)", as_xml(rfc7489, "rfc7489")),
        message("TLS report (RFC 8460)", as_tlsrpt_gzip(rfc8460, "rfc8460")),
        message("Report gzip", as_gzip(gz_report, "gz")),
        message("Report zip and subdomain", as_zip(zip_report, "zip"), as_gzip(sub_report, "sub")),
        message("TLS report plain", as_tlsrpt_json(tls_plain, "tls-plain")),
        message("Report for another domain", as_gzip(unknown, "unknown")),
        message("Hello, not a report"),
        backup,
    )
    found = run_pass(collector(section(empty, tmp_path / "state.json")))

    assert by(found, "mail_dmarc_report_messages_total", "domain", "reporter", "disposition",
              "dkim_aligned", "spf_aligned") == +expected.messages  # fmt: skip
    assert (
        by(found, "mail_dmarc_unaligned_messages_total", "domain", "source") == expected.unaligned
    )
    assert by(found, "mail_dmarc_reports_total", "domain", "reporter") == +expected.reports
    tls = by(found, "mail_tlsrpt_sessions_total", "domain", "policy_type", "result")
    assert tls == {
        ("company-y.example", "sts", "success"): 5326 + 1000,
        ("company-y.example", "sts", "certificate-expired"): 100 + 4,
        ("company-y.example", "sts", "starttls-not-supported"): 200,
        ("company-y.example", "sts", "validation-failure"): 3,
    }
    assert by(found, "mail_tlsrpt_reports_total", "domain", "reporter") == {
        ("company-y.example", "company-x"): 1,
        ("company-y.example", "company-z"): 1,
    }
    assert by(found, "mail_reports_messages_total", "result") == {
        ("processed",): 6,
        ("rejected",): 1,
        ("ignored",): 1,
    }
    assert by(found, "mail_reports_rejected_total", "kind", "reason") == {
        ("dmarc", "unknown_domain"): 1
    }
    assert by(found, "mail_notifications_total", "rule", "status") == {
        ("nightly-backup", "success"): 1
    }
    sent = datetime.strptime(str(backup["Date"]), "%a, %d %b %Y %H:%M:%S %z")
    last = found["mail_notification_last_timestamp_seconds"]
    assert last == {(("rule", "nightly-backup"), ("status", "success")): sent.timestamp()}

    documented = documented_metrics(METRICS_DOC.read_text(encoding="utf-8"))
    assert set(found) - set(documented) == set()
    assert len(found) == 10, sorted(found)  # every family, counters at 0 where known

    left = contents(empty.dovecot, "INBOX")
    assert left == {"Report for another domain": "", "Hello, not a report": ""}, left
    filed = contents(empty.dovecot, PROCESSED)
    assert len(filed) == 6 and "Backup job nightly: Success" in filed


def test_a_restart_between_passes_neither_recounts_nor_skips(empty: Mail, tmp_path: Path) -> None:
    """Flagging instead of moving: the messages stay, and only the state file tells the
    second collector (a new process's) where the first stopped."""
    state = tmp_path / "state.json"
    settings = section(empty, state, processed=None)
    first_records: list[Record] = [
        ("192.0.2.30", 12, "none", True, True),
        ("192.0.2.31", 2, "none", False, False),
    ]
    first, first_id = built_dmarc("Mail.Example", first_records)
    deliver(empty, message("First", as_gzip(first, "first")))
    before = run_pass(collector(settings))
    assert by(before, "mail_dmarc_report_messages_total", "spf_aligned") == {
        ("true",): 12,
        ("false",): 2,
    }
    assert state.exists() and stat.S_IMODE(state.stat().st_mode) == 0o600

    second_records: list[Record] = [("192.0.2.40", 30, "reject", False, False)]
    second, _ = built_dmarc("Mail.Example", second_records)
    resent = dmarc_xml("Mail.Example", first_id, "example.com", first_records)  # seen before
    deliver(
        empty,
        message("Second", as_zip(second, "second")),
        message("Again", as_xml(resent, "again")),
    )
    after = run_pass(collector(settings))  # a new instance: counters from 0, the same state

    expected = Expected.empty()
    expected.add("Mail.Example", second_records)
    assert by(after, "mail_dmarc_report_messages_total", "domain", "reporter", "disposition",
              "dkim_aligned", "spf_aligned") == expected.messages  # fmt: skip
    assert by(after, "mail_reports_duplicates_total", "kind") == {("dmarc",): 1}
    assert by(after, "mail_reports_messages_total", "result") == {("processed",): 2}
    flags = contents(empty.dovecot, "INBOX")
    assert all("$MailExporterProcessed" in flags[name] for name in ("First", "Second", "Again"))
    assert not any("\\Seen" in value for value in flags.values()), flags  # BODY.PEEK


def test_a_new_uidvalidity_rereads_the_mailbox_counting_each_report_once(
    empty: Mail, tmp_path: Path
) -> None:
    """The mailbox deleted and made again (restored from a backup, say): every message is
    read again, and only the report not counted before counts."""
    mailbox = "Reports"
    settings = section(empty, tmp_path / "state.json", mailbox=mailbox, processed=None)
    reports = collector(settings)
    first, _ = built_dmarc("Mail.Example", [("192.0.2.50", 6, "none", True, True)])
    second, _ = built_dmarc("Mail.Example", [("192.0.2.51", 8, "none", True, True)])
    raw = [
        message(f"Report {n}", as_gzip(data, f"r{n}")).as_bytes()
        for n, data in enumerate((first, second))
    ]
    with imap(empty.dovecot) as client:
        client.create(mailbox)
        for data in raw:
            client.append(mailbox, "", imaplib.Time2Internaldate(time.time()), data)
        validity = uidvalidity(client, mailbox)
    assert by(run_pass(reports), "mail_dmarc_report_messages_total", "spf_aligned") == {
        ("true",): 14
    }

    third, _ = built_dmarc("Mail.Example", [("192.0.2.52", 20, "none", True, True)])
    with imap(empty.dovecot) as client:
        for _ in range(20):  # Dovecot draws UIDVALIDITY from the clock: a second apart
            client.delete(mailbox)
            client.create(mailbox)
            if uidvalidity(client, mailbox) != validity:
                break
            time.sleep(0.5)
        assert uidvalidity(client, mailbox) != validity
        for data in [*raw, message("Report 2", as_gzip(third, "r2")).as_bytes()]:
            client.append(mailbox, "", imaplib.Time2Internaldate(time.time()), data)
    found = run_pass(reports)
    assert by(found, "mail_dmarc_report_messages_total", "spf_aligned") == {("true",): 34}
    assert by(found, "mail_reports_duplicates_total", "kind") == {("dmarc",): 2}
    assert by(found, "mail_dmarc_reports_total", "reporter") == {("mail.example",): 3}


def uidvalidity(client: imaplib.IMAP4_SSL, mailbox: str) -> int:
    _, data = client.status(mailbox, "(UIDVALIDITY)")
    return int(bytes(data[0]).split(b"UIDVALIDITY ")[1].rstrip(b")"))


def test_hostile_messages_are_refused_and_the_rest_of_the_pass_goes_on(
    empty: Mail, tmp_path: Path
) -> None:
    bomb = zipped("bomb.xml", b"<" + b"a" * (64 * 1024 * 1024))  # 64 MiB from some 64 KiB
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        b"<feedback>&lol2;</feedback>"
    )
    good_records: list[Record] = [("192.0.2.60", 5, "none", True, True)]
    good, _ = built_dmarc("Mail.Example", good_records)
    oversize = os.urandom(600 * 1024)
    deliver(
        empty,
        message("Zip bomb", (bomb, "application/zip", "bomb.zip")),
        message("Oversize", (oversize, "application/gzip", "big.xml.gz")),
        message("Laughs", as_xml(laughs, "laughs")),
        message("Broken gzip", (b"\x1f\x8b\x08\x00broken", "application/gzip", "broken.xml.gz")),
        message("Good", as_gzip(good, "good")),
    )
    settings = section(
        empty, tmp_path / "state.json", max_message_bytes=512 * 1024, max_report_bytes=1024 * 1024
    )
    reports = collector(settings)
    tracemalloc.start()
    try:
        found = run_pass(reports)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The bomb would take 64 MiB unpacked: the pass stays far below that.
    assert peak < HOSTILE_PASS_BYTES, peak
    assert by(found, "mail_reports_rejected_total", "kind", "reason") == {
        ("message", "attachment_too_large"): 1,  # a zip's kind is unknown until unpacked
        ("message", "too_large"): 1,
        ("dmarc", "entities"): 1,
        ("dmarc", "compression"): 1,
    }
    assert by(found, "mail_reports_messages_total", "result") == {
        ("rejected",): 4,
        ("processed",): 1,
    }
    assert by(found, "mail_dmarc_report_messages_total", "reporter") == {("mail.example",): 5}
    left = contents(empty.dovecot, "INBOX")
    assert left == dict.fromkeys(("Zip bomb", "Oversize", "Laughs", "Broken gzip"), ""), left


def test_an_unreadable_state_file_stops_the_pass_and_says_so(
    empty: Mail, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state.json"
    state.write_text("{not json")
    report, _ = built_dmarc("Mail.Example", [("192.0.2.70", 1, "none", True, True)])
    deliver(empty, message("Waiting", as_gzip(report, "waiting")))
    reports = collector(section(empty, state))
    with pytest.raises(CollectorError, match=f"state file {state}"):
        reports.collect()
    assert f"state file {state}" in caplog.text
    assert contents(empty.dovecot, "INBOX") == {"Waiting": ""}  # nothing read or filed
    state.unlink()  # the way to start over
    assert by(run_pass(reports), "mail_reports_messages_total", "result") == {("processed",): 1}


def test_a_reload_hands_the_counters_over_and_a_changed_module_rebuilds(
    empty: Mail, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    report, _ = built_dmarc("Mail.Example", [("192.0.2.80", 3, "none", True, True)])
    deliver(empty, message("Before", as_gzip(report, "before")))
    old = collector(section(empty, state))
    run_pass(old)
    changed_module = json.loads(config_text(empty.dovecot, empty.pki, state))
    changed_module["modules"]["reports_imaps"]["timeout"] = "11s"
    reloaded = parse_config(json.dumps(changed_module)).collectors.section("reports")
    assert reloaded != section(empty, state)  # so the collector set rebuilds it
    assert section(empty, state) == section(empty, state)
    assert isinstance(reloaded, ReportsConfig) and reloaded.imap_module is not None
    assert reloaded.imap_module.timeout_seconds == 11
    later, _ = built_dmarc("Mail.Example", [("192.0.2.81", 4, "none", True, True)])
    deliver(empty, message("After", as_gzip(later, "after")))
    found = run_pass(collector(reloaded, previous=old))
    assert by(found, "mail_dmarc_report_messages_total", "reporter") == {("mail.example",): 7}


def test_the_real_process_serves_the_reports_metrics(empty: Mail, tmp_path: Path) -> None:
    report, _ = built_dmarc("Mail.Example", [("192.0.2.90", 9, "quarantine", False, False)])
    deliver(empty, message("Served", as_gzip(report, "served")))
    config = tmp_path / "config.yml"
    config.write_text(config_text(empty.dovecot, empty.pki, tmp_path / "state.json"))
    environment = {**os.environ, PASSWORD_VARIABLE: empty.dovecot.password}
    with served_exporter(tmp_path, config, env=environment) as served:
        lines = metrics_with(served, {
            'mail_exporter_collector_success{collector="reports"} 1.0',
            'mail_dmarc_unaligned_messages_total{domain="example.com",source="192.0.2.90"} 9.0',
        })  # fmt: skip
        asyncio.run(check_metrics(get(served.port, "/metrics").body))
    assert 'mail_reports_messages_total{result="processed"} 1.0' in lines


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"module": "missing"}, "collectors.reports.module (line 1): unknown module 'missing'"),
        ({"module": "smtp"}, "module 'smtp' must have protocol imap"),
        ({"module": "no_login"}, "module 'no_login' needs auth"),
        ({"domains": []}, "collectors.reports.domains (line 1): an enabled reports collector needs domains"),
        ({"notifications": [{"name": "x", "subject": "("}]}, "invalid regular expression '('"),
        ({"notifications": [{"name": "x", "subject": "a", "statuses": {"ok": "[a"}}]},
         "collectors.reports.notifications[0].statuses.ok (line 1): invalid regular expression"),
        ({"address": None}, "an enabled reports collector needs address"),
        ({"processed_mailbox": "INBOX"}, "processed_mailbox must be another mailbox"),
    ],
)  # fmt: skip
def test_check_config_lists_the_reports_problems(
    mail: Mail, tmp_path: Path, change: dict[str, object], problem: str
) -> None:
    data = json.loads(config_text(mail.dovecot, mail.pki, tmp_path / "state.json"))
    data["modules"]["smtp"] = {"protocol": "smtp"}
    data["modules"]["no_login"] = {"protocol": "imap", "tls": "implicit"}
    data["collectors"]["reports"].update(change)
    data["collectors"]["reports"] = {
        k: v for k, v in data["collectors"]["reports"].items() if v is not None
    }
    config = tmp_path / "config.yml"
    config.write_text(json.dumps(data))
    result = CliRunner().invoke(main, ["check-config", str(config)])
    assert result.exit_code == 1
    assert problem in result.output, result.output


def test_an_oauth2_module_logs_in_with_a_token(
    token_dovecot: Dovecot,
    token_server: TokenServer,
    pki: PKI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The login the round trip and the probes share: XOAUTH2 with a token the collector's
    own broker fetched from the token server."""
    mailbox = f"OAuthReports{next(_ids)}"
    report, _ = built_dmarc("Mail.Example", [("192.0.2.95", 13, "none", True, True)])
    with imap(token_dovecot) as client:
        client.create(mailbox)
        raw = message("By token", as_gzip(report, "token")).as_bytes()
        client.append(mailbox, "", imaplib.Time2Internaldate(time.time()), raw)
    data = json.loads(config_text(token_dovecot, pki, tmp_path / "state.json", mailbox=mailbox))
    data["modules"]["reports_imaps"]["auth"] = {
        "username": token_dovecot.user,
        "mechanism": "xoauth2",
        "oauth2": client_credentials(token_server, tmp_path),
    }
    settings = parse_config(json.dumps(data)).collectors.section("reports")
    assert isinstance(settings, ReportsConfig)
    found = run_pass(collector(settings))
    assert by(found, "mail_dmarc_report_messages_total", "reporter") == {("mail.example",): 13}
    assert contents(token_dovecot, PROCESSED) == {"By token": ""}


def test_without_move_processed_messages_are_flagged_in_place(
    tmp_path_factory: pytest.TempPathFactory,
    pki: PKI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    capabilities = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE NAMESPACE LITERAL+ UIDPLUS"
    dovecot = RestrictedDovecot(
        tmp_path_factory.mktemp("dovecot"), pki.server_cert, pki.server_key, capabilities
    )
    dovecot.start()
    try:
        monkeypatch.setenv(PASSWORD_VARIABLE, dovecot.password)
        report, _ = built_dmarc("Mail.Example", [("192.0.2.96", 2, "none", True, True)])
        with imap(dovecot) as client:
            for raw in (message("No MOVE", as_gzip(report, "r")), message("Not a report")):
                client.append("INBOX", "", imaplib.Time2Internaldate(time.time()), raw.as_bytes())
        data = config_text(dovecot, pki, tmp_path / "state.json")  # with processed_mailbox
        settings = parse_config(data).collectors.section("reports")
        assert isinstance(settings, ReportsConfig)
        found = run_pass(collector(settings))
        assert by(found, "mail_reports_messages_total", "result") == {
            ("processed",): 1,
            ("ignored",): 1,
        }
        assert contents(dovecot, "INBOX") == {
            "No MOVE": "$MailExporterProcessed",
            "Not a report": "",
        }
        assert contents(dovecot, PROCESSED) == {}  # never made
    finally:
        dovecot.stop()
