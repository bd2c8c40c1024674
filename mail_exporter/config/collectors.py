"""The collectors' sections, one per collector, named as the collector and its flag.

Every section has ``enabled`` and a per-scrape ``timeout`` (:class:`CollectorSection`);
the rest is the collector's own. Sections are defaults all through: an empty
``collectors:`` is valid and enables nothing.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from mail_exporter.config.fields import CAFile, Duration, Name, StrictModel


def _ip_address(value: str) -> str:
    return str(ipaddress.ip_address(value))


class CollectorSection(StrictModel):
    """What every collector section has: a switch and a time limit per scrape."""

    enabled: bool = False
    timeout: Duration = Field(default="10s", validate_default=True)


class PostfixInstance(StrictModel):
    """One Postfix instance; ``name`` is its ``mta_instance`` label (as in ``postfix-NAME``)."""

    name: str = Field(default="postfix", pattern=r"^[A-Za-z0-9_.-]+$")
    config_directory: Path = Path("/etc/postfix")
    queue_directory: Path | None = None  # default: what postconf says for config_directory


def _distinct_instance_names(instances: list[PostfixInstance]) -> list[PostfixInstance]:
    """Each name once: two instances of one name would export the same series twice.

    The error is raised at the second instance's ``name`` (present or defaulted), so that
    check-config points at the instance to rename rather than at the whole list.
    """
    seen: set[str] = set()
    problems: list[InitErrorDetails] = []
    for index, instance in enumerate(instances):
        if instance.name in seen:
            problems.append(
                InitErrorDetails(
                    type=PydanticCustomError(
                        "duplicate_name",
                        "duplicate instance name {name}",
                        {"name": repr(instance.name)},
                    ),
                    loc=(index, "name"),
                    input=instance.name,
                )
            )
        seen.add(instance.name)
    if problems:
        raise ValidationError.from_exception_data("instances", problems)
    return instances


class PostfixQueueConfig(CollectorSection):
    instances: Annotated[list[PostfixInstance], AfterValidator(_distinct_instance_names)] = Field(
        default_factory=lambda: [PostfixInstance()]
    )
    source: Literal["auto", "spool", "showq", "postqueue"] = "auto"
    postconf_command: str = "postconf"
    postqueue_command: str = "postqueue"
    top_domains: int = Field(default=10, ge=1, le=100)


class EximQueueConfig(CollectorSection):
    name: str = Field(default="exim", pattern=r"^[A-Za-z0-9_.-]+$")
    spool_directory: Path = Path("/var/spool/exim4")
    exim_command: list[str] = Field(default_factory=lambda: ["exim4"], min_length=1)


class QmailQueueConfig(CollectorSection):
    name: str = Field(default="qmail", pattern=r"^[A-Za-z0-9_.-]+$")
    queue_directory: Path = Path("/var/qmail/queue")
    # qmail's programs live in /var/qmail/bin, which is rarely on PATH.
    qstat_command: list[str] = Field(
        default_factory=lambda: ["/var/qmail/bin/qmail-qstat"], min_length=1
    )
    qread_command: list[str] = Field(
        default_factory=lambda: ["/var/qmail/bin/qmail-qread"], min_length=1
    )


class HostConfig(CollectorSection):
    """CPU, load, memory, network, disk I/O, filesystems, and the filesystems of mail paths."""

    mail_paths: list[Path] = Field(
        default_factory=lambda: [Path("/var/spool/postfix"), Path("/var/mail"), Path("/var/log")]
    )
    # Pseudo and virtual filesystems are not "real": no disk space to run out of.
    exclude_filesystem_types: list[str] = Field(
        default_factory=lambda: [
            "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs",
            "devpts", "devtmpfs", "fusectl", "hugetlbfs", "mqueue", "nsfs", "overlay", "proc",
            "procfs", "pstore", "rpc_pipefs", "securityfs", "selinuxfs", "squashfs", "sysfs",
            "tracefs", "tmpfs", "ramfs", "9p",
        ]
    )  # fmt: skip


class SensorsConfig(CollectorSection):
    """Temperatures and fans from the kernel's hwmon (via psutil)."""


class SmartConfig(CollectorSection):
    """Disk health from ``smartctl --json``; runs on its own slower interval."""

    interval: Duration = Field(default="10m", validate_default=True)
    smartctl_command: list[str] = Field(default_factory=lambda: ["smartctl"], min_length=1)
    devices: list[str] = Field(default_factory=list)  # empty: what `smartctl --scan` finds


class ServiceMatch(StrictModel):
    """A mail service: processes whose name is one of ``processes``."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    processes: list[str] = Field(min_length=1)


def _default_services() -> list[ServiceMatch]:
    return [
        ServiceMatch(name="postfix", processes=["master"]),
        ServiceMatch(name="smtpd", processes=["smtpd"]),
        ServiceMatch(name="dovecot", processes=["dovecot"]),
        ServiceMatch(name="exim", processes=["exim4", "exim"]),
        ServiceMatch(name="rspamd", processes=["rspamd"]),
        ServiceMatch(name="amavis", processes=["amavisd", "amavisd-new", "amavis"]),
        ServiceMatch(name="spamd", processes=["spamd"]),
        ServiceMatch(name="clamd", processes=["clamd"]),
    ]


class ServicesConfig(CollectorSection):
    """Whether each mail service runs: process count, memory, CPU seconds, open files."""

    services: list[ServiceMatch] = Field(default_factory=_default_services)


class BackupMatch(StrictModel):
    """A backup: the newest file matching ``path`` (a path or a glob, ``**`` allowed)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    path: str = Field(min_length=1)


class BackupsConfig(CollectorSection):
    """Age and size of the newest file of each configured backup."""

    backups: list[BackupMatch] = Field(default_factory=list)
    # Whether a recursive scan (a directory, or ``**``) enters links to directories.
    follow_symlinks: bool = False
    # Directory entries one backup's scan may look at before it fails.
    max_entries: int = Field(default=100_000, ge=1)


UNIT_SUFFIXES = (".service", ".socket", ".device", ".mount", ".automount", ".swap", ".target",
                 ".path", ".timer", ".slice", ".scope")  # fmt: skip


def _journal_unit(name: str) -> str:
    """A systemd unit name as journalctl's ``--unit`` takes it, made exact for ``_SYSTEMD_UNIT=``.

    The journal follower matches the field itself (see ``collectors/logs/journal.py``), so
    what ``--unit`` did for us is done here: a name without a unit type gets ``.service``
    (``dovecot`` is ``dovecot.service``). Patterns are refused rather than expanded:
    journalctl expands them against the units already in the journal when it starts,
    so a unit that first logs later would be missed without a word.
    """
    if not name or any(character.isspace() for character in name):
        raise ValueError(f"unit {name!r} must be a systemd unit name")
    if any(character in name for character in "*?["):
        raise ValueError(f"unit {name!r}: list each unit by its name, patterns are not expanded")
    return name if name.endswith(UNIT_SUFFIXES) else f"{name}.service"


class LogSource(StrictModel):
    """One log to follow: a file, the systemd journal, or standard input.

    ``format`` says how a line looks: ``syslog`` (``DATE HOST program[pid]: text``, what
    /var/log/mail.log and the journal carry, every program family recognised by its tag),
    ``dovecot`` (Dovecot's own ``log_path``), ``exim`` (Exim's mainlog or rejectlog) or
    ``rspamd`` (rspamd's own log file).
    """

    type: Literal["file", "journal", "stdin"] = "file"
    name: Name | None = None  # the ``source`` label; default below
    format: Literal["syslog", "dovecot", "exim", "rspamd"] = "syslog"
    path: Path | None = None  # type file
    journal_units: list[Annotated[str, AfterValidator(_journal_unit)]] = Field(
        default_factory=list
    )  # type journal: entries of these units or of these identifiers
    journal_identifiers: list[str] = Field(default_factory=list)  # type journal
    journal_directory: Path | None = None  # type journal: default the system journal
    journal_command: list[str] = Field(default_factory=lambda: ["journalctl"], min_length=1)

    @model_validator(mode="after")
    def _keys_of_its_type(self) -> LogSource:
        if (self.type == "file") != (self.path is not None):
            raise ValueError("path is required for type file and only allowed there")
        journal_keys = self.journal_units or self.journal_identifiers or self.journal_directory
        if journal_keys and self.type != "journal":
            raise ValueError("journal_* keys are only allowed with type journal")
        if self.type == "journal" and self.format != "syslog":
            raise ValueError("journal entries carry their program name: format must be syslog")
        return self

    @property
    def label(self) -> str:
        """The ``source`` label: the name, the path, ``journal`` (with its filters) or ``stdin``."""
        if self.name is not None:
            return self.name
        if self.path is not None:
            return str(self.path)
        if self.type == "journal":
            return ",".join(["journal", *self.journal_units, *self.journal_identifiers])
        return self.type


def _postfix_syslog_name(name: str) -> str:
    """A Postfix ``syslog_name`` that the built-in ``postfix``/``postfix-NAME`` do not cover."""
    if not name:
        raise ValueError("syslog name must not be empty")
    if any(character.isspace() for character in name):
        raise ValueError(f"syslog name {name!r} must not contain whitespace")
    if name.startswith("/") or name.endswith("/"):
        raise ValueError(f"syslog name {name!r} must not start or end with /")
    if name == "postfix" or name.startswith(("postfix/", "postfix-")):
        raise ValueError(
            f"syslog name {name!r} needs no entry: postfix/... and postfix-NAME/... tags "
            "are Postfix's already"
        )
    return name


RefusalReason = Literal[
    "reputation", "policy", "rate_limited", "unknown_user", "mailbox_full", "tls_required", "other"
]


class ReplyReason(StrictModel):
    """A remote reply containing ``pattern`` (plain text, any case) is refused for ``reason``."""

    pattern: str = Field(min_length=1, max_length=200)
    reason: RefusalReason


class LogsConfig(CollectorSection):
    """Counters from the MTA's and Dovecot's logs."""

    sources: list[LogSource] = Field(
        default_factory=lambda: [LogSource(path=Path("/var/log/mail.log"))]
    )
    start_at: Literal["end", "beginning"] = "end"
    state_file: Path | None = None  # keeps the read position across restarts
    top_domains: int = Field(default=10, ge=0, le=100)  # 0: no per-domain series
    poll_interval: Duration = Field(default="250ms", validate_default=True)
    max_line_bytes: int = Field(default=16384, ge=256, le=1048576)
    # Postfix syslog_name values not starting with "postfix" (tags NAME/smtpd, ...).
    postfix_syslog_names: list[Annotated[str, AfterValidator(_postfix_syslog_name)]] = Field(
        default_factory=list
    )
    reply_reasons: list[ReplyReason] = Field(default_factory=list)  # before the defaults

    @model_validator(mode="after")
    def _distinct_sources(self) -> LogsConfig:
        labels = [source.label for source in self.sources]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ValueError(f"each log source must be given once: {', '.join(duplicates)}")
        if sum(source.type == "stdin" for source in self.sources) > 1:
            raise ValueError("there is only one standard input")
        return self


class DnsResolverConfig(StrictModel):
    """A DNS resolver: its addresses and port, else the system's (/etc/resolv.conf)."""

    nameservers: list[Annotated[str, AfterValidator(_ip_address)]] = Field(default_factory=list)
    port: int = Field(default=53, ge=1, le=65535)
    timeout: Duration = Field(default="5s", validate_default=True)  # per lookup, retries included


def _default_ip_blocklists() -> list[str]:
    return ["zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org", "psbl.surriel.com"]


class DnsConfig(CollectorSection):
    """DNS and reputation of the mail domains and sending IPs; runs on its own interval."""

    interval: Duration = Field(default="15m", validate_default=True)
    domains: list[str] = Field(default_factory=list)
    # The MX hosts every domain is expected to publish: each is DANE-checked, and each
    # (domain, host) pair reports whether the domain's MX records name it.
    mx_hosts: list[str] = Field(default_factory=list)
    sending_ips: list[Annotated[str, AfterValidator(_ip_address)]] = Field(default_factory=list)
    helo_name: str | None = None
    dkim_selectors: list[str] = Field(default_factory=list)  # checked for every domain
    ip_blocklists: list[str] = Field(default_factory=_default_ip_blocklists)
    domain_blocklists: list[str] = Field(default_factory=lambda: ["dbl.spamhaus.org"])
    resolver: DnsResolverConfig = DnsResolverConfig()
    # Blocklists refuse public resolvers (Spamhaus answers 127.255.255.254): give them a
    # resolver of your own here; default: ``resolver``.
    blocklist_resolver: DnsResolverConfig | None = None
    max_in_flight: int = Field(default=20, ge=1, le=1000)  # both resolvers together
    mta_sts: bool = True
    mta_sts_ca_file: CAFile | None = None  # default: the system's CAs
    dane: bool = True
    dane_port: int = Field(default=25, ge=1, le=65535)


class CollectorsConfig(StrictModel):
    """One section per collector, named as the collector (and its --collector.NAME flag)."""

    postfix_queue: PostfixQueueConfig = PostfixQueueConfig()
    exim_queue: EximQueueConfig = EximQueueConfig()
    qmail_queue: QmailQueueConfig = QmailQueueConfig()
    host: HostConfig = HostConfig()
    sensors: SensorsConfig = SensorsConfig()
    smart: SmartConfig = SmartConfig()
    services: ServicesConfig = ServicesConfig()
    backups: BackupsConfig = BackupsConfig()
    logs: LogsConfig = LogsConfig()
    dns: DnsConfig = DnsConfig()

    def section(self, name: str) -> CollectorSection:
        section = getattr(self, name, None)
        return section if isinstance(section, CollectorSection) else CollectorSection()
