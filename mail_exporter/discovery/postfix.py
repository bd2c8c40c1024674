"""Postfix: each instance (``postmulti``'s ``multi_instance_directories``) through
``postconf -c DIR``: its queue directory, where it logs (``maillog_file`` or syslog), the
``smtpd`` services of master.cf that listen on TCP and their ports, how each takes TLS
(``smtpd_tls_wrappermode``: implicit; ``smtpd_tls_security_level = encrypt`` or SASL on:
a submission port, STARTTLS required), and its certificate files.

Only ``postconf`` is asked (``-h`` values, ``-F`` master.cf fields, ``-P`` the ``-o``
overrides), so discovery needs no right to the queue; the master's pid file says whether
the instance runs, which only the comments mention: a stopped Postfix is still watched.
"""

from __future__ import annotations

import re
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from mail_exporter.config.probes import TLSMode
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

PARAMETERS = (
    "queue_directory",
    "maillog_file",
    "syslog_name",
    "multi_instance_directories",
    "multi_instance_name",
    "smtpd_tls_cert_file",
    "smtpd_tls_chain_files",
    "smtpd_tls_security_level",
    "smtpd_tls_wrappermode",
    "smtpd_sasl_auth_enable",
    "mydomain",
    "mail_spool_directory",
    "virtual_mailbox_base",
)
# Ports of the service names master.cf uses, where /etc/services lacks them.
SERVICE_PORTS = {"smtp": 25, "submission": 587, "smtps": 465, "submissions": 465}
_INSTANCE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def discover_postfix(options: DiscoveryOptions) -> tuple[list[ServerFacts], list[str]]:
    """Every Postfix instance of ``/etc/postfix`` (under the root), and notes on what
    could not be read."""
    directory = options.path("/etc/postfix")
    if shutil.which("postconf") is None or not (directory / "main.cf").is_file():
        return [], []
    instances: list[ServerFacts] = []
    notes: list[str] = []
    deadline = time.monotonic() + SERVER_SECONDS
    try:
        primary, others = _instance(directory, "postfix", deadline)
    except DiscoveryProblem as problem:
        return [], [f"Postfix: {problem}"]
    instances.append(primary)
    for other in dict.fromkeys(others):  # each directory once, the primary's not again
        if other == directory:
            continue
        try:
            named = _values(other, ["multi_instance_name"], deadline)[0]
            name = _unique(_INSTANCE_NAME.sub("-", named or f"postfix-{other.name}"), instances)
            instances.append(_instance(other, name, deadline)[0])
        except DiscoveryProblem as problem:
            notes.append(f"Postfix instance {other}: {problem}")
    return instances, notes


def _unique(name: str, instances: list[ServerFacts]) -> str:
    """The instance's name, numbered when another has it already: two instances of one
    name would be one ``mta_instance`` twice, which the queue collector refuses."""
    taken = {instance.name for instance in instances}
    numbered = (f"{name}-{n}" for n in range(2, len(taken) + 3))
    return name if name not in taken else next(n for n in numbered if n not in taken)


def _values(directory: Path, names: list[str], deadline: float) -> list[str]:
    lines = ask(["postconf", "-c", str(directory), "-x", "-h", *names], deadline)
    if len(lines) != len(names):
        raise DiscoveryProblem(f"postconf -c {directory} -h printed {len(lines)} lines")
    return [line.strip() for line in lines]


def _instance(directory: Path, name: str, deadline: float) -> tuple[ServerFacts, list[Path]]:
    """One instance, and the config directories of the others it names (postmulti)."""
    values = dict(zip(PARAMETERS, _values(directory, list(PARAMETERS), deadline), strict=True))
    queue = local_path(values["queue_directory"])
    if queue is None:
        raise DiscoveryProblem(f"queue_directory {values['queue_directory']!r} is no absolute path")
    facts = ServerFacts(
        kind="postfix",
        name=name,
        summary="",
        running=_running(queue),
        journal_unit="postfix@-.service" if name == "postfix" else f"postfix@{name}.service",
        queue=queue,
        # The queue, and the mail stores of local and virtual delivery when set.
        paths=[queue]
        + [
            path
            for key in ("mail_spool_directory", "virtual_mailbox_base")
            if (path := local_path(values[key])) is not None
        ],
        domain=domain_name(values["mydomain"]),
    )
    facts.settings = {"name": name, "config_directory": str(directory)}
    if values["maillog_file"]:
        log = local_path(values["maillog_file"])
        if log is not None:
            facts.logs.append(LogFile(log, "syslog", f"maillog_file in {directory}/main.cf"))
    else:
        facts.uses_syslog = True
    facts.certificates = _certificates(values)
    facts.ports = list(_ports(directory, name, values, deadline))
    state = {True: "running", False: "not running", None: "state unknown"}[facts.running]
    log_place = values["maillog_file"] or "syslog"
    facts.summary = (
        f"Postfix instance {name} ({directory}, {state}): queue {queue}, logs to {log_place}"
    )
    listed = re.split(r"[\s,]+", values["multi_instance_directories"])
    others = [path for path in map(local_path, listed) if path is not None]
    return facts, others


def _running(queue: Path) -> bool | None:
    try:
        pid = int((queue / "pid" / "master.pid").read_text().strip())
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return None
    return Path(f"/proc/{pid}").exists()


def _certificates(values: dict[str, str]) -> list[Path]:
    """``smtpd_tls_chain_files`` (key and chain, in files of their own or one) or
    ``smtpd_tls_cert_file``; the key files among them are left to :mod:`.certificates`."""
    files = re.split(r"[\s,]+", values["smtpd_tls_chain_files"] or values["smtpd_tls_cert_file"])
    return [path for path in map(local_path, files) if path is not None]


def _service_fields(directory: Path, deadline: float) -> dict[tuple[str, str], dict[str, str]]:
    """``postconf -F`` (master.cf fields) or ``-P`` (``-o`` overrides) by (service, type)."""
    services: dict[tuple[str, str], dict[str, str]] = {}
    for flag in ("-F", "-P"):
        for line in ask(["postconf", "-c", str(directory), "-x", flag], deadline):
            key, _, value = line.partition(" = ")
            service, _, rest = key.partition("/")
            kind, _, field = rest.partition("/")
            services.setdefault((service, kind), {})[field] = value.strip()
    return services


def _ports(
    directory: Path, instance: str, values: dict[str, str], deadline: float
) -> Iterator[Port]:
    for (service, transport), fields in _service_fields(directory, deadline).items():
        if transport != "inet" or fields.get("command", "").split()[:1] != ["smtpd"]:
            continue
        host, port = _endpoint(service)
        if port is None:
            continue
        setting = {**values, **fields}
        syslog_name = setting.get("syslog_name", "postfix")
        origin = f"master.cf service {service} of Postfix {instance}"
        tls: TLSMode | None = None
        if setting.get("smtpd_tls_wrappermode") == "yes":
            kind, tls = "smtps", "implicit"
        elif (
            port == 587
            or setting.get("smtpd_tls_security_level") == "encrypt"
            or (setting.get("smtpd_sasl_auth_enable") == "yes")
        ):
            kind, tls = "submission", "starttls"
        else:
            kind = "smtp"
        name = _target_name(instance, service, syslog_name, f"{kind}-{port}")
        yield Port(port, "smtp", kind, name, origin, tls, host)


def _endpoint(service: str) -> tuple[str | None, int | None]:
    """master.cf's service field: ``smtp``, ``2525``, ``127.0.0.1:2525``, ``[::1]:smtp``."""
    host: str | None = None
    if ":" in service:
        host, _, service = service.rpartition(":")
        host = host.strip("[]")
    if service.isdigit():
        return host, port_number(service)
    try:
        return host, socket.getservbyname(service, "tcp")
    except (OSError, ValueError):  # ValueError: a NUL in the name
        return host, SERVICE_PORTS.get(service)


def _target_name(instance: str, service: str, syslog_name: str, unnamed: str) -> str:
    """The service's own name (``submission``), else the tail of its syslog_name
    (``postfix/submission``), else ``unnamed`` (``smtps-PORT``); the instance first when
    not the main one."""
    named = service.rpartition(":")[2]
    if named.isdigit():
        tail = syslog_name.rpartition("/")[2] if "/" in syslog_name else ""
        named = tail or unnamed
    return named if instance == "postfix" else f"{instance}-{named}"
