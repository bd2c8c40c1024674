"""The sensors collector on psutil's recorded readings, and on this machine (no sensors)."""

from __future__ import annotations

import json
from collections import namedtuple
from pathlib import Path
from typing import Any

import psutil

from mail_exporter.collectors.sensors import SensorsCollector, sensor_names
from tests.test_host import scrape, value

FIXTURE = Path(__file__).parent / "fixtures" / "sensors" / "psutil_readings.json"
shwtemp = namedtuple("shwtemp", "label current high critical")
sfan = namedtuple("sfan", "label current")


def recorded() -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """The fixture as psutil returns it: chips to lists of named tuples."""
    data = json.loads(FIXTURE.read_text())
    temperatures = {
        chip: [shwtemp(**s) for s in sensors] for chip, sensors in data["temperatures"].items()
    }
    fans = {chip: [sfan(**s) for s in sensors] for chip, sensors in data["fans"].items()}
    return temperatures, fans


def test_recorded_readings() -> None:
    found = scrape(SensorsCollector(recorded).collect())
    core = {"chip": "coretemp", "sensor": "Core 1"}
    assert value(found, "mail_host_temperature_celsius", **core) == 52.0
    assert value(found, "mail_host_temperature_high_celsius", **core) == 100.0
    assert value(found, "mail_host_temperature_critical_celsius", **core) == 100.0
    assert (
        value(found, "mail_host_temperature_celsius", chip="coretemp", sensor="Physical id 0")
        == 52.0
    )
    # Unlabelled sensors are named by their place on the chip.
    assert value(found, "mail_host_temperature_celsius", chip="acpitz", sensor="temp1") == 47.0
    assert (
        value(found, "mail_host_temperature_critical_celsius", chip="acpitz", sensor="temp1")
        == 103.0
    )
    # No thresholds on this chip: absent, not 0.
    assert value(found, "mail_host_temperature_celsius", chip="asus", sensor="temp1") == 47.0
    assert (("chip", "asus"), ("sensor", "temp1")) not in found[
        "mail_host_temperature_high_celsius"
    ]
    assert value(found, "mail_host_fan_rpm", chip="asus", sensor="cpu_fan") == 3200
    assert len(found["mail_host_temperature_celsius"]) == 7


def test_repeated_labels_stay_apart() -> None:
    """psutil merges two sockets' coretemp chips into one list: every Core label twice."""
    assert sensor_names(
        ["Package id 0", "Core 0", "Package id 1", "Core 0", "", "Core 0"], "temp"
    ) == ["Package id 0", "Core 0", "Package id 1", "Core 0 (2)", "temp5", "Core 0 (3)"]


def test_this_machine() -> None:
    """Real readings; a host without sensors (this VM) exports nothing at all, not zeros."""
    families = list(SensorsCollector().collect())
    has_sensors = bool(psutil.sensors_temperatures() or psutil.sensors_fans())
    assert bool(families) == has_sensors
    assert all(family.samples for family in families)


def test_fans_only() -> None:
    families = list(SensorsCollector(lambda: ({}, recorded()[1])).collect())
    assert [family.name for family in families] == ["mail_host_fan_rpm"]
