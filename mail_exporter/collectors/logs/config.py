"""The ``logs`` section: the logs to follow and how, as :mod:`.collector` registers it.

Its own module because the followers (:mod:`.files`, :mod:`.journal`, :mod:`.follower`)
read it too, and :mod:`.collector` imports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from mail_exporter.collectors.logs.envelopes import Runtime
from mail_exporter.config.collectors import CollectorSection
from mail_exporter.config.fields import Duration, Name, StrictModel

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


DEFAULT_CONTAINER_FILES = 100
DEFAULT_CONTAINER_LOGS: dict[Runtime, Path] = {
    "docker": Path("/var/lib/docker/containers/*/*-json.log"),
    "cri": Path("/var/log/pods/*/*/*.log"),
}


class LogSource(StrictModel):
    """One log to follow: a file, the containers' logs, the systemd journal, or standard input.

    ``format`` says how a line looks: ``syslog`` (``DATE HOST program[pid]: text``, what
    /var/log/mail.log and the journal carry, every program family recognised by its tag;
    also the bare ``program[pid]: text``), ``dovecot`` (Dovecot's own ``log_path``),
    ``exim`` (Exim's mainlog or rejectlog) or ``rspamd`` (rspamd's own log file).
    ``runtime`` says that the file is a container runtime's log whose records carry those
    lines (``docker``: Docker's json-file; ``cri``: /var/log/pods, containerd, CRI-O,
    podman's k8s-file); see ``collectors/logs/envelopes.py``. Type ``containers`` follows
    every file that the glob ``path`` matches (by default where the runtime keeps them),
    new ones as they appear, those of the containers named in ``containers`` only (shell
    patterns) when that is given, at most ``max_files`` of them.
    """

    type: Literal["file", "containers", "journal", "stdin"] = "file"
    name: Name | None = None  # the ``source`` label; default below
    format: Literal["syslog", "dovecot", "exim", "rspamd"] = "syslog"
    path: Path | None = None  # type file; type containers: a glob
    runtime: Runtime | None = None  # type file or containers: the records' format
    containers: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    max_files: int | None = Field(default=None, ge=1, le=10000)  # type containers; default 100
    journal_units: list[Annotated[str, AfterValidator(_journal_unit)]] = Field(
        default_factory=list
    )  # type journal: entries of these units or of these identifiers
    journal_identifiers: list[str] = Field(default_factory=list)  # type journal
    journal_directory: Path | None = None  # type journal: default the system journal
    journal_command: list[str] = Field(default_factory=lambda: ["journalctl"], min_length=1)

    @model_validator(mode="after")
    def _keys_of_its_type(self) -> LogSource:
        if self.type == "file" and self.path is None:
            raise ValueError("path is required for type file")
        if self.path is not None and self.type not in ("file", "containers"):
            raise ValueError("path is only allowed with type file or containers")
        if self.type == "containers" and self.runtime is None:
            raise ValueError("runtime (docker or cri) is required for type containers")
        if self.runtime is not None and self.type not in ("file", "containers"):
            raise ValueError("runtime is only allowed with type file or containers")
        containers_keys = self.containers or self.max_files is not None
        if containers_keys and self.type != "containers":
            raise ValueError("containers and max_files are only allowed with type containers")
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
        if self.type == "containers":
            return str(self.container_logs)
        if self.path is not None:
            return str(self.path)
        if self.type == "journal":
            return ",".join(["journal", *self.journal_units, *self.journal_identifiers])
        return self.type

    @property
    def container_logs(self) -> Path:
        """Type containers: the glob of the log files, as given or the runtime's default."""
        assert self.runtime is not None
        return self.path or DEFAULT_CONTAINER_LOGS[self.runtime]

    @property
    def container_files(self) -> int:
        """Type containers: the most files followed at once."""
        return self.max_files or DEFAULT_CONTAINER_FILES


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
    top_accounts: int = Field(default=10, ge=0, le=100)  # 0: no per-account series
    account_address_window: Duration = Field(default="1h", validate_default=True)
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
