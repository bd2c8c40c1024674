"""Backups and archives: the newest file of each configured path or glob, its time and size.

So that "the mail backup is older than 26 hours" is one alert:
``time() - mail_host_backup_last_modified_timestamp_seconds > 26 * 3600``. Decisions:

* ``path`` is a glob (``*``, ``?``, ``[…]``; ``**`` crosses directories), a directory
  (every file below it, at any depth) or a file. Links to files are followed (a
  ``latest`` link counts as the file it names); only regular files count.
* A recursive scan (a directory, or ``**``) does not enter links to directories unless
  ``follow_symlinks: true``: backup trees often hold links such as ``daily/prev -> ..``,
  through which a scan that follows every link never ends (each cycle doubles the paths).
  When it does follow them, a directory that is its own ancestor (same device and inode,
  links and bind mounts alike) is skipped. The parts of ``path`` itself are followed as
  the system resolves them, and so are the links a fixed-depth part (``*``) matches: those
  cannot recurse.
* Every scan is bounded: past ``max_entries`` directory entries, or past the collection's
  deadline (:func:`~mail_exporter.collectors.base.collection_deadline`), it stops and the
  collector fails with the reason, rather than report a newest file it may not have seen.
* Hidden files (names starting with a dot) never match, as in the shell: rsync and
  many backup tools write their unfinished files under such names, and a half-written
  archive is not a backup. Nor does ``**`` or a directory scan enter hidden directories.
* ``mail_host_backup_files`` is always present: 0 when nothing matched (none made, the
  mount is gone, or the exporter may not read the directory). The time and size are then
  absent, never a made-up 0 that would read as "1970".
* The scan runs at each scrape: point ``path`` at the archives (``/var/backups/mail/*.tar.zst``),
  not at a mirror of the mail store with a million files.

Sample output::

    mail_host_backup_files{backup="mailstore"} 7.0
    mail_host_backup_last_modified_timestamp_seconds{backup="mailstore"} 1.7958e+09
    mail_host_backup_size_bytes{backup="mailstore"} 1.2e+10
    mail_host_backup_files{backup="config"} 0.0
"""

from __future__ import annotations

import glob
import math
import os
import stat
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from prometheus_client.core import Metric
from pydantic import Field

from mail_exporter.collectors.base import (
    Collector,
    CollectorError,
    collection_deadline,
    register_collector,
)
from mail_exporter.config.collectors import CollectorSection
from mail_exporter.config.fields import StrictModel
from mail_exporter.metric_spec import MetricSpec, attribute, families


class BackupMatch(StrictModel):
    """A backup: the newest file matching ``path`` (a path or a glob, ``**`` allowed)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    path: str = Field(min_length=1)


class BackupsConfig(CollectorSection):
    """Age and size of the newest file of each configured backup."""

    backups: list[BackupMatch] = Field(default_factory=list)
    # Whether a recursive scan (a directory, or ``**``) enters links to directories.
    follow_symlinks: bool = False
    # Directory entries one backup's scan may look at before it fails.
    max_entries: int = Field(default=100_000, ge=1)


FIELDS = (
    MetricSpec("mail_host_backup_files", "Files matching the backup's path; 0 when none does.",
        "gauge", ("backup",), attribute("files")),
    MetricSpec("mail_host_backup_last_modified_timestamp_seconds", "Modification time of the "
        "backup's newest file.", "gauge", ("backup",), attribute("modified")),
    MetricSpec("mail_host_backup_size_bytes", "Size of the backup's newest file.", "gauge",
        ("backup",), attribute("size_bytes")),
)  # fmt: skip

RECURSIVE = "**"
EVERY_FILE_BELOW: tuple[str, ...] = (RECURSIVE, "*")
"""What a directory given as ``path`` stands for."""


@dataclass(frozen=True)
class Newest:
    """How many files a backup has, and the newest one's time and size (None without files)."""

    files: int = 0
    modified: float | None = None
    size_bytes: int | None = None


def _has_magic(part: str) -> bool:
    return glob.escape(part) != part


def _hidden(name: str) -> bool:
    return name.startswith(".")


class Scan:
    """The names one backup's ``path`` stands for, found within the section's bounds."""

    def __init__(self, path: str, settings: BackupsConfig, deadline: float) -> None:
        self.path = path
        self.follow_symlinks = settings.follow_symlinks
        self.max_entries = settings.max_entries
        self.deadline = deadline
        self.entries = 0

    def names(self) -> set[str]:
        """A glob's matches, a directory's files, or the path itself (a set: ``a/**/b/**``
        reaches some names twice)."""
        parts = self.path.split(os.sep)
        first = next((i for i, part in enumerate(parts) if _has_magic(part)), None)
        if first is None:
            if not os.path.isdir(self.path):
                return {self.path}
            base, pattern = self.path, EVERY_FILE_BELOW
        else:
            base = os.sep.join(parts[:first]) or (os.sep if self.path.startswith(os.sep) else "")
            pattern = _collapsed(parts[first:])
        return self._match(base, pattern)

    def _match(self, base: str, pattern: Sequence[str]) -> set[str]:
        found: set[str] = set()
        # (directory, index of the pattern part to match in it, its ancestors' identities)
        todo: list[tuple[str, int, frozenset[tuple[int, int]]]] = [(base, 0, frozenset())]
        while todo:
            directory, index, ancestors = todo.pop()
            if index == len(pattern):
                found.add(directory)
                continue
            part = pattern[index]
            if part == RECURSIVE:
                identity = _identity(directory)
                if identity is None or identity in ancestors:
                    continue  # gone, or a cycle: this directory was entered above
                todo.append((directory, index + 1, ancestors))  # ** matching no directory
                below = ancestors | {identity}
                todo.extend(
                    (_joined(directory, entry), index, below)
                    for entry in self._entries(directory)
                    if not _hidden(entry.name) and self._enters(entry)
                )
            elif _has_magic(part):
                todo.extend(
                    (_joined(directory, entry), index + 1, ancestors)
                    for entry in self._entries(directory)
                    if fnmatchcase(entry.name, part) and (part[0] == "." or not _hidden(entry.name))
                )
            else:
                self._count()
                todo.append((os.path.join(directory, part), index + 1, ancestors))
        return found

    def _enters(self, entry: os.DirEntry[str]) -> bool:
        """Whether ``**`` goes down into ``entry``: a directory, a link to one only if asked."""
        try:
            return entry.is_dir() and (self.follow_symlinks or not entry.is_symlink())
        except OSError:
            return False

    def _entries(self, directory: str) -> list[os.DirEntry[str]]:
        """The directory's entries, each counted against the bounds; none if unreadable."""
        entries = []
        try:
            with os.scandir(directory or os.curdir) as scan:
                for entry in scan:  # _count inlined: this loop is the scan's hot path
                    self.entries += 1
                    if self.entries > self.max_entries or time.monotonic() > self.deadline:
                        self._stop()
                    entries.append(entry)
        except OSError:
            return []
        return entries

    def _count(self) -> None:
        self.entries += 1
        if self.entries > self.max_entries or time.monotonic() > self.deadline:
            self._stop()

    def _stop(self) -> None:
        """Raise why the scan stops (past ``max_entries`` or the deadline)."""
        if self.entries > self.max_entries:
            raise CollectorError(
                f"{self.path}: more than {self.max_entries} entries to look at: point the path "
                "at the archives, or raise collectors.backups.max_entries"
            )
        raise CollectorError(
            f"{self.path}: scan stopped at the timeout after {self.entries} entries"
        )


def _joined(directory: str, entry: os.DirEntry[str]) -> str:
    """``os.path.join(directory, entry.name)``: the entry's own path, but where the scan
    listed ``.`` for ``""``."""
    return entry.path if directory else entry.name


def _collapsed(parts: Sequence[str]) -> tuple[str, ...]:
    """``**/**`` matches what ``**`` does: one of them, so no name is reached twice as often."""
    kept: list[str] = []
    for part in parts:
        if not (part == RECURSIVE and kept and kept[-1] == RECURSIVE):
            kept.append(part)
    return tuple(kept)


def _identity(directory: str) -> tuple[int, int] | None:
    try:
        found = os.stat(directory or os.curdir)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def newest_file(path: str, settings: BackupsConfig, deadline: float = math.inf) -> Newest:
    """The newest regular file ``path`` stands for; CollectorError when the scan runs out."""
    files, newest = 0, None
    for name in Scan(path, settings, deadline).names():
        try:
            found = os.stat(name)
        except OSError:  # gone meanwhile, a dangling link, or not there at all
            continue
        if stat.S_ISREG(found.st_mode):
            files += 1
            if newest is None or found.st_mtime > newest.st_mtime:
                newest = found
    if newest is None:
        return Newest()
    return Newest(files, newest.st_mtime, newest.st_size)


class BackupsCollector:
    """Looks for each backup's newest file at each scrape."""

    def __init__(self, settings: BackupsConfig) -> None:
        self.settings = settings
        self.backups: Sequence[BackupMatch] = settings.backups

    def collect(self) -> Iterable[Metric]:
        deadline = collection_deadline()
        rows = [
            ([backup.name], newest_file(backup.path, self.settings, deadline))
            for backup in self.backups
        ]
        return families(FIELDS, rows)


@register_collector("backups", "Age and size of the newest file of each backup", BackupsConfig)
def _backups(section: BackupsConfig, previous: Collector | None) -> BackupsCollector:
    return BackupsCollector(section)
