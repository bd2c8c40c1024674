"""The S.M.A.R.T. collector on smartctl 7.3 JSON documents (this machine has no S.M.A.R.T. disk),
run through a stand-in that exits with the recorded status, and with no smartctl at all."""

from __future__ import annotations

import logging
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mail_exporter.collectors import smart
from mail_exporter.collectors.base import CollectorError
from mail_exporter.collectors.smart import FLAGS, Device, SmartCollector, SmartConfig
from tests.test_host import Found, scrape, value

FIXTURES = Path(__file__).parent / "fixtures" / "smart"
HOURS = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def documents(tmp_path: Path) -> Path:
    """A copy of the fixtures, which the stand-in reads and logs its calls into."""
    directory = tmp_path / "smart"
    shutil.copytree(FIXTURES, directory)
    return directory


def collector(
    documents: Path, *devices: str, clock: Clock | None = None, **settings: str
) -> SmartCollector:
    command = [sys.executable, str(documents / "fake_smartctl.py"), str(documents)]
    config = SmartConfig(smartctl_command=command, devices=list(devices), **settings)
    return SmartCollector(
        config, clock=clock or Clock(), wall_clock=lambda: 1.8e9, background=at_once
    )


def at_once(run: Callable[[], None]) -> None:
    """Runs what the collector would start in its own thread right away, for exact tests."""
    run()


def calls(documents: Path) -> list[str]:
    log = documents / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def flags(found: Found, device: str) -> dict[str, float]:
    return {
        flag: value(found, "mail_host_smart_exit_status_flag", device=device, flag=flag)
        for _, flag in FLAGS
    }


def test_healthy_sata_disk(documents: Path) -> None:
    found = scrape(collector(documents, "/dev/sata_healthy").collect())
    disk = {"device": "/dev/sata_healthy"}
    assert value(found, "mail_host_smart_healthy", **disk) == 1
    assert value(found, "mail_host_smart_temperature_celsius", **disk) == 31
    assert value(found, "mail_host_smart_power_on_seconds", **disk) == 42454 * HOURS
    assert value(found, "mail_host_smart_reallocated_sectors", **disk) == 0
    assert value(found, "mail_host_smart_pending_sectors", **disk) == 0
    assert value(found, "mail_host_smart_offline_uncorrectable_sectors", **disk) == 0
    assert value(found, "mail_host_smart_standby", **disk) == 0
    assert value(found, "mail_host_smart_last_read_timestamp_seconds", **disk) == 1.8e9
    info = {**disk, "protocol": "ATA", "model": "HGST HUS726040ALE614", "serial": "REDACTED"}
    assert value(found, "mail_host_smart_device_info", **info) == 1
    assert set(flags(found, "/dev/sata_healthy").values()) == {0}
    assert "mail_host_smart_nvme_used_ratio" not in found
    assert calls(documents) == ["--json --nocheck=standby -a /dev/sata_healthy"]


def test_failing_sata_disk(documents: Path) -> None:
    found = scrape(collector(documents, "/dev/sata_failing").collect())
    disk = {"device": "/dev/sata_failing"}
    assert value(found, "mail_host_smart_healthy", **disk) == 0
    assert value(found, "mail_host_smart_reallocated_sectors", **disk) == 1872
    assert value(found, "mail_host_smart_pending_sectors", **disk) == 48
    assert value(found, "mail_host_smart_offline_uncorrectable_sectors", **disk) == 48
    assert value(found, "mail_host_smart_temperature_celsius", **disk) == 38
    # Exit status 88: bits 3 (DISK FAILING), 4 (pre-failure attribute at threshold), 6 (error log).
    assert flags(found, "/dev/sata_failing") == {
        "command_failed": 0,
        "disk_failing": 1,
        "prefail_below_threshold": 1,
        "below_threshold_in_past": 0,
        "error_log_errors": 1,
        "self_test_errors": 0,
    }


def test_nvme_disk(documents: Path) -> None:
    found = scrape(collector(documents, "/dev/nvme").collect())
    disk = {"device": "/dev/nvme"}
    assert value(found, "mail_host_smart_healthy", **disk) == 1
    assert value(found, "mail_host_smart_nvme_used_ratio", **disk) == 0.1
    assert value(found, "mail_host_smart_nvme_media_errors_total", **disk) == 0
    assert value(found, "mail_host_smart_temperature_celsius", **disk) == 27
    assert value(found, "mail_host_smart_power_on_seconds", **disk) == 26686 * HOURS
    for ata_only in ("reallocated", "pending", "offline_uncorrectable"):
        assert not any(name.startswith(f"mail_host_smart_{ata_only}") for name in found)


def test_every_exit_status_maps_to_its_flags() -> None:
    for status in range(256):
        reading = smart.Reading(exit_status=status, read_at=1.0)
        found = scrape(smart.reading_families({"/dev/sda": reading}))
        assert flags(found, "/dev/sda") == {flag: float(bool(status & bit)) for bit, flag in FLAGS}


def test_scan_finds_the_disks_and_passes_their_types(documents: Path) -> None:
    shutil.copy(documents / "sata_healthy.json", documents / "sda.json")
    shutil.copy(documents / "nvme.json", documents / "nvme0.json")
    found = scrape(collector(documents).collect())
    assert set(found["mail_host_smart_healthy"]) == {
        (("device", "/dev/sda"),),
        (("device", "/dev/nvme0"),),
    }
    assert calls(documents) == [
        "--scan --json",
        "--json --nocheck=standby -a -d sat /dev/sda",
        "--json --nocheck=standby -a -d nvme /dev/nvme0",
    ]


def test_no_disks_no_metrics(documents: Path) -> None:
    shutil.copy(documents / "scan_none.json", documents / "scan.json")
    assert list(collector(documents).collect()) == []


def test_disks_behind_a_controller_keep_apart() -> None:
    assert Device.parse("/dev/sda").arguments == ["/dev/sda"]
    first, second = Device.parse("/dev/bus/0 -d megaraid,0"), Device("/dev/bus/0", "megaraid,1")
    assert first.arguments == ["-d", "megaraid,0", "/dev/bus/0"]
    assert (first.label, second.label) == ("/dev/bus/0 megaraid,0", "/dev/bus/0 megaraid,1")
    assert Device("/dev/sda", "sat").label == "/dev/sda"


def test_standby_is_not_a_failure_and_keeps_the_last_readings(documents: Path) -> None:
    clock = Clock()
    disk = documents / "disk.json"
    shutil.copy(documents / "standby.json", disk)
    sleeper = collector(documents, "/dev/disk", clock=clock, interval="10m")
    found = scrape(sleeper.collect())
    assert found == {"mail_host_smart_standby": {(("device", "/dev/disk"),): 1}}

    shutil.copy(documents / "sata_healthy.json", disk)
    clock.now += 600
    assert value(scrape(sleeper.collect()), "mail_host_smart_standby", device="/dev/disk") == 0

    shutil.copy(documents / "standby.json", disk)
    clock.now += 600
    found = scrape(sleeper.collect())
    assert value(found, "mail_host_smart_standby", device="/dev/disk") == 1
    assert value(found, "mail_host_smart_healthy", device="/dev/disk") == 1
    assert value(found, "mail_host_smart_temperature_celsius", device="/dev/disk") == 31
    assert len(calls(documents)) == 3


def test_later_runs_do_not_hold_up_the_scrape(documents: Path) -> None:
    disk = documents / "disk.json"
    shutil.copy(documents / "sata_healthy.json", disk)
    clock = Clock()
    command = [sys.executable, str(documents / "fake_smartctl.py"), str(documents)]
    settings = SmartConfig(smartctl_command=command, devices=["/dev/disk"], interval="1m")
    disks = SmartCollector(settings, clock=clock)  # runs after the first in its own thread
    healthy = scrape(disks.collect())
    shutil.copy(documents / "sata_failing.json", disk)
    hold = documents / "hold"
    hold.touch()  # the next smartctl run stays busy until the hold is lifted
    clock.now += 60
    assert scrape(disks.collect()) == healthy  # the last readings, without waiting for the run
    hold.unlink()
    deadline = time.monotonic() + 10
    while value(scrape(disks.collect()), "mail_host_smart_healthy", device="/dev/disk") == 1:
        assert time.monotonic() < deadline, "the run in the background never finished"
        time.sleep(0.1)
    assert len(calls(documents)) == 2


def test_runs_on_its_own_interval(documents: Path) -> None:
    clock = Clock()
    disks = collector(documents, "/dev/sata_healthy", clock=clock, interval="10m")
    first = scrape(disks.collect())
    clock.now += 599
    assert scrape(disks.collect()) == first
    assert len(calls(documents)) == 1
    clock.now += 1
    scrape(disks.collect())
    assert len(calls(documents)) == 2


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("/dev/unknown_device",
         "smartctl cannot read /dev/unknown_device: exit status 1: /dev/vda: Unable to detect device type"),
        ("/dev/permission_denied",
         "smartctl cannot read /dev/permission_denied: exit status 2: "
         "Smartctl open device: /dev/sdb [SAT] failed: Permission denied"),
    ],
)  # fmt: skip
def test_a_disk_smartctl_cannot_open_fails_the_collector(
    documents: Path, device: str, message: str
) -> None:
    with pytest.raises(CollectorError, match="^" + message.replace("[", r"\[").replace("]", r"\]")):
        list(collector(documents, "/dev/sata_healthy", device).collect())


def test_absent_smartctl_fails_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    settings = SmartConfig(
        smartctl_command=["/nonexistent/smartctl"], devices=["/dev/sda"], interval="1m"
    )
    disks = SmartCollector(settings, clock=clock, background=at_once)
    with caplog.at_level(logging.INFO, logger=smart.__name__):
        for _ in range(3):
            with pytest.raises(
                CollectorError, match="/nonexistent/smartctl not found: install smartmontools"
            ):
                list(disks.collect())
            clock.now += 60
    assert [record.getMessage() for record in caplog.records] == [
        "S.M.A.R.T.: /nonexistent/smartctl not found: install smartmontools; "
        "reporting the collector as failed"
    ]


def test_a_hanging_smartctl_is_killed() -> None:
    settings = SmartConfig(
        smartctl_command=["sh", "-c", "sleep 30", "smartctl"], devices=["/dev/sda"], timeout="1s"
    )
    with pytest.raises(CollectorError, match=r"no answer within 0\.8s, killed"):
        list(SmartCollector(settings).collect())


def test_output_that_is_not_json_fails() -> None:
    settings = SmartConfig(
        smartctl_command=["sh", "-c", "echo garbage >&2; exit 4", "x"], devices=["/dev/sda"]
    )
    with pytest.raises(CollectorError, match="exit status 4 without JSON output: garbage"):
        list(SmartCollector(settings).collect())


def test_time_runs_out_between_disks(documents: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    disks = collector(documents, "/dev/sata_healthy", "/dev/nvme", clock=clock, timeout="1s")
    original = smart.run_smartctl

    def slow(command: list[str], timeout: float) -> tuple[int, dict[str, object]]:
        clock.now += 1  # each disk takes the whole budget
        return original(command, timeout)

    monkeypatch.setattr(smart, "run_smartctl", slow)
    with pytest.raises(
        CollectorError, match="no time left for smartctl .* raise collectors.smart.timeout"
    ):
        list(disks.collect())


def test_an_answer_that_breaks_the_parser_fails_the_collector(
    caplog: pytest.LogCaptureFixture,
) -> None:
    command = ["sh", "-c", """echo '{"devices": [{"type": "sat"}]}'""", "smartctl"]
    with pytest.raises(
        CollectorError, match=r"reading smartctl's answer failed: KeyError\('name'\)"
    ):
        list(SmartCollector(SmartConfig(smartctl_command=command)).collect())
    assert "Traceback" in caplog.text
