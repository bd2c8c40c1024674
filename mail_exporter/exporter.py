"""The running exporter: its config and web config, the scheduler, the round trips, the
collectors and safe reloads.

A reload (SIGHUP or ``POST /-/reload``) validates the whole new config and web config
first; if anything is wrong in either, both running ones stay and
``mail_exporter_config_last_reload_successful`` drops to 0; an unexpected error while
reading them is such a failure too, never a 500 that leaves the gauge at 1. A reload
that succeeds keeps each collector whose section is unchanged (see
:mod:`mail_exporter.collectors.base`), so their caches and log positions are not thrown away,
each target and round-trip route that is unchanged with its work in flight and its
schedule (see :mod:`mail_exporter.scheduler`, :mod:`mail_exporter.roundtrip.runner`),
and the passwords basic auth verified while their hashes are unchanged (see
:class:`mail_exporter.basic_auth.BasicAuth`).

Without a config file the exporter runs on what discovery finds
(:mod:`mail_exporter.discovery`), and a reload discovers again: a server installed or a
port opened since is watched from then on. The log, the status page and /config say so.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import time
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from mail_exporter import __version__
from mail_exporter.collectors.base import CollectorSet
from mail_exporter.config.root import Config, default_config, load_config
from mail_exporter.config.validation import ConfigError
from mail_exporter.discovery import DiscoveredConfig, DiscoveryOptions, discover_config
from mail_exporter.logs import redact, redact_learned
from mail_exporter.probes import ProbeMemory
from mail_exporter.roundtrip.runner import RoundTripRunner
from mail_exporter.scheduler import Scheduler
from mail_exporter.webconfig import WebConfig, read_web_config

logger = logging.getLogger(__name__)


def read_config(path: Path | None) -> Config:
    """For ``probe --module``: the file's config, or the built-in default (its modules are
    the usual ones by their usual names) when no file is given."""
    return load_config(path) if path is not None else default_config()


class ProbeRefusal(StrEnum):
    """Why /probe refused a request: ``mail_exporter_probe_refused_total{reason}``."""

    BAD_REQUEST = "bad_request"
    UNKNOWN_MODULE = "unknown_module"
    TARGET_NOT_ALLOWED = "target_not_allowed"
    CREDENTIALS_NOT_ALLOWED = "credentials_not_allowed"
    ACTIVE_CHECK_NOT_ALLOWED = "active_check_not_allowed"


class Exporter:
    """Owns everything /metrics shows; built from a valid config or not at all."""

    def __init__(
        self,
        config_path: Path | None,
        collector_flags: Mapping[str, bool | None],
        web_config_path: Path | None = None,
        discovery: DiscoveryOptions | None = None,
    ) -> None:
        self.config_path = config_path
        self.collector_flags = collector_flags
        self.discovery_options = discovery or DiscoveryOptions()
        self.config, self.discovered = self._read_config()
        redact(self.config.secrets())
        self.web_config_path = web_config_path
        self.web_config = read_web_config(web_config_path)
        # Fixed for the process: the port speaks TLS or does not (see _read_web_config).
        self._serves_tls = self.web_config.tls_context is not None
        self.probe_refusals: dict[ProbeRefusal, int] = dict.fromkeys(ProbeRefusal, 0)
        self.collectors = CollectorSet(self.config.collectors, collector_flags)
        # One for scheduled probes and /probe alike, kept across reloads: the same CRLs and
        # answers serve both, and a changed config does not make every server scanned again.
        self.probe_memory = ProbeMemory()
        self.probe_memory.tokens.apply(self.config.token_sources())
        redact_learned(self.probe_memory.tokens.secrets)
        self.scheduler = Scheduler(self.probe_memory)
        self.roundtrip = RoundTripRunner(self.probe_memory)
        self.reload_successful = True
        self.reload_success_time = time.time()
        self._reload_lock = asyncio.Lock()
        self._next_reload: asyncio.Future[None] | None = None
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

    async def reload(self) -> None:
        """Swap in the config files' current content, or keep the running ones and raise.

        The files (config, secret files, web config and its certificates) are read, and
        the collectors switched (closing one joins its threads and writes its state
        file), in a thread, so probes and scrapes go on meanwhile; reloads run one at a
        time, so a SIGHUP and a POST /-/reload at once cannot interleave. Requests that
        come while one runs share the next one, which reads what is there once the
        running one is done: a burst of SIGHUPs while a slow discovery runs costs one
        more reload, not one per signal."""
        if self._next_reload is None:
            self._next_reload = asyncio.ensure_future(self._reload_in_turn())
            # Read here too: a caller that went away (an HTTP client) leaves it unread.
            self._next_reload.add_done_callback(lambda done: done.cancelled() or done.exception())
        await asyncio.shield(self._next_reload)

    async def _reload_in_turn(self) -> None:
        async with self._reload_lock:
            self._next_reload = None  # a request from now on needs a read of its own
            try:
                config, discovered, web_config = await asyncio.to_thread(self._read_configs)
            except ConfigError as error:
                self.reload_successful = False
                logger.error("reload failed, keeping the running config: %s", error)
                raise
            except Exception as error:  # a bug in reading must not pass for a good reload
                self.reload_successful = False
                logger.exception("reload failed, keeping the running config")
                raise ConfigError(
                    self.source, [f"unexpected error while reading: {error!r}"]
                ) from error
            await asyncio.to_thread(self.collectors.apply, config.collectors)
            self._apply(config, discovered, web_config)

    @property
    def source(self) -> str:
        """Where the running config comes from, in words for the log and the status page."""
        if self.discovered is not None:
            return f"discovered: {self.discovered.summary}"
        return str(self.config_path)

    def _read_config(self) -> tuple[Config, DiscoveredConfig | None]:
        """The config file's config, or what discovery finds when there is none."""
        if self.config_path is not None:
            return load_config(self.config_path), None
        discovered = discover_config(self.discovery_options)
        return discovered.config, discovered

    def _read_configs(self) -> tuple[Config, DiscoveredConfig | None, WebConfig]:
        return *self._read_config(), self._read_web_config()

    def _apply(
        self, config: Config, discovered: DiscoveredConfig | None, web_config: WebConfig
    ) -> None:
        self.config = config
        self.discovered = discovered
        redact(config.secrets())
        web_config.take_over(self.web_config)  # verified passwords stay verified
        self.web_config = web_config
        self.probe_memory.tokens.apply(config.token_sources())
        self.scheduler.apply(config)
        self.roundtrip.apply(config)
        self.reload_successful = True
        self.reload_success_time = time.time()
        logger.info("configuration reloaded from %s", self.source)

    def _read_web_config(self) -> WebConfig:
        web_config = read_web_config(self.web_config_path)
        if (web_config.tls_context is not None) != self._serves_tls:
            raise ConfigError(
                str(self.web_config_path),
                ["tls_server_config: turning TLS on or off takes a restart"],
            )
        return web_config

    def shown_config(self) -> str:
        """The running config as YAML, defaults filled in, for the /config page (a
        discovered one as discovery wrote it, comments and all). Passwords are not part of
        it: only where they are read from."""
        loaded = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.reload_success_time))
        if self.discovered is not None:
            return f"# Running config discovered at {loaded}\n{self.discovered.text}"
        source = self.config_path
        data = self.config.model_dump(mode="json", by_alias=True, exclude_none=True)
        text = f"# Running config from {source}, loaded {loaded}\n"
        return text + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

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
        refusals = CounterMetricFamily(
            "mail_exporter_probe_refused",
            "Requests to /probe refused, by reason.",
            labels=["reason"],
        )
        for reason, count in self.probe_refusals.items():
            refusals.add_metric([reason.value], float(count))
        yield refusals
        yield from self.probe_memory.tokens.collect()
        yield from self.roundtrip.collect()
        yield from self.collectors.collect()
