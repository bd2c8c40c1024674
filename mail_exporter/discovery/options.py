"""What discovery looks at, and how long it may take: :class:`DiscoveryOptions`.

Everything discovery reads is named here so that it can be pointed elsewhere, as the
collectors' paths and commands can: ``root`` is prepended to every well-known path
(``/etc/postfix``, ``/etc/dovecot/dovecot.conf``, ``/var/log/mail.log``, ``/var/mail``,
``/var/qmail``, the journal directories, ...), so a test points discovery at a tree of
its own, and the paths the servers' own configs name are taken as they say.
``postconf -c``, ``doveconf -c`` and the Exim command are how discovery asks the servers;
the commands themselves are the ones on the PATH (a host without them has none of those
servers), and ``exim_command`` replaces the Exim binary for an Exim installed elsewhere.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

COMMAND_TIMEOUT_SECONDS = 5.0
"""Each of postconf, doveconf, exim -bP: they read a config file and answer at once."""
SERVER_SECONDS = 10.0
"""All the queries of one server together (Postfix asks three times per instance)."""
MAX_OUTPUT_BYTES = 16 << 20
"""The most a query may print: postconf -F of thousands of master.cf services is a few MB."""
PEEK_TIMEOUT_SECONDS = 3.0
"""Each listener's banner and capability peek; all run at once."""


@dataclass(frozen=True)
class DiscoveryOptions:
    root: Path = Path("/")
    exim_command: tuple[str, ...] | None = None  # default: exim4 or exim on the PATH
    peek_timeout: float = PEEK_TIMEOUT_SECONDS

    def path(self, well_known: str) -> Path:
        """A well-known absolute path under ``root``."""
        return self.root / well_known.lstrip("/")

    def flags(self) -> list[str]:
        """The command line flags that give these options (for the rendered config's header)."""
        flags = (
            [] if self.root == Path("/") else [f"--discovery.root {shlex.quote(str(self.root))}"]
        )
        if self.exim_command is not None:
            flags.append(f"--discovery.exim-command {shlex.quote(shlex.join(self.exim_command))}")
        return flags
