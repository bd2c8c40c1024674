"""``mail-exporter discover``, and the ``--discovery.*`` flags it shares with serving: the
command line of :mod:`mail_exporter.discovery`, which ``cli`` adds to its group."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import click

from mail_exporter.config.root import load_config
from mail_exporter.config.validation import ConfigError
from mail_exporter.discovery import NOTHING_FOUND, DiscoveryOptions, discover_config
from mail_exporter.discovery.diff import missing


def discovery_flags(command: Any) -> Any:
    """``--discovery.root`` and ``--discovery.exim-command``, for serving and ``discover``."""
    command = click.option(
        "--discovery.exim-command",
        "exim_command",
        help="Exim as discovery runs it (e.g. 'exim4 -C /etc/exim4/other.conf'); "
        "default: exim4 or exim from the PATH.",
    )(command)
    return click.option(
        "--discovery.root",
        "discovery_root",
        type=click.Path(path_type=Path, file_okay=False),
        default=Path("/"),
        show_default=True,
        help="Where discovery looks for /etc/postfix, /etc/dovecot, /var/log/mail.log and "
        "the other well-known paths (a chroot, a test tree).",
    )(command)


def discovery_options(root: Path, exim_command: str | None) -> DiscoveryOptions:
    command = tuple(shlex.split(exim_command)) if exim_command else None
    return DiscoveryOptions(root=root.absolute(), exim_command=command)


@click.command("discover")
@click.option(
    "--diff",
    "diff_with",
    type=click.Path(path_type=Path),
    help="Instead of the config, list what discovery finds that this config does not "
    "watch; exit 1 when there is something.",
)
@discovery_flags
def discover_command(
    diff_with: Path | None, discovery_root: Path, exim_command: str | None
) -> None:
    """Print a config for this host, with comments on what was found and why: the mail
    servers and their instances, the ports that listen (peeked for a banner, never a
    login), queues, logs, certificates, and what this user may read. It only reads."""
    options = discovery_options(discovery_root, exim_command)
    if diff_with is not None:
        try:
            mine = load_config(diff_with)
        except ConfigError as error:
            click.echo(str(error), err=True)
            sys.exit(2)
    discovered = discover_config(options)
    if diff_with is None:
        click.echo(discovered.text, nl=False)
        if not discovered.found_anything:
            click.echo(f"discover: {NOTHING_FOUND}", err=True)
        return
    lines = missing(discovered.config, mine)
    for line in lines:
        click.echo(line)
    if not lines:
        click.echo(f"{diff_with} watches everything discovery finds")
    sys.exit(1 if lines else 0)
