"""Checks that span sections: the modules targets, routes and the reports mailbox name,
names given twice.

They run on the raw YAML data, beside the models' validation rather than after it, so
that a target naming a missing module is listed with every other problem of the file,
even when a section it names is itself invalid. Each check yields the location of the
key at fault and a message, and stays quiet about what the models already report (a
module name that is not a string, a route that is not a mapping).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from mail_exporter.config.files import Location
from mail_exporter.config.probes import PROTOCOLS
from mail_exporter.config.roundtrip import IMAP_ONLY_RECEIVE_KEYS
from mail_exporter.config.validation import did_you_mean


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
        typo = did_you_mean(module, map(str, modules))
        return f"unknown module {module!r}{typo} (modules: {known})"
    settings = modules[module] if isinstance(modules[module], dict) else {}
    if settings.get("protocol") not in protocols:
        return f"module {module!r} must have protocol {' or '.join(protocols)}"
    if needs_login and not settings.get("auth"):
        return f"module {module!r} needs auth: the mailbox is read after a login"
    return None


def cross_references(data: Mapping[str, Any]) -> Iterator[tuple[Location, str]]:
    """Every problem between sections of a config's raw data, with its location."""
    modules = data.get("modules")
    modules = modules if isinstance(modules, dict) else {}
    names: set[object] = set()
    for index, target in _mapping_items(data.get("targets")):
        problem = _module_problem(modules, target.get("module"), PROTOCOLS, False)
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
            if isinstance(part, dict) and part.get("method") != "graph":  # Graph has no module
                method = part.get("method")
                named = (method,) if isinstance(method, str) and method in protocols else protocols
                problem = _module_problem(modules, part.get("module"), named, login)
                if problem:
                    yield ("roundtrip", index, side, "module"), problem
        yield from _pop3_receive_problems(index, route.get("receive"), modules)
        name = route.get("name")
        if isinstance(name, str) and name in routes:
            yield ("roundtrip", index, "name"), f"duplicate route name {name!r}"
        routes.add(name)
    yield from _reports_module_problems(data.get("collectors"), modules)


def _reports_module_problems(
    collectors: object, modules: dict[str, Any]
) -> Iterator[tuple[Location, str]]:
    """The reports collector reads its mailbox over IMAP after a login."""
    reports = collectors.get("reports") if isinstance(collectors, dict) else None
    if isinstance(reports, dict):
        problem = _module_problem(modules, reports.get("module"), ("imap",), True)
        if problem:
            yield ("collectors", "reports", "module"), problem


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
