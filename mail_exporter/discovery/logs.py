"""The log sources to follow: the servers' own log files, the syslog file (``mail.log``)
or, without one and where systemd runs, the journal of the units that log to syslog.

A server's own file that does not exist yet is still followed when its directory
exists (the logs collector waits for it); one in a directory that does not exist is
left out. A source this user cannot read is left out with the reason and the group to
join (:mod:`.rights`). A file several servers write (Postfix instances sharing a
``maillog_file``, a ``maillog_file`` that is syslog's mail.log) is one source, in the
format of the first that names it: the logs collector takes each file once.
"""

from __future__ import annotations

import grp
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from mail_exporter.discovery.facts import ServerFacts
from mail_exporter.discovery.options import DiscoveryOptions
from mail_exporter.discovery.rights import is_root, unreadable, user_name

SYSLOG_FILES = ("/var/log/mail.log", "/var/log/maillog")  # Debian, Red Hat
JOURNAL_DIRECTORIES = ("/var/log/journal", "/run/log/journal")
SYSTEMD_RUNNING = "/run/systemd/system"  # sd_booted(): systemd is the init, units log there
JOURNAL_GROUPS = ("adm", "systemd-journal")


@dataclass(frozen=True)
class LogChoice:
    source: dict[str, object]  # the keys of one logs source
    why: str
    blocked: str = ""  # why it cannot be read here


def discover_logs(
    servers: list[ServerFacts], options: DiscoveryOptions
) -> tuple[list[LogChoice], list[str]]:
    """The sources, and a note when servers log to a syslog that keeps no mail log here."""
    choices: list[LogChoice] = []
    for server in servers:
        for log in server.logs:
            # Not a file to follow: a missing directory, or /dev/stdout in a container.
            if not log.path.parent.is_dir() or (log.path.exists() and not log.path.is_file()):
                continue
            waiting = "" if log.path.exists() else " (not written yet: followed once it is)"
            choices.append(
                LogChoice(
                    {"path": str(log.path), "format": log.format},
                    f"{log.origin}{waiting}",
                    unreadable(log.path)
                    if log.path.exists()
                    else unreadable(log.path.parent, True),
                )
            )
    syslogging = [server for server in servers if server.uses_syslog]
    if not syslogging:
        return _once(choices), []
    names = ", ".join(server.name for server in syslogging)
    for well_known in SYSLOG_FILES:
        path = options.path(well_known)
        if path.is_file():
            choices.append(
                LogChoice({"path": str(path)}, f"syslog's mail log ({names})", unreadable(path))
            )
            return _once(choices), []
    journal = _journal(syslogging, options)
    if journal is None:
        return _once(choices), [
            f"  {names} log to syslog, but there is no {SYSLOG_FILES[0]} and no systemd "
            "journal: install rsyslog (or set Postfix's maillog_file) to count their logs"
        ]
    return [*_once(choices), journal], []


def _once(choices: list[LogChoice]) -> list[LogChoice]:
    """Each file once: the first choice of a path, its reason joined by the others'."""
    by_path: dict[object, LogChoice] = {}
    for choice in choices:
        first = by_path.setdefault(choice.source["path"], choice)
        if first is not choice:
            by_path[choice.source["path"]] = LogChoice(
                first.source, f"{first.why}; also {choice.why}", first.blocked
            )
    return list(by_path.values())


def _journal(servers: list[ServerFacts], options: DiscoveryOptions) -> LogChoice | None:
    if shutil.which("journalctl") is None or not options.path(SYSTEMD_RUNNING).is_dir():
        return None
    units = [server.journal_unit for server in servers if server.journal_unit]
    source: dict[str, object] = {"type": "journal", "journal_units": units}
    if options.root != Path("/"):
        for directory in map(options.path, JOURNAL_DIRECTORIES):
            if directory.is_dir():
                source["journal_directory"] = str(directory)
                break
    return LogChoice(source, "the journal (no syslog mail log)", _journal_rights())


def _journal_rights() -> str:
    if is_root():
        return ""
    groups = {grp.getgrgid(gid).gr_name for gid in os.getgroups() if _has_group(gid)}
    if groups & set(JOURNAL_GROUPS):
        return ""
    return f"the journal's system entries are not readable by {user_name()}: add it to group adm"


def _has_group(gid: int) -> bool:
    try:
        grp.getgrgid(gid)
    except KeyError:
        return False
    return True
