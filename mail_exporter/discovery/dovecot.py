"""Dovecot through ``doveconf -c FILE -S`` (every setting as ``key=value``, one call): the
``inet_listener`` ports of its imap-login and pop3-login services (``ssl = yes``: implicit
TLS), where it logs (``log_path``, ``info_log_path``; ``syslog`` goes to mail.log or the
journal), its certificate (``ssl_cert``), the mail store when ``mail_location`` names a
fixed directory, and whether the quota plugin runs (the dovecot collector reads quotas).

LMTP, auth and the other listeners are left out: no probe speaks their protocols.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from mail_exporter.config.probes import Protocol
from mail_exporter.discovery.facts import (
    DiscoveryProblem,
    LogFile,
    Port,
    ServerFacts,
    ask,
    local_path,
    port_number,
)
from mail_exporter.discovery.options import SERVER_SECONDS, DiscoveryOptions

LOGIN_PROTOCOLS: dict[str, Protocol] = {"imap": "imap", "pop3": "pop3"}
CONFIG_FILE = "/etc/dovecot/dovecot.conf"


def discover_dovecot(options: DiscoveryOptions) -> tuple[list[ServerFacts], list[str]]:
    config = options.path(CONFIG_FILE)
    if shutil.which("doveconf") is None or not config.is_file():
        return [], []
    try:
        settings = _settings(config)
    except DiscoveryProblem as problem:
        return [], [f"Dovecot: {problem}"]
    protocols = set(settings.get("protocols", "").split())
    facts = ServerFacts(kind="dovecot", name="dovecot", summary="", journal_unit="dovecot.service")
    facts.ports = _ports(settings, protocols)
    for key in ("log_path", "info_log_path"):
        value = settings.get(key, "")
        path = local_path(value)
        if path is not None and all(log.path != path for log in facts.logs):
            facts.logs.append(LogFile(path, "dovecot", f"{key} of {config}"))
        elif value == "syslog" or (key == "log_path" and not value):
            facts.uses_syslog = True
    if settings.get("ssl", "no") != "no" and settings.get("ssl_cert", "").startswith("<"):
        certificate = local_path(settings["ssl_cert"][1:])
        facts.certificates += [certificate] if certificate else []
    store = _fixed_store(settings.get("mail_location", ""))
    facts.paths = [store] if store else []
    facts.settings = {
        "config_file": str(config),
        "quota": "quota" in settings.get("mail_plugins", "").split(),
    }
    listening = ", ".join(f"{p.name} {p.port}" for p in facts.ports) or "no IMAP or POP3 port"
    facts.summary = (
        f"Dovecot ({config}): protocols {' '.join(sorted(protocols)) or 'none'}; {listening}"
    )
    return [facts], []


def _settings(config: Path) -> dict[str, str]:
    settings: dict[str, str] = {}
    deadline = time.monotonic() + SERVER_SECONDS
    for line in ask(["doveconf", "-c", str(config), "-S"], deadline):
        key, equals, value = line.partition("=")
        if equals:
            settings[key] = value
    return settings


def _ports(settings: dict[str, str], protocols: set[str]) -> list[Port]:
    ports = []
    for service in settings.get("service", "").split():
        prefix = f"service/{service}"
        protocol = LOGIN_PROTOCOLS.get(settings.get(f"{prefix}/protocol", ""))
        if protocol is None or protocol not in protocols:
            continue
        for listener in settings.get(f"{prefix}/inet_listener", "").split():
            place = f"{prefix}/inet_listener/{listener}"
            port = port_number(settings.get(f"{place}/port", ""))
            if port is None:
                continue
            implicit = settings.get(f"{place}/ssl") == "yes"
            host = settings.get(f"{place}/address", "").strip() or None
            ports.append(
                Port(
                    port,
                    protocol,
                    f"{protocol}s" if implicit else protocol,
                    listener,
                    f"Dovecot {service} inet_listener {listener}",
                    "implicit" if implicit else None,
                    host if host and "," not in host and " " not in host else None,
                )
            )
    return ports


def _fixed_store(mail_location: str) -> Path | None:
    """The first fixed directory ``mail_location`` names: the part before the first
    variable of its path (``maildir:/var/vmail/%d/%n``: /var/vmail) or of an option
    (Debian's ``mbox:~/mail:INBOX=/var/mail/%u``: /var/mail); ``~`` is each user's home,
    no one directory."""
    _, _, rest = mail_location.partition(":")
    for part in rest.split(":"):
        path = part.partition("=")[2] if "=" in part else part
        fixed = re.split(r"[%~]", path, maxsplit=1)[0].rstrip("/")
        if (store := local_path(fixed)) is not None:
            return store
    return None
