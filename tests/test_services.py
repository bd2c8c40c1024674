"""The services collector: matching and counting on a process table, /proc parsing on a
fabricated procfs, and real Postfix and Dovecot servers seen through this machine's /proc."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mail_exporter.collectors.services import (
    CLOCK_TICKS,
    COMMAND_REREAD,
    PAGE_BYTES,
    ProcessName,
    ProcessUsage,
    ProcFS,
    ServiceMatch,
    ServicesCollector,
    ServicesConfig,
    command_name,
)
from tests.realservers.dovecot import Dovecot
from tests.realservers.postfix import Postfix
from tests.test_host import Found, scrape, value


class Table:
    """A process table a test writes: pid to (comm, command, usage or None when gone)."""

    def __init__(self, processes: dict[int, tuple[str, str, ProcessUsage | None]]) -> None:
        self.processes = processes

    def names(self) -> Iterator[ProcessName]:
        for pid, (comm, command, _) in self.processes.items():
            yield ProcessName(pid, comm, command)

    def usage(self, pid: int) -> ProcessUsage | None:
        return self.processes[pid][2]


def usage(start: float, cpu: float = 1.0, rss: int = 1000, fds: int | None = 10) -> ProcessUsage:
    return ProcessUsage(start_time=start, cpu_seconds=cpu, rss_bytes=rss, open_fds=fds)


def settings(**services: list[str]) -> ServicesConfig:
    return ServicesConfig(services=[ServiceMatch(name=n, processes=p) for n, p in services.items()])


def figures(found: Found, service: str) -> dict[str, float]:
    """The service's samples by metric name (without the mail_host_service_ prefix)."""
    return {
        name.removeprefix("mail_host_service_"): by_labels[(("service", service),)]
        for name, by_labels in found.items()
        if (("service", service),) in by_labels
    }


@pytest.mark.parametrize(
    ("cmdline", "name"),
    [
        (b"/usr/lib/postfix/sbin/master\0-w\0", "master"),
        (b"smtpd\0-n\0smtp\0-t\0inet\0-u\0-c\0", "smtpd"),
        (b"dovecot/imap-login\0", "imap-login"),
        (b"/usr/sbin/amavisd-new (master)\0", "amavisd-new"),
        (b"/usr/sbin/spamd --create-prefs --max-children 5\0\0\0", "spamd"),
        (b"/usr/bin/perl\0-T\0-w\0/usr/sbin/spamd\0", "perl"),
    ],
)
def test_command_names(cmdline: bytes, name: str) -> None:
    assert command_name(cmdline) == name


def test_matching_counting_and_absent_services() -> None:
    table = Table({
        10: ("master", "master", usage(start=100.0, rss=4000, fds=30)),
        11: ("smtpd", "smtpd", usage(start=200.0, rss=3000, fds=12)),
        12: ("qmgr", "qmgr", usage(start=150.0)),
        20: ("/usr/sbin/amavi", "amavisd-new", usage(start=50.0, cpu=2.5, rss=90000, fds=None)),
        21: ("/usr/sbin/amavi", "amavisd-new", usage(start=60.0, cpu=0.5, rss=80000, fds=None)),
        30: ("dovecot", "dovecot", None),  # exited between the listing and the reading
    })  # fmt: skip
    collector = ServicesCollector(
        settings(
            postfix=["master", "qmgr"], amavis=["amavisd-new"], dovecot=["dovecot"], clamd=["clamd"]
        ),
        source=table,
    )
    found = scrape(collector.collect())
    assert figures(found, "postfix") == {
        "up": 1, "processes": 2, "resident_memory_bytes": 5000, "open_fds": 40,
        "start_time_seconds": 100.0, "cpu_seconds_total": 2.0,
    }  # fmt: skip
    # Matched by command line; descriptor tables not readable: no open_fds at all.
    assert figures(found, "amavis") == {
        "up": 1, "processes": 2, "resident_memory_bytes": 170000, "start_time_seconds": 50.0,
        "cpu_seconds_total": 3.0,
    }  # fmt: skip
    for down in ("dovecot", "clamd"):
        assert figures(found, down) == {
            "up": 0,
            "processes": 0,
            "resident_memory_bytes": 0,
            "open_fds": 0,
            "cpu_seconds_total": 0,
        }


def test_cpu_seconds_keep_what_exited_processes_used() -> None:
    processes: dict[int, tuple[str, str, ProcessUsage | None]] = {
        1: ("master", "master", usage(start=1.0, cpu=5.0)),
        2: ("smtpd", "smtpd", usage(start=2.0, cpu=1.0)),
    }
    collector = ServicesCollector(settings(postfix=["master", "smtpd"]), source=Table(processes))
    totals = []
    for change in (
        lambda: None,
        lambda: processes.pop(2),  # smtpd exits: its 1.0 s stay counted
        lambda: processes.update({2: ("smtpd", "smtpd", usage(start=9.0, cpu=0.5))}),  # pid reused
        lambda: processes.update({1: ("master", "master", usage(start=1.0, cpu=6.0))}),
    ):
        change()
        totals.append(
            value(
                scrape(collector.collect()),
                "mail_host_service_cpu_seconds_total",
                service="postfix",
            )
        )
    assert totals == [6.0, 6.0, 6.5, 7.5]


def test_a_rebuilt_collector_goes_on_counting_cpu_seconds() -> None:
    """A reload that changes the section rebuilds the collector: a service still configured
    keeps what its exited processes used, so its counter does not drop."""
    processes: dict[int, tuple[str, str, ProcessUsage | None]] = {
        1: ("master", "master", usage(start=1.0, cpu=5.0)),
        2: ("smtpd", "smtpd", usage(start=2.0, cpu=1.0)),
    }
    first = ServicesCollector(settings(postfix=["master", "smtpd"]), source=Table(processes))
    list(first.collect())
    processes.pop(2)
    second = ServicesCollector(
        settings(postfix=["master", "smtpd"], dovecot=["dovecot"]), Table(processes), first
    )
    found = scrape(second.collect())
    assert value(found, "mail_host_service_cpu_seconds_total", service="postfix") == 6.0
    assert value(found, "mail_host_service_cpu_seconds_total", service="dovecot") == 0.0


def fake_process(
    procfs: Path, pid: int, comm: bytes, cmdline: bytes, stat_tail: str, fds: int = 0
) -> None:
    directory = procfs / str(pid)
    (directory / "fd").mkdir(parents=True)
    (directory / "comm").write_bytes(comm + b"\n")
    (directory / "cmdline").write_bytes(cmdline)
    (directory / "stat").write_text(f"{pid} ({comm.decode()}) {stat_tail}")
    for fd in range(fds):
        (directory / "fd" / str(fd)).touch()


# stat fields 3 on: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
# utime stime cutime cstime priority nice threads itrealvalue starttime vsize rss ...
RUNNING = (
    "S 1 10 10 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 1 0 12345 9000000 321 18446744073709551615"
)
ZOMBIE = RUNNING.replace("S", "Z", 1)


def test_procfs_parsing(tmp_path: Path) -> None:
    fake_process(tmp_path, 10, b"odd) (name", b"/usr/sbin/odd\0--flag\0", RUNNING, fds=3)
    fake_process(tmp_path, 2, b"kthreadd", b"", RUNNING)  # a kernel thread: no command line
    fake_process(tmp_path, 11, b"smtpd", b"smtpd\0-n\0", ZOMBIE)
    (tmp_path / "self").mkdir()
    procfs = ProcFS(tmp_path)
    assert sorted(procfs.names(), key=lambda p: p.pid) == [
        ProcessName(10, "odd) (name", "odd"),
        ProcessName(11, "smtpd", "smtpd"),
    ]
    assert procfs.usage(10) == ProcessUsage(
        start_time=psutil.boot_time() + 12345 / CLOCK_TICKS,
        cpu_seconds=300 / CLOCK_TICKS,
        rss_bytes=321 * PAGE_BYTES,
        open_fds=3,
    )
    assert procfs.usage(11) is None  # a zombie uses nothing any more
    assert procfs.usage(99) is None  # gone


def test_procfs_agrees_with_psutil_on_this_process() -> None:
    me = psutil.Process()
    with me.oneshot():
        name, rss, fds, started = me.name(), me.memory_info().rss, me.num_fds(), me.create_time()
    mine = next(p for p in ProcFS().names() if p.pid == os.getpid())
    assert name in (mine.comm, mine.command)
    seen = ProcFS().usage(os.getpid())
    assert seen is not None
    assert abs(seen.start_time - started) < 0.02
    assert abs(seen.rss_bytes - rss) < 16 * 2**20
    assert seen.open_fds is not None and abs(seen.open_fds - fds) <= 2


def commands(procfs: ProcFS) -> dict[int, str]:
    return {process.pid: process.command for process in procfs.names()}


def test_a_command_line_is_read_again_when_the_process_may_have_changed(tmp_path: Path) -> None:
    """Each scrape reads every process's kernel name; its command line only when the process
    is new, was renamed or exec'd (a new kernel name), is another process under the same pid
    (a new /proc entry), or at its turn every COMMAND_REREAD scrapes."""
    fake_process(tmp_path, 10, b"perl", b"/usr/bin/perl\0/usr/sbin/amavisd\0", RUNNING)
    fake_process(tmp_path, 2, b"kthreadd", b"", RUNNING)
    procfs = ProcFS(tmp_path)
    assert commands(procfs) == {10: "perl"}

    def write(name: str, text: bytes) -> None:
        (tmp_path / "10" / name).write_bytes(text)

    write("cmdline", b"/usr/sbin/amavisd (master)\0")
    assert commands(procfs) == {10: "perl"}  # not read again: nothing tells it changed
    write("comm", b"/usr/sbin/amavi\n")  # $0 renames it too
    assert commands(procfs) == {10: "amavisd"}
    # Another process under pid 10, with the same kernel name: a new /proc/10.
    fake_process(tmp_path / "new", 10, b"/usr/sbin/amavi", b"/usr/sbin/amavisd-new\0", RUNNING)
    shutil.rmtree(tmp_path / "10")
    (tmp_path / "new" / "10").rename(tmp_path / "10")
    assert commands(procfs) == {10: "amavisd-new"}
    write("cmdline", b"amavis-child (idle)\0")  # in place, under the same name
    (tmp_path / "2" / "cmdline").write_bytes(b"/sbin/modprobe\0")  # a kernel helper program
    seen = [commands(procfs) for _ in range(COMMAND_REREAD)]
    assert seen[0] == {10: "amavisd-new"}
    assert seen[-1] == {10: "amavis-child", 2: "modprobe"}
    write("cmdline", b"")  # exited: a zombie has no command line
    write("comm", b"amavisd-new\n")
    assert commands(procfs) == {2: "modprobe"}
    # In the midst of an exec: the new name, not yet the new program's arguments.
    fake_process(tmp_path, 12, b"smtpd", b"", RUNNING)
    assert commands(procfs) == {2: "modprobe"}
    (tmp_path / "12" / "cmdline").write_bytes(b"smtpd\0-n\0smtp\0")
    assert commands(procfs) == {2: "modprobe", 12: "smtpd"}


def test_procfs_names_agree_with_a_fresh_reading_of_this_host() -> None:
    """On the real /proc, while processes start, exec, rename themselves and exit: every
    process that stayed the same across the scrape has the names that reading its ``comm``
    and ``cmdline`` afresh gives."""
    renamer = (
        "import ctypes, sys, time; time.sleep(0.2); "
        "ctypes.CDLL(None).prctl(15, b'renamed-daemon', 0, 0, 0); time.sleep(30)"
    )
    children = [
        subprocess.Popen(["sh", "-c", "sleep 0.2; exec sleep 30"]),
        subprocess.Popen([sys.executable, "-c", renamer]),
        subprocess.Popen(["sh", "-c", "sleep 0.3"]),
    ]
    procfs = ProcFS()
    try:
        mismatches = []
        for _ in range(8):
            fresh = fresh_names()
            cached = {process.pid: process for process in procfs.names()}
            if fresh_names() != fresh:  # a process changed during the scrape: no verdict
                continue
            for pid, process in fresh.items():
                if cached.get(pid) != process:
                    mismatches.append((process, cached.get(pid)))
            time.sleep(0.1)
        assert not mismatches
        ours = {process.pid: process.comm for process in procfs.names()}
        assert (ours[children[0].pid], ours[children[1].pid]) == ("sleep", "renamed-daemon")
    finally:
        for child in children:
            child.kill()
            child.wait()


def fresh_names() -> dict[int, ProcessName]:
    """The processes with a command line, each file read now (the reading before the cache)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            comm = (Path("/proc") / entry / "comm").read_bytes()
            cmdline = (Path("/proc") / entry / "cmdline").read_bytes()
        except OSError:
            continue
        if cmdline:
            text = comm.rstrip(b"\n").decode(errors="replace")
            found[int(entry)] = ProcessName(int(entry), text, command_name(cmdline))
    return found


class Sessions(ProcFS):
    """/proc, but only the processes of the given sessions: the test's servers, no others."""

    def __init__(self, sessions: set[int]) -> None:
        super().__init__()
        self.sessions = sessions

    def names(self) -> Iterator[ProcessName]:
        for process in super().names():
            try:
                if os.getsid(process.pid) in self.sessions:
                    yield process
            except ProcessLookupError:
                continue


@pytest.mark.integration
def test_real_postfix_and_dovecot(postfix: Postfix, dovecot: Dovecot) -> None:
    postfix_master = int((postfix.queue_dir / "pid" / "master.pid").read_text().split()[0])
    dovecot_master = next(
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if str(dovecot.config_path) in (p.info["cmdline"] or [])
    )
    services = settings(postfix=["master"], dovecot=["dovecot"], clamd=["clamd"])
    found = scrape(
        ServicesCollector(services, source=Sessions({postfix_master, dovecot_master})).collect()
    )
    for service, pid in (("postfix", postfix_master), ("dovecot", dovecot_master)):
        real = psutil.Process(pid)
        seen = figures(found, service)
        assert (seen["up"], seen["processes"]) == (1, 1)
        assert abs(seen["start_time_seconds"] - real.create_time()) < 0.02
        assert abs(seen["resident_memory_bytes"] - real.memory_info().rss) < 2**20
        assert seen["open_fds"] == real.num_fds()
        assert seen["cpu_seconds_total"] <= sum(real.cpu_times()[:2]) + 0.02
    assert figures(found, "clamd")["up"] == 0

    # Through all of /proc, as in production: the servers run, a service that does not is down.
    services = settings(postfix=["master"], dovecot=["dovecot"], nothing=["no-such-daemon"])
    found = scrape(ServicesCollector(services).collect())
    assert value(found, "mail_host_service_up", service="postfix") == 1
    assert value(found, "mail_host_service_processes", service="dovecot") >= 1
    assert figures(found, "nothing") == {
        "up": 0, "processes": 0, "resident_memory_bytes": 0, "open_fds": 0, "cpu_seconds_total": 0
    }  # fmt: skip
