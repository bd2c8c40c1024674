"""The IMAP mailbox checks against scripted servers: what a server without QUOTA, STATUS=SIZE
or ESEARCH gives, refused mailboxes, both quota forms, and replies that break the rules.
The real Dovecot cases are in tests/test_imap_mailboxes_dovecot.py."""

from __future__ import annotations

import calendar
from collections.abc import Callable

import pytest

from mail_exporter.config.probes import ModuleConfig
from mail_exporter.exposition import header, sample_lines
from mail_exporter.metrics import probe_families
from mail_exporter.probes import FailureReason, Phase, ProbeResult
from mail_exporter.probes.imap_mailboxes import internal_date, tokens
from mail_exporter.probes.session import ProbeFailure
from mail_exporter.report import render_report
from tests.promtool import check_metrics
from tests.test_probes_scripted import dialogue

GREETING = "* OK scripted IMAP ready"
OLDEST = "01-Feb-2024 10:00:00 +0000"
NEWEST = " 3-Mar-2025 12:30:15 +0200"


def mailbox_module(monkeypatch: pytest.MonkeyPatch, *mailboxes: dict[str, str]) -> ModuleConfig:
    monkeypatch.setenv("SCRIPTED_PROBE_PASSWORD", "secret")
    return ModuleConfig.model_validate(
        {
            "protocol": "imap",
            "allow_plaintext_auth": True,
            "auth": {"username": "probe", "password_env": "SCRIPTED_PROBE_PASSWORD"},
            "imap": {"mailboxes": list(mailboxes)},
        }
    )


def imap_server(
    capabilities: str, mailboxes: dict[str, int], extra: Callable[[str], list[str] | None]
) -> Callable[[str], list[str]]:
    """A server with ``mailboxes`` (name: message count); ``extra`` answers first if it can."""
    selected = ""

    def answer(line: str) -> list[str]:
        nonlocal selected
        tag, verb, *rest = line.split()
        done = f"{tag} OK done"
        special = extra(line)
        if special is not None:
            return [reply.format(tag=tag) for reply in special]
        name = rest[0].strip('"') if rest else ""
        if verb == "CAPABILITY":
            return [f"* CAPABILITY IMAP4rev1 AUTH=PLAIN {capabilities}", done]
        if verb in ("STATUS", "EXAMINE", "GETQUOTAROOT") and name not in mailboxes:
            return [f"{tag} NO [NONEXISTENT] Mailbox doesn't exist: {name}"]
        if verb == "STATUS":
            size = " SIZE 4096" if "SIZE" in line else ""
            return [f'* STATUS "{name}" (MESSAGES {mailboxes[name]} UNSEEN 1{size})', done]
        if verb == "EXAMINE":
            selected = name
            return [f"* {mailboxes[name]} EXISTS", "* OK [UIDNEXT 99] next", done]
        if verb == "FETCH":  # by sequence number: 1,EXISTS
            last = mailboxes[selected]
            return [f'* 1 FETCH (INTERNALDATE "{OLDEST}")',
                    f'* {last} FETCH (INTERNALDATE "{NEWEST}")', done]  # fmt: skip
        if verb in ("LOGIN", "LOGOUT"):
            return [done]
        return [f"{tag} BAD unexpected"]

    return answer


def families(result: ProbeResult) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The /probe families of ``result`` that start with mail_mailbox_, by name."""
    found = probe_families(("protocol",), ["imap"], result, {}, None)
    return {
        f.name: [(s.labels, s.value) for s in f.samples]
        for f in found
        if f.name.startswith("mail_mailbox_")
    }


def stamp(text: str) -> float:
    day, month, rest = text.strip().split("-", 2)
    year, clock, zone = rest.split()
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    hour, minute, second = (int(x) for x in clock.split(":"))
    offset = (int(zone[1:3]) * 60 + int(zone[3:])) * 60 * (1 if zone[0] == "+" else -1)
    moment = (int(year), months.index(month) + 1, int(day), hour, minute, second, 0, 0, 0)
    return calendar.timegm(moment) - offset


async def test_server_without_quota_size_or_esearch_gives_what_it_can(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mod = mailbox_module(monkeypatch, {"name": "INBOX"}, {"name": "Archive", "kind": "archive",
                                                          "newest_max_age": "1d"})  # fmt: skip
    server = imap_server("", {"INBOX": 3, "Archive": 0}, lambda line: None)
    result, heard = await dialogue(server, mod, greeting=GREETING)
    assert result.success, result.log
    assert Phase.MAILBOXES in result.phases
    got = families(result)
    inbox = {"protocol": "imap", "mailbox": "INBOX", "kind": ""}
    archive = {"protocol": "imap", "mailbox": "Archive", "kind": "archive"}
    assert got["mail_mailbox_messages"] == [(inbox, 3.0), (archive, 0.0)]
    assert got["mail_mailbox_unseen_messages"] == [(inbox, 1.0), (archive, 1.0)]
    assert got["mail_mailbox_oldest_message_timestamp_seconds"] == [(inbox, stamp(OLDEST))]
    assert got["mail_mailbox_newest_message_timestamp_seconds"] == [(inbox, stamp(NEWEST))]
    assert got["mail_mailbox_newest_max_age_seconds"] == [(archive, 86400.0)]
    # Not offered, so absent rather than 0.
    assert got["mail_mailbox_size_bytes"] == []
    assert got["mail_mailbox_quota_usage"] == got["mail_mailbox_quota_limit"] == []
    commands = [" ".join(line.split()[1:]) for line in heard]
    assert 'STATUS "INBOX" (MESSAGES UNSEEN)' in commands
    assert "FETCH 1,3 (INTERNALDATE)" in commands
    assert not any("GETQUOTAROOT" in c or ":" in c for c in commands), commands


async def test_missing_mailbox_is_a_log_line_not_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mod = mailbox_module(monkeypatch, {"name": "Gone"}, {"name": "INBOX"})
    server = imap_server("QUOTA STATUS=SIZE", {"INBOX": 0}, lambda line: None)
    result, _ = await dialogue(server, mod, greeting=GREETING)
    assert result.success, result.log
    assert [box.name for box in result.mailboxes] == ["INBOX"]
    assert any("mailbox 'Gone' skipped" in entry for entry in result.log), result.log
    assert all(labels["mailbox"] == "INBOX" for samples in families(result).values()
               for labels, _ in samples)  # fmt: skip


QUOTA_ANSWERS = {
    # RFC 2087: one root; Dovecot 2.3 answers this way.
    "rfc2087": ['* QUOTAROOT INBOX "User quota"',
                '* QUOTA "User quota" (STORAGE 512 10240 MESSAGE 20 1000)'],
    # RFC 9208: two roots and a resource not exported; the fullest root of each resource wins.
    "rfc9208": ['* QUOTAROOT INBOX "" "domain"',
                '* QUOTA "" (STORAGE 512 10240 MESSAGE 20 40 MAILBOX 2 10)',
                '* QUOTA "domain" (STORAGE 9000 10240 MESSAGE 1 1000)'],
}  # fmt: skip


@pytest.mark.parametrize("form", list(QUOTA_ANSWERS))
async def test_quota_forms_and_esearch(monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    mod = mailbox_module(monkeypatch, {"name": "INBOX"})

    def extra(line: str) -> list[str] | None:
        if "GETQUOTAROOT" in line:
            return [*QUOTA_ANSWERS[form], "{tag} OK Getquotaroot completed"]
        if "UID SEARCH" in line:
            return ['* ESEARCH (TAG "{tag}") UID MIN 4 MAX 77', "{tag} OK done"]
        if "UID FETCH" in line:
            return [f'* 9 FETCH (UID 77 INTERNALDATE "{NEWEST}")',
                    f'* 1 FETCH (INTERNALDATE "{OLDEST}" UID 4)', "{tag} OK done"]  # fmt: skip
        return None

    capabilities = "QUOTA QUOTA=RES-STORAGE ESEARCH STATUS=SIZE"
    result, heard = await dialogue(
        imap_server(capabilities, {"INBOX": 9}, extra), mod, greeting=GREETING
    )
    assert result.success, result.log
    got = families(result)
    inbox = {"protocol": "imap", "mailbox": "INBOX", "kind": ""}
    storage = (9000 if form == "rfc9208" else 512) * 1024
    messages = (20, 40) if form == "rfc9208" else (20, 1000)
    assert got["mail_mailbox_quota_usage"] == [
        ({**inbox, "resource": "storage_bytes"}, float(storage)),
        ({**inbox, "resource": "messages"}, float(messages[0])),
    ]
    assert got["mail_mailbox_quota_limit"] == [
        ({**inbox, "resource": "storage_bytes"}, 10240.0 * 1024),
        ({**inbox, "resource": "messages"}, float(messages[1])),
    ]
    assert got["mail_mailbox_size_bytes"] == [(inbox, 4096.0)]
    assert got["mail_mailbox_oldest_message_timestamp_seconds"] == [(inbox, stamp(OLDEST))]
    assert got["mail_mailbox_newest_message_timestamp_seconds"] == [(inbox, stamp(NEWEST))]
    text = "".join(
        header(family) + sample_lines(family)
        for family in probe_families(("protocol",), ["imap"], result, {}, None)
    )
    await check_metrics(text)  # names and units as promtool's lint wants them
    commands = [" ".join(line.split()[1:]) for line in heard]
    assert "UID SEARCH RETURN (MIN MAX) ALL" in commands
    assert "UID FETCH 4,77 (INTERNALDATE)" in commands


@pytest.mark.parametrize(
    "reply",
    [
        '* STATUS "INBOX" {{5}}',  # a literal (braces doubled for the script's format): never for a name the config allows
        '* STATUS "INBOX" ((((((((((MESSAGES 1))))))))))',  # nested past the bound
        '* STATUS "INBOX" (MESSAGES 1))',  # unbalanced
    ],
)
async def test_malformed_replies_fail_the_probe_as_protocol(
    monkeypatch: pytest.MonkeyPatch, reply: str
) -> None:
    mod = mailbox_module(monkeypatch, {"name": "INBOX"})

    def extra(line: str) -> list[str] | None:
        return [reply, "{tag} OK done"] if " STATUS " in line else None

    result, _ = await dialogue(imap_server("", {"INBOX": 1}, extra), mod, greeting=GREETING)
    assert result.failure is not None, result.log
    assert (result.failure.phase, result.failure.reason) == (
        Phase.MAILBOXES, FailureReason.PROTOCOL,
    ), result.log  # fmt: skip
    assert result.mailboxes == []


async def test_absurd_numbers_and_dates_are_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = mailbox_module(monkeypatch, {"name": "INBOX"})

    def extra(line: str) -> list[str] | None:
        if " STATUS " in line:
            return ['* STATUS "INBOX" (MESSAGES 99999999999999999999999 UNSEEN -1)', "{tag} OK"]
        if " FETCH " in line:
            return ['* 1 FETCH (INTERNALDATE "31-Foo-2024 10:00:00 +0000")',
                    '* 2 FETCH (INTERNALDATE "31-Feb-2024 10:00:00 +0000")', "{tag} OK"]  # fmt: skip
        return None

    result, _ = await dialogue(imap_server("", {"INBOX": 2}, extra), mod, greeting=GREETING)
    assert result.success, result.log
    assert families(result)["mail_mailbox_messages"] == []
    assert families(result)["mail_mailbox_oldest_message_timestamp_seconds"] == []
    assert families(result)["mail_mailbox_newest_message_timestamp_seconds"] == []


def test_internal_date_and_tokens() -> None:
    assert internal_date("17-Jul-1996 02:44:25 -0700") == 837596665.0
    assert internal_date(" 1-Jan-2000 00:00:00 +0000") == 946684800.0
    assert internal_date("1-Jan-2000") is None
    assert tokens('QUOTA "a \\" b" (STORAGE 1 2)') == ["QUOTA", 'a " b', ["STORAGE", "1", "2"]]
    with pytest.raises(ProbeFailure):
        tokens("LIST () {3}")


async def test_report_has_a_mailbox_section(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = mailbox_module(monkeypatch, {"name": "Archive", "kind": "archive",
                                       "newest_max_age": "1d"})  # fmt: skip
    server = imap_server("QUOTA", {"Archive": 2}, lambda line: (
        ['* QUOTA "User quota" (STORAGE 9 10 MESSAGE 2 1000)', "{tag} OK"]
        if "GETQUOTAROOT" in line else None))  # fmt: skip
    result, _ = await dialogue(server, mod, greeting=GREETING)
    report = render_report("imap.test:143", "m", result).splitlines()
    at = report.index("Mailboxes:")
    assert report[at + 1 : at + 8] == [
        "  Archive (archive)",
        "     messages          2, unseen 1, size unknown",
        "     quota storage_bytes: 9216 of 10240 (90.0 %)",
        "     quota messages: 2 of 1000 (0.2 %)",
        "     oldest            2024-02-01 10:00:00 UTC" + report[at + 5].split("UTC")[1],
        "     newest            2025-03-03 10:30:15 UTC" + report[at + 6].split("UTC")[1],
        "     newest expected   within 86400 s",
    ]
