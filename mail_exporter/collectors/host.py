"""Host resources (psutil): CPU, load, memory, swap, network, disk I/O, filesystems, mail paths.

What an admin expects next to the mail checks, in base units, with node_exporter's shapes
so that dashboards translate. Decisions:

* CPU seconds are summed over all CPUs (``mail_host_cpus`` says how many), by mode. The
  ``guest`` modes are left out: Linux already counts them in ``user`` and ``nice``.
* Network: every interface except loopback ``lo``. Loopback carries the mail's own
  internal hops (content filters, LMTP) twice over; host traffic means the wire.
* Disk I/O: whole disks (the entries of ``/sys/block``) except ``loop``, ``ram`` and
  ``zram`` devices; partitions would count the same I/O a second time.
* Filesystems: every mount whose type is not in ``exclude_filesystem_types`` (pseudo and
  virtual ones), one series per mount point (the last mounted wins where mounts stack).
  Network filesystems count: a mail store on NFS can fill up too.
* Mail paths: the filesystem behind each configured path, named by that path. A path
  that does not exist (or cannot be reached) is skipped with one warning, until it is
  back; the nearest existing parent is not used instead, because a missing
  ``/var/spool/postfix`` means no Postfix there, and the root filesystem's figures under
  that name would mislead.
* ``statvfs`` runs in a small pool with a one-second limit: a mount that hangs (a dead
  NFS server) is skipped, with one warning, until its call returns, instead of hanging
  the collector and every metric with it.

Sample output::

    mail_host_cpu_seconds_total{mode="idle"} 4414.4
    mail_host_load1 0.44
    mail_host_memory_available_bytes 2.4777146368e+010
    mail_host_network_receive_bytes_total{device="eth0"} 1.2e+09
    mail_host_disk_io_time_seconds_total{device="vda"} 117.016
    mail_host_filesystem_avail_bytes{device="/dev/vda",fstype="ext4",mountpoint="/"} 2.1e+11
    mail_host_path_avail_bytes{path="/var/spool/postfix"} 2.1e+11
    mail_host_boot_time_seconds 1.7958e+09
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import psutil  # type: ignore[import-untyped]
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from mail_exporter.collectors import CollectorError, register_collector
from mail_exporter.config import Config
from mail_exporter.config.collectors import HostConfig

logger = logging.getLogger(__name__)

CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
LOOPBACK = "lo"
VIRTUAL_DISKS = ("loop", "ram", "zram")
STATVFS_TIMEOUT = 1.0
"""Seconds a statvfs call may take before its mount counts as hung."""
STATVFS_THREADS = 4

Field = tuple[str, str, str, float]
"""A metric read from an attribute: name, help, attribute, and the reading's units per base unit
(1000 for milliseconds)."""

MEMORY: Sequence[Field] = (
    ("mail_host_memory_total_bytes", "Physical memory.", "total", 1),
    ("mail_host_memory_available_bytes",
     "Memory available to programs without swapping (MemAvailable).", "available", 1),
    ("mail_host_memory_free_bytes", "Memory not used at all.", "free", 1),
    ("mail_host_memory_buffers_bytes", "Memory used for block device buffers.", "buffers", 1),
    ("mail_host_memory_cached_bytes", "Memory used for the page cache.", "cached", 1),
)  # fmt: skip
SWAP: Sequence[Field] = (
    ("mail_host_swap_total_bytes", "Swap space.", "total", 1),
    ("mail_host_swap_free_bytes", "Swap space not in use.", "free", 1),
)
SWAP_TRAFFIC: Sequence[Field] = (
    ("mail_host_swap_in_bytes_total", "Bytes swapped in from disk.", "sin", 1),
    ("mail_host_swap_out_bytes_total", "Bytes swapped out to disk.", "sout", 1),
)
NETWORK: Sequence[Field] = (
    ("mail_host_network_receive_bytes_total", "Bytes received.", "bytes_recv", 1),
    ("mail_host_network_transmit_bytes_total", "Bytes sent.", "bytes_sent", 1),
    ("mail_host_network_receive_packets_total", "Packets received.", "packets_recv", 1),
    ("mail_host_network_transmit_packets_total", "Packets sent.", "packets_sent", 1),
    ("mail_host_network_receive_errors_total", "Receive errors.", "errin", 1),
    ("mail_host_network_transmit_errors_total", "Transmit errors.", "errout", 1),
    ("mail_host_network_receive_drops_total", "Incoming packets dropped.", "dropin", 1),
    ("mail_host_network_transmit_drops_total", "Outgoing packets dropped.", "dropout", 1),
)
DISK_IO: Sequence[Field] = (
    ("mail_host_disk_reads_completed_total", "Reads completed.", "read_count", 1),
    ("mail_host_disk_writes_completed_total", "Writes completed.", "write_count", 1),
    ("mail_host_disk_read_bytes_total", "Bytes read.", "read_bytes", 1),
    ("mail_host_disk_written_bytes_total", "Bytes written.", "write_bytes", 1),
    ("mail_host_disk_read_time_seconds_total", "Time spent reading.", "read_time", 1000),
    ("mail_host_disk_write_time_seconds_total", "Time spent writing.", "write_time", 1000),
    ("mail_host_disk_io_time_seconds_total",
     "Time the disk was busy; its rate is the utilisation (0-1).", "busy_time", 1000),
)  # fmt: skip
FILESYSTEM: Sequence[Field] = (
    ("mail_host_filesystem_size_bytes", "Size of the filesystem.", "size_bytes", 1),
    ("mail_host_filesystem_free_bytes", "Free space, including root's reserve.", "free_bytes", 1),
    ("mail_host_filesystem_avail_bytes", "Space available to unprivileged users.",
     "avail_bytes", 1),
    ("mail_host_filesystem_files", "Inodes (file slots) of the filesystem.", "files", 1),
    ("mail_host_filesystem_files_free", "Free inodes.", "files_free", 1),
    ("mail_host_filesystem_readonly", "1 if mounted read-only.", "readonly", 1),
)  # fmt: skip
MAIL_PATH: Sequence[Field] = (
    ("mail_host_path_size_bytes", "Size of the filesystem holding the mail path.",
     "size_bytes", 1),
    ("mail_host_path_free_bytes", "Free space (including root's reserve) behind the mail path.",
     "free_bytes", 1),
    ("mail_host_path_avail_bytes", "Space available to unprivileged users behind the mail path.",
     "avail_bytes", 1),
    ("mail_host_path_files",
     "Inodes of the filesystem holding the mail path (Maildir uses one a message).", "files", 1),
    ("mail_host_path_files_free", "Free inodes behind the mail path.", "files_free", 1),
)  # fmt: skip


class HostReadings(Protocol):
    """The psutil functions the collector reads (the psutil module itself in production)."""

    def cpu_times(self) -> Any: ...
    def cpu_count(self) -> int | None: ...
    def getloadavg(self) -> tuple[float, float, float]: ...
    def virtual_memory(self) -> Any: ...
    def swap_memory(self) -> Any: ...
    def net_io_counters(self, pernic: bool) -> Mapping[str, Any]: ...
    def disk_io_counters(self, perdisk: bool) -> Mapping[str, Any]: ...
    def disk_partitions(self, all: bool) -> Sequence[Any]: ...
    def boot_time(self) -> float: ...


@dataclass(frozen=True)
class Space:
    """What statvfs says about a filesystem, in bytes and inodes."""

    size_bytes: int
    free_bytes: int
    avail_bytes: int
    files: int
    files_free: int
    readonly: int = 0

    @classmethod
    def of(cls, result: os.statvfs_result) -> Space:
        block = result.f_frsize
        return cls(
            size_bytes=result.f_blocks * block,
            free_bytes=result.f_bfree * block,
            avail_bytes=result.f_bavail * block,
            files=result.f_files,
            files_free=result.f_ffree,
        )


def families(
    kind: type[GaugeMetricFamily] | type[CounterMetricFamily],
    fields: Iterable[Field],
    labels: Sequence[str],
    rows: Iterable[tuple[Sequence[str], object]],
) -> list[Metric]:
    """One family per field, a sample per row: (label values, object holding the field).

    A field that is None on a row is left out rather than made up, and so is a family
    left without samples.
    """
    built = [(kind(name, documentation, labels=list(labels)), attribute, per_unit)
             for name, documentation, attribute, per_unit in fields]  # fmt: skip
    for label_values, source in rows:
        for family, attribute, per_unit in built:
            value = getattr(source, attribute)
            if value is not None:
                family.add_metric(list(label_values), value / per_unit)
    return [family for family, _, _ in built if family.samples]


class SpaceReader:
    """statvfs with a time limit: a hung mount costs a pool thread, not the collector."""

    def __init__(self, statvfs: Callable[[str], os.statvfs_result] = os.statvfs) -> None:
        self._statvfs = statvfs
        self._pool = ThreadPoolExecutor(STATVFS_THREADS, thread_name_prefix="statvfs")
        self._hung: set[str] = set()

    def read(self, paths: Iterable[str]) -> dict[str, Space | OSError]:
        """Each path's space or the error it raised; paths whose call hangs are left out."""
        futures = {
            path: self._pool.submit(self._statvfs, path)
            for path in dict.fromkeys(paths)
            if path not in self._hung
        }
        deadline = time.monotonic() + STATVFS_TIMEOUT
        results: dict[str, Space | OSError] = {}
        for path, future in futures.items():
            try:
                results[path] = Space.of(future.result(max(0.0, deadline - time.monotonic())))
            except FutureTimeout:
                self._hang(path, future)
            except OSError as error:
                results[path] = error
        return results

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _hang(self, path: str, future: Future[os.statvfs_result]) -> None:
        logger.warning(
            "statvfs(%s) did not return within %gs (a hung network filesystem?): "
            "skipping it until it does", path, STATVFS_TIMEOUT,
        )  # fmt: skip
        self._hung.add(path)
        future.add_done_callback(lambda _: self._unhang(path))

    def _unhang(self, path: str) -> None:
        self._hung.discard(path)
        logger.info("statvfs(%s) returned: reading it again", path)


class MailPathLog:
    """Logs a mail path's problem once when it begins or changes, and when it is over."""

    def __init__(self) -> None:
        self._problems: dict[str, str] = {}

    def problem(self, path: str, error: OSError) -> None:
        problem = error.strerror or str(error)
        if self._problems.get(path) != problem:
            logger.warning("mail path %s: %s; skipping it until it is back", path, problem)
            self._problems[path] = problem

    def fine(self, path: str) -> None:
        if self._problems.pop(path, None) is not None:
            logger.info("mail path %s is back", path)


class HostCollector:
    """Reads the host's resources at each scrape (a few small /proc and /sys reads)."""

    def __init__(
        self,
        settings: HostConfig,
        readings: HostReadings = psutil,
        sysfs: Path = Path("/sys"),
        statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
    ) -> None:
        self.settings = settings
        self.readings = readings
        self.sysfs = sysfs
        self._spaces = SpaceReader(statvfs)
        self._path_log = MailPathLog()
        self._excluded = frozenset(settings.exclude_filesystem_types)

    def close(self) -> None:
        self._spaces.close()

    def collect(self) -> Iterable[Metric]:
        yield from self._cpu()
        yield from self._memory()
        yield from families(CounterMetricFamily, NETWORK, ["device"], self._interfaces())
        yield from families(CounterMetricFamily, DISK_IO, ["device"], self._disks())
        yield from self._space()
        yield GaugeMetricFamily(
            "mail_host_boot_time_seconds",
            "When the host booted (uptime is time() minus this).",
            value=self.readings.boot_time(),
        )

    def _cpu(self) -> Iterator[Metric]:
        times = self.readings.cpu_times()
        seconds = CounterMetricFamily(
            "mail_host_cpu_seconds_total",
            "CPU time spent in each mode, summed over all CPUs.",
            labels=["mode"],
        )
        for mode in CPU_MODES:
            if hasattr(times, mode):
                seconds.add_metric([mode], getattr(times, mode))
        yield seconds
        yield GaugeMetricFamily(
            "mail_host_cpus", "Logical CPUs.", value=self.readings.cpu_count() or 0
        )
        for minutes, load in zip((1, 5, 15), self.readings.getloadavg(), strict=True):
            yield GaugeMetricFamily(
                f"mail_host_load{minutes}", f"Load average over {minutes} minute(s).", value=load
            )

    def _memory(self) -> Iterator[Metric]:
        swap = self.readings.swap_memory()
        yield from families(GaugeMetricFamily, MEMORY, [], [([], self.readings.virtual_memory())])
        yield from families(GaugeMetricFamily, SWAP, [], [([], swap)])
        yield from families(CounterMetricFamily, SWAP_TRAFFIC, [], [([], swap)])

    def _interfaces(self) -> Iterator[tuple[list[str], Any]]:
        for device, counters in self.readings.net_io_counters(pernic=True).items():
            if device != LOOPBACK:
                yield [device], counters

    def _disks(self) -> Iterator[tuple[list[str], Any]]:
        block = self.sysfs / "block"
        try:
            whole = {name for name in os.listdir(block) if not name.startswith(VIRTUAL_DISKS)}
        except OSError as error:
            raise CollectorError(f"cannot list the disks in {block}: {error}") from None
        for device, counters in self.readings.disk_io_counters(perdisk=True).items():
            if device in whole:
                yield [device], counters

    def _space(self) -> Iterator[Metric]:
        mounts = {
            partition.mountpoint: partition
            for partition in self.readings.disk_partitions(all=True)
            if partition.fstype not in self._excluded
        }
        paths = [str(path) for path in self.settings.mail_paths]
        spaces = self._spaces.read([*mounts, *paths])
        filesystems = []
        for mountpoint, partition in mounts.items():
            space = spaces.get(mountpoint)
            if isinstance(space, Space):
                readonly = int("ro" in partition.opts.split(","))
                labels = [mountpoint, partition.device, partition.fstype]
                filesystems.append((labels, replace(space, readonly=readonly)))
            elif space is not None:
                logger.debug("filesystem %s: %s", mountpoint, space)
        labels = ["mountpoint", "device", "fstype"]
        yield from families(GaugeMetricFamily, FILESYSTEM, labels, filesystems)
        yield from families(GaugeMetricFamily, MAIL_PATH, ["path"], self._mail_paths(paths, spaces))

    def _mail_paths(
        self, paths: Sequence[str], spaces: Mapping[str, Space | OSError]
    ) -> Iterator[tuple[list[str], Space]]:
        for path in paths:
            space = spaces.get(path)
            if isinstance(space, OSError):
                self._path_log.problem(path, space)
            elif space is not None:
                self._path_log.fine(path)
                yield [path], space


@register_collector("host", "CPU, load, memory, network, disk I/O, filesystems and mail paths")
def _host(config: Config) -> HostCollector:
    return HostCollector(config.collectors.host)
