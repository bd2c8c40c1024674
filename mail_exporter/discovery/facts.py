"""What the discoverers hand on: the ports a server's config names, the files it writes,
the certificates it shows; and :func:`ask`, the one way discovery runs a server's tool.

Every module of this package turns one server (or one host fact) into these plain
records; :mod:`.plan` decides from them what the config says, :mod:`.render` writes it.

What a tool prints is the server's config, which its admin (or whoever could write it)
chose: it is read within bounds (time, bytes), split at line feeds only (a value may hold
any other line break), and its ports and paths are taken only when they are ones
(:func:`port_number`, :func:`local_path`); anything else is left out, never guessed at.
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from mail_exporter.collectors.base import CollectorError
from mail_exporter.collectors.commands import run_bounded
from mail_exporter.config.probes import Protocol, TLSMode
from mail_exporter.discovery.options import COMMAND_TIMEOUT_SECONDS, MAX_OUTPUT_BYTES

_PORT = re.compile(r"[0-9]{1,5}")
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


class DiscoveryProblem(Exception):
    """A server's tool was there but did not answer as expected; the message says why."""


def ask(command: list[str], deadline: float) -> list[str]:
    """A read-only query's output lines (postconf, doveconf, exim -bP), bounded in size
    and in time: :data:`COMMAND_TIMEOUT_SECONDS`, and no later than the server's
    ``deadline`` (a :func:`time.monotonic` time)."""
    seconds = min(COMMAND_TIMEOUT_SECONDS, deadline - time.monotonic())
    if seconds <= 0:
        raise DiscoveryProblem(
            f"{shlex.join(command)}: not asked, the time for this server ran out"
        )
    try:
        text = run_bounded(command, seconds, MAX_OUTPUT_BYTES)
    except CollectorError as error:
        raise DiscoveryProblem(str(error)) from None
    return text.removesuffix("\n").split("\n") if text else []


def port_number(text: str) -> int | None:
    """A TCP port written in decimal, or None."""
    text = text.strip()
    return int(text) if _PORT.fullmatch(text) and 0 < int(text) < 65536 else None


def domain_name(text: str) -> str | None:
    """A domain name as the templates use it (letters, digits, dots, hyphens), or None."""
    text = text.strip()
    return text if _DOMAIN.fullmatch(text) else None


def local_path(text: str) -> Path | None:
    """An absolute path as a config gives it, or None: not absolute, or not UTF-8 (the tools'
    output is read as UTF-8, so such a path would name another file)."""
    text = text.strip()
    return Path(text) if text.startswith("/") and "\ufffd" not in text else None


def day(timestamp: float) -> str:
    """A certificate's expiry as the comments show it."""
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


@dataclass(frozen=True)
class Port:
    """A TCP port a server's config says it listens on (or a standard mail port).

    ``kind`` picks the module: smtp (an MX: STARTTLS if offered), submission (STARTTLS
    required), or the protocol's own name with implicit TLS (smtps, imaps, pop3s).
    ``tls`` is what the config says, when it says it; the peek decides otherwise.
    """

    port: int
    protocol: Protocol
    kind: str
    name: str  # the target's name
    origin: str  # where it was found, for the comment
    tls: TLSMode | None = None
    host: str | None = None  # the one address it is bound to, when the config names one


@dataclass(frozen=True)
class LogFile:
    path: Path
    format: str  # a logs source format: syslog, dovecot, exim
    origin: str


@dataclass
class ServerFacts:
    """One server (a Postfix instance, Dovecot, Exim, qmail) as its config describes it."""

    kind: str  # postfix, dovecot, exim, qmail
    name: str  # the instance: postfix, postfix-out, dovecot, exim, qmail
    summary: str  # one line for the comments and the status page
    running: bool | None = None  # None: not known
    ports: list[Port] = field(default_factory=list)
    logs: list[LogFile] = field(default_factory=list)
    uses_syslog: bool = False  # some of its lines go to syslog (mail.log or the journal)
    journal_unit: str | None = None
    certificates: list[Path] = field(default_factory=list)
    queue: Path | None = None
    paths: list[Path] = field(default_factory=list)  # queue and store, for the host collector
    settings: dict[str, object] = field(default_factory=dict)  # its queue collector's keys
    domain: str | None = None
