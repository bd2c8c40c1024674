"""The running exporter: its config, the scheduler, the round trips, the collectors and
safe reloads.

A reload (SIGHUP or ``POST /-/reload``) validates the whole new file first; if
anything is wrong the running config stays and
``mail_exporter_config_last_reload_successful`` drops to 0.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from mail_exporter import __version__
from mail_exporter.collectors import CollectorSet
from mail_exporter.config import Config, ConfigError, default_config, load_config
from mail_exporter.logs import redact
from mail_exporter.roundtrip.runner import RoundTripRunner
from mail_exporter.scheduler import Scheduler

logger = logging.getLogger(__name__)


def read_config(path: Path | None) -> Config:
    """The file's config, or the built-in default when no file is given."""
    return load_config(path) if path is not None else default_config()


class Exporter:
    """Owns everything /metrics shows; built from a valid config or not at all."""

    def __init__(
        self, config_path: Path | None, collector_flags: Mapping[str, bool | None]
    ) -> None:
        self.config_path = config_path
        self.collector_flags = collector_flags
        self.config = read_config(config_path)
        redact(self.config.secrets())
        self.collectors = CollectorSet(self.config, collector_flags)
        self.scheduler = Scheduler()
        self.roundtrip = RoundTripRunner()
        self.reload_successful = True
        self.reload_success_time = time.time()
        self.ready = False
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def start(self) -> None:
        """Begin background probing and round trips (needs a running event loop)."""
        self.scheduler.apply(self.config)
        self.roundtrip.apply(self.config)
        self.ready = True

    def stop(self) -> None:
        self.scheduler.stop()
        self.roundtrip.stop()
        self.collectors.close()

    def reload(self) -> None:
        """Swap in the config file's current content, or keep the old one and raise."""
        try:
            config = read_config(self.config_path)
        except ConfigError as error:
            self.reload_successful = False
            logger.error("reload failed, keeping the running config: %s", error)
            raise
        self.config = config
        redact(config.secrets())
        self.collectors.close()
        self.collectors = CollectorSet(config, self.collector_flags)
        self.scheduler.apply(config)
        self.roundtrip.apply(config)
        self.reload_successful = True
        self.reload_success_time = time.time()
        logger.info("configuration reloaded from %s", self.config_path or "built-in default")

    def collect(self) -> Iterable[Metric]:
        build = GaugeMetricFamily(
            "mail_exporter_build_info",
            "Version of mail_exporter and of the Python running it.",
            labels=["version", "python_version"],
        )
        build.add_metric([__version__, platform.python_version()], 1.0)
        yield build
        yield GaugeMetricFamily(
            "mail_exporter_config_last_reload_successful",
            "1 if the last configuration reload worked.",
            value=float(self.reload_successful),
        )
        yield GaugeMetricFamily(
            "mail_exporter_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully.",
            value=self.reload_success_time,
        )
        yield from self.roundtrip.collect()
        yield from self.collectors.collect()
