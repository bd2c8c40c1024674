"""Backups and archives: the newest file of each configured path or glob, its time and size.

So that "the mail backup is older than 26 hours" is one alert:
``time() - mail_host_backup_last_modified_timestamp_seconds > 26 * 3600``. Decisions:

* ``path`` is a glob (``*``, ``?``, ``[…]``; ``**`` crosses directories), a directory
  (every file below it, at any depth) or a file. Symbolic links are followed (a
  ``latest`` link counts as the file it names); only regular files count.
* Hidden files (names starting with a dot) never match, as in the shell: rsync and
  many backup tools write their unfinished files under such names, and a half-written
  archive is not a backup.
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
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric

from mail_exporter.collectors import register_collector
from mail_exporter.collectors.host import Field, families
from mail_exporter.config import BackupMatch, BackupsConfig, Config

FIELDS: Sequence[Field] = (
    ("mail_host_backup_files", "Files matching the backup's path; 0 when none does.", "files", 1),
    ("mail_host_backup_last_modified_timestamp_seconds",
     "Modification time of the backup's newest file.", "modified", 1),
    ("mail_host_backup_size_bytes", "Size of the backup's newest file.", "size_bytes", 1),
)  # fmt: skip


@dataclass(frozen=True)
class Newest:
    """How many files a backup has, and the newest one's time and size (None without files)."""

    files: int = 0
    modified: float | None = None
    size_bytes: int | None = None


def candidates(path: str) -> Iterator[str]:
    """The names a backup path stands for: a glob's matches, a directory's files, or itself."""
    if glob.escape(path) != path:
        yield from glob.iglob(path, recursive=True)
    elif os.path.isdir(path):
        yield from glob.iglob(os.path.join(glob.escape(path), "**"), recursive=True)
    else:
        yield path


def newest_file(path: str) -> Newest:
    files, newest = 0, None
    for name in candidates(path):
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
        self.backups: Sequence[BackupMatch] = settings.backups

    def collect(self) -> Iterable[Metric]:
        rows = [([backup.name], newest_file(backup.path)) for backup in self.backups]
        return families(GaugeMetricFamily, FIELDS, ["backup"], rows)


@register_collector("backups", "Age and size of the newest file of each backup")
def _backups(config: Config) -> BackupsCollector:
    return BackupsCollector(config.collectors.backups)
