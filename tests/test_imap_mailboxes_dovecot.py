"""The IMAP mailbox checks against a real Dovecot with the quota plugin (count driver) and
imap_quota: every figure equals what doveadm says of the same mailbox, and the first and
last message's dates are the internal dates the test APPENDed with. A Dovecot without the
quota plugin gives no quota series and a successful probe."""

from __future__ import annotations

import datetime
import imaplib
from email.message import EmailMessage
from typing import Any

import pytest

from mail_exporter.config.probes import ModuleConfig
from mail_exporter.probes import ProbeResult, run_probe
from mail_exporter.probes.result import MailboxStats
from mail_exporter.targets import parse_address
from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import PKI

pytestmark = pytest.mark.integration

PASSWORD_VARIABLE = "MAILBOX_PROBE_PASSWORD"
UTC = datetime.UTC
# By mailbox: the internal date of each message, in the order they are appended.
FILLED = {
    "INBOX": [datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
              datetime.datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC),
              datetime.datetime(2025, 2, 3, 4, 5, 6, tzinfo=datetime.timezone(
                  datetime.timedelta(hours=2)))],
    "Archive": [datetime.datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC),
                datetime.datetime(2024, 3, 3, 3, 3, 3, tzinfo=UTC)],
    "Empty": [],
}  # fmt: skip


def fill(server: Dovecot, mailboxes: dict[str, list[datetime.datetime]]) -> None:
    """APPEND messages with chosen internal dates (the first of each mailbox seen)."""
    with imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30) as client:
        client.login(server.user, server.password)
        for name, dates in mailboxes.items():
            if name != "INBOX":
                client.create(name)
            for number, date in enumerate(dates):
                message = EmailMessage()
                message["Subject"] = f"{name} {number}"
                message.set_content("x" * (200 * (number + 1)))
                flags = r"(\Seen)" if number == 0 else None
                typ, _ = client.append(name, flags, date, message.as_bytes())
                assert typ == "OK"


def module(server: Dovecot, pki: PKI, mailboxes: list[dict[str, Any]]) -> ModuleConfig:
    return ModuleConfig.model_validate(
        {
            "protocol": "imap",
            "tls": "implicit",
            "timeout": "10s",
            "tls_config": {"ca_file": str(pki.ca_file)},
            "auth": {"username": server.user, "password_env": PASSWORD_VARIABLE},
            "imap": {"mailboxes": mailboxes},
        }
    )


async def probe(server: Dovecot, mod: ModuleConfig) -> ProbeResult:
    return await run_probe(parse_address(f"127.0.0.1:{server.imaps_port}"), mod, 10.0)


def tab_rows(output: str) -> list[dict[str, str]]:
    """doveadm's ``-f tab`` output: a header line, then one line per row."""
    header, *lines = output.strip("\n").split("\n")
    return [dict(zip(header.split("\t"), line.split("\t"), strict=True)) for line in lines]


@pytest.fixture(scope="module")
def filled(quota_dovecot: Dovecot) -> Dovecot:
    fill(quota_dovecot, FILLED)
    return quota_dovecot


async def test_every_figure_equals_doveadm(
    filled: Dovecot, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_VARIABLE, filled.password)
    boxes = [{"name": "INBOX"}, {"name": "Archive", "newest_max_age": "1d", "kind": "archive"},
             {"name": "Empty", "kind": "shared"}, {"name": "Missing"}]  # fmt: skip
    result = await probe(filled, module(filled, pki, boxes))
    assert result.success, result.log
    assert any("mailbox 'Missing' skipped" in entry for entry in result.log), result.log
    stats = {box.name: box for box in result.mailboxes}
    assert list(stats) == ["INBOX", "Archive", "Empty"]
    quota = {row["Type"]: row for row in tab_rows(filled.doveadm("-f", "tab", "quota", "get",
                                                               "-u", filled.user))}  # fmt: skip
    for name, dates in FILLED.items():
        box: MailboxStats = stats[name]
        status = tab_rows(filled.doveadm("-f", "tab", "mailbox", "status", "-u", filled.user,
                                         "messages unseen vsize", name))[0]  # fmt: skip
        assert box.messages == int(status["messages"]) == len(dates)
        assert box.unseen == int(status["unseen"]) == max(len(dates) - 1, 0)
        assert box.size_bytes == int(status["vsize"])
        assert box.oldest == (dates[0].timestamp() if dates else None)
        assert box.newest == (dates[-1].timestamp() if dates else None)
        assert box.quota == {
            "storage_bytes": (int(quota["STORAGE"]["Value"]) * 1024,
                              int(quota["STORAGE"]["Limit"]) * 1024),
            "messages": (int(quota["MESSAGE"]["Value"]), int(quota["MESSAGE"]["Limit"])),
        }  # fmt: skip
    assert stats["INBOX"].quota["messages"] == (5, 1000)
    assert stats["INBOX"].quota["storage_bytes"][1] == 10 * 1024 * 1024
    assert stats["Archive"].newest_max_age == 86400.0


async def test_dovecot_without_quota_plugin_gives_no_quota_series(
    dovecot: Dovecot, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_VARIABLE, dovecot.password)
    result = await probe(dovecot, module(dovecot, pki, [{"name": "INBOX"}]))
    assert result.success, result.log
    (inbox,) = result.mailboxes
    assert inbox.quota == {}
    assert inbox.messages is not None
