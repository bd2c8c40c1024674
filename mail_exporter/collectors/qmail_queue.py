"""qmail's queue: messages waiting for delivery and messages not yet preprocessed.

Two queues, disjoint so that their sum is every message qmail holds:

* ``queue``: preprocessed by qmail-send (envelope in ``info/``), waiting for delivery;
* ``todo``: queued by qmail-queue, not yet preprocessed (an entry in ``todo/``).

Two sources, the first that works:

* ``directory``: ``queue_directory`` read directly (root, or the ``qmailq`` user's
  group for ``mess/`` and ``todo/``). Every message has a file
  ``mess/<split>/<inode number>``; those with an entry ``todo/<inode number>`` (or
  ``todo/<split>/...`` with the big-todo layout) are ``todo``, all others ``queue``,
  as ``qmail-qstat`` counts them. Size: the ``mess`` file. Arrival: the ``mess``
  file's mtime, written once by qmail-queue when the message arrived. qmail records
  no better arrival time: qmail-send's own "birth" time (for ``queuelifetime``, and
  what ``qmail-qread`` prints) is the mtime of the ``info`` file, written moments
  later at preprocessing.
* ``commands``: ``qmail-qread`` (date, ``#inode``, size and sender of every
  preprocessed message) for ``queue`` and ``qmail-qstat`` for the ``todo`` count.
  Size and age of ``todo`` are then unknown and left out rather than reported as a
  made-up 0. Both commands read the queue directory too, so they help where the
  exporter may run them through ``sudo -n`` but not read the directory itself.

When both fail the collector fails with both reasons.

Sample output::

    mail_queue_messages{mta="qmail",mta_instance="qmail",queue="queue"} 4.0
    mail_queue_messages{mta="qmail",mta_instance="qmail",queue="todo"} 1.0
    mail_queue_size_bytes{mta="qmail",mta_instance="qmail",queue="queue"} 18734.0
    mail_queue_oldest_message_age_seconds{mta="qmail",mta_instance="qmail",queue="queue"} 86400.0
    mail_queue_source_info{mta="qmail",mta_instance="qmail",source="directory"} 1.0
"""

from __future__ import annotations

import calendar
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client.core import Metric
from pydantic import Field

from mail_exporter.collectors.base import (
    COMMAND_TIME_SHARE,
    Collector,
    CollectorError,
    register_collector,
)
from mail_exporter.collectors.commands import run_command
from mail_exporter.collectors.queues import QueueStats, SourceLog, queue_families, source_info
from mail_exporter.config.collectors import CollectorSection

logger = logging.getLogger(__name__)


class QmailQueueConfig(CollectorSection):
    name: str = Field(default="qmail", pattern=r"^[A-Za-z0-9_.-]+$")
    queue_directory: Path = Path("/var/qmail/queue")
    # qmail's programs live in /var/qmail/bin, which is rarely on PATH.
    qstat_command: list[str] = Field(
        default_factory=lambda: ["/var/qmail/bin/qmail-qstat"], min_length=1
    )
    qread_command: list[str] = Field(
        default_factory=lambda: ["/var/qmail/bin/qmail-qread"], min_length=1
    )


MTA = "qmail"
QUEUES = ("queue", "todo")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_QSTAT_LINE = re.compile(r"^messages in queue(?P<todo> but not yet preprocessed)?: (?P<n>-?\d+)$")
# qmail-qread: "28 Nov 2026 01:02:03 GMT  #1234567  1234  <sender@example.com> " (then
# " bouncing" when a bounce is pending), followed by one "\tremote\t..." or "\tlocal\t..."
# line per recipient ("  done\t..." once delivered).
_QREAD_MESSAGE = re.compile(
    r"(?P<day>\d{1,2}) (?P<month>[A-Z][a-z]{2}) (?P<year>\d{4}) "
    r"(?P<hour>\d\d):(?P<minute>\d\d):(?P<second>\d\d) GMT  #\d+  (?P<size>\d+)  <"
)


def _queue_files(directory: Path) -> Iterator[os.DirEntry[str]]:
    """Files named by an inode number, in ``directory`` and its numbered split subdirectories."""
    with os.scandir(directory) as entries:
        top = list(entries)
    for entry in top:
        if not entry.name.isdigit():
            continue
        if not entry.is_dir(follow_symlinks=False):
            yield entry
            continue
        try:
            with os.scandir(entry.path) as entries:
                yield from (file for file in entries if file.name.isdigit())
        except FileNotFoundError:
            continue  # removed while we looked


def _messages(mess_directory: Path) -> dict[str, tuple[int, float]]:
    """Size and mtime of each message file, by inode number."""
    messages = {}
    for entry in _queue_files(mess_directory):
        try:
            stat = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # delivered while we looked
        messages[entry.name] = (stat.st_size, stat.st_mtime)
    return messages


def scan_queue_directory(queue_directory: Path) -> dict[str, QueueStats]:
    """Both queues from ``mess/`` and ``todo/``. Raises OSError when they are unreadable."""
    messages = _messages(queue_directory / "mess")
    queues = {queue: QueueStats() for queue in QUEUES}
    for entry in _queue_files(queue_directory / "todo"):
        # A todo entry whose message file is gone is still a message, as qmail-qstat counts it.
        size, arrival = messages.pop(entry.name, (0, None))
        queues["todo"].add(size, arrival)
    for size, arrival in messages.values():
        queues["queue"].add(size, arrival)
    return queues


def parse_qstat(output: str) -> int:
    """The not-yet-preprocessed count from ``qmail-qstat``; ValueError for other output.

    qmail-qstat is a shell script that exits 0 even when ``find`` may not read the queue;
    it then prints -1 (file count 0 less the directory), so negative counts are refused.
    """
    counts: dict[bool, int] = {}
    for line in output.splitlines():
        match = _QSTAT_LINE.match(line.strip())
        if match:
            counts[match["todo"] is not None] = int(match["n"])
    if len(counts) != 2 or min(counts.values()) < 0:
        raise ValueError(f"unexpected qmail-qstat output {output[:160]!r}")
    return counts[True]


def _arrival(match: re.Match[str]) -> float | None:
    if match["month"] not in MONTHS:
        return None
    fields = ("year", "day", "hour", "minute", "second")
    year, day, hour, minute, second = (int(match[name]) for name in fields)
    month = MONTHS.index(match["month"]) + 1
    return float(calendar.timegm((year, month, day, hour, minute, second)))


def parse_qread(output: str) -> QueueStats:
    """Count, bytes and oldest arrival of the messages ``qmail-qread`` lists.

    Recipient lines and warnings (``warning: trouble with #...`` for a message that
    went while qmail-qread looked) are not messages.
    """
    stats = QueueStats()
    for line in output.splitlines():
        match = _QREAD_MESSAGE.match(line)
        if match:
            stats.add(int(match["size"]), _arrival(match))
    return stats


class QmailQueueCollector:
    """qmail's two queues from the queue directory, else from qmail-qread and qmail-qstat."""

    def __init__(self, settings: QmailQueueConfig) -> None:
        self.settings = settings
        self._sources = SourceLog(MTA)

    def collect(self) -> Iterable[Metric]:
        deadline = time.monotonic() + float(self.settings.timeout) * COMMAND_TIME_SHARE
        directory = self.settings.queue_directory
        try:
            queues = scan_queue_directory(directory)
        except OSError as error:
            directory_failure = f"{error.filename}: {error.strerror}"
        else:
            self._sources.announce(self.settings.name, "directory", f"{directory} is readable")
            return self._directory_families(queues)
        try:
            queue, todo = self._run_commands(deadline)
        except CollectorError as error:
            raise CollectorError(f"queue directory {directory_failure}; {error}") from None
        why = f"the directory is not readable ({directory_failure})"
        self._sources.announce(self.settings.name, "commands", why)
        return self._command_families(queue, todo)

    def _run_commands(self, deadline: float) -> tuple[QueueStats, int]:
        qread = run_command(self.settings.qread_command, max(0.0, deadline - time.monotonic()))
        qstat = run_command(self.settings.qstat_command, max(0.0, deadline - time.monotonic()))
        try:
            return parse_qread(qread), parse_qstat(qstat)
        except ValueError as error:
            raise CollectorError(str(error)) from None

    def _directory_families(self, queues: dict[str, QueueStats]) -> list[Metric]:
        instance = self.settings.name
        return [
            *queue_families(MTA, instance, queues, time.time()),
            source_info(MTA, instance, "directory"),
        ]

    def _command_families(self, queue: QueueStats, todo: int) -> list[Metric]:
        instance = self.settings.name
        queues = {"queue": queue, "todo": QueueStats(messages=todo, count_only=True)}
        return [
            *queue_families(MTA, instance, queues, time.time()),
            source_info(MTA, instance, "commands"),
        ]


@register_collector("qmail_queue", "qmail queue sizes and ages (queue and todo)", QmailQueueConfig)
def _qmail_queue(section: QmailQueueConfig, previous: Collector | None) -> QmailQueueCollector:
    return QmailQueueCollector(section)
