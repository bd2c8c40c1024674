"""Disk health from S.M.A.R.T.: ``smartctl --json --nocheck=standby -a`` for each disk.

smartctl is slow (it talks to every disk) and needs root, so it runs on the section's
own ``interval`` (10 minutes by default), never on the event loop, as
:mod:`~mail_exporter.collectors.background` runs work: the first scrape runs it in the
collector's worker thread and waits (bounded by the section's ``timeout``); later runs
start in a thread of the collector's own at the first scrape after the interval, and
every scrape returns the last finished run's readings at once, so that no /metrics
request waits for the disks. Decisions:

* Disks: the config's ``devices``, else what ``smartctl --scan`` finds, scanned again at
  each run. A device is ``NAME`` or ``NAME -d TYPE`` (as ``--scan`` prints it); the type
  is passed on, since autodetection may wake a sleeping disk. The ``device`` label is
  the name, with the type added for disks behind a controller (``/dev/bus/0 megaraid,1``),
  which share one name.
* A disk in standby (smartctl exits with bit 1 and says "Device is in STANDBY mode") is
  not a failure and is not woken: ``mail_host_smart_standby`` is 1 and its readings are
  those of the last run in which it was awake (``mail_host_smart_last_read_timestamp_seconds``
  says when), or absent if it never was.
* When smartctl cannot do its job (not installed, not root, a disk that cannot be
  opened: exit bits 0 and 1), the run fails: the collector reports failure (no health
  figures, never a healthy disk) until a later run works. The reason is logged once,
  when it starts or changes.
* Exit bits 2 to 7 are health findings, exported per disk as
  ``mail_host_smart_exit_status_flag{flag}`` (0/1, all six always present).
* NVMe "percentage used" is exported as a ratio (``mail_host_smart_nvme_used_ratio``,
  percent / 100) as Prometheus wants; it passes 1 when a drive outlives its rated
  endurance (NVMe allows up to 255%).
* Reallocated sectors are ATA attribute 5, or the grown defect list of SCSI/SAS disks;
  pending sectors 197 and offline uncorrectable 198 (ATA only): the raw values.

Sample output::

    mail_host_smart_device_info{device="/dev/sda",model="HGST HUS726040ALE614",protocol="ATA",
                                serial="K4K1ABCD"} 1.0
    mail_host_smart_healthy{device="/dev/sda"} 1.0
    mail_host_smart_temperature_celsius{device="/dev/sda"} 31.0
    mail_host_smart_power_on_seconds{device="/dev/sda"} 1.528344e+08
    mail_host_smart_reallocated_sectors{device="/dev/sda"} 0.0
    mail_host_smart_nvme_used_ratio{device="/dev/nvme0"} 0.03
    mail_host_smart_exit_status_flag{device="/dev/sda",flag="disk_failing"} 0.0
    mail_host_smart_standby{device="/dev/sdb"} 1.0
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client.core import Metric
from pydantic import Field

from mail_exporter.collectors.background import IntervalWork, Runner
from mail_exporter.collectors.base import (
    COMMAND_TIME_SHARE,
    Collector,
    CollectorError,
    register_collector,
)
from mail_exporter.config.collectors import CollectorSection
from mail_exporter.config.fields import Duration
from mail_exporter.metric_spec import MetricSpec, as_is, attribute, families

logger = logging.getLogger(__name__)


class SmartConfig(CollectorSection):
    """Disk health from ``smartctl --json``; runs on its own slower interval."""

    interval: Duration = Field(default="10m", validate_default=True)
    smartctl_command: list[str] = Field(default_factory=lambda: ["smartctl"], min_length=1)
    devices: list[str] = Field(default_factory=list)  # empty: what `smartctl --scan` finds


CANNOT_RUN = 0b11
"""Exit bits 0 (command line or other fatal error) and 1 (device open failed)."""
FLAGS = (
    (1 << 2, "command_failed"),  # a S.M.A.R.T. or other command failed, or a checksum error
    (1 << 3, "disk_failing"),  # the overall health check says "DISK FAILING"
    (1 << 4, "prefail_below_threshold"),  # a pre-failure attribute is at or below threshold
    (1 << 5, "below_threshold_in_past"),  # an attribute was at or below threshold before
    (1 << 6, "error_log_errors"),  # the device error log has entries
    (1 << 7, "self_test_errors"),  # the self-test log has failed tests
)
STANDBY = re.compile(r"Device is in .* mode")
REALLOCATED, PENDING, OFFLINE_UNCORRECTABLE = 5, 197, 198

DEVICE = ("device",)
INFO = MetricSpec(
    "mail_host_smart_device_info", "The disk's protocol, model and serial number, as smartctl "
    "reports them.", "gauge", ("device", "protocol", "model", "serial"), as_is,
)  # fmt: skip
READINGS = (
    MetricSpec("mail_host_smart_healthy", "1 if the overall health self-assessment passed.",
        "gauge", DEVICE, attribute("healthy")),
    MetricSpec("mail_host_smart_temperature_celsius", "Temperature of the disk.", "gauge", DEVICE,
        attribute("temperature")),
    MetricSpec("mail_host_smart_power_on_seconds", "Time the disk has been powered on.", "gauge",
        DEVICE, attribute("power_on_seconds")),
    MetricSpec("mail_host_smart_reallocated_sectors", "Sectors remapped to spares (ATA attribute "
        "5; SCSI grown defect list).", "gauge", DEVICE, attribute("reallocated")),
    MetricSpec("mail_host_smart_pending_sectors", "Unstable sectors waiting to be remapped (ATA "
        "197).", "gauge", DEVICE, attribute("pending")),
    MetricSpec("mail_host_smart_offline_uncorrectable_sectors", "Sectors the offline scan could "
        "not read (ATA 198).", "gauge", DEVICE, attribute("offline_uncorrectable")),
    MetricSpec("mail_host_smart_nvme_used_ratio", "NVMe endurance used: percentage used / 100 "
        "(may pass 1).", "gauge", DEVICE, attribute("nvme_percentage_used", per=100)),
    MetricSpec("mail_host_smart_standby", "1 if the disk was asleep at the last run and was not "
        "woken.", "gauge", DEVICE, attribute("standby")),
    MetricSpec("mail_host_smart_last_read_timestamp_seconds", "When the exported readings were "
        "taken.", "gauge", DEVICE, attribute("read_at")),
    MetricSpec("mail_host_smart_nvme_media_errors_total", "Unrecovered data integrity errors the "
        "NVMe controller counted.", "counter", DEVICE, attribute("nvme_media_errors")),
)  # fmt: skip
EXIT_STATUS_FLAG = MetricSpec(
    "mail_host_smart_exit_status_flag", "smartctl's exit status bits 2-7 (health findings) at the "
    "last reading, 0 or 1.", "gauge", ("device", "flag"), as_is,
)  # fmt: skip


@dataclass(frozen=True)
class Device:
    name: str
    type: str | None = None

    @classmethod
    def parse(cls, text: str) -> Device:
        """``NAME`` or ``NAME -d TYPE``."""
        words = shlex.split(text)
        if len(words) == 3 and words[1] in ("-d", "--device"):
            return cls(words[0], words[2])
        return cls(text.strip())

    @property
    def label(self) -> str:
        return f"{self.name} {self.type}" if self.type and "," in self.type else self.name

    @property
    def arguments(self) -> list[str]:
        return [*(["-d", self.type] if self.type else []), self.name]


@dataclass(frozen=True)
class Reading:
    """What one smartctl run said about one disk."""

    exit_status: int
    standby: int = 0
    model: str | None = None
    serial: str | None = None
    protocol: str | None = None
    healthy: int | None = None
    temperature: float | None = None
    power_on_seconds: float | None = None
    reallocated: int | None = None
    pending: int | None = None
    offline_uncorrectable: int | None = None
    nvme_percentage_used: int | None = None
    nvme_media_errors: int | None = None
    read_at: float | None = None


def _get(document: Mapping[str, Any], *keys: str) -> Any:
    """A nested value, or None where any level is missing."""
    value: Any = document
    for key in keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _ata_raw(document: Mapping[str, Any], attribute: int) -> int | None:
    for row in _get(document, "ata_smart_attributes", "table") or ():
        if row.get("id") == attribute:
            raw: int | None = _get(row, "raw", "value")
            return raw
    return None


def parse_reading(document: Mapping[str, Any], exit_status: int, now: float) -> Reading:
    """The figures of ``smartctl --json -a``, as smartctl 7.x writes them."""
    passed = _get(document, "smart_status", "passed")
    hours, minutes = (_get(document, "power_on_time", unit) for unit in ("hours", "minutes"))
    reallocated = _ata_raw(document, REALLOCATED)
    return Reading(
        exit_status=exit_status,
        model=document.get("model_name") or document.get("scsi_model_name"),
        serial=document.get("serial_number"),
        protocol=_get(document, "device", "protocol"),
        healthy=None if passed is None else int(passed),
        temperature=_get(document, "temperature", "current"),
        power_on_seconds=None if hours is None else hours * 3600 + (minutes or 0) * 60,
        reallocated=document.get("scsi_grown_defect_list") if reallocated is None else reallocated,
        pending=_ata_raw(document, PENDING),
        offline_uncorrectable=_ata_raw(document, OFFLINE_UNCORRECTABLE),
        nvme_percentage_used=_get(document, "nvme_smart_health_information_log", "percentage_used"),
        nvme_media_errors=_get(document, "nvme_smart_health_information_log", "media_errors"),
        read_at=now,
    )


def messages(document: Mapping[str, Any]) -> list[str]:
    return [str(m.get("string", "")) for m in _get(document, "smartctl", "messages") or ()]


def is_standby(document: Mapping[str, Any], exit_status: int) -> bool:
    return bool(exit_status & 0b10) and any(STANDBY.search(m) for m in messages(document))


def run_smartctl(command: list[str], timeout: float) -> tuple[int, dict[str, Any]]:
    """smartctl's exit status and JSON document; CollectorError when there is none to read."""
    shown = shlex.join(command)
    try:
        completed = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise CollectorError(f"{command[0]} not found: install smartmontools") from None
    except subprocess.TimeoutExpired:
        raise CollectorError(f"{shown}: no answer within {timeout:.3g}s, killed") from None
    except OSError as error:
        raise CollectorError(f"cannot run {shown}: {error.strerror or error}") from None
    try:
        document = json.loads(completed.stdout)
    except ValueError:
        said = " ".join(completed.stderr.decode(errors="replace").split())[:200]
        raise CollectorError(
            f"{shown}: exit status {completed.returncode} without JSON output: {said}"
        ) from None
    if not isinstance(document, dict):
        raise CollectorError(f"{shown}: the JSON output is not an object")
    return completed.returncode, document


def carried_over(last: Reading | None, reading: Reading) -> Reading:
    """A sleeping disk keeps the readings of its last waking run, if it had one."""
    if reading.standby and last is not None and last.read_at is not None:
        return replace(last, standby=1)
    return reading


def cannot_run(device: Device, exit_status: int, document: Mapping[str, Any]) -> str:
    said = "; ".join(messages(document)) or "no message"
    hint = "" if os.geteuid() == 0 else " (smartctl needs root)"
    return f"smartctl cannot read {device.label}: exit status {exit_status}: {said}{hint}"


State = tuple[dict[str, Reading], str | None]
"""A run's readings by device label, and why it failed (readings of the run before then)."""


class SmartCollector:
    """Runs smartctl every ``interval``; scrapes get the last run's readings at once.

    Only the first scrape waits for a run (so that it has readings to report); later runs
    happen in the collector's own thread, and the scrape that starts one still gets the
    readings of the previous run.
    """

    def __init__(
        self,
        settings: SmartConfig,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        background: Runner | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.wall_clock = wall_clock
        self._runs = IntervalWork(
            "smartctl", float(settings.interval), self._refresh, clock, background
        )
        self._state: State | None = None

    def collect(self) -> Iterable[Metric]:
        self._runs.tick()
        assert self._state is not None  # the first tick ran smartctl in this thread
        readings, failure = self._state  # a run just started in the background: the last one's
        if failure is not None:
            raise CollectorError(failure)
        return reading_families(readings)

    def close(self) -> None:
        self._runs.close()

    def _refresh(self) -> None:
        self._state = self._run()

    def _run(self) -> State:
        """The readings of every disk, or the last ones with why this run failed."""
        last, last_failure = self._state or ({}, None)
        deadline = self.clock() + float(self.settings.timeout) * COMMAND_TIME_SHARE
        try:
            found = {d.label: self._read(d, deadline) for d in self._devices(deadline)}
        except CollectorError as error:
            failure = str(error)
        except Exception as error:  # in a background thread nobody else would see it
            logger.exception("S.M.A.R.T.: reading smartctl's answer failed")
            failure = f"reading smartctl's answer failed: {error!r}"
        else:
            if last_failure is not None:
                logger.info("S.M.A.R.T.: smartctl works again")
            return {label: carried_over(last.get(label), now) for label, now in found.items()}, None
        if failure != last_failure:
            logger.error("S.M.A.R.T.: %s; reporting the collector as failed", failure)
        return last, failure

    def _smartctl(self, arguments: list[str], deadline: float) -> tuple[int, dict[str, Any]]:
        remaining = deadline - self.clock()
        if remaining <= 0:
            raise CollectorError(
                f"no time left for smartctl {shlex.join(arguments)} within the "
                f"{float(self.settings.timeout):g}s timeout: raise collectors.smart.timeout"
            )
        return run_smartctl([*self.settings.smartctl_command, *arguments], remaining)

    def _devices(self, deadline: float) -> list[Device]:
        if self.settings.devices:
            return [Device.parse(text) for text in self.settings.devices]
        exit_status, document = self._smartctl(["--scan", "--json"], deadline)
        if exit_status & CANNOT_RUN:
            said = "; ".join(messages(document)) or "no message"
            raise CollectorError(f"smartctl --scan: exit status {exit_status}: {said}")
        return [Device(d["name"], d.get("type")) for d in document.get("devices", ())]

    def _read(self, device: Device, deadline: float) -> Reading:
        arguments = ["--json", "--nocheck=standby", "-a", *device.arguments]
        exit_status, document = self._smartctl(arguments, deadline)
        if is_standby(document, exit_status):
            return Reading(exit_status=exit_status, standby=1)
        if exit_status & CANNOT_RUN:
            raise CollectorError(cannot_run(device, exit_status, document))
        return parse_reading(document, exit_status, self.wall_clock())


def reading_families(readings: Mapping[str, Reading]) -> list[Metric]:
    """The disks' families: a disk asleep since the start has its standby figure only."""
    read = [
        (device, reading) for device, reading in readings.items() if reading.read_at is not None
    ]
    info = [
        ((device, *(value or "" for value in (r.protocol, r.model, r.serial))), 1)
        for device, r in read
    ]
    flags = [
        ((device, flag), bool(reading.exit_status & bit))
        for device, reading in read
        for bit, flag in FLAGS
    ]
    return [
        *families([INFO], info),
        *families(READINGS, [((device,), reading) for device, reading in readings.items()]),
        *families([EXIT_STATUS_FLAG], flags),
    ]


@register_collector(
    "smart", "Disk health from smartctl (S.M.A.R.T.), on its own interval", SmartConfig
)
def _smart(section: SmartConfig, previous: Collector | None) -> SmartCollector:
    return SmartCollector(section)
