"""What a config of one's own misses of what discovery finds: ``discover --diff FILE``.

Only omissions count: a target, collector, Postfix instance, log source, mail path or
service that discovery would watch and FILE does not. What FILE watches beyond that
(other hosts, settings of its own) is its business. A discovered target counts as
probed when FILE probes its port with the same protocol on the same host, where the
loopback addresses and ``localhost`` are one host.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from typing import Any

from mail_exporter.config.root import Config
from mail_exporter.targets import parse_address

LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _host(host: str) -> str:
    if host.lower() in LOCAL_NAMES:
        return "loopback"
    try:
        return "loopback" if ipaddress.ip_address(host).is_loopback else host
    except ValueError:
        return host.lower()


def _probed(config: Config) -> set[tuple[str, int, str]]:
    probed: set[tuple[str, int, str]] = set()
    for target in config.targets:
        address = parse_address(target.address)
        protocol = config.modules[target.module].protocol
        probed.add((_host(address.host), address.port, protocol))
    return probed


def _section(config: Config, name: str) -> dict[str, Any]:
    """A collector's section as plain data; empty when the collector is off."""
    section = config.collectors.section(name)
    return section.model_dump(mode="json") if section.enabled else {}


def _missing_in_section(name: str, found: dict[str, Any], mine: dict[str, Any]) -> Iterator[str]:
    """The entries of the lists discovery fills that ``mine`` lacks."""
    keyed: dict[str, tuple[str, Callable[[Any], str]]] = {
        "postfix_queue": ("instances", lambda item: str(item["config_directory"])),
        "logs": ("sources", _source),
        "host": ("mail_paths", str),
        "services": ("services", lambda item: str(item["name"])),
    }
    if name in keyed:
        key, shown = keyed[name]
        have = {shown(item) for item in mine.get(key, [])}
        for item in found.get(key, []):
            if shown(item) not in have:
                yield f"collector {name}: {key} lacks {shown(item)}"
    for key in ("spool_directory", "queue_directory"):
        if key in found and found[key] != mine.get(key):
            yield f"collector {name}: {key} is {mine.get(key)}, discovered {found[key]}"


def _source(source: dict[str, Any]) -> str:
    if source.get("path"):
        return str(source["path"])
    return " ".join(["journal", *source.get("journal_units", [])])


def missing(discovered: Config, mine: Config) -> list[str]:
    """One line per omission, in the order of the discovered config."""
    lines = []
    probed = _probed(mine)
    for target in discovered.targets:
        address = parse_address(target.address)
        protocol = discovered.modules[target.module].protocol
        if (_host(address.host), address.port, protocol) not in probed:
            lines.append(f"target {target.name}: {target.address} ({protocol}) is not probed")
    for name in type(discovered.collectors).model_fields:
        found = _section(discovered, name)
        if not found:
            continue
        mine_section = _section(mine, name)
        if not mine_section:
            lines.append(f"collector {name}: off")
            continue
        lines += _missing_in_section(name, found, mine_section)
    return lines
