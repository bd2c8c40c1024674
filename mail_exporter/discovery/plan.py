"""From the facts to the config: targets and their modules, each collector's section or
the reason it stays off, and the notes the header gives. :mod:`.render` writes it out.

Decisions:

* A module per kind of port (smtp, submission, smtps, imap, imaps, pop3, pop3s) with the
  TLS mode the peek found; a port that offers no STARTTLS gets ``tls: none`` (its probe
  then reports ``mail_probe_starttls_offered 0``). Certificates of local servers rarely
  name the loopback address, so verification is reported but does not fail the probes.
* Logins and the round trip need an account and its password: they are left as
  commented templates with the discovered addresses filled in. Nothing secret is read.
* A collector is on when what it watches is there and this user can read it; when it
  cannot, its section is written commented out with the reason and the grant. host and
  services are always on (services lists only the servers found); sensors when the
  kernel has hwmon sensors; smart when smartctl is installed (commented out but for root).
* backups and dns need what no host can tell (where backups go, which domains matter):
  they stay off, with a commented template.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mail_exporter.collectors.certificates import CertificateFile
from mail_exporter.config.fields import LABEL_CHARACTERS, MAX_NAME_LENGTH
from mail_exporter.config.probes import Protocol, TLSMode
from mail_exporter.discovery.facts import ServerFacts, day
from mail_exporter.discovery.listeners import Peek
from mail_exporter.discovery.logs import LogChoice
from mail_exporter.discovery.rights import SMART_DROP_IN, is_root, unreadable, user_name

IMPLICIT_MODULES: dict[Protocol, str] = {"smtp": "smtps", "imap": "imaps", "pop3": "pop3s"}
MODULE_WORDS = {
    "smtp": "An MX: STARTTLS when offered. It must take mail without, so a missing STARTTLS "
    "is reported (mail_probe_starttls_offered 0), not a failure.",
    "submission": "Submission: STARTTLS required, a downgrade fails the probe.",
    "plaintext": "No STARTTLS offered on the port: the probe speaks plaintext and reports it.",
    "implicit": "Implicit TLS: TLS from the first byte.",
    "starttls": "STARTTLS required, a downgrade fails the probe.",
}
SERVICE_PROCESSES = {
    "postfix": ("postfix", ["master"]),
    "dovecot": ("dovecot", ["dovecot"]),
    "exim": ("exim", ["exim4", "exim"]),
    "qmail": ("qmail", ["qmail-send"]),
}
# Filters and scanners, each listed when its program is installed.
HELPERS = {
    "rspamd": ["rspamd"],
    "amavis": ["amavisd", "amavisd-new"],
    "spamd": ["spamd"],
    "clamd": ["clamd"],
    "opendkim": ["opendkim"],
}
HWMON = "/sys/class/hwmon"


@dataclass
class Target:
    name: str
    address: str
    module: str
    why: list[str]


@dataclass
class CollectorChoice:
    name: str
    settings: dict[str, Any]
    why: list[str]
    blocked: str = ""  # the reason it cannot run here: written commented out


@dataclass
class Plan:
    notes: list[str]
    modules: dict[str, dict[str, Any]]  # with the comment for each under "why"
    targets: list[Target]
    collectors: list[CollectorChoice]
    templates: list[str] = field(default_factory=list)  # commented lines after targets

    def summary(self, servers: list[ServerFacts]) -> str:
        """One line: what runs here and what is watched."""
        found = ", ".join(server.name for server in servers) or "no mail server"
        on = [c.name for c in self.collectors if not c.blocked]
        return f"{found}; {len(self.targets)} targets; collectors {', '.join(on)}"


def address_text(peek: Peek) -> str:
    host = peek.address.host
    return f"[{host}]:{peek.address.port}" if ":" in host else f"{host}:{peek.address.port}"


def _target_name(name: str, port: int, taken: set[str]) -> str:
    """A label value the config takes, the port added when the name is taken already (and
    a number too when that is taken: configs name their listeners freely)."""
    name = re.sub(f"[^{LABEL_CHARACTERS}]", "-", name)[: MAX_NAME_LENGTH - 12]
    candidates = (name, f"{name}-{port}", *(f"{name}-{port}-{n}" for n in range(2, len(taken) + 3)))
    return next(candidate for candidate in candidates if candidate not in taken)


def plan_targets(peeks: list[Peek]) -> tuple[dict[str, dict[str, Any]], list[Target], list[str]]:
    """The modules and targets of the ports whose peek got through; why the others not."""
    modules: dict[str, dict[str, Any]] = {}
    targets: list[Target] = []
    left_out: list[str] = []
    names: set[str] = set()
    for peek in peeks:
        if peek.tls is None:
            left_out.append(
                f"port {peek.port.port} ({peek.port.origin}) listens but no peek "
                f"got through: {peek.problem}"
            )
            continue
        module_name, settings = _module(peek.port.protocol, peek.port.kind, peek.tls)
        modules.setdefault(module_name, settings)
        name = _target_name(peek.port.name, peek.port.port, names)
        names.add(name)
        found = {
            "starttls": "STARTTLS offered",
            "implicit": "implicit TLS",
            "none": "no STARTTLS offered",
        }[peek.tls]
        expiry = f", certificate valid until {day(peek.not_after)}" if peek.not_after else ""
        targets.append(
            Target(
                name,
                address_text(peek),
                module_name,
                [f"{peek.port.origin}; listens on {', '.join(peek.bound)}; peek: {found}{expiry}"],
            )
        )
    return modules, targets, left_out


def _module(protocol: Protocol, kind: str, tls: TLSMode) -> tuple[str, dict[str, Any]]:
    """The module of a port as the peek found it: named after its kind when the TLS is
    the kind's own (smtp, submission, imaps, ...), after the protocol and TLS otherwise."""
    settings: dict[str, Any] = {"protocol": protocol, "tls": tls}
    if tls == "none":
        return f"{protocol}_plaintext", {"why": MODULE_WORDS["plaintext"], **settings}
    if tls == "implicit":
        return IMPLICIT_MODULES[protocol], {"why": MODULE_WORDS["implicit"], **settings}
    if kind == "submission":
        return kind, {"why": MODULE_WORDS["submission"], **settings}
    if protocol == "smtp":
        return protocol, {"why": MODULE_WORDS["smtp"], **settings, "require_tls": False}
    return protocol, {"why": MODULE_WORDS["starttls"], **settings}


def login_templates(targets: list[Target], servers: list[ServerFacts]) -> list[str]:
    """Commented lines: a login for the modules that take one, and a round trip through
    the discovered submission and IMAP ports."""
    domain = next((s.domain for s in servers if s.domain), "example.com")
    send = next((t for t in targets if t.module in ("submission", "smtps")), None)
    receive = next((t for t in targets if t.module == "imaps"), None) or next(
        (t for t in targets if t.module == "imap"), None
    )
    lines = [
        "A login check (and the round trip below) needs an account of its own: give the",
        "module that should log in an auth section; the password stays in a file.",
        "  auth:",
        f"    username: probe@{domain}",
        "    password_file: /etc/mail-exporter/probe.pass",
    ]
    if send and receive:
        lines += [
            "End to end (docs in examples/mail_exporter.yml), once both modules log in:",
            "roundtrip:",
            "  - name: local-loop",
            f'    send: {{address: "{send.address}", module: {send.module}, '
            f"from: probe@{domain}, to: probe@{domain}}}",
            f'    receive: {{address: "{receive.address}", module: {receive.module}, '
            "mailbox: INBOX}",
        ]
    return lines


def plan_collectors(
    servers: list[ServerFacts], logs: list[LogChoice], certificates: list[CertificateFile]
) -> list[CollectorChoice]:
    by_kind = {kind: [s for s in servers if s.kind == kind] for kind in SERVICE_PROCESSES}
    choices = [
        *_postfix_queue(by_kind["postfix"]),
        *_exim_queue(by_kind["exim"]),
        *_qmail_queue(by_kind["qmail"]),
        _host(servers, logs),
        _services(servers),
        _sensors(),
        _smart(),
        *_certificates(certificates),
        *_dovecot(by_kind["dovecot"]),
        *_logs(logs),
        CollectorChoice(
            "backups",
            {"backups": [{"name": "mailstore", "path": "/var/backups/mail"}]},
            ["Backups: where they go is yours to say; give the path (or glob) of each."],
            "nothing to discover",
        ),
    ]
    domains = sorted({s.domain for s in servers if s.domain})
    choices.append(
        CollectorChoice(
            "dns",
            {"domains": domains or ["example.com"]},
            [
                "DNS and reputation (MX, SPF, DMARC, DKIM, MTA-STS, DANE, blocklists) of your",
                "domains: it asks the DNS of the internet, so it is yours to turn on.",
            ],
            "off until you choose the domains",
        )
    )
    return choices


def _spool_unreadable(server: ServerFacts, inside: str) -> str:
    """Why this user cannot read the server's queue (``inside`` it), or ""."""
    return unreadable(server.queue / inside, directory=True) if server.queue else ""


def _postfix_queue(instances: list[ServerFacts]) -> list[CollectorChoice]:
    if not instances:
        return []
    why = ["Postfix queues, by instance."]
    for instance in instances:
        showq = instance.queue / "public" / "showq" if instance.queue else None
        if not _spool_unreadable(instance, "deferred"):
            how = "reads the spool directly"
        elif showq is not None and os.access(showq, os.W_OK):
            how = "asks the showq socket"
        else:
            how = (
                "runs postqueue -j (while Postfix runs; add the user to group postdrop "
                "to use the showq socket instead)"
            )
        why.append(f"{instance.name}: {how}.")
    return [CollectorChoice("postfix_queue", {"instances": [i.settings for i in instances]}, why)]


def _exim_queue(exims: list[ServerFacts]) -> list[CollectorChoice]:
    """One Exim per host: the section has no instances."""
    if not exims:
        return []
    problem = _spool_unreadable(exims[0], "input")
    blocked = (
        f"{problem}, and exim -bpc counts only for Exim's admin users"
        if problem and not is_root()
        else ""
    )
    why = ["Exim's queue from its spool."]
    return [CollectorChoice("exim_queue", dict(exims[0].settings), why, blocked)]


def _qmail_queue(qmails: list[ServerFacts]) -> list[CollectorChoice]:
    return [
        CollectorChoice(
            "qmail_queue", dict(q.settings), ["qmail's queue."], _spool_unreadable(q, ".")
        )
        for q in qmails[:1]
    ]


def _host(servers: list[ServerFacts], logs: list[LogChoice]) -> CollectorChoice:
    paths: list[str] = []
    for path in [
        *(p for s in servers for p in s.paths),
        *(Path(str(c.source["path"])).parent for c in logs if "path" in c.source),
    ]:
        if path.exists() and str(path) not in paths:
            paths.append(str(path))
    return CollectorChoice(
        "host",
        {"mail_paths": paths},
        [
            "Host resources (CPU, memory, disks, network, filesystems), and the filesystem",
            "behind each mail path: the queues, the mail store and the logs found.",
        ],
    )


def _services(servers: list[ServerFacts]) -> CollectorChoice:
    services = [
        SERVICE_PROCESSES[kind]
        for kind in SERVICE_PROCESSES
        if any(s.kind == kind for s in servers)
    ]
    services += [
        (name, programs)
        for name, programs in HELPERS.items()
        if any(shutil.which(p) for p in programs)
    ]
    return CollectorChoice(
        "services",
        {"services": [{"name": name, "processes": programs} for name, programs in services]},
        ["The mail services installed here: up (0 when down), processes, memory, CPU."],
    )


def _sensors() -> CollectorChoice:
    hwmon = Path(HWMON)
    present = hwmon.is_dir() and any(hwmon.iterdir())
    return CollectorChoice(
        "sensors",
        {},
        ["Temperatures and fans from the kernel's hwmon drivers."],
        "" if present else f"no hwmon sensors on this host ({HWMON} is empty: a VM?)",
    )


def _smart() -> CollectorChoice:
    why = ["Disk health from smartctl (smartmontools)."]
    if shutil.which("smartctl") is None:
        return CollectorChoice(
            "smart", {}, why, "smartctl is not installed (apt install smartmontools)"
        )
    if is_root():
        return CollectorChoice("smart", {}, why)
    return CollectorChoice(
        "smart",
        {"smartctl_command": ["sudo", "-n", "smartctl"]},
        why,
        f"smartctl needs root and {user_name()} is not: install the sudo rule and drop-in "
        f"of {SMART_DROP_IN}, then enable this section",
    )


def _certificates(certificates: list[CertificateFile]) -> list[CollectorChoice]:
    if not certificates:
        return []
    readable = [str(c.path) for c in certificates if not c.problem]
    why = ["The expiry of the servers' certificate files, watched before any probe sees them."]
    if readable:
        return [CollectorChoice("certificates", {"files": readable}, why)]
    blocked = "; ".join(c.problem for c in certificates)
    every = [str(c.path) for c in certificates]
    return [CollectorChoice("certificates", {"files": every}, why, blocked)]


def _dovecot(dovecots: list[ServerFacts]) -> list[CollectorChoice]:
    choices = []
    for dovecot in dovecots:
        settings: dict[str, Any] = {"config_file": dovecot.settings["config_file"]}
        why = ["Dovecot's users from doveadm: quotas (with the quota plugin) and sessions."]
        blocked = "" if is_root() else f"doveadm needs root and {user_name()} is not"
        if not dovecot.settings["quota"] and not blocked:
            blocked = "Dovecot runs no quota plugin: doveadm quota get has nothing to read"
        choices.append(CollectorChoice("dovecot", settings, why, blocked))
    return choices[:1]


def _logs(logs: list[LogChoice]) -> list[CollectorChoice]:
    if not logs:
        return []
    readable = [c for c in logs if not c.blocked]
    why = ["Counters from the mail logs: deliveries, delays, rejects, logins and failures."]
    why += [
        f"{_shown(c.source)}: {c.why}" + (f"; left out: {c.blocked}" if c.blocked else "")
        for c in logs
    ]
    if not readable:
        blocked = "; ".join(c.blocked for c in logs)
        return [CollectorChoice("logs", {"sources": [c.source for c in logs]}, why, blocked)]
    return [CollectorChoice("logs", {"sources": [c.source for c in readable]}, why)]


def _shown(source: dict[str, Any]) -> str:
    return str(source.get("path") or " ".join(["journal", *source.get("journal_units", [])]))
