"""The backups collector on a directory of backups with set modification times, and on
trees whose links would make an unbounded scan never end."""

from __future__ import annotations

import glob
import math
import os
import threading
import time
from itertools import pairwise
from pathlib import Path

import pytest

from mail_exporter.collectors.backups import (
    BackupMatch,
    BackupsCollector,
    BackupsConfig,
    Newest,
    Scan,
    newest_file,
)
from mail_exporter.collectors.base import CollectorError, CollectorSet
from mail_exporter.config.root import Config
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
    assert newest_file(str(backups / pattern), BackupsConfig()) == expected


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


@pytest.fixture
def cycles(tmp_path: Path) -> Path:
    """A rotation tree where each level links back to its parent, as rotation tools do:
    a scan that follows every link meets each file at every depth (2 paths per level)."""
    tree = tmp_path / "tree"
    backup(tree / "daily" / "mail-1.tar.zst", 100, 2)
    backup(tree / "weekly" / "mail-0.tar.zst", 300, 30)
    (tree / "daily" / "prev").symlink_to("..")
    (tree / "weekly" / "prev").symlink_to("..")
    backup(tmp_path / "offsite" / "mail-9.tar.zst", 900, 1)  # newest, outside the tree
    (tree / "offsite").symlink_to(tmp_path / "offsite")
    return tree


@pytest.mark.parametrize(
    ("follow_symlinks", "expected"),
    [
        (False, Newest(2, NOW - 2 * HOUR, 100)),
        (True, Newest(3, NOW - 1 * HOUR, 900)),  # every file once, the cycles cut
    ],
)
@pytest.mark.parametrize("pattern", ["", "**/*.tar.zst"])
def test_link_cycles_end_the_scan(
    cycles: Path, pattern: str, follow_symlinks: bool, expected: Newest
) -> None:
    found = scrape_in_set(cycles / pattern, follow_symlinks=follow_symlinks)
    assert found["mail_exporter_collector_success"] == {(("collector", "backups"),): 1.0}
    assert found["mail_host_backup_files"] == {(("backup", "tree"),): expected.files}
    modified = found["mail_host_backup_last_modified_timestamp_seconds"]
    assert modified == {(("backup", "tree"),): expected.modified}


@pytest.fixture
def fan_out(tmp_path: Path) -> Path:
    """30 levels, each linking twice to the next: no cycle, but 2**30 paths to the bottom."""
    levels = [tmp_path / f"level{depth}" for depth in range(31)]
    for level in levels:
        level.mkdir()
    for level, below in pairwise(levels):
        (level / "left").symlink_to(below)
        (level / "right").symlink_to(below)
    backup(levels[-1] / "mail.tar.zst", 10, 1)
    return levels[0]


def test_a_scan_ends_at_the_timeout(fan_out: Path) -> None:
    """With links followed and no cap to speak of, only the deadline ends the scan: the
    scrape reports the failure and the collection's thread ends rather than burn a core."""
    found = scrape_in_set(fan_out, follow_symlinks=True, max_entries=10**12, timeout_ms=500)
    assert found["mail_exporter_collector_success"] == {(("collector", "backups"),): 0.0}
    assert "mail_host_backup_files" not in found  # no figures from a scan cut short


def test_a_scan_stops_at_its_deadline(fan_out: Path) -> None:
    settings = BackupsConfig(follow_symlinks=True, max_entries=10**12)
    with pytest.raises(CollectorError, match=r"scan stopped at the timeout after 1 entries"):
        newest_file(str(fan_out), settings, deadline=time.monotonic())


def test_a_scan_ends_at_max_entries(fan_out: Path) -> None:
    settings = BackupsConfig(follow_symlinks=True, max_entries=1000)
    with pytest.raises(CollectorError, match=r"more than 1000 entries to look at"):
        newest_file(str(fan_out), settings)


def scrape_in_set(
    path: Path,
    follow_symlinks: bool,
    max_entries: int = 100_000,
    timeout_ms: int = 2000,
) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """One scrape of a backups collector for ``path`` as the exporter runs it, within
    ``timeout_ms``; the collection's thread must be gone soon after."""
    section = {
        "enabled": True,
        "timeout": f"{timeout_ms}ms",
        "follow_symlinks": follow_symlinks,
        "max_entries": max_entries,
        "backups": [{"name": "tree", "path": str(path)}],
    }
    before = set(threading.enumerate())
    collector_set = CollectorSet(
        Config.model_validate({"collectors": {"backups": section}}).collectors, {}
    )
    try:
        found = scrape(collector_set.collect())
    finally:
        collector_set.close()
    deadline = time.monotonic() + 10
    while left := [thread.name for thread in threading.enumerate() if thread not in before]:
        assert time.monotonic() < deadline, f"threads still running after the scrape: {left}"
        time.sleep(0.05)
    return found


@pytest.mark.parametrize(
    "pattern", ["*.tar", "**/*.tar", "d*/**/*.tar", "**/*", "daily", "daily/*"]
)
def test_scan_names_are_what_glob_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pattern: str
) -> None:
    """The names a scan stands for are the paths ``glob`` gives (``**`` recursive), relative
    patterns too: ``a.tar``, not ``./a.tar``."""
    for name in ("a.tar", "daily/b.tar", "daily/x/c.tar", "daily/x/y/d.txt", ".hidden/e.tar"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    for full in (str(tmp_path / pattern), pattern):
        # A directory stands for every file below it, at any depth.
        globbed = os.path.join(full, "**", "*") if os.path.isdir(full) else full
        expected = set(glob.glob(globbed, recursive=True))
        assert expected and Scan(full, BackupsConfig(), math.inf).names() == expected
