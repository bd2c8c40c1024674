"""The reports collector's label bounds and state file, on crafted reports: whatever a
report says, every label value is a configured name, one of a fixed set, one of the
first few names admitted, or ``other``; the state file stays bounded and private."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from mail_exporter.collectors.reports.config import ReportsConfig
from mail_exporter.collectors.reports.dmarc import DmarcRecord, DmarcReport
from mail_exporter.collectors.reports.state import (
    MAX_REPORT_IDS,
    ReportsState,
    StateError,
    load_state,
    report_key,
    save_state,
)
from mail_exporter.collectors.reports.tally import Tally, configured_domain
from mail_exporter.collectors.reports.tlsrpt import TlsRptPolicy, TlsRptReport


def settings(**options: object) -> ReportsConfig:
    return ReportsConfig.model_validate({"domains": ["example.com", "example.org"], **options})


def unaligned(ip: str, count: int) -> DmarcRecord:
    return DmarcRecord(ip, count, "none", False, False)


def dmarc(
    reporter: str, report_id: str, *records: DmarcRecord, domain: str = "example.com"
) -> DmarcReport:
    return DmarcReport(reporter, report_id, domain, 0.0, 1.0, records)


def test_sources_beyond_the_top_of_their_first_pass_are_other() -> None:
    tally = Tally(settings(top_sources=2))
    first = tally.begin(ReportsState())
    first.dmarc(dmarc("r", "1", unaligned("192.0.2.1", 5), unaligned("192.0.2.2", 50),
                      unaligned("192.0.2.3", 9), unaligned("not an address", 100)))  # fmt: skip
    tally.commit(first)
    second = tally.begin(ReportsState())
    second.dmarc(dmarc("r", "2", unaligned("192.0.2.1", 1000), unaligned("192.0.2.3", 1)))
    second.dmarc(dmarc("r", "3", unaligned("192.0.2.99", 7), domain="mail.example.org"))
    tally.commit(second)
    counters, _ = tally.snapshot()
    assert dict(counters.unaligned) == {
        ("example.com", "192.0.2.2"): 50,
        ("example.com", "192.0.2.3"): 10,
        ("example.com", "other"): 5 + 100 + 1000,
        ("example.org", "192.0.2.99"): 7,  # each domain has a top of its own
    }


def test_reporters_beyond_the_limit_and_unprintable_names_are_other() -> None:
    tally = Tally(settings(max_reporters=2))
    counted = tally.begin(ReportsState())
    for index, name in enumerate(["Google.com", "x\u202eevil", "Yahoo", "Third", "GOOGLE.COM "]):
        counted.dmarc(dmarc(name, str(index), DmarcRecord("192.0.2.1", 1, "None", True, True)))
    tally.commit(counted)
    counters, _ = tally.snapshot()
    assert dict(counters.dmarc_reports) == {
        ("example.com", "google.com"): 2,
        ("example.com", "yahoo"): 1,
        ("example.com", "other"): 2,
    }
    # an unknown disposition is other too
    assert {key[2] for key in counters.dmarc_messages} == {"other"}


def test_a_reload_keeps_the_admitted_names_within_the_new_bounds() -> None:
    tally = Tally(settings(max_reporters=5))
    counted = tally.begin(ReportsState())
    for name in ("a", "b", "c"):
        counted.dmarc(dmarc(name, name, DmarcRecord("192.0.2.1", 1, "none", True, True)))
    tally.commit(counted)
    tally.configure(settings(max_reporters=2))
    assert [tally.reporter(name) for name in ("a", "b", "c", "d")] == ["a", "b", "other", "other"]


def test_tlsrpt_labels_are_bounded_and_unknown_domains_refused() -> None:
    tally = Tally(settings())
    counted = tally.begin(ReportsState())
    policies = (
        TlsRptPolicy("sts", "example.com", 10, 7, (("certificate-expired", 2), ("made-up", 1))),
        TlsRptPolicy("dane", "mx.example.org", 3, 0, ()),
        TlsRptPolicy("sts", "elsewhere.example", 99, 99, ()),
    )
    assert counted.tlsrpt(TlsRptReport("r", "1", policies)) is None
    refused = counted.tlsrpt(TlsRptReport("r", "2", policies[2:]))
    assert refused is not None and refused.reason == "unknown_domain"
    tally.commit(counted)
    counters, _ = tally.snapshot()
    assert dict(counters.tlsrpt_sessions) == {
        ("example.com", "sts", "success"): 10,
        ("example.com", "sts", "certificate-expired"): 2,
        ("example.com", "sts", "other"): 1 + 4,  # the made-up type, and failures without details
        ("example.org", "other", "success"): 3,
    }
    assert dict(counters.tlsrpt_reports) == {("example.com", "r"): 1, ("example.org", "r"): 1}


def test_the_longest_configured_domain_names_a_report() -> None:
    domains = ["example.com", "mail.example.com"]
    assert configured_domain("a.mail.example.com", domains) == "mail.example.com"
    assert configured_domain("badexample.com", domains) is None


def test_the_state_file_is_private_bounded_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = ReportsState()
    state.start_at("INBOX", 7)
    state.last_uid = 42
    for index in range(MAX_REPORT_IDS + 10):
        state.remember(report_key("dmarc", "r", str(index)))
    state.notifications["backup", "success"] = 1700000000.5
    state.arrived(1700000000.0, now=1800000000.0)
    state.arrived(1900000000.0, now=1800000000.0)  # a date in the future counts as now
    save_state(path, state)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_state(path)
    assert (again.mailbox, again.uidvalidity, again.last_uid) == ("INBOX", 7, 42)
    assert len(again.reports) == MAX_REPORT_IDS
    assert not again.seen(report_key("dmarc", "r", "0")) and again.seen(
        report_key("dmarc", "r", "10")
    )
    assert again.notifications == {("backup", "success"): 1700000000.5}
    assert again.read_until == 1800000000.0 and again.since is None
    assert again.start_at("INBOX", 8) == 0  # another UIDVALIDITY: from the start
    assert again.since == 1800000000.0 - 86400  # of what arrived since the day before
    assert again.start_at("Other", 8) == 0 and again.since is None  # another mailbox: all


def test_a_state_file_written_before_arrival_times_were_kept_is_read(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    fields = {"mailbox": "INBOX", "uidvalidity": 7, "last_uid": 3, "reports": []}
    path.write_text(json.dumps({"version": 1, **fields, "notifications": []}))
    state = load_state(path)
    assert (state.last_uid, state.read_until) == (3, None)


@pytest.mark.parametrize(
    "text",
    ["{", "[]", json.dumps({"version": 1}), json.dumps({"version": 1, "mailbox": 3, "uidvalidity": 1,
     "last_uid": 1, "reports": [], "notifications": []})],
)  # fmt: skip
def test_a_state_file_that_is_not_one_is_an_error_naming_it(tmp_path: Path, text: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(text)
    with pytest.raises(StateError, match=f"state file {path}"):
        load_state(path)


def test_a_missing_state_file_is_a_first_start_and_an_unwritable_one_an_error(
    tmp_path: Path,
) -> None:
    assert load_state(tmp_path / "none.json").last_uid == 0
    with pytest.raises(StateError, match="cannot write state file"):
        save_state(tmp_path / "missing-dir" / "state.json", ReportsState())
