"""The ``reports`` section: which mailbox, what to do with what was read, which domains
and notification rules count, and the bounds of a pass.

The mailbox is read as the probes read one: ``module`` names an imap module of
``modules:`` with ``auth`` (its TLS, its login, OAuth2 included), which
``config/references.py`` checks with every other cross-section problem. The module
itself reaches the collector's factory through the section: the root validation hands
the whole config's modules to :meth:`ReportsConfig.resolve_modules`, which keeps this
section's module in a private attribute. Pydantic compares private attributes with the
fields, so a reload that changes only the module (a new password file, another CA)
changes the section too, and the collector is rebuilt with it.

A notification rule's patterns are compiled once here (a bad one is a config error
with its key path); a rule matches when every pattern given matches (``re.search``,
case-insensitive), and its status is the first of ``statuses`` whose pattern matches
the subject or the body, else ``unknown``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mail_exporter.collectors.reports.limits import Limits
from mail_exporter.config.collectors import CollectorSection
from mail_exporter.config.fields import AddressText, Duration, LabelName, Name, StrictModel
from mail_exporter.config.probes import ModuleConfig

UNKNOWN_STATUS = "unknown"
MAX_RULES = 100
MAX_STATUSES = 20


def _pattern(value: str) -> str:
    try:
        re.compile(value, re.IGNORECASE)
    except re.error as error:
        raise ValueError(f"invalid regular expression {value!r}: {error}") from None
    return value


Pattern = Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(_pattern)]


def _domain(value: str) -> str:
    domain = value.strip().lower().rstrip(".")
    labels = domain.split(".")
    if not domain or len(domain) > 253 or not all(0 < len(part) <= 63 for part in labels):
        raise ValueError(f"{value!r} is not a domain name")
    if not all(part.replace("-", "").replace("_", "").isalnum() for part in labels):
        raise ValueError(f"{value!r} is not a domain name")
    return domain


class NotificationRule(StrictModel):
    """Messages from a job (a backup, a certificate renewal) that say how it went."""

    name: LabelName
    from_: Pattern | None = Field(default=None, alias="from")
    subject: Pattern | None = None
    body: Pattern | None = None
    statuses: dict[LabelName, Pattern] = Field(default_factory=dict, max_length=MAX_STATUSES)

    @model_validator(mode="after")
    def _something_to_match(self) -> NotificationRule:
        if self.from_ is None and self.subject is None and self.body is None:
            raise ValueError("a rule needs at least one of from, subject, body")
        if UNKNOWN_STATUS in self.statuses:
            raise ValueError(f"{UNKNOWN_STATUS!r} is the status of a message no pattern matched")
        return self


class ReportsConfig(CollectorSection):
    """A mailbox of DMARC aggregate reports, TLS-RPT reports and notifications; runs on
    its own interval, each pass bounded by ``timeout``."""

    timeout: Duration = Field(default="2m", validate_default=True)  # one pass
    interval: Duration = Field(default="5m", validate_default=True)
    address: AddressText | None = None  # HOST:PORT
    module: Name | None = None
    mailbox: Name = "INBOX"
    processed_mailbox: Name | None = None
    processed_flag: str = Field(
        default="$MailExporterProcessed", pattern=r"^[!#$%&'+,\-./0-9:;<=>?@A-Z^_`a-z|~]{1,64}$"
    )
    state_file: Path = Path("/var/lib/mail-exporter/reports.json")
    domains: list[Annotated[str, AfterValidator(_domain)]] = Field(
        default_factory=list, validate_default=True
    )
    top_sources: int = Field(default=20, ge=0, le=1000)
    max_reporters: int = Field(default=50, ge=1, le=1000)
    max_messages_per_pass: int = Field(default=500, ge=1, le=100_000)
    max_message_bytes: int = Field(default=Limits.max_message_bytes, ge=1024, le=1 << 30)
    max_report_bytes: int = Field(default=Limits.max_report_bytes, ge=1024, le=1 << 30)
    notifications: list[NotificationRule] = Field(default_factory=list, max_length=MAX_RULES)
    _module: ModuleConfig | None = PrivateAttr(default=None)

    @field_validator("notifications")
    @classmethod
    def _rule_names_unique(cls, rules: list[NotificationRule]) -> list[NotificationRule]:
        names = [rule.name for rule in rules]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"rule names given twice: {', '.join(twice)}")
        return rules

    @field_validator("domains")
    @classmethod
    def _domains_when_enabled(cls, domains: list[str], info: ValidationInfo) -> list[str]:
        if info.data.get("enabled") and not domains:
            raise ValueError("an enabled reports collector needs domains (at least one)")
        return domains

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> ReportsConfig:
        if self.enabled:
            missing = [key for key in ("address", "module") if getattr(self, key) is None]
            if missing:
                raise ValueError(f"an enabled reports collector needs {' and '.join(missing)}")
        if self.processed_mailbox is not None and self.processed_mailbox == self.mailbox:
            raise ValueError("processed_mailbox must be another mailbox than mailbox")
        return self

    def resolve_modules(self, modules: Mapping[str, ModuleConfig]) -> None:
        """Keep the module ``module`` names (the config's cross-checks report a missing one)."""
        self._module = modules.get(self.module) if self.module is not None else None

    @property
    def imap_module(self) -> ModuleConfig | None:
        """The module of ``module``, once the whole config resolved it."""
        return self._module

    @property
    def limits(self) -> Limits:
        return Limits(
            max_message_bytes=self.max_message_bytes,
            max_report_bytes=self.max_report_bytes,
            # a message holds several reports: never less room for them than for one
            max_message_report_bytes=max(Limits.max_message_report_bytes, self.max_report_bytes),
        )
