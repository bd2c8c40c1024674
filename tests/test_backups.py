"""The backups collector on a directory of backups with set modification times."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mail_exporter.collectors.backups import BackupsCollector, Newest, newest_file
from mail_exporter.config import BackupMatch, BackupsConfig
from tests.test_host import scrape

NOW = int(time.time())
HOUR = 3600


def backup(path: Path, size: int, age_hours: float) -> float:
    """A file of ``size`` bytes last modified ``age_hours`` ago; returns that mtime."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    mtime = NOW - age_hours * HOUR
    os.utime(path, (mtime, mtime))
    return mtime


@pytest.fixture
def backups(tmp_path: Path) -> Path:
    """Nightly archives, one in a subdirectory, a newer one still being written (hidden)."""
    backup(tmp_path / "mail-1.tar.zst", 100, 50)
    backup(tmp_path / "mail-2.tar.zst", 250, 26)
    backup(tmp_path / "old" / "mail-0.tar.zst", 80, 74)
    backup(tmp_path / ".mail-3.tar.zst.XyZ123", 10, 0.1)  # rsync's temporary name
    backup(tmp_path / "notes.txt", 5, 100)
    (tmp_path / "latest").symlink_to(tmp_path / "mail-2.tar.zst")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone.tar.zst")
    return tmp_path


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*.tar.zst", Newest(2, NOW - 26 * HOUR, 250)),
        ("**/*.tar.zst", Newest(3, NOW - 26 * HOUR, 250)),
        ("old/*", Newest(1, NOW - 74 * HOUR, 80)),
        ("mail-1.tar.zst", Newest(1, NOW - 50 * HOUR, 100)),
        ("latest", Newest(1, NOW - 26 * HOUR, 250)),
        ("", Newest(5, NOW - 26 * HOUR, 250)),  # the directory: every file below it but hidden ones
        ("*.zip", Newest()),
        ("missing/*.tar.zst", Newest()),
        ("missing.tar.zst", Newest()),
        ("dangling", Newest()),
        ("old", Newest(1, NOW - 74 * HOUR, 80)),
    ],
)
def test_newest_file(backups: Path, pattern: str, expected: Newest) -> None:
    assert newest_file(str(backups / pattern)) == expected


def test_metrics(backups: Path) -> None:
    settings = BackupsConfig(
        backups=[
            BackupMatch(name="mailstore", path=str(backups / "**" / "*.tar.zst")),
            BackupMatch(name="config", path=str(backups / "etc-*.tar.gz")),
        ]
    )
    found = scrape(BackupsCollector(settings).collect())
    assert found == {
        "mail_host_backup_files": {(("backup", "mailstore"),): 3, (("backup", "config"),): 0},
        "mail_host_backup_last_modified_timestamp_seconds": {
            (("backup", "mailstore"),): NOW - 26 * HOUR
        },
        "mail_host_backup_size_bytes": {(("backup", "mailstore"),): 250},
    }


def test_no_backups_configured_exports_nothing() -> None:
    assert list(BackupsCollector(BackupsConfig()).collect()) == []
