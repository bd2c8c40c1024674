"""The plan as a config file: YAML whose comments say what was found and why each
choice was made, valid for ``check-config`` as printed.

Values are written by PyYAML (quoting whatever needs it), in flow style inside each
entry; the text around them is ours, so that comments sit beside what they explain.
Comments quote what the servers' configs and the peeks said (paths, names, errors):
every unprintable character in them is escaped (:func:`~mail_exporter.printable.printable`),
so no line break of any kind (LF, NEL, U+2028) ends a comment early and no control
character makes the YAML unreadable.
A collector that cannot run here is written commented out, below the reason.
"""

from __future__ import annotations

import math
import textwrap
import time
from collections.abc import Iterable
from typing import Any

import yaml

from mail_exporter.discovery.plan import CollectorChoice, Plan
from mail_exporter.printable import printable

INTERVAL = "30s"
COMMENT_WIDTH = 96


def _comment(lines: Iterable[str], indent: int) -> list[str]:
    """Comment lines at ``indent``, long ones wrapped (continued two spaces further in)."""
    pad = " " * indent
    wrapped: list[str] = []
    for line in (printable(line, None) for line in lines):
        inner = " " * (len(line) - len(line.lstrip()) + 2)
        width = max(COMMENT_WIDTH - indent, 40)
        parts = textwrap.wrap(line, width, subsequent_indent=inner, break_on_hyphens=False)
        wrapped += [f"{pad}# {part}".rstrip() for part in parts or [""]]
    return wrapped


def _value(value: Any) -> str:
    # One line whatever its length: a commented-out section comments each of its lines.
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf, sort_keys=False)
    return text.removesuffix("\n...\n").strip()


def _block(key: str, value: Any, indent: int) -> list[str]:
    """``key: value``, a list of mappings one flow mapping per line."""
    pad = " " * indent
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [f"{pad}{key}:", *(f"{pad}  - {_value(item)}" for item in value)]
    return [f"{pad}{key}: {_value(value)}"]


def _collector(choice: CollectorChoice) -> list[str]:
    lines = _comment(choice.why, 2)
    section = [f"{choice.name}:", "  enabled: true"]
    for key, value in choice.settings.items():
        section += _block(key, value, 2)
    if not choice.blocked:
        return lines + [f"  {line}" for line in section]
    lines += _comment([f"Off: {choice.blocked}."], 2)
    return lines + [f"  # {line}" for line in section]


def render(plan: Plan, host: str, user: str, flags: list[str]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    command = " ".join(["mail-exporter discover", *flags])
    lines = _comment(
        [
            f"mail_exporter config discovered on {host} at {when} by `{command}`, as {user}.",
            "Check it with `mail-exporter check-config FILE`; run with --config.file FILE. Later,",
            f"`{command} --diff FILE` shows what this host has that FILE does not watch.",
            "",
            *plan.notes,
        ],
        0,
    )
    lines += ["", "global:", f"  interval: {INTERVAL}", ""]
    lines += _comment(
        [
            "One module per kind of port, with the TLS the peek found. Certificates of local",
            "servers rarely name the loopback address: verification is reported",
            "(mail_tls_cert_verified) but does not fail these probes. To have it checked, set",
            "tls_config.server_name to the certificate's name and drop insecure_skip_verify.",
            "Port 25 reports it without the key, as senders' opportunistic TLS does.",
        ],
        0,
    )
    if plan.modules:
        lines.append("modules:")
        for name, settings in plan.modules.items():
            lines += _comment([settings["why"]], 2)
            lines.append(f"  {name}:")
            lines += [f"    {k}: {_value(v)}" for k, v in settings.items() if k != "why"]
            if _judges_certificates(settings):
                lines.append("    tls_config: {insecure_skip_verify: true}")
    else:
        lines.append("modules: {}")
    lines.append("")
    if plan.targets:
        lines.append("targets:")
        for target in plan.targets:
            lines += _comment(target.why, 2)
            entry = {"name": target.name, "address": target.address, "module": target.module}
            lines.append(f"  - {_value(entry)}")
    else:
        lines += _comment(["No mail port listens on this host: nothing to probe."], 0)
        lines.append("targets: []")
    lines += ["", *_comment(plan.templates, 0), ""]
    lines.append("collectors:")
    for choice in plan.collectors:
        lines += _collector(choice)
    return "\n".join(lines) + "\n"


def _judges_certificates(settings: dict[str, Any]) -> bool:
    """Whether a module would fail on a certificate that does not verify without
    ``insecure_skip_verify``: not without TLS, nor with port 25's opportunistic STARTTLS
    (:attr:`~mail_exporter.config.probes.ModuleConfig.opportunistic`)."""
    opportunistic = settings["tls"] == "starttls" and settings.get("require_tls") is False
    return settings["tls"] != "none" and not opportunistic
