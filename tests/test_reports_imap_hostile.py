"""The reports collector against scripted IMAP servers that misbehave: each ends the pass
within its time limit with a reason, or is read within bounds, and a child process
(tests/reports_imap.py) measures the peak RSS of the pass."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.reports_imap import BACKUP, ImapScript, collector, one_pass, serving, settings

REPO = Path(__file__).resolve().parent.parent
HANG_GUARD_SECONDS = 120
# Python and the exporter's modules take some 70 MB; a pass may hold a message of
# max_message_bytes (1 MiB here) a few times over, and a line of 8 MiB a few times.
RSS_BUDGET_BYTES = 160 * 1024 * 1024
NOTIFIED = "mail_notifications_total{rule=nightly,status=ok}"


def measured(case: str, tmp_path: Path) -> dict[str, Any]:
    child = subprocess.run(
        [sys.executable, "-m", "tests.reports_imap", case, str(tmp_path / "state.json")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_SECONDS,
        check=False,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    result: dict[str, Any] = json.loads(child.stdout)
    assert result["peak_rss_bytes"] < RSS_BUDGET_BYTES, result
    return result


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("huge_literal", "the server announced a literal of 524288000 bytes"),
        ("long_line", "UID SEARCH: the server sent a line longer than 8388608 bytes"),
        ("long_greeting", "connect: the server sent a line longer than 8388608 bytes"),
        ("closes", "UID SEARCH: the server closed the connection"),
        ("untagged_stream", "the server sent more than 10000 lines in one answer"),
        ("drip", "UID SEARCH: no answer within 5s"),
    ],
)
def test_a_hostile_server_ends_the_pass_with_a_reason_within_bounds(
    case: str, reason: str, tmp_path: Path
) -> None:
    result = measured(case, tmp_path)
    assert result["failure"] is not None and reason in result["failure"], result["failure"]


def test_a_flood_of_greetings_and_capabilities_is_read_within_bounds(tmp_path: Path) -> None:
    result = measured("greeting_flood", tmp_path)
    assert result["failure"] is None, result["failure"]
    assert result["samples"][NOTIFIED] == 1
    assert result["seen"].count("CAPABILITY") == 2  # after the greeting, after the login


def test_a_greeting_other_than_ok_ends_the_pass_saying_what_it_was(tmp_path: Path) -> None:
    async def bye(script: ImapScript, writer: Any, tag: str, command: str) -> bool:
        writer.write(b"* BYE \xff too busy\r\n")
        await asyncio.sleep(30)
        return True

    script = ImapScript(answers={"GREETING": bye})
    with serving(script) as address:
        failure, _ = one_pass(collector(settings(address, tmp_path / "state.json")))
    assert failure == "connect: the server's greeting: * BYE \ufffd too busy", failure


def test_a_message_longer_than_announced_is_read_only_up_to_the_bound(tmp_path: Path) -> None:
    result = measured("lying_size", tmp_path)
    assert result["failure"] is None, result["failure"]
    assert result["samples"]["mail_reports_rejected_total{kind=message,reason=too_large}"] == 1
    assert result["samples"][NOTIFIED] == 1  # the honest message beside it
    assert "UID FETCH 1 (BODY.PEEK[]<0.1048577>)" in result["seen"]


def test_a_million_uids_cost_no_more_than_their_line(tmp_path: Path) -> None:
    result = measured("million_uids", tmp_path)
    assert result["failure"] is None, result["failure"]
    # the 500 smallest UIDs (each once, 0 and those over 32 bits dropped): 250 messages
    assert result["samples"][NOTIFIED] == 250
    assert json.loads((tmp_path / "state.json").read_text())["last_uid"] == 500


def test_many_lines_in_one_chunk_are_read(tmp_path: Path) -> None:
    result = measured("many_lines", tmp_path)
    assert result["failure"] is None, result["failure"]
    assert result["samples"][NOTIFIED] == 1


def test_numbers_too_long_to_be_numbers_are_no_numbers(tmp_path: Path) -> None:
    result = measured("long_numbers", tmp_path)
    assert result["failure"] is None, result["failure"]
    assert result["samples"]["mail_reports_rejected_total{kind=message,reason=too_large}"] == 1
    assert result["samples"][NOTIFIED] == 1


def test_uids_not_asked_repeated_or_impossible_are_dropped(tmp_path: Path) -> None:
    result = measured("foreign_uids", tmp_path)
    assert result["failure"] is None, result["failure"]
    assert result["samples"][NOTIFIED] == 1  # UID 2, once
    fetched = [command for command in result["seen"] if "BODY.PEEK" in command]
    assert fetched == ["UID FETCH 2 (BODY.PEEK[]<0.1048577>)"]


def test_a_uidvalidity_of_a_thousand_digits_is_none(tmp_path: Path) -> None:
    script = ImapScript(uidvalidity=lambda: b"9" * 5000)
    with serving(script) as address:
        failure, _ = one_pass(collector(settings(address, tmp_path / "state.json")))
    assert failure is not None and "sent no UIDVALIDITY" in failure, failure


def test_a_move_answered_ok_but_not_done_flags_the_messages(tmp_path: Path) -> None:
    script = ImapScript(messages={1: BACKUP, 2: BACKUP}, keep_moved=True)
    options = {"processed_mailbox": "Processed"}
    with serving(script) as address:
        failure, samples = one_pass(collector(settings(address, tmp_path / "s.json", **options)))
    assert failure is None, failure
    assert samples[NOTIFIED] == 2
    assert script.flagged == {1, 2}
    assert "UID STORE 1,2 +FLAGS.SILENT ($MailExporterProcessed)" in script.seen


def test_a_uidvalidity_changing_at_every_pass_rereads_only_recent_mail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that makes up a new UIDVALIDITY at every session: each pass reads again
    only what arrived since the day before the newest message read, so that old mail not
    understood is not read and counted at every pass, and new mail is read."""
    validity = itertools.count(1)
    old = b"From: someone@example.org\r\nSubject: Hello\r\n\r\nHi.\r\n"
    script = ImapScript(
        messages={**dict.fromkeys(range(1, 301), old), **dict.fromkeys(range(301, 311), BACKUP)},
        arrived=dict.fromkeys(range(1, 301), "01-Nov-2026 08:00:00 +0000"),
        uidvalidity=lambda: b"%d" % next(validity),
    )
    ignored = "mail_reports_messages_total{result=ignored}"
    with serving(script) as address:
        reports = collector(settings(address, tmp_path / "state.json"))
        failure, samples = one_pass(reports)
        assert failure is None, failure
        assert (samples[ignored], samples[NOTIFIED]) == (300, 10)
        script.messages.update(dict.fromkeys(range(311, 316), BACKUP))
        del script.seen[:]
        for _ in range(2):
            failure, samples = one_pass(reports)
            assert failure is None, failure
    assert (samples[ignored], samples[NOTIFIED]) == (300, 15)
    fetched = [command.split()[2] for command in script.seen if "BODY.PEEK" in command]
    assert fetched == ["311", "312", "313", "314", "315"]
    assert "UIDVALIDITY changed from 2 to 3" in caplog.text


def test_a_server_slow_at_every_step_is_ended_by_the_pass_timeout(tmp_path: Path) -> None:
    async def slow(script: ImapScript, writer: Any, tag: str, command: str) -> bool:
        await asyncio.sleep(1)  # within the module's timeout, every time
        return False

    script = ImapScript(messages=dict.fromkeys(range(1, 101), BACKUP), answers={"UID FETCH": slow})
    with serving(script) as address:
        started = time.monotonic()
        failure, _ = one_pass(collector(settings(address, tmp_path / "state.json", timeout="3s")))
        took = time.monotonic() - started
    assert failure == "the pass did not end within 3s", failure
    assert took < HANG_GUARD_SECONDS
    assert not (tmp_path / "state.json").exists()  # nothing counted: the next pass reads it all


def test_what_a_server_says_reaches_failures_and_logs_printable_and_short(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hostile = "\x1b]0;owned\x07\u202e\x00" + "A" * 5000

    async def select(script: ImapScript, writer: Any, tag: str, command: str) -> bool:
        writer.write(f"* OK [ALERT] {hostile}\r\n{tag} NO [ALERT] {hostile}\r\n".encode())
        return True

    script = ImapScript(answers={"SELECT": select})
    with serving(script) as address:
        failure, _ = one_pass(collector(settings(address, tmp_path / "state.json")))
    assert failure is not None and failure.startswith("SELECT 'INBOX': NO [ALERT] \\x1b]0;")
    assert failure.isprintable() and len(failure) < 200, failure
    for record in caplog.records:
        assert record.getMessage().isprintable(), record.getMessage()


@pytest.mark.parametrize("line", [b"* \xff\xfe 1", b"Z999 OK not yours"])
def test_a_line_aioimaplib_cannot_take_ends_the_pass_with_that_line(
    line: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def search(script: ImapScript, writer: Any, tag: str, command: str) -> bool:
        writer.write(line + b"\r\n")
        await asyncio.sleep(30)
        return True

    script = ImapScript(answers={"UID SEARCH": search})
    with serving(script) as address:
        failure, _ = one_pass(collector(settings(address, tmp_path / "state.json")))
    shown = line.decode("utf-8", "replace")
    assert failure == f"UID SEARCH: the server sent a line out of turn: {shown}", failure
    assert "Traceback" not in caplog.text
