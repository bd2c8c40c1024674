"""Mail service processes: is each configured service running, and what does it use.

A process belongs to a service when its name is one of the service's ``processes``:
the kernel's name for it (``comm``, what psutil's ``name()`` and ``ps -o comm`` show)
or the base name of the first word of its command line. Both are needed: Postfix's
master shows as ``master``, Dovecot as ``dovecot`` (its children rename themselves
``dovecot/imap-login``, which is ``imap-login``), and Perl daemons such as amavisd
only by their command line (``/usr/sbin/amavisd-new (master)`` is ``amavisd-new``).
Kernel threads and zombies (no command line) never match. Decisions:

* ``mail_host_service_up`` and ``mail_host_service_processes`` are always present for
  every configured service, 0 when it does not run; the start time only while it runs.
* CPU seconds are a counter that outlives the processes: the last reading of a process
  that exited stays in the total, so short-lived children (smtpd, cleanup, imap) do not
  make the counter drop at every exit. Only the CPU a process used between its last
  scrape and its exit is lost. A reload that rebuilds the collector hands each service
  still configured its count, so the counter does not drop then either.
* Open files count the entries of ``/proc/PID/fd`` (sockets and pipes included), over
  the processes whose table may be read (root or the same user); absent when none may.
* /proc is read directly: psutil's process objects cost three times as much for the same
  answer. Each scrape lists /proc and reads one small file a process, its kernel name
  (``comm``), and a little more for the matching ones. The command line is read when a
  process is new, and again when its kernel name changes (``exec``, or a rename such as
  Perl's ``$0``, which sets both), when its pid is taken by another process (told apart by
  the inode of its ``/proc/PID``, which the listing gives and the kernel never gives to a
  later process), and in any case every ``COMMAND_REREAD`` scrapes, a share of the
  processes at each scrape: a command line rewritten in place under the same kernel name
  (``setproctitle`` without a rename) is seen within that many scrapes. A process found
  without a command line at two scrapes in a row (a kernel thread, a zombie; a process in
  the midst of an ``exec`` has none for a moment) is not read again before its turn
  either: it does not get one back, except a kernel thread that the kernel turns into a
  helper program (``modprobe``), seen at that turn. Opening a file in /proc is what costs
  (two thirds of a read on a VM): reading both files of every process at every scrape
  took twice the time.

Sample output::

    mail_host_service_up{service="postfix"} 1.0
    mail_host_service_processes{service="postfix"} 1.0
    mail_host_service_resident_memory_bytes{service="postfix"} 4.5e+06
    mail_host_service_cpu_seconds_total{service="postfix"} 0.52
    mail_host_service_open_fds{service="postfix"} 96.0
    mail_host_service_start_time_seconds{service="postfix"} 1.7958e+09
    mail_host_service_up{service="clamd"} 0.0
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil  # type: ignore[import-untyped]
from prometheus_client.core import Metric
from pydantic import Field

from mail_exporter.collectors.base import Collector, register_collector
from mail_exporter.config.collectors import CollectorSection
from mail_exporter.config.fields import StrictModel
from mail_exporter.metric_spec import MetricSpec, attribute, families


class ServiceMatch(StrictModel):
    """A mail service: processes whose name is one of ``processes``."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    processes: list[str] = Field(min_length=1)


def _default_services() -> list[ServiceMatch]:
    return [
        ServiceMatch(name="postfix", processes=["master"]),
        ServiceMatch(name="smtpd", processes=["smtpd"]),
        ServiceMatch(name="dovecot", processes=["dovecot"]),
        ServiceMatch(name="exim", processes=["exim4", "exim"]),
        ServiceMatch(name="rspamd", processes=["rspamd"]),
        ServiceMatch(name="amavis", processes=["amavisd", "amavisd-new", "amavis"]),
        ServiceMatch(name="spamd", processes=["spamd"]),
        ServiceMatch(name="clamd", processes=["clamd"]),
    ]


class ServicesConfig(CollectorSection):
    """Whether each mail service runs: process count, memory, CPU seconds, open files."""

    services: list[ServiceMatch] = Field(default_factory=_default_services)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
READ_LIMIT = 4096
COMMAND_REREAD = 16
"""Scrapes after which a process's command line is read again, its name unchanged."""

SERVICE = (
    MetricSpec("mail_host_service_up", "1 if at least one process of the service runs.", "gauge",
        ("service",), attribute("up")),
    MetricSpec("mail_host_service_processes", "Processes of the service.", "gauge", ("service",),
        attribute("processes")),
    MetricSpec("mail_host_service_resident_memory_bytes", "Resident memory of the service's "
        "processes.", "gauge", ("service",), attribute("rss_bytes")),
    MetricSpec("mail_host_service_open_fds", "Open files, sockets and pipes of the service's "
        "processes.", "gauge", ("service",), attribute("open_fds")),
    MetricSpec("mail_host_service_start_time_seconds", "Start time of the service's oldest "
        "process.", "gauge", ("service",), attribute("start_time")),
    MetricSpec("mail_host_service_cpu_seconds_total", "CPU time (user and system) of the "
        "service's processes, exited ones included.", "counter", ("service",),
        attribute("cpu_seconds")),
)  # fmt: skip


@dataclass(frozen=True)
class ProcessName:
    pid: int
    comm: str
    command: str
    """Base name of the first word of the command line."""


@dataclass(frozen=True)
class ProcessUsage:
    start_time: float
    """Unix seconds; with the pid it tells a process from a later one with the same pid."""
    cpu_seconds: float
    rss_bytes: int
    open_fds: int | None
    """None when the descriptor table may not be read."""


class ProcessSource(Protocol):
    """Where processes come from: /proc in production, a table in tests."""

    def names(self) -> Iterable[ProcessName]: ...
    def usage(self, pid: int) -> ProcessUsage | None:
        """None when the process has exited (or turned zombie) meanwhile."""
        ...


def command_name(cmdline: bytes) -> str:
    """Base name of a command line's first word (NUL-separated, or one string with spaces)."""
    first, _, rest = cmdline.partition(b"\0")
    if not rest.strip(b"\0"):  # rewritten as one string (setproctitle): words split by spaces
        first = first.split(b" ", 1)[0]
    return os.path.basename(first.decode(errors="replace"))


def _read(path: str) -> bytes:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        return os.read(descriptor, READ_LIMIT)
    finally:
        os.close(descriptor)


@dataclass(frozen=True)
class Seen:
    """A process as the last scrape found it: what tells it has changed, and its name."""

    inode: int
    """Of its ``/proc/PID`` directory: a later process with the same pid has another."""
    comm: bytes
    name: ProcessName | None
    """None without a command line (a kernel thread, a zombie, or one in the midst of an
    ``exec``: the new program's arguments are not in place yet)."""
    settled: bool = False
    """Without a command line at two readings in a row: not read again before its turn."""


class ProcFS:
    """Processes from a procfs (``/proc``)."""

    def __init__(self, procfs: Path = Path("/proc")) -> None:
        self.procfs = str(procfs)
        self.boot_time: float = psutil.boot_time()
        self._seen: dict[str, Seen] = {}
        self._scrapes = 0

    def names(self) -> Iterable[ProcessName]:
        self._scrapes += 1
        before, seen = self._seen, {}
        found = []
        with os.scandir(self.procfs) as entries:
            for entry in entries:
                pid = entry.name
                if not pid.isdigit():
                    continue
                inode = entry.inode()  # from the listing itself: no system call
                known = before.get(pid)
                if known is not None and known.inode != inode:
                    known = None  # another process under the same pid
                turn = (int(pid) + self._scrapes) % COMMAND_REREAD == 0
                if known is None or not known.settled or turn:
                    try:
                        comm = _read(f"{self.procfs}/{pid}/comm")
                        if known is None or known.comm != comm or known.name is None or turn:
                            name = self._name(pid, comm)
                            settled = name is None and known is not None and known.name is None
                            known = Seen(inode, comm, name, settled)
                    except OSError:  # exited meanwhile
                        continue
                seen[pid] = known
                if known.name is not None:
                    found.append(known.name)
        self._seen = seen
        return found

    def _name(self, entry: str, comm: bytes) -> ProcessName | None:
        cmdline = _read(f"{self.procfs}/{entry}/cmdline")
        if not cmdline:  # kernel threads and zombies have none
            return None
        comm_text = comm.rstrip(b"\n").decode(errors="replace")
        return ProcessName(int(entry), comm_text, command_name(cmdline))

    def usage(self, pid: int) -> ProcessUsage | None:
        try:
            stat = _read(f"{self.procfs}/{pid}/stat")
        except OSError:
            return None
        # The name in parentheses may hold spaces and parentheses: fields follow the last ")".
        fields = stat[stat.rindex(b")") + 2 :].split()
        if fields[0] == b"Z" or fields[20] == b"0":  # a zombie, or exiting: no memory left
            return None
        return ProcessUsage(
            start_time=self.boot_time + int(fields[19]) / CLOCK_TICKS,
            cpu_seconds=(int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
            rss_bytes=int(fields[21]) * PAGE_BYTES,
            open_fds=self._open_fds(pid),
        )

    def _open_fds(self, pid: int) -> int | None:
        try:
            return len(os.listdir(f"{self.procfs}/{pid}/fd"))
        except OSError:
            return None


@dataclass
class ServiceFigures:
    """One scrape's figures of a service."""

    processes: int = 0
    rss_bytes: int = 0
    fds: int = 0
    fd_tables: int = 0
    """Processes whose descriptor table could be read."""
    start_time: float | None = None
    cpu: dict[tuple[int, float], float] = field(default_factory=dict)
    """CPU seconds of each living process, by (pid, start time)."""
    cpu_seconds: float = 0.0

    @property
    def up(self) -> int:
        return int(self.processes > 0)

    @property
    def open_fds(self) -> int | None:
        return self.fds if self.fd_tables or not self.processes else None

    def add(self, pid: int, usage: ProcessUsage) -> None:
        self.processes += 1
        self.rss_bytes += usage.rss_bytes
        if usage.open_fds is not None:
            self.fds += usage.open_fds
            self.fd_tables += 1
        if self.start_time is None or usage.start_time < self.start_time:
            self.start_time = usage.start_time
        self.cpu[(pid, usage.start_time)] = usage.cpu_seconds


class CpuCounter:
    """A service's CPU seconds that keep the last reading of every process that exited."""

    def __init__(self) -> None:
        self._exited = 0.0
        self._last: dict[tuple[int, float], float] = {}

    def total(self, living: dict[tuple[int, float], float]) -> float:
        self._exited += sum(seconds for key, seconds in self._last.items() if key not in living)
        self._last = living
        return self._exited + sum(living.values())


class ServicesCollector:
    """Matches every process against the configured services at each scrape."""

    def __init__(
        self,
        settings: ServicesConfig,
        source: ProcessSource | None = None,
        previous: ServicesCollector | None = None,
    ) -> None:
        self.source = source if source is not None else ProcFS()
        # A service still configured after a reload keeps counting its CPU seconds.
        kept = previous._counters if previous is not None else {}
        self._counters: dict[str, CpuCounter] = {
            service.name: kept.get(service.name) or CpuCounter() for service in settings.services
        }
        self._owners: dict[str, list[str]] = {}
        for service in settings.services:
            for name in service.processes:
                self._owners.setdefault(name, []).append(service.name)

    def collect(self) -> Iterable[Metric]:
        figures = {name: ServiceFigures() for name in self._counters}
        for process in self.source.names():
            services = {*self._owners.get(process.comm, ()), *self._owners.get(process.command, ())}
            usage = self.source.usage(process.pid) if services else None
            if usage is None:
                continue
            for service in services:
                figures[service].add(process.pid, usage)
        for name, service in figures.items():
            service.cpu_seconds = self._counters[name].total(service.cpu)
        return families(SERVICE, [([name], service) for name, service in figures.items()])


@register_collector(
    "services", "Mail service processes: up, count, memory, CPU, open files", ServicesConfig
)
def _services(section: ServicesConfig, previous: Collector | None) -> ServicesCollector:
    return ServicesCollector(
        section, previous=previous if isinstance(previous, ServicesCollector) else None
    )
