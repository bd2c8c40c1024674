"""The five host collectors together: registered by name, and their output passes promtool."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric

from mail_exporter.collectors.backups import BackupsCollector
from mail_exporter.collectors.base import COLLECTORS, CollectorSet
from mail_exporter.collectors.host import HostCollector
from mail_exporter.collectors.sensors import SensorsCollector
from mail_exporter.collectors.services import ServicesCollector
from mail_exporter.collectors.smart import SmartCollector
from mail_exporter.config.root import Config
from tests.test_sensors import recorded
from tests.test_smart import FIXTURES

NAMES = {
    "host": HostCollector,
    "sensors": SensorsCollector,
    "smart": SmartCollector,
    "services": ServicesCollector,
    "backups": BackupsCollector,
}


def test_registered_under_their_section_names() -> None:
    config = Config()
    for name, kind in NAMES.items():
        assert isinstance(COLLECTORS[name].build(config.collectors.section(name), None), kind)
        assert config.collectors.section(name) is getattr(config.collectors, name)


class Families:
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def test_all_five_pass_promtool(tmp_path: Path) -> None:
    (tmp_path / "backups").mkdir()
    (tmp_path / "backups" / "mail.tar").write_bytes(b"x" * 10)
    smart = [sys.executable, str(FIXTURES / "fake_smartctl.py"), str(tmp_path)]
    for name in ("sata_healthy", "sata_failing", "nvme", "standby"):
        shutil.copy(FIXTURES / f"{name}.json", tmp_path / f"{name}.json")
    config = Config.model_validate({
        "collectors": {
            "host": {"enabled": True, "mail_paths": [str(tmp_path), str(tmp_path / "missing")]},
            "sensors": {"enabled": True},
            "smart": {"enabled": True, "smartctl_command": smart,
                      "devices": ["/dev/sata_healthy", "/dev/sata_failing", "/dev/nvme", "/dev/standby"]},
            "services": {"enabled": True},
            "backups": {"enabled": True, "backups": [
                {"name": "mail", "path": str(tmp_path / "backups" / "*.tar")},
                {"name": "none", "path": str(tmp_path / "backups" / "*.zip")},
            ]},
        }
    })  # fmt: skip
    collectors = CollectorSet(config.collectors, {})
    collectors.collectors["sensors"] = SensorsCollector(recorded)  # this machine has none
    try:
        families = list(collectors.collect())
    finally:
        collectors.close()
    success = {
        s.labels["collector"]: s.value
        for f in families
        if f.name == "mail_exporter_collector_success"
        for s in f.samples
    }
    assert success == dict.fromkeys(NAMES, 1.0)
    registry = CollectorRegistry()
    registry.register(Families(families))
    text = generate_latest(registry).decode()
    for prefix in (
        "mail_host_cpu_",
        "mail_host_temperature_",
        "mail_host_smart_",
        "mail_host_service_",
        "mail_host_backup_",
    ):
        assert prefix in text
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: apt-get install prometheus"
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
