"""The host collector on this machine's real readings, and where reality needs help: missing
mail paths, mounts that hang, partitions and virtual disks."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.core import Metric

from mail_exporter.collectors import host
from mail_exporter.collectors.base import CollectorError
from mail_exporter.collectors.host import CPU_MODES, HostCollector, HostConfig

Found = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(families: Iterable[Metric]) -> Found:
    """Sample values by name, then by their labels (sorted name/value pairs)."""
    found: Found = {}
    for family in families:
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            found.setdefault(sample.name, {})[labels] = sample.value
    return found


def value(found: Found, name: str, **labels: str) -> float:
    return found[name][tuple(sorted(labels.items()))]


def label_values(found: Found, name: str, label: str) -> set[str]:
    return {dict(labels)[label] for labels in found.get(name, {})}


def test_real_readings(tmp_path: Path) -> None:
    before = psutil.cpu_times()
    found = scrape(HostCollector(HostConfig(mail_paths=[tmp_path])).collect())
    after = psutil.cpu_times()

    assert label_values(found, "mail_host_cpu_seconds_total", "mode") == set(CPU_MODES)
    for mode in CPU_MODES:
        seconds = value(found, "mail_host_cpu_seconds_total", mode=mode)
        assert getattr(before, mode) <= seconds <= getattr(after, mode)
    assert value(found, "mail_host_cpus") == os.cpu_count()
    assert abs(value(found, "mail_host_load15") - os.getloadavg()[2]) < 0.5
    assert value(found, "mail_host_memory_total_bytes") == psutil.virtual_memory().total
    assert value(found, "mail_host_swap_total_bytes") == psutil.swap_memory().total
    assert value(found, "mail_host_boot_time_seconds") == psutil.boot_time()

    interfaces = set(psutil.net_io_counters(pernic=True)) - {"lo"}
    assert label_values(found, "mail_host_network_receive_bytes_total", "device") == interfaces
    disks = {n for n in os.listdir("/sys/block") if not n.startswith(("loop", "ram", "zram"))}
    assert label_values(found, "mail_host_disk_read_bytes_total", "device") == disks & set(
        psutil.disk_io_counters(perdisk=True)
    )

    root = next(p for p in psutil.disk_partitions(all=True) if p.mountpoint == "/")
    labels = {"mountpoint": "/", "device": root.device, "fstype": root.fstype}
    space = os.statvfs("/")
    assert (
        value(found, "mail_host_filesystem_size_bytes", **labels) == space.f_blocks * space.f_frsize
    )
    assert value(found, "mail_host_filesystem_files", **labels) == space.f_files
    assert value(found, "mail_host_filesystem_readonly", **labels) == 0
    assert "/proc" not in label_values(found, "mail_host_filesystem_size_bytes", "mountpoint")

    path = os.statvfs(tmp_path)
    assert (
        value(found, "mail_host_path_size_bytes", path=str(tmp_path))
        == path.f_blocks * path.f_frsize
    )
    assert value(found, "mail_host_path_avail_bytes", path=str(tmp_path)) > 0
    assert value(found, "mail_host_path_files", path=str(tmp_path)) == path.f_files


def test_excluded_filesystem_types_are_left_out() -> None:
    root = next(p for p in psutil.disk_partitions(all=True) if p.mountpoint == "/")
    settings = HostConfig(
        exclude_filesystem_types=[*HostConfig().exclude_filesystem_types, root.fstype]
    )
    found = scrape(HostCollector(settings).collect())
    assert "/" not in label_values(found, "mail_host_filesystem_size_bytes", "mountpoint")


def test_a_missing_mail_path_is_skipped_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool"
    collector = HostCollector(HostConfig(mail_paths=[spool, tmp_path]))
    with caplog.at_level(logging.INFO, logger=host.__name__):
        for _ in range(2):
            found = scrape(collector.collect())
            assert label_values(found, "mail_host_path_avail_bytes", "path") == {str(tmp_path)}
        spool.mkdir()
        found = scrape(collector.collect())
    assert label_values(found, "mail_host_path_avail_bytes", "path") == {str(spool), str(tmp_path)}
    assert [record.getMessage() for record in caplog.records] == [
        f"mail path {spool}: No such file or directory; skipping it until it is back",
        f"mail path {spool} is back",
    ]


def test_a_hung_mount_is_skipped_until_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(host, "STATVFS_TIMEOUT", 0.2)
    hung = str(tmp_path / "nfs")
    release = threading.Event()

    hung_calls: list[str] = []

    def statvfs(path: str) -> os.statvfs_result:
        if path == hung:
            hung_calls.append(path)
            release.wait(10)
        return os.statvfs(tmp_path)

    collector = HostCollector(HostConfig(mail_paths=[Path(hung), tmp_path]), statvfs=statvfs)
    try:
        with caplog.at_level(logging.WARNING, logger=host.__name__):
            started = time.monotonic()
            first = scrape(collector.collect())
            waited = time.monotonic() - started
            second = scrape(collector.collect())
    finally:
        release.set()
    assert 0.2 <= waited < 10  # waited its timeout, not for the mount
    assert hung_calls == [hung]  # and the second scrape did not ask the hung mount again
    for found in (first, second):
        assert label_values(found, "mail_host_path_avail_bytes", "path") == {str(tmp_path)}
    assert [r.getMessage() for r in caplog.records] == [
        f"statvfs({hung}) did not return within 0.2s (a hung network filesystem?): "
        "skipping it until it does"
    ]
    deadline = time.monotonic() + 5
    while hung not in label_values(
        scrape(collector.collect()), "mail_host_path_avail_bytes", "path"
    ):
        assert time.monotonic() < deadline, "the mount did not come back"
        time.sleep(0.05)


class Recorded:
    """psutil, except for the readings a test gives."""

    def __init__(self, **readings: Any) -> None:
        self.readings = readings

    def __getattr__(self, name: str) -> Any:
        if name in self.readings:
            return lambda *args, **kwargs: self.readings[name]
        return getattr(psutil, name)


def test_disk_io_of_whole_disks_only(tmp_path: Path) -> None:
    for name in ("sda", "nvme0n1", "loop0", "zram0", "ram0"):
        (tmp_path / "block" / name).mkdir(parents=True)
    counters = psutil.disk_io_counters(perdisk=False)
    per_disk: Mapping[str, Any] = {
        name: counters for name in ("sda", "sda1", "nvme0n1", "nvme0n1p1", "loop0", "zram0", "ram0")
    }
    collector = HostCollector(
        HostConfig(), readings=Recorded(disk_io_counters=per_disk), sysfs=tmp_path
    )
    found = scrape(collector.collect())
    assert label_values(found, "mail_host_disk_io_time_seconds_total", "device") == {
        "sda",
        "nvme0n1",
    }
    assert (
        value(found, "mail_host_disk_io_time_seconds_total", device="sda")
        == counters.busy_time / 1000
    )


def test_without_sys_block_the_collector_fails(tmp_path: Path) -> None:
    with pytest.raises(CollectorError, match=f"cannot list the disks in {tmp_path}/block"):
        list(HostCollector(HostConfig(), sysfs=tmp_path).collect())


def test_close_stops_the_statvfs_threads(tmp_path: Path) -> None:
    collector = HostCollector(HostConfig(mail_paths=[tmp_path]))
    list(collector.collect())
    collector.close()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        list(collector.collect())
