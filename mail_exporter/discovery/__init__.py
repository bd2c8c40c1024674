"""Discovery: what this host runs, written as a config that watches it.

``mail-exporter discover`` prints it; ``mail-exporter`` without ``--config.file`` runs
on it (again at each reload). One module per thing discovered: :mod:`.postfix`
(postconf, postmulti instances, master.cf), :mod:`.exim` (exim -bP), :mod:`.qmail` (its
queue directory), :mod:`.dovecot` (doveconf), :mod:`.listeners` (listening ports and a
banner peek), :mod:`.certificates`, :mod:`.logs` (files and the journal), :mod:`.rights`
(what this user may read); :mod:`.plan` decides, :mod:`.render` writes the YAML and
:mod:`.diff` compares it with a config of one's own.

Discovery only reads: config files through the servers' own query tools, permissions,
``/proc/net/tcp``; and it connects to the listening mail ports of this host for a banner,
never logging in. Nothing secret goes into the config (logins are commented templates).
The tools' time is bounded (:data:`~.options.COMMAND_TIMEOUT_SECONDS` each,
:data:`~.options.SERVER_SECONDS` for all of one server's; the servers are asked at
once), and so is what they may print (:data:`~.options.MAX_OUTPUT_BYTES`); the peeks
run at once, a bounded number of them (:mod:`.listeners`), each within
:data:`~.options.PEEK_TIMEOUT_SECONDS` (two for a port that does not answer the first),
so discovery takes a fraction of a second on a quiet host and its worst case is bounded
on a busy one.

What discovery finds must never keep the exporter from starting: a discoverer that fails
on a config nobody foresaw costs that server (a note says so), not the others, and each
collector section is validated on its own as the exporter will read it: one it would
refuse (a log file given twice, a value out of range) is written commented out with the
exporter's own words, so the config as a whole loads.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from mail_exporter.config.root import Config, parse_config
from mail_exporter.config.validation import ConfigError
from mail_exporter.discovery.certificates import read_certificates
from mail_exporter.discovery.dovecot import discover_dovecot
from mail_exporter.discovery.exim import discover_exim
from mail_exporter.discovery.facts import Port, ServerFacts, day
from mail_exporter.discovery.listeners import MAX_PEEKS, STANDARD_PORTS, peek_listeners
from mail_exporter.discovery.logs import discover_logs
from mail_exporter.discovery.options import DiscoveryOptions
from mail_exporter.discovery.plan import (
    CollectorChoice,
    Plan,
    login_templates,
    plan_collectors,
    plan_targets,
)
from mail_exporter.discovery.postfix import discover_postfix
from mail_exporter.discovery.qmail import discover_qmail
from mail_exporter.discovery.render import render
from mail_exporter.discovery.rights import user_name

__all__ = ["NOTHING_FOUND", "DiscoveredConfig", "DiscoveryOptions", "discover_config"]

logger = logging.getLogger(__name__)
LISTED_PORTS = 20
"""Ports noted one by one; a master.cf of thousands of services gets a count for the rest."""
Discoverer = Callable[[DiscoveryOptions], tuple[list[ServerFacts], list[str]]]

NOTHING_FOUND = (
    "No mail server found (no Postfix, Exim, qmail or Dovecot config, no mail port "
    "listening): this config watches the host only."
)


@dataclass(frozen=True)
class DiscoveredConfig:
    text: str  # the commented YAML
    config: Config
    summary: str  # one line: "postfix, dovecot; 5 targets; collectors ..."
    found_anything: bool


def _servers(options: DiscoveryOptions) -> tuple[list[ServerFacts], list[str]]:
    """Every discoverer at once (each asks its own tool, bounded), in a fixed order."""
    discoverers = (discover_postfix, discover_exim, discover_qmail, discover_dovecot)
    servers: list[ServerFacts] = []
    notes: list[str] = []
    with ThreadPoolExecutor(len(discoverers), thread_name_prefix="discovery") as pool:
        for found, problems in pool.map(lambda d: _guarded(d, options), discoverers):
            servers += found
            notes += problems
    return servers, notes


def _guarded(
    discoverer: Discoverer, options: DiscoveryOptions
) -> tuple[list[ServerFacts], list[str]]:
    """What one discoverer finds; a note instead when it fails on a config it did not foresee."""
    try:
        return discoverer(options)
    except Exception as error:  # a host's odd config costs its server, never the start
        logger.exception("%s failed", discoverer.__name__)
        return [], [f"{discoverer.__name__}: failed, left out: {error!r}"]


def discover_plan(options: DiscoveryOptions) -> tuple[Plan, list[ServerFacts]]:
    servers, problems = _servers(options)
    named: list[Port] = [port for server in servers for port in server.ports]
    peeks, silent, unpeeked = peek_listeners([*named, *STANDARD_PORTS], options.peek_timeout)
    modules, targets, left_out = plan_targets(peeks)
    logs, log_notes = discover_logs(servers, options)
    certificates = read_certificates(
        [(path, server.name) for server in servers for path in server.certificates]
    )
    notes = ["Found:"] + [f"  {server.summary}" for server in servers]
    if not servers and not peeks:
        notes = [NOTHING_FOUND]
    notes += [
        f"  certificate {c.path} ({used_by}): "
        + (f"{c.subject}, valid until {day(c.not_after)}" if c.not_after else c.problem)
        for c, used_by in certificates
    ]
    quiet = [p for p in silent if p not in STANDARD_PORTS]
    notes += _listed("not listening", quiet)
    notes += _listed(f"listening, not peeked (only {MAX_PEEKS} are)", unpeeked)
    notes += [f"  {line}" for line in left_out + problems] + log_notes
    plan = Plan(
        notes,
        modules,
        targets,
        plan_collectors(servers, logs, [c for c, _ in certificates]),
        login_templates(targets, servers),
    )
    return plan, servers


def _listed(what: str, ports: list[Port]) -> list[str]:
    """A note per port, the first :data:`LISTED_PORTS` of them, then how many more."""
    notes = [f"  {what}: port {p.port} ({p.origin})" for p in ports[:LISTED_PORTS]]
    more = len(ports) - LISTED_PORTS
    return notes + ([f"  {what}: {more} more ports"] if more > 0 else [])


def discover_config(options: DiscoveryOptions) -> DiscoveredConfig:
    """Discover, write the config, and validate it as any config file is."""
    plan, servers = discover_plan(options)
    plan.collectors = [_accepted(choice) for choice in plan.collectors]
    text = render(plan, socket.gethostname(), user_name(), options.flags())
    config = parse_config(text, "<discovered config>", Path.cwd())
    found = bool(servers or plan.targets)
    return DiscoveredConfig(text, config, plan.summary(servers), found)


def _accepted(choice: CollectorChoice) -> CollectorChoice:
    """The choice, or it commented out when the exporter would refuse its section."""
    if choice.blocked:
        return choice
    section = {"collectors": {choice.name: {"enabled": True, **choice.settings}}}
    try:
        parse_config(yaml.safe_dump(section), f"collectors.{choice.name}", Path.cwd())
    except ConfigError as error:
        return dataclasses.replace(
            choice, blocked=f"the exporter refuses it: {'; '.join(error.problems)}"
        )
    return choice
