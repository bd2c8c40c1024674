"""The whole config file: :class:`Config`, and reading it (``load_config``, ``parse_config``,
``default_config``).

``load_config`` either returns a complete, valid :class:`Config` or raises
:class:`~mail_exporter.config.validation.ConfigError` listing every problem as
``key.path (line N): message``. Nothing half-valid ever reaches the scheduler.

The ``collectors`` section is built from the collectors' registrations, so this module
imports every collector; the collectors import only the field types and the section base
of this package (:mod:`.fields`, :mod:`.collectors`), never this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, Field, PrivateAttr, SerializeAsAny, model_validator

import mail_exporter.collectors  # noqa: F401  (every collector registers itself and its section)
from mail_exporter.allowlist import TargetKey, target_key
from mail_exporter.collectors.base import COLLECTORS
from mail_exporter.config.collectors import CollectorSections, collectors_model
from mail_exporter.config.fields import Name, StrictModel
from mail_exporter.config.oauth2 import OAuth2Config
from mail_exporter.config.probes import (
    GlobalConfig,
    ModuleConfig,
    ProbeConfig,
    TargetConfig,
    moved_key_problem,
)
from mail_exporter.config.references import cross_references
from mail_exporter.config.roundtrip import RoundTripRoute
from mail_exporter.config.validation import (
    describe_error,
    load_yaml_file,
    validate_yaml,
)
from mail_exporter.targets import Address, parse_address

__all__ = ["Config", "default_config", "load_config", "parse_config"]

# Built from the registrations, so the type checker knows it by its base (whose
# ``section(name)`` gives a collector's section); pydantic reads the built model.
if TYPE_CHECKING:
    CollectorsConfig = CollectorSections
else:
    CollectorsConfig = collectors_model({name: spec.section for name, spec in COLLECTORS.items()})


class Config(StrictModel):
    global_: GlobalConfig = Field(default=GlobalConfig(), alias="global")
    # Shown with the fields of each module's own class (SMTPModule, ...), not only the shared ones.
    modules: dict[Name, SerializeAsAny[ModuleConfig]] = Field(default_factory=dict)
    targets: list[TargetConfig] = Field(default_factory=list)
    roundtrip: list[RoundTripRoute] = Field(default_factory=list)
    collectors: CollectorsConfig = CollectorsConfig()
    probe: ProbeConfig = ProbeConfig()
    _scheduled: frozenset[tuple[str, TargetKey]] = PrivateAttr(default_factory=frozenset)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _index_scheduled_targets(self) -> Config:
        self._scheduled = frozenset(
            (target.module, target_key(parse_address(target.address))) for target in self.targets
        )
        return self

    @model_validator(mode="after")
    def _hand_modules_to_collectors(self) -> Config:
        for name in COLLECTORS:
            self.collectors.section(name).resolve_modules(self.modules)
        return self

    @model_validator(mode="after")
    def _name_token_sources(self) -> Config:
        """Each token source is named after its module (or route leg); the same source in
        several places after the first of them, so that they share one name as they share
        its tokens. Two different sources under one name would be one series twice."""
        first: dict[str, str] = {}
        owners: dict[str, str] = {}
        for name, source in self._token_places():
            shared = first.setdefault(source.identity, name)
            if owners.setdefault(shared, source.identity) != source.identity:
                raise ValueError(
                    f"two token sources would both be named {shared!r} in the metrics "
                    "(a module's and a round-trip route's): rename the module or the route"
                )
            source.named(shared)
        return self

    def _token_places(self) -> list[tuple[str, OAuth2Config]]:
        """Every token source with the name of where it is: modules, then route legs."""
        places = [
            (name, module.auth.oauth2)
            for name, module in self.modules.items()
            if module.auth is not None and module.auth.oauth2 is not None
        ]
        return places + [place for route in self.roundtrip for place in route.token_sources()]

    def token_sources(self) -> list[OAuth2Config]:
        """The OAuth2 token sources of the modules and routes, each once."""
        sources = {source.identity: source for _, source in self._token_places()}
        return list(sources.values())

    def schedules(self, module: str, address: Address) -> bool:
        """Whether a target of ``targets`` probes ``address`` with ``module`` (the same target
        as :func:`mail_exporter.allowlist.target_key` says)."""
        return (module, target_key(address)) in self._scheduled

    def interval_of(self, target: TargetConfig) -> float:
        return float(target.interval if target.interval is not None else self.global_.interval)

    def secrets(self) -> list[str]:
        """Every password and token source secret in use, so logs can redact them wherever
        they might slip in."""
        legs = [source for route in self.roundtrip for _, source in route.token_sources()]
        passwords = [s for m in self.modules.values() if m.auth for s in m.auth.secrets()]
        return passwords + [secret for source in legs for secret in source.secrets()]


def _describe(error: Mapping[str, Any]) -> str:
    return moved_key_problem(error) or _unknown_collector(error) or describe_error(error)


def _unknown_collector(error: Mapping[str, Any]) -> str | None:
    """A section under ``collectors:`` that no collector registered: a collector this
    program does not have (or whose module the collectors package does not import)."""
    location = tuple(error["loc"])
    if error["type"] == "extra_forbidden" and len(location) == 2 and location[0] == "collectors":
        return f"unknown key: there is no collector {location[1]}"
    return None


def parse_config(text: str, source: str = "<config>", directory: Path | None = None) -> Config:
    """Validate YAML text into a :class:`Config`; raise :class:`ConfigError` with every problem.

    Relative secret and CA file paths are taken from ``directory`` (the file's own).
    """
    return validate_yaml(
        text,
        source,
        Config,
        describe=_describe,
        cross_check=cross_references,
        context={"directory": directory},
    )


def load_config(path: Path) -> Config:
    """Read and validate a config file."""
    return load_yaml_file(path, parse_config)


DEFAULT_CONFIG_YAML = """\
# Built in: used when no --config.file is given. Watches the standard mail ports of this host.
# Port 25 takes STARTTLS opportunistically, as senders do: a certificate that does not verify
# is reported (mail_tls_cert_verified 0) there in any config. The other modules verify in a
# written config; here, where the certificate of a local server rarely names "localhost",
# they say so (insecure_skip_verify) and the exporter logs it at start.
modules:
  smtp_starttls:
    protocol: smtp
    tls: starttls
    require_tls: false
  submission:
    protocol: smtp
    tls: starttls
    tls_config: {insecure_skip_verify: true}
  imap_starttls:
    protocol: imap
    tls: starttls
    tls_config: {insecure_skip_verify: true}
  imaps:
    protocol: imap
    tls: implicit
    tls_config: {insecure_skip_verify: true}
  pop3_starttls:
    protocol: pop3
    tls: starttls
    tls_config: {insecure_skip_verify: true}
  pop3s:
    protocol: pop3
    tls: implicit
    tls_config: {insecure_skip_verify: true}
targets:
  - {name: smtp, address: "localhost:25", module: smtp_starttls}
  - {name: submission, address: "localhost:587", module: submission}
  - {name: imap, address: "localhost:143", module: imap_starttls}
  - {name: imaps, address: "localhost:993", module: imaps}
  - {name: pop3, address: "localhost:110", module: pop3_starttls}
  - {name: pop3s, address: "localhost:995", module: pop3s}
"""


def default_config() -> Config:
    return parse_config(DEFAULT_CONFIG_YAML, "<built-in default config>")
