"""Exim through ``exim -bP`` (its options as ``name = value``): the spool directory, the
main log (``log_file_path``, its ``%s`` as ``main``; ``syslog`` goes to mail.log or the
journal), the SMTP ports (``daemon_smtp_ports``, those in ``tls_on_connect_ports`` with
implicit TLS) and the certificate. ``-bP`` reads the config and prints; it delivers and
changes nothing.

The command is ``exim4`` (Debian) or ``exim`` from the PATH, or the one the options give.
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

from mail_exporter.discovery.facts import (
    DiscoveryProblem,
    LogFile,
    Port,
    ServerFacts,
    ask,
    domain_name,
    local_path,
    port_number,
)
from mail_exporter.discovery.options import SERVER_SECONDS, DiscoveryOptions

OPTIONS = (
    "spool_directory",
    "log_file_path",
    "daemon_smtp_ports",
    "tls_on_connect_ports",
    "tls_certificate",
    "qualify_domain",
)
DEBIAN_LOG = "/var/log/exim4/mainlog"


def exim_command(options: DiscoveryOptions) -> list[str] | None:
    if options.exim_command is not None:
        return list(options.exim_command)
    found = shutil.which("exim4") or shutil.which("exim")
    return [found] if found else None


def discover_exim(options: DiscoveryOptions) -> tuple[list[ServerFacts], list[str]]:
    command = exim_command(options)
    if command is None:
        return [], []
    try:
        values = _options(command)
    except DiscoveryProblem as problem:
        return [], [f"Exim: {problem}"]
    spool = local_path(values["spool_directory"])
    if spool is None:
        return [], [f"Exim: spool_directory {values['spool_directory']!r} is no absolute path"]
    facts = ServerFacts(kind="exim", name="exim", summary="", journal_unit="exim4.service")
    facts.queue = spool
    facts.paths = [spool]
    facts.domain = domain_name(values["qualify_domain"])
    facts.settings = {"name": "exim", "spool_directory": str(spool), "exim_command": command}
    mainlog = _mainlog(values["log_file_path"], spool, options)
    if mainlog is not None:
        facts.logs.append(LogFile(mainlog, "exim", "log_file_path of exim -bP"))
    facts.uses_syslog = "syslog" in values["log_file_path"]
    implicit = set(_ports(values["tls_on_connect_ports"]))
    for port in _ports(values["daemon_smtp_ports"]):
        origin = "daemon_smtp_ports of Exim"
        if port in implicit:
            facts.ports.append(Port(port, "smtp", "smtps", f"exim-{port}", origin, "implicit"))
        else:
            kind = "submission" if port == 587 else "smtp"
            facts.ports.append(Port(port, "smtp", kind, f"exim-{port}", origin))
    if certificate := local_path(values["tls_certificate"]):
        facts.certificates.append(certificate)
    facts.summary = f"Exim ({' '.join(command)}): spool {spool}, log {mainlog or 'syslog'}"
    return [facts], []


def _options(command: list[str]) -> dict[str, str]:
    values = dict.fromkeys(OPTIONS, "")
    for line in ask([*command, "-bP", *OPTIONS], time.monotonic() + SERVER_SECONDS):
        name, equals, value = line.partition(" = ")
        if equals and name.strip() in values:
            values[name.strip()] = value.strip()
    if not values["spool_directory"]:
        raise DiscoveryProblem(f"{' '.join(command)} -bP named no spool_directory")
    return values


def _mainlog(log_file_path: str, spool: Path, options: DiscoveryOptions) -> Path | None:
    """The first file entry of the colon-separated list, ``%s`` as ``main``; empty is the
    compiled-in default (Debian's /var/log/exim4, else the spool's log directory)."""
    for entry in (part.strip() for part in log_file_path.split(":")):
        if entry.startswith("/"):
            return local_path(entry.replace("%s", "main", 1).replace("%D", "").replace("%M", ""))
    if log_file_path.strip():
        return None  # syslog only
    debian = options.path(DEBIAN_LOG)
    return debian if debian.parent.is_dir() else spool / "log" / "mainlog"


def _ports(text: str) -> list[int]:
    """``smtp : 465 : 587`` (or ``<; 25 ; 465``), names as /etc/services has them."""
    separator = ":"
    if text.startswith("<") and len(text) > 1:
        separator, text = text[1], text[2:]
    ports = []
    for item in (part.strip() for part in text.split(separator)):
        if item.isdigit():
            ports += [port] if (port := port_number(item)) else []
        elif item:
            try:
                ports.append(socket.getservbyname(item, "tcp"))
            except (OSError, ValueError):  # ValueError: a NUL in the name
                continue
    return ports
