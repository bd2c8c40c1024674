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
from prometheus_client.core import Metric
from pydantic import Field

from mail_exporter.collectors.base import Collector, CollectorError, register_collector
from mail_exporter.config.collectors import CollectorSection
from mail_exporter.metric_spec import MetricSpec, as_is, attribute, families

logger = logging.getLogger(__name__)


class HostConfig(CollectorSection):
    """CPU, load, memory, network, disk I/O, filesystems, and the filesystems of mail paths."""

    mail_paths: list[Path] = Field(
        default_factory=lambda: [Path("/var/spool/postfix"), Path("/var/mail"), Path("/var/log")]
    )
    # Pseudo and virtual filesystems are not "real": no disk space to run out of.
    exclude_filesystem_types: list[str] = Field(
        default_factory=lambda: [
            "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs",
            "devpts", "devtmpfs", "fusectl", "hugetlbfs", "mqueue", "nsfs", "overlay", "proc",
            "procfs", "pstore", "rpc_pipefs", "securityfs", "selinuxfs", "squashfs", "sysfs",
            "tracefs", "tmpfs", "ramfs", "9p",
        ]
    )  # fmt: skip


CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
LOOPBACK = "lo"
VIRTUAL_DISKS = ("loop", "ram", "zram")
STATVFS_TIMEOUT = 1.0
"""Seconds a statvfs call may take before its mount counts as hung."""
STATVFS_THREADS = 4

DEVICE = ("device",)
FILESYSTEM_LABELS = ("mountpoint", "device", "fstype")
PATH = ("path",)

CPU_SECONDS = MetricSpec(
    "mail_host_cpu_seconds_total", "CPU time spent in each mode, summed over all CPUs.", "counter",
    ("mode",), as_is,
)  # fmt: skip
CPUS = MetricSpec("mail_host_cpus", "Logical CPUs.", "gauge", (), as_is)
LOADS = tuple(
    MetricSpec(
        f"mail_host_load{minutes}", f"Load average over {minutes} minute(s).", "gauge", (), as_is
    )
    for minutes in (1, 5, 15)
)
BOOT_TIME = MetricSpec(
    "mail_host_boot_time_seconds", "When the host booted (uptime is time() minus this).", "gauge",
    (), as_is,
)  # fmt: skip
MEMORY = (
    MetricSpec("mail_host_memory_total_bytes", "Physical memory.", "gauge", (), attribute("total")),
    MetricSpec("mail_host_memory_available_bytes", "Memory available to programs without swapping "
        "(MemAvailable).", "gauge", (), attribute("available")),
    MetricSpec("mail_host_memory_free_bytes", "Memory not used at all.", "gauge", (),
        attribute("free")),
    MetricSpec("mail_host_memory_buffers_bytes", "Memory used for block device buffers.", "gauge",
        (), attribute("buffers")),
    MetricSpec("mail_host_memory_cached_bytes", "Memory used for the page cache.", "gauge", (),
        attribute("cached")),
)  # fmt: skip
SWAP = (
    MetricSpec("mail_host_swap_total_bytes", "Swap space.", "gauge", (), attribute("total")),
    MetricSpec("mail_host_swap_free_bytes", "Swap space not in use.", "gauge", (),
        attribute("free")),
)  # fmt: skip
SWAP_TRAFFIC = (
    MetricSpec("mail_host_swap_in_bytes_total", "Bytes swapped in from disk.", "counter", (),
        attribute("sin")),
    MetricSpec("mail_host_swap_out_bytes_total", "Bytes swapped out to disk.", "counter", (),
        attribute("sout")),
)  # fmt: skip
NETWORK = (
    MetricSpec("mail_host_network_receive_bytes_total", "Bytes received.", "counter", DEVICE,
        attribute("bytes_recv")),
    MetricSpec("mail_host_network_transmit_bytes_total", "Bytes sent.", "counter", DEVICE,
        attribute("bytes_sent")),
    MetricSpec("mail_host_network_receive_packets_total", "Packets received.", "counter", DEVICE,
        attribute("packets_recv")),
    MetricSpec("mail_host_network_transmit_packets_total", "Packets sent.", "counter", DEVICE,
        attribute("packets_sent")),
    MetricSpec("mail_host_network_receive_errors_total", "Receive errors.", "counter", DEVICE,
        attribute("errin")),
    MetricSpec("mail_host_network_transmit_errors_total", "Transmit errors.", "counter", DEVICE,
        attribute("errout")),
    MetricSpec("mail_host_network_receive_drops_total", "Incoming packets dropped.", "counter",
        DEVICE, attribute("dropin")),
    MetricSpec("mail_host_network_transmit_drops_total", "Outgoing packets dropped.", "counter",
        DEVICE, attribute("dropout")),
)  # fmt: skip
DISK_IO = (
    MetricSpec("mail_host_disk_reads_completed_total", "Reads completed.", "counter", DEVICE,
        attribute("read_count")),
    MetricSpec("mail_host_disk_writes_completed_total", "Writes completed.", "counter", DEVICE,
        attribute("write_count")),
    MetricSpec("mail_host_disk_read_bytes_total", "Bytes read.", "counter", DEVICE,
        attribute("read_bytes")),
    MetricSpec("mail_host_disk_written_bytes_total", "Bytes written.", "counter", DEVICE,
        attribute("write_bytes")),
    MetricSpec("mail_host_disk_read_time_seconds_total", "Time spent reading.", "counter", DEVICE,
        attribute("read_time", per=1000)),
    MetricSpec("mail_host_disk_write_time_seconds_total", "Time spent writing.", "counter", DEVICE,
        attribute("write_time", per=1000)),
    MetricSpec("mail_host_disk_io_time_seconds_total", "Time the disk was busy; its rate is the "
        "utilisation (0-1).", "counter", DEVICE, attribute("busy_time", per=1000)),
)  # fmt: skip
FILESYSTEM = (
    MetricSpec("mail_host_filesystem_size_bytes", "Size of the filesystem.", "gauge",
        FILESYSTEM_LABELS, attribute("size_bytes")),
    MetricSpec("mail_host_filesystem_free_bytes", "Free space, including root's reserve.", "gauge",
        FILESYSTEM_LABELS, attribute("free_bytes")),
    MetricSpec("mail_host_filesystem_avail_bytes", "Space available to unprivileged users.",
        "gauge", FILESYSTEM_LABELS, attribute("avail_bytes")),
    MetricSpec("mail_host_filesystem_files", "Inodes (file slots) of the filesystem.", "gauge",
        FILESYSTEM_LABELS, attribute("files")),
    MetricSpec("mail_host_filesystem_files_free", "Free inodes.", "gauge", FILESYSTEM_LABELS,
        attribute("files_free")),
    MetricSpec("mail_host_filesystem_readonly", "1 if mounted read-only.", "gauge",
        FILESYSTEM_LABELS, attribute("readonly")),
)  # fmt: skip
MAIL_PATH = (
    MetricSpec("mail_host_path_size_bytes", "Size of the filesystem holding the mail path.",
        "gauge", PATH, attribute("size_bytes")),
    MetricSpec("mail_host_path_free_bytes", "Free space (including root's reserve) behind the "
        "mail path.", "gauge", PATH, attribute("free_bytes")),
    MetricSpec("mail_host_path_avail_bytes", "Space available to unprivileged users behind the "
        "mail path.", "gauge", PATH, attribute("avail_bytes")),
    MetricSpec("mail_host_path_files", "Inodes of the filesystem holding the mail path (Maildir "
        "uses one a message).", "gauge", PATH, attribute("files")),
    MetricSpec("mail_host_path_files_free", "Free inodes behind the mail path.", "gauge", PATH,
        attribute("files_free")),
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
            "skipping it until it does",
            path,
            STATVFS_TIMEOUT,
        )
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
        yield from families(NETWORK, list(self._interfaces()))
        yield from families(DISK_IO, list(self._disks()))
        yield from self._space()
        yield BOOT_TIME.family([((), self.readings.boot_time())])

    def _cpu(self) -> Iterator[Metric]:
        times = self.readings.cpu_times()
        yield CPU_SECONDS.family(
            ((mode,), getattr(times, mode)) for mode in CPU_MODES if hasattr(times, mode)
        )
        yield CPUS.family([((), self.readings.cpu_count() or 0)])
        for spec, load in zip(LOADS, self.readings.getloadavg(), strict=True):
            yield spec.family([((), load)])

    def _memory(self) -> Iterator[Metric]:
        swap = self.readings.swap_memory()
        yield from families(MEMORY, [((), self.readings.virtual_memory())])
        yield from families((*SWAP, *SWAP_TRAFFIC), [((), swap)])

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
        yield from families(FILESYSTEM, filesystems)
        yield from families(MAIL_PATH, list(self._mail_paths(paths, spaces)))

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


@register_collector(
    "host", "CPU, load, memory, network, disk I/O, filesystems and mail paths", HostConfig
)
def _host(section: HostConfig, previous: Collector | None) -> HostCollector:
    return HostCollector(section)
