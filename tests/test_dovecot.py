"""The dovecot collector: a real Dovecot with the quota plugin and 2,000 users whose usage
the suite writes (so that every band count is known), real IMAP sessions for ``doveadm
who``, and fake doveadm programs that hang, are missing or say too much."""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from mail_exporter.collectors.base import CollectorError
from mail_exporter.collectors.commands import run_bounded
from mail_exporter.collectors.dovecot import (
    BANDS,
    DovecotCollector,
    DovecotConfig,
    parse_quota,
    read_quota,
    user_label,
)
from tests.conftest import _require_binary
from tests.realservers.dovecot import MAIL_DOMAIN, MAIL_OWNER, Dovecot, QuotaUser
from tests.realservers.pki import PKI
from tests.test_host import scrape, value

USERS = 2000
MESSAGE = b"Subject: quota\r\n\r\n" + b"x" * 200 + b"\r\n"
BIG_MESSAGE = b"Subject: big\r\n\r\n" + b"y" * (12 * 1024) + b"\r\n"


def plan() -> list[tuple[QuotaUser, int, bytes, str]]:
    """Each user, how many messages it gets, which message, and its band."""
    users: list[tuple[QuotaUser, int, bytes, str]] = []
    for i in range(USERS):
        name = f"user{i:04d}@{MAIL_DOMAIN}"
        if i < 20:  # as many messages as allowed: full
            users.append((QuotaUser(name, 1000, 2), 2, MESSAGE, "over"))
        elif i < 25:  # one message past a 10 KiB storage limit
            users.append((QuotaUser(name, 10, 100), 1, BIG_MESSAGE, "over"))
        elif i < 55:
            users.append((QuotaUser(name, 1000, 20), 19, MESSAGE, "95_100"))
        elif i < 95:
            users.append((QuotaUser(name, 1000, 10), 8, MESSAGE, "80_95"))
        elif i < 195:
            users.append((QuotaUser(name, None, None), 1, MESSAGE, "unlimited"))
        elif i < 295:
            users.append((QuotaUser(name, 1000, 10), 1, MESSAGE, "under_80"))
        else:
            users.append((QuotaUser(name, 1000, 100), 0, MESSAGE, "under_80"))
    return users


def fill(mail_dir: Path, name: str, count: int, message: bytes) -> None:
    """Maildir files as a delivery leaves them; Dovecot finds them at its next sync."""
    maildir = mail_dir / name / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    for n in range(count):
        (maildir / "cur" / f"1700000000.M{n}P1.test:2,S").write_bytes(message)


@contextmanager
def planned_dovecot(work_dir: Path, pki: PKI) -> Iterator[Dovecot]:
    """A running Dovecot with the users of :func:`plan`, their mail in place."""
    users = plan()
    server = Dovecot(
        work_dir, pki.server_cert, pki.server_key, quota_users=[user for user, *_ in users]
    )
    server.start()
    try:
        owner = pwd.getpwnam(MAIL_OWNER)
        for user, count, message, _ in users:
            if count:
                fill(server.mail_dir, user.name, count, message)
        for path in server.mail_dir.rglob("*"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def quota_dovecot(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[Dovecot]:
    _require_binary("dovecot")
    with planned_dovecot(tmp_path_factory.mktemp("quota-dovecot"), pki) as server:
        yield server


def collector(**settings: object) -> DovecotCollector:
    """Runs doveadm at every scrape (each takes longer than the interval), in its thread."""
    return DovecotCollector(
        DovecotConfig.model_validate({"interval": "1ms", **settings}),
        background=lambda work: work(),
    )


@pytest.mark.integration
def test_bands_top_users_and_sessions_of_a_real_dovecot(quota_dovecot: Dovecot) -> None:
    expected = dict.fromkeys(BANDS, 0)
    expected["unlimited"] = 1  # the server's own user, which has no quota rule
    for _, _, _, band in plan():
        expected[band] += 1
    dovecot = collector(config_file=str(quota_dovecot.config_path), top_users=10, timeout="120s")
    with ExitStack() as sessions:
        for user, count in ((f"user0001@{MAIL_DOMAIN}", 3), (f"user0300@{MAIL_DOMAIN}", 1)):
            for _ in range(count):
                imap = imaplib.IMAP4("127.0.0.1", quota_dovecot.imap_port, timeout=10)
                sessions.callback(imap.logout)
                imap.login(user, quota_dovecot.password)
        found = scrape(dovecot.collect())

    assert {b: value(found, "mail_dovecot_quota_users", band=b) for b in BANDS} == {
        band: float(count) for band, count in expected.items()
    }
    assert value(found, "mail_dovecot_users", protocol="imap") == 2
    assert value(found, "mail_dovecot_sessions", protocol="imap") == 4
    # The five past their storage limit are the fullest, then the full ones by name.
    storage_over = [f"user{i:04d}@{MAIL_DOMAIN}" for i in range(20, 25)]
    message_full = [f"user{i:04d}@{MAIL_DOMAIN}" for i in range(5)]
    ratios = found["mail_dovecot_user_quota_ratio"]
    assert {dict(labels)["user"] for labels in ratios} == {*storage_over, *message_full}
    for name in storage_over:
        assert value(found, "mail_dovecot_user_quota_ratio", user=name, resource="storage") > 1
        assert value(found, "mail_dovecot_user_quota_limit_bytes", user=name) == 10 * 1024
        assert value(found, "mail_dovecot_user_quota_messages", user=name) == 1
    for name in message_full:
        assert value(found, "mail_dovecot_user_quota_ratio", user=name, resource="messages") == 1
        assert value(found, "mail_dovecot_user_quota_limit_messages", user=name) == 2
    series = sum(len(samples) for samples in found.values())
    assert series <= len(BANDS) + 10 * 6 + 2 * 2


def test_quota_lines_parse_into_bands_and_guarded_names() -> None:
    output = (
        "Username\tQuota name\tType\tValue\tLimit\t%\n"
        "a\tUser quota\tSTORAGE\t95\t100\t95\na\tUser quota\tMESSAGE\t1\t-\t0\n"
        "b\tUser quota\tSTORAGE\t5\t0\t0\nb\tUser quota\tMESSAGE\t5\t-\t0\n"
        "c\x1b[2J\tUser quota\tSTORAGE\t90\t100\t90\n"
        "c\x1b[2J\tArchive\tSTORAGE\t200\t100\t200\n"
        "d\tUser quota\tSTORAGE\t10\t-\t0\nd\tArchive\tSTORAGE\t0\t100\t0\n"
    )
    bands, top = read_quota(parse_quota(output), 5)
    assert bands == {"under_80": 1, "80_95": 0, "95_100": 1, "over": 1, "unlimited": 1}
    assert [user.name for user in top] == ["c\x1b[2J", "a", "d"]
    assert top[0].figure("storage", "usage") == 200 * 1024  # the fullest root
    label = user_label(top[0].name)
    assert label.startswith("unprintable:") and label.isprintable()
    assert user_label("x" * 300) != user_label("x" * 301)


FAKE_DOVEADM = Path(__file__).parent / "fixtures" / "dovecot" / "fake_doveadm.py"


def test_a_hanging_doveadm_fails_the_run_and_the_next_run_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hang = tmp_path / "hang"
    hang.touch()
    monkeypatch.setenv("FAKE_DOVEADM_HANG", str(hang))
    dovecot = collector(doveadm=str(FAKE_DOVEADM), timeout="1s")
    started = time.monotonic()
    with pytest.raises(CollectorError, match="no answer within"):
        list(dovecot.collect())
    assert time.monotonic() - started < 30
    hang.unlink()
    found = scrape(dovecot.collect())
    assert value(found, "mail_dovecot_quota_users", band="over") == 1
    assert value(found, "mail_dovecot_sessions", protocol="imap") == 2


def test_a_missing_doveadm_is_a_clear_error(tmp_path: Path) -> None:
    dovecot = collector(doveadm=str(tmp_path / "no-doveadm"))
    with pytest.raises(CollectorError, match="no-doveadm not found"):
        list(dovecot.collect())


def test_output_past_the_cap_stops_the_command() -> None:
    yes = shutil.which("yes")
    assert yes is not None
    with pytest.raises(CollectorError, match="more than 100000 bytes"):
        run_bounded([yes], 30, 100_000)
