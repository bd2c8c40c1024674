"""Temperatures and fans from the kernel's hwmon drivers, as psutil reads them.

A host without sensors (a VM, a container) exports nothing from this collector: no
zeros that would look like a cold, stopped machine. Decisions:

* Labels are ``chip`` (the hwmon driver: ``coretemp``, ``nvme``, ``acpitz``, …) and
  ``sensor`` (the kernel's label: ``Package id 0``, ``Core 1``, ``cpu_fan``). A sensor
  without a label is named by its place on the chip (``temp1``, ``fan2``); a label that
  repeats on one chip (psutil merges chips of the same name, e.g. two CPU sockets'
  ``coretemp``) gets ``(2)``, ``(3)`` … appended, so that no two series collide.
* High and critical thresholds are exported where the driver has them, not as 0.
* Fans in revolutions per minute, as every tool shows them.

Sample output::

    mail_host_temperature_celsius{chip="coretemp",sensor="Package id 0"} 52.0
    mail_host_temperature_high_celsius{chip="coretemp",sensor="Package id 0"} 100.0
    mail_host_temperature_critical_celsius{chip="coretemp",sensor="Package id 0"} 100.0
    mail_host_fan_rpm{chip="asus",sensor="cpu_fan"} 3200.0
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import psutil  # type: ignore[import-untyped]
from prometheus_client.core import Metric

from mail_exporter.collectors.base import Collector, register_collector
from mail_exporter.config.collectors import CollectorSection
from mail_exporter.metric_spec import MetricSpec, attribute, families


class SensorsConfig(CollectorSection):
    """Temperatures and fans from the kernel's hwmon (via psutil)."""


Readings = Mapping[str, Sequence[Any]]
"""psutil's shape: chip name to its sensors (named tuples with ``label``, ``current``, …)."""
SensorSource = Callable[[], tuple[Readings, Readings]]

LABELS = ("chip", "sensor")
TEMPERATURES = (
    MetricSpec("mail_host_temperature_celsius", "Temperature of the sensor.", "gauge", LABELS,
        attribute("current")),
    MetricSpec("mail_host_temperature_high_celsius", "The sensor's high (warning) threshold.",
        "gauge", LABELS, attribute("high")),
    MetricSpec("mail_host_temperature_critical_celsius", "The sensor's critical threshold.",
        "gauge", LABELS, attribute("critical")),
)  # fmt: skip
FANS = (
    MetricSpec("mail_host_fan_rpm", "Fan speed in revolutions per minute.", "gauge", LABELS,
        attribute("current")),
)  # fmt: skip


def psutil_sensors() -> tuple[Readings, Readings]:
    """This host's temperatures and fans."""
    return psutil.sensors_temperatures(), psutil.sensors_fans()


def sensor_names(labels: Sequence[str], kind: str) -> list[str]:
    """Unique names for one chip's sensors: the label, else the place; repeats numbered."""
    seen: Counter[str] = Counter()
    names = []
    for place, label in enumerate(labels, 1):
        name = label or f"{kind}{place}"
        seen[name] += 1
        names.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return names


def sensor_families(readings: Readings, kind: str, specs: Sequence[MetricSpec]) -> list[Metric]:
    """The families of one kind of sensor that have samples; none for a host without any."""
    rows = [
        ([chip, name], sensor)
        for chip, sensors in readings.items()
        for name, sensor in zip(
            sensor_names([sensor.label for sensor in sensors], kind), sensors, strict=True
        )
    ]
    return families(specs, rows)


class SensorsCollector:
    """Reads the sensors at each scrape (a few small sysfs files per sensor)."""

    def __init__(self, source: SensorSource = psutil_sensors) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        temperatures, fans = self.source()
        return [
            *sensor_families(temperatures, "temp", TEMPERATURES),
            *sensor_families(fans, "fan", FANS),
        ]


@register_collector("sensors", "Temperatures and fans (hwmon)", SensorsConfig)
def _sensors(section: SensorsConfig, previous: Collector | None) -> SensorsCollector:
    return SensorsCollector()
