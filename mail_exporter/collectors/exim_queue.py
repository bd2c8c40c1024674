"""Exim's queue: messages, bytes, oldest age and frozen messages, from the spool or ``exim -bpc``.

Two sources, the first that works:

* ``spool``: the ``-H`` files under ``<spool_directory>/input``, and under its
  one-character subdirectories when ``split_spool_directory`` is set (both at once
  are fine, as while that setting changes). Needs read access to the spool: root
  or the ``Debian-exim`` group. Message ids of both lengths count, up to Exim 4.96
  ``1xX72l-0007Qa-1d`` and from 4.97 on ``1xX72l-0000000Jqwe-0Z3f``.

  - size: the ``-D`` file plus the ``-H`` file, i.e. the bytes the message takes in
    the spool. That is the message plus Exim's envelope (sender, recipients, flags:
    a few hundred bytes), so a little more than the size ``exim -bp`` shows.
  - arrival: the received time Exim writes on the fourth line of the ``-H`` file;
    file times are not used (Exim rewrites ``-H`` on every delivery attempt).
  - frozen: a ``-frozen <time>`` flag line in the ``-H`` file. Only the first
    :data:`HEADER_READ_LIMIT` bytes of each ``-H`` are read: the flags come before the
    recipients and headers, so only ACL variables larger than that could hide one.

  A message delivered between listing the directory and opening its ``-H`` file is
  not counted; a ``-H`` file Exim itself could not parse counts without an arrival time.

* ``bpc``: when the spool cannot be read, ``exim_command`` with ``-bpc`` (needs an
  Exim admin user, or a command such as ``["sudo", "-n", "exim4"]``). It gives the
  count only: ``mail_queue_size_bytes``, ``mail_queue_oldest_message_age_seconds`` and
  ``mail_queue_frozen_messages`` are then left out rather than reported as a made-up 0,
  and ``mail_queue_source_info`` says ``bpc``.

When both fail the collector fails with both reasons. Like ``exim -bpc``, only the
default queue counts: named queues (``queue_name``) and the ``Finput`` directory of
``move_frozen_messages`` are not read.

Sample output::

    mail_queue_messages{mta="exim",mta_instance="exim",queue="input"} 3.0
    mail_queue_size_bytes{mta="exim",mta_instance="exim",queue="input"} 1981.0
    mail_queue_oldest_message_age_seconds{mta="exim",mta_instance="exim",queue="input"} 420.0
    mail_queue_frozen_messages{mta="exim",mta_instance="exim"} 1.0
    mail_queue_source_info{mta="exim",mta_instance="exim",source="spool"} 1.0
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shlex
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
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
from mail_exporter.collectors.queues import (
    QueueStats,
    SourceLog,
    queue_families,
    read_head,
    source_info,
)
from mail_exporter.config.collectors import CollectorSection
from mail_exporter.metric_spec import MetricSpec, as_is

logger = logging.getLogger(__name__)


class EximQueueConfig(CollectorSection):
    name: str = Field(default="exim", pattern=r"^[A-Za-z0-9_.-]+$")
    spool_directory: Path = Path("/var/spool/exim4")
    exim_command: list[str] = Field(default_factory=lambda: ["exim4"], min_length=1)


MTA = "exim"
QUEUE = "input"
HEADER_READ_LIMIT = 65536
"""How much of a ``-H`` file is read at most."""

FROZEN = MetricSpec(
    "mail_queue_frozen_messages", "Frozen messages in the queue (Exim); absent when only a count "
    "could be read.", "gauge", ("mta", "mta_instance"), as_is,
)  # fmt: skip

_ID = r"[0-9A-Za-z]{6}-(?:[0-9A-Za-z]{6}-[0-9A-Za-z]{2}|[0-9A-Za-z]{11}-[0-9A-Za-z]{4})"
_HEADER_FILE = re.compile(rf"({_ID})-H")
_SPLIT_SUBDIRECTORY = re.compile(r"[0-9A-Za-z]")


@dataclass(frozen=True)
class HeaderFacts:
    """What the start of a ``-H`` file says: when the message arrived and if it is frozen."""

    received: float
    frozen: bool


@dataclass
class SpoolScan:
    queue: QueueStats = field(default_factory=QueueStats)
    frozen: int = 0


def _received_time(line: bytes) -> float | None:
    """The first field of ``<received time> <warning count>``."""
    fields = line.split()
    if len(fields) != 2 or not fields[0].isdigit():
        return None
    return float(fields[0])


def _acl_value_length(flag: bytes) -> int:
    """The byte count ending ``-aclc NAME LENGTH`` (or the old ``-acl NUMBER LENGTH``)."""
    fields = flag.split()
    return int(fields[-1]) if len(fields) == 3 and fields[-1].isdigit() else 0


def parse_header(head: bytes, message_id: str) -> HeaderFacts | None:
    """Arrival and frozen flag from the start of a ``-H`` file; None if it is not one.

    The file opens with ``ID-H``, the owner, ``<sender>`` and ``TIME WARNINGS``, then
    flag lines starting with ``-`` (``--`` for tainted values).
    """
    lines = head.split(b"\n", 4)
    if len(lines) < 5 or lines[0] != f"{message_id}-H".encode():
        return None
    received = _received_time(lines[3])
    if received is None:
        return None
    # Most messages are not frozen: skip the line by line walk when the word is absent.
    return HeaderFacts(received, frozen=b"frozen" in lines[4] and _frozen_flag(lines[4]))


def _frozen_flag(rest: bytes) -> bool:
    """Whether the flag lines opening ``rest`` include ``-frozen``.

    An ACL variable's value follows its flag line and may span lines, so it is skipped
    by its byte count rather than read as flags.
    """
    stream = io.BytesIO(rest)
    for line in iter(stream.readline, b""):
        if not line.startswith(b"-") or not line.endswith(b"\n"):
            return False  # the end of the flags, or of what was read
        flag = line.lstrip(b"-")
        if flag.split(maxsplit=1)[:1] == [b"frozen"]:
            return True
        if flag.startswith(b"acl"):
            stream.seek(_acl_value_length(flag) + 1, io.SEEK_CUR)
    return False


def _entries(directory: str) -> list[os.DirEntry[str]]:
    with os.scandir(directory) as entries:
        return list(entries)


def _spool_entries(input_directory: str) -> Iterator[os.DirEntry[str]]:
    """The files of ``input/`` and of its split subdirectories (named ``0``-``9``, ``A``-``z``)."""
    top = _entries(input_directory)
    yield from top
    for entry in top:
        if _SPLIT_SUBDIRECTORY.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
            try:
                yield from _entries(entry.path)
            except FileNotFoundError:
                continue  # removed while we looked


def _read_message(header_path: str, message_id: str) -> tuple[int, HeaderFacts | None] | None:
    """Spool bytes and header facts of one message; None when it left the queue meanwhile."""
    found = read_head(header_path, HEADER_READ_LIMIT)
    if found is None:
        return None
    head, size = found
    # A -D file already removed (delivery ending): the -H file still counts, as for exim -bpc.
    with contextlib.suppress(FileNotFoundError):
        size += os.stat(header_path[:-1] + "D").st_size
    return size, parse_header(head, message_id)


def scan_spool(input_directory: Path) -> SpoolScan:
    """Every message in the spool's input directory. Raises OSError when it is unreadable."""
    scan = SpoolScan()
    for entry in _spool_entries(str(input_directory)):
        match = _HEADER_FILE.fullmatch(entry.name)
        message = None if match is None else _read_message(entry.path, match[1])
        if message is None:
            continue
        size, facts = message
        scan.queue.add(size, None if facts is None else facts.received)
        scan.frozen += facts is not None and facts.frozen
    return scan


def count_with_exim(exim_command: list[str], timeout: float) -> int:
    """The queue count from ``exim -bpc``; CollectorError when it cannot be had."""
    command = [*exim_command, "-bpc"]
    output = run_command(command, timeout).strip()
    if not output.isdigit():
        raise CollectorError(f"{shlex.join(command)}: unexpected output {output[:80]!r}")
    return int(output)


def _describe(error: OSError) -> str:
    return f"{error.filename}: {error.strerror}" if error.filename else str(error)


class EximQueueCollector:
    """Exim's queue from the spool, else its count from ``exim -bpc``."""

    def __init__(self, settings: EximQueueConfig) -> None:
        self.settings = settings
        self._sources = SourceLog(MTA)

    def collect(self) -> Iterable[Metric]:
        deadline = time.monotonic() + float(self.settings.timeout) * COMMAND_TIME_SHARE
        input_directory = self.settings.spool_directory / "input"
        try:
            scan = scan_spool(input_directory)
        except OSError as error:
            spool_failure = _describe(error)
        else:
            self._sources.announce(self.settings.name, "spool", f"{input_directory} is readable")
            return self._spool_families(scan)
        try:
            time_left = max(0.0, deadline - time.monotonic())
            count = count_with_exim(self.settings.exim_command, time_left)
        except CollectorError as error:
            raise CollectorError(f"spool {spool_failure}; {error}") from None
        why = f"the spool is not readable ({spool_failure}): count only"
        self._sources.announce(self.settings.name, "bpc", why)
        return self._count_families(count)

    def _spool_families(self, scan: SpoolScan) -> list[Metric]:
        instance = self.settings.name
        return [
            *queue_families(MTA, instance, {QUEUE: scan.queue}, time.time()),
            FROZEN.family([((MTA, instance), scan.frozen)]),
            source_info(MTA, instance, "spool"),
        ]

    def _count_families(self, count: int) -> list[Metric]:
        instance = self.settings.name
        queues = {QUEUE: QueueStats(messages=count, count_only=True)}
        return [
            *queue_families(MTA, instance, queues, time.time()),
            source_info(MTA, instance, "bpc"),
        ]


@register_collector("exim_queue", "Exim queue size, age and frozen messages", EximQueueConfig)
def _exim_queue(section: EximQueueConfig, previous: Collector | None) -> EximQueueCollector:
    return EximQueueCollector(section)
