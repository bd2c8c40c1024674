"""The configuration file: strict models, YAML loading with line numbers, every error at once.

``load_config`` either returns a complete, valid :class:`Config` or raises
:class:`ConfigError` listing every problem as ``key.path (line N): message``.
Nothing half-valid ever reaches the scheduler. Files (the config and the secrets and
CA files it names) are read, and YAML composed, within limits of size, depth and
aliases (see :mod:`mail_exporter.config_files`), so a hostile file is one more problem.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from mail_exporter.allowlist import TargetAllowlist, TargetKey, checked_pattern, target_key
from mail_exporter.config_files import (
    MAX_CONFIG_BYTES,
    MAX_SECRET_BYTES,
    Location,
    UnreadableFile,
    YAMLRefused,
    compose_yaml,
    construct_yaml,
    read_bounded,
)
from mail_exporter.durations import format_duration, parse_duration
from mail_exporter.targets import Address, parse_address


def _duration(value: object) -> float:
    if not isinstance(value, str):
        raise ValueError(
            f"invalid duration {value!r}: use a number and a unit such as 500ms, 30s, 5m"
        )
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"duration {value!r} must be greater than zero")
    return seconds


def _ip_address(value: str) -> str:
    return str(ipaddress.ip_address(value))


def _address(value: str) -> str:
    parse_address(value)
    return value


# Shown (the /config page) in the form it is written: 30s, not 30.0.
Duration = Annotated[
    Any, AfterValidator(_duration), PlainSerializer(format_duration, when_used="json")
]
AddressText = Annotated[str, AfterValidator(_address)]
Protocol = Literal["smtp", "imap", "pop3"]
TLSMode = Literal["none", "starttls", "implicit"]


def in_config_directory(path: Path, info: ValidationInfo) -> Path:
    """Relative paths are read from the config file's directory, as Prometheus does."""
    directory = (info.context or {}).get("directory")
    return directory / path if directory is not None and not path.is_absolute() else path


ConfigPath = Annotated[Path, AfterValidator(in_config_directory)]
"""A path in a config file: absolute, or relative to that file's directory."""


class StrictModel(BaseModel):
    """Unknown keys are errors everywhere."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _server_name(value: str) -> str:
    """A name TLS can send as SNI (as the ssl module encodes it), or an address."""
    try:
        encoded = value.removesuffix(".").encode("idna")
    except UnicodeError:
        encoded = b""
    if not encoded:
        raise ValueError(
            f"server_name {value!r} is not a host name: labels of 1 to 63 characters "
            "between dots"
        )
    return value


def _check_readable(key: str, path: Path, limit: int) -> bytes:
    """The file's content, or a ValueError naming the key, the path and why not."""
    try:
        return read_bounded(path, limit)
    except UnreadableFile as error:
        raise ValueError(f"{key} {str(path)!r} cannot be read: {error}") from None


def _ca_bundle(path: Path) -> Path:
    _check_readable("CA file", path, MAX_CONFIG_BYTES)
    return path


CAFile = Annotated[Path, AfterValidator(_ca_bundle)]


MAX_NAME_LENGTH = 128


def _printable_name(value: str) -> str:
    """A name that becomes a label value or a URL parameter, and is shown on every page."""
    if not 0 < len(value) <= MAX_NAME_LENGTH:
        raise ValueError(f"a name must have 1 to {MAX_NAME_LENGTH} characters")
    if not value.isprintable():
        raise ValueError(f"name {value!r} must be printable (no control characters)")
    return value


Name = Annotated[str, AfterValidator(_printable_name)]


class TLSConfig(StrictModel):
    ca_file: ConfigPath | None = None
    server_name: Annotated[str, AfterValidator(_server_name)] | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _ca_file_readable(self) -> TLSConfig:
        if self.ca_file is not None:
            _check_readable("ca_file", self.ca_file, MAX_CONFIG_BYTES)
        return self


class AuthConfig(StrictModel):
    """A login check. The password comes from a file or the environment, never the config."""

    username: str = Field(min_length=1)
    password_file: ConfigPath | None = None
    password_env: str | None = None
    mechanism: Literal["auto", "plain", "login"] = "auto"
    _password: SecretStr = PrivateAttr(default=SecretStr(""))

    @model_validator(mode="after")
    def _load_password(self) -> AuthConfig:
        if (self.password_file is None) == (self.password_env is None):
            raise ValueError("set exactly one of password_file and password_env")
        if self.password_file is not None:
            content = _check_readable("password_file", self.password_file, MAX_SECRET_BYTES)
            try:
                password = content.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise ValueError(
                    f"password_file {str(self.password_file)!r} is not UTF-8 text"
                ) from None
        else:
            assert self.password_env is not None
            if self.password_env not in os.environ:
                raise ValueError(f"environment variable {self.password_env} is not set")
            password = os.environ[self.password_env]
            try:  # undecodable bytes are kept as lone surrogates, which cannot be sent
                password.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    f"environment variable {self.password_env} is not UTF-8 text"
                ) from None
        if any(c in password + self.username for c in "\r\n\0"):
            raise ValueError("username and password must not contain line breaks or NUL")
        self._password = SecretStr(password)
        return self

    @property
    def password(self) -> str:
        return self._password.get_secret_value()


class ModuleConfig(StrictModel):
    """How to probe one kind of service: protocol, TLS mode, timeout, login.

    A login without TLS is a written choice (``allow_plaintext_auth: true``): ``auth``
    with ``tls: none`` is an error without it, and with ``tls: starttls`` and
    ``require_tls: false`` the login is withheld when STARTTLS is not offered.
    """

    protocol: Protocol
    tls: TLSMode = "none"
    require_tls: bool | None = None
    allow_plaintext_auth: bool = False
    timeout: Duration = Field(default="10s", validate_default=True)
    preferred_ip_protocol: Literal["ip4", "ip6"] = "ip6"
    ip_protocol_fallback: bool = True
    ehlo_name: str | None = None
    tls_config: TLSConfig = TLSConfig()
    auth: AuthConfig | None = None

    @model_validator(mode="after")
    def _check_tls_options(self) -> ModuleConfig:
        if self.require_tls is not None and self.tls != "starttls":
            raise ValueError("require_tls applies only to tls: starttls")
        if self.ehlo_name is not None and self.protocol != "smtp":
            raise ValueError("ehlo_name applies only to protocol: smtp")
        if self.auth and self.auth.mechanism == "login" and self.protocol == "pop3":
            raise ValueError("pop3 logs in with USER/PASS (mechanism auto) or AUTH PLAIN (plain)")
        may_be_plaintext = self.tls != "implicit" and not self.starttls_required
        if self.allow_plaintext_auth and not (self.auth and may_be_plaintext):
            raise ValueError(
                "allow_plaintext_auth applies only to a module with auth and tls: none, "
                "or tls: starttls with require_tls: false"
            )
        if self.auth and self.tls == "none" and not self.allow_plaintext_auth:
            raise ValueError(
                "auth with tls: none sends the password in cleartext: add "
                "allow_plaintext_auth: true to do that on purpose, or use tls: starttls or implicit"
            )
        return self

    @property
    def starttls_required(self) -> bool:
        """With STARTTLS, fail when it is not offered unless the module says otherwise."""
        return self.tls == "starttls" and self.require_tls is not False

    @property
    def timeout_seconds(self) -> float:
        return float(self.timeout)

    @property
    def has_credentials(self) -> bool:
        """Whether probing with this module hands the server a secret. /probe then uses it
        only on explicitly allowed targets; an option that sends a secret counts here."""
        return self.auth is not None


class TargetConfig(StrictModel):
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=r"^[A-Za-z0-9_.:-]+$")
    address: AddressText
    module: str
    interval: Duration | None = None


class GlobalConfig(StrictModel):
    interval: Duration = Field(default="30s", validate_default=True)
    concurrency: int = Field(default=64, ge=1, le=10000)
    scrape_timeout_offset: Duration = Field(default="500ms", validate_default=True)


class ProbeConfig(StrictModel):
    """What /probe may reach. Its modules are the config's; its targets, the scheduled
    targets of the module and those matching one pattern, and with an empty list any
    target for a module without credentials (see :mod:`mail_exporter.allowlist`)."""

    allowed_targets: list[Annotated[str, AfterValidator(checked_pattern)]] = Field(
        default_factory=list
    )
    _allowlist: TargetAllowlist = PrivateAttr(default_factory=TargetAllowlist)

    @model_validator(mode="after")
    def _compile(self) -> ProbeConfig:
        self._allowlist = TargetAllowlist.of(self.allowed_targets)
        return self

    @property
    def allowlist(self) -> TargetAllowlist:
        return self._allowlist


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


MailAddress = Annotated[str, Field(pattern=r"^[^@\s<>]+@[^@\s<>]+$")]


class RoundTripSend(StrictModel):
    """Where the test message is submitted, with an smtp module (TLS mode, login)."""

    address: AddressText
    module: str
    from_: MailAddress = Field(alias="from")
    to: MailAddress

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RoundTripReceive(StrictModel):
    """Where the test message is looked for, with an imap or pop3 module that logs in."""

    address: AddressText
    module: str
    mailbox: str = "INBOX"
    junk_mailbox: str | None = None  # also looked in; arrival there counts as "junk"
    # Without UIDPLUS our messages are moved to a folder named this plus a random suffix,
    # deleted whole, so that messages someone else marked \Deleted are never expunged by us.
    cleanup_mailbox: str = "mail_exporter"
    poll_interval: Duration = Field(default="1s", validate_default=True)


class RoundTripRoute(StrictModel):
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=r"^[A-Za-z0-9_.:-]+$")
    interval: Duration = Field(default="60s", validate_default=True)
    timeout: Duration = Field(default="120s", validate_default=True)
    send: RoundTripSend
    receive: RoundTripReceive


class Config(StrictModel):
    global_: GlobalConfig = Field(default=GlobalConfig(), alias="global")
    modules: dict[Name, ModuleConfig] = Field(default_factory=dict)
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

    def schedules(self, module: str, address: Address) -> bool:
        """Whether a target of ``targets`` probes ``address`` with ``module`` (the same target
        as :func:`mail_exporter.allowlist.target_key` says)."""
        return (module, target_key(address)) in self._scheduled

    def interval_of(self, target: TargetConfig) -> float:
        return float(target.interval if target.interval is not None else self.global_.interval)

    def secrets(self) -> list[str]:
        """Every password in use, so logs can redact them wherever they might slip in."""
        return [m.auth.password for m in self.modules.values() if m.auth and m.auth.password]


class ConfigError(Exception):
    """A configuration that cannot be used, with every problem found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def __str__(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} problem(s)"]
        lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)


class LineIndex:
    """Line numbers of every key and list item in a YAML document, and duplicate keys."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.lines: dict[Location, int] = {}
        self.duplicates: list[tuple[Location, int]] = []
        if root is not None:
            self._walk(root, ())

    def _walk(self, node: yaml.Node, location: Location) -> None:
        self.lines.setdefault(location, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                child = (*location, key)
                if key in seen:
                    self.duplicates.append((child, key_node.start_mark.line + 1))
                seen.add(key)
                self.lines[child] = key_node.start_mark.line + 1
                self._walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._walk(item, (*location, index))

    def line_of(self, location: Location) -> int | None:
        for end in range(len(location), -1, -1):
            if location[:end] in self.lines:
                return self.lines[location[:end]]
        return None


def describe_error(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        if error["loc"][-1] == "password":
            return (
                "unknown key: passwords never go in the config; use password_file or password_env"
            )
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def dotted(location: Location) -> str:
    parts: list[str] = []
    for part in location:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:  # a key that would not print is shown escaped, as Python writes it
            parts.append(f".{part}" if part.isprintable() else f".{part!r}")
    return "".join(parts).lstrip(".") or "(top level)"


def _mapping_items(value: object) -> list[tuple[int, dict[str, Any]]]:
    """The mappings of a raw YAML list, with their indexes (anything else is left to pydantic)."""
    items = value if isinstance(value, list) else []
    return [(index, item) for index, item in enumerate(items) if isinstance(item, dict)]


def _module_problem(
    modules: dict[str, Any], module: object, protocols: tuple[str, ...], needs_login: bool
) -> str | None:
    if not isinstance(module, str):
        return None
    if module not in modules:
        known = ", ".join(sorted(map(str, modules))) or "none defined"
        return f"unknown module {module!r} (modules: {known})"
    settings = modules[module] if isinstance(modules[module], dict) else {}
    if settings.get("protocol") not in protocols:
        return f"module {module!r} must have protocol {' or '.join(protocols)}"
    if needs_login and not settings.get("auth"):
        return f"module {module!r} needs auth: the mailbox is read after a login"
    return None


def _cross_references(data: Mapping[str, Any]) -> Iterator[tuple[Location, str]]:
    """Checks that span sections, run on the raw data so they are reported with other errors."""
    modules = data.get("modules")
    modules = modules if isinstance(modules, dict) else {}
    names: set[object] = set()
    for index, target in _mapping_items(data.get("targets")):
        problem = _module_problem(modules, target.get("module"), ("smtp", "imap", "pop3"), False)
        if problem:
            yield ("targets", index, "module"), problem
        name = target.get("name")
        if isinstance(name, str) and name in names:
            yield ("targets", index, "name"), f"duplicate target name {name!r}"
        names.add(name)
    routes: set[object] = set()
    for index, route in _mapping_items(data.get("roundtrip")):
        for side, protocols, login in (
            ("send", ("smtp",), False),
            ("receive", ("imap", "pop3"), True),
        ):
            part = route.get(side)
            if isinstance(part, dict):
                problem = _module_problem(modules, part.get("module"), protocols, login)
                if problem:
                    yield ("roundtrip", index, side, "module"), problem
        yield from _pop3_receive_problems(index, route.get("receive"), modules)
        name = route.get("name")
        if isinstance(name, str) and name in routes:
            yield ("roundtrip", index, "name"), f"duplicate route name {name!r}"
        routes.add(name)


IMAP_ONLY_RECEIVE_KEYS = ("junk_mailbox", "cleanup_mailbox")


def _pop3_receive_problems(
    index: int, receive: object, modules: dict[str, Any]
) -> Iterator[tuple[Location, str]]:
    """Mailbox keys on a route that reads with POP3, which only ever sees the inbox: an
    error rather than a setting silently ignored."""
    if not isinstance(receive, dict):
        return
    module = receive.get("module")
    settings = modules.get(module) if isinstance(module, str) else None
    if not isinstance(settings, dict) or settings.get("protocol") != "pop3":
        return
    mailbox = receive.get("mailbox")
    if isinstance(mailbox, str) and mailbox.upper() != "INBOX":
        yield (
            ("roundtrip", index, "receive", "mailbox"),
            "POP3 reads only the inbox: use an imap module for another mailbox",
        )
    for key in IMAP_ONLY_RECEIVE_KEYS:
        if key in receive:
            yield (
                ("roundtrip", index, "receive", key),
                f"{key} needs an imap module: POP3 has no other mailboxes",
            )


ModelT = TypeVar("ModelT", bound=BaseModel)
Describe = Callable[[Mapping[str, Any]], str]
CrossCheck = Callable[[Mapping[str, Any]], Iterable[tuple[Location, str]]]


def validate_yaml(
    text: str,
    source: str,
    model: type[ModelT],
    *,
    describe: Describe = describe_error,
    cross_check: CrossCheck | None = None,
    context: dict[str, Any] | None = None,
) -> ModelT:
    """Validate YAML text into ``model``; raise :class:`ConfigError` with every problem.

    Each problem names its key path and line; ``cross_check`` adds checks that span
    sections, run on the raw data so they are reported alongside the others.
    """
    try:
        root = compose_yaml(text)
        index = LineIndex(root)  # first: constructing resolves merge keys in the graph itself
        data = construct_yaml(root) if root is not None else None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(source, [f"invalid YAML{where}: {problem}"]) from None
    except YAMLRefused as refused:
        # A path as deep as the limit says little beyond its start; the line says where.
        shown = dotted(refused.location[:8]) + ("..." if len(refused.location) > 8 else "")
        raise ConfigError(source, [f"{shown} (line {refused.line}): {refused.message}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level) (line 1): the file must be a mapping of keys"])
    problems = [f"{dotted(loc)} (line {line}): duplicate key" for loc, line in index.duplicates]
    validated: ModelT | None = None
    try:
        validated = model.model_validate(data, context=context)
    except ValidationError as error:
        for item in error.errors():
            location = tuple(item["loc"])
            problems.append(
                f"{dotted(location)} (line {index.line_of(location)}): {describe(item)}"
            )
    for location, message in cross_check(data) if cross_check else ():
        problems.append(f"{dotted(location)} (line {index.line_of(location)}): {message}")
    if problems or validated is None:
        raise ConfigError(source, problems)
    return validated


def parse_config(text: str, source: str = "<config>", directory: Path | None = None) -> Config:
    """Validate YAML text into a :class:`Config`; raise :class:`ConfigError` with every problem.

    Relative secret and CA file paths are taken from ``directory`` (the file's own).
    """
    return validate_yaml(
        text, source, Config, cross_check=_cross_references, context={"directory": directory}
    )


def load_yaml_file(path: Path, parse: Callable[[str, str, Path], ModelT]) -> ModelT:
    """Read a YAML file and ``parse(text, source, directory)`` it; an unreadable file is a
    :class:`ConfigError` like any other problem (see :mod:`mail_exporter.config_files`)."""
    try:
        text = read_bounded(path, MAX_CONFIG_BYTES).decode("utf-8")
    except (UnreadableFile, UnicodeDecodeError) as error:
        raise ConfigError(str(path), [f"cannot read file: {error}"]) from None
    return parse(text, str(path), path.parent)


def load_config(path: Path) -> Config:
    """Read and validate a config file."""
    return load_yaml_file(path, parse_config)


DEFAULT_CONFIG_YAML = """\
# Built in: used when no --config.file is given. Watches the standard mail ports of this host.
# Certificates of a local server rarely name "localhost", so verification is reported
# (mail_tls_cert_verified) but does not fail these probes.
modules:
  smtp_starttls:
    protocol: smtp
    tls: starttls
    require_tls: false
    tls_config: {insecure_skip_verify: true}
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
