"""A real Exim 4.96 with a private config and spool: messages are queued, never delivered.

``make test-exim`` unpacks Debian's exim4-daemon-light into ``.cache/exim`` (installing
it would remove Postfix) and creates the ``Debian-exim`` user the binary has compiled in.
The binary runs as root with its own config (``-C``): no queue runner, so queued and
frozen messages stay put while a test looks at them. :class:`EximDaemon` also listens
for SMTP on loopback (``-bdf``, in the foreground, in a session of its own that stop()
empties); the light daemon has GnuTLS with OCSP stapling (``exim4 -bV``: "OCSP").
"""

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.realservers.runtime import (
    ServerStartError,
    accepts_tcp,
    end_session,
    format_endpoints,
    free_port,
    listens_on,
    log_excerpt,
    process_alive,
    start_with_fresh_ports,
    wait_for_endpoints,
)

EXIM_ROOT = Path(__file__).resolve().parents[2] / ".cache" / "exim"
EXIM_BINARY = EXIM_ROOT / "usr" / "sbin" / "exim4"
EXIM_LIBRARIES = EXIM_ROOT / "usr" / "lib" / "x86_64-linux-gnu"
EXIM_USER = "Debian-exim"
PREPARE_HINT = "run `make test-exim` as root (it unpacks Exim into .cache/exim)"
COMMAND_TIMEOUT_SECONDS = 10.0

# One message of `exim -bp`: "age size id <sender> [*** frozen ***]", recipients below.
_LISTED_MESSAGE = re.compile(r"^\s*\S+\s+(?P<size>\S+) (?P<id>[0-9A-Za-z-]{16,23}) <[^>]*>")

_CONFIG = """\
primary_hostname = test.local
spool_directory = {spool}
log_file_path = {log}/%slog
keep_environment =
split_spool_directory = {split}
{options}begin routers
begin transports
"""


class EximUnavailable(RuntimeError):
    """The unpacked Exim cannot run here; the message says why and how to fix it."""


def exim_binary_command() -> list[str]:
    """The command that runs the unpacked exim4, its own libraries first on the path."""
    return ["env", f"LD_LIBRARY_PATH={EXIM_LIBRARIES}", str(EXIM_BINARY)]


def _check_prerequisites() -> None:
    if not EXIM_BINARY.exists():
        raise EximUnavailable(f"{EXIM_BINARY} does not exist: {PREPARE_HINT}")
    try:
        pwd.getpwnam(EXIM_USER)
    except KeyError:
        raise EximUnavailable(f"the user {EXIM_USER} does not exist: {PREPARE_HINT}") from None
    if os.geteuid() != 0:
        raise EximUnavailable("the Exim tests run exim4 as root (spool owned by Debian-exim)")


@contextlib.contextmanager
def exim_work_dir() -> Iterator[Path]:
    """A fresh directory for an :class:`Exim`, removed afterwards.

    Exim receives messages as Debian-exim, which cannot pass pytest's directories (mode
    0700, see ``runtime.reachable_dir``), so it lives in the system temp directory.
    """
    directory = Path(tempfile.mkdtemp(prefix="mail-exporter-exim-"))
    try:
        directory.chmod(0o755)
        yield directory
    finally:
        shutil.rmtree(directory)


class Exim:
    """Exim with config, spool and log in ``work_dir`` (see :func:`exim_work_dir`).

    ``command`` runs it with this config (``-C``).
    """

    def __init__(self, work_dir: Path, split_spool: bool = False) -> None:
        _check_prerequisites()
        self.work_dir = work_dir
        self.spool_directory = work_dir / "spool"
        self.log_directory = work_dir / "log"
        self.config_path = work_dir / "exim.conf"
        self.command = [*exim_binary_command(), "-C", str(self.config_path)]
        self.split_spool = split_spool
        user = pwd.getpwnam(EXIM_USER)
        for directory in (self.spool_directory, self.log_directory):
            directory.mkdir(parents=True)
            os.chown(directory, user.pw_uid, user.pw_gid)
        self.write_config()
        version = self._run("-bV", check=False)
        if version.returncode != 0 or "Exim version" not in version.stdout:
            raise EximUnavailable(
                f"{EXIM_BINARY} -bV failed ({version.returncode}): "
                f"{version.stderr.strip() or version.stdout.strip()}; {PREPARE_HINT}"
            )

    def write_config(self, options: str = "") -> None:
        """The config file, with ``options`` (lines) added to its main section."""
        self.config_path.write_text(
            _CONFIG.format(
                spool=self.spool_directory,
                log=self.log_directory,
                split="true" if self.split_spool else "false",
                options=options,
            )
        )

    def _run(
        self, *arguments: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            [*self.command, *arguments],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
            check=False,
        )
        if check and completed.returncode != 0:
            raise RuntimeError(
                f"exim4 {' '.join(arguments)} failed ({completed.returncode}): "
                f"{completed.stderr.strip()}\n{self.log_excerpt()}"
            )
        return completed

    def log_excerpt(self) -> str:
        return "\n".join(
            f"--- {path.name} ---\n{path.read_text(errors='replace')[-2000:]}"
            for path in sorted(self.log_directory.glob("*log"))
        )

    def queue(self, sender: str, recipient: str, body: str) -> str:
        """Queue one message without delivering it (``-odq``); returns its id."""
        before = set(self.listing())
        message = f"From: {sender}\nTo: {recipient}\nSubject: queue test\n\n{body}\n"
        self._run("-odq", "-f", sender, recipient, stdin=message)
        (new,) = set(self.listing()) - before
        return new

    def freeze(self, message_id: str) -> None:
        self._run("-Mf", message_id)

    def count(self) -> int:
        """The queue count as ``exim -bpc`` prints it."""
        return int(self._run("-bpc").stdout)

    def queue_listing(self) -> str:
        """``exim -bp`` output."""
        return self._run("-bp").stdout

    def listing(self) -> dict[str, int]:
        """Each queued message's size as ``exim -bp`` shows it, by id.

        Exim shows sizes of 1 KiB and more rounded (``1.2K``): int() refuses those, so
        tests keep their messages smaller.
        """
        return {
            match["id"]: int(match["size"])
            for match in map(_LISTED_MESSAGE.match, self.queue_listing().splitlines())
            if match
        }

    def frozen_count(self) -> int:
        """Messages ``exim -bp`` marks frozen."""
        return self.queue_listing().count("*** frozen ***")


class EximDaemon(Exim):
    """Exim listening for SMTP on 127.0.0.1 ports of its own, one per name in ``ports``;
    subclasses add what each port does (:meth:`listener_options`)."""

    def __init__(self, work_dir: Path, names: tuple[str, ...]) -> None:
        super().__init__(work_dir)
        self._names = names
        self.ports: dict[str, int] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr = work_dir / "daemon.stderr"
        self._take_ports()

    def _take_ports(self) -> None:
        self.ports = {name: free_port() for name in self._names}

    def listener_options(self) -> str:
        """Main-section lines for the ports (read after :attr:`ports` is set)."""
        return ""

    def start(self, timeout: float = 20.0) -> None:
        start_with_fresh_ports(lambda: self._start(timeout), self._take_ports)

    def _start(self, timeout: float) -> None:
        ports = " : ".join(str(port) for port in self.ports.values())
        # No retries on a taken port (the default waits 30 s, nine times): the start fails
        # at once with "Address already in use", and start_with_fresh_ports takes others.
        self.write_config(
            f"local_interfaces = 127.0.0.1\ndaemon_smtp_ports = {ports}\n"
            f"daemon_startup_retries = 0\npid_file_path = {self.work_dir / 'exim.pid'}\n"
            + self.listener_options()
        )
        with self._stderr.open("wb") as stderr:
            self._process = subprocess.Popen(
                [*self.command, "-bdf"],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        process = self._process
        endpoints = [("127.0.0.1", port) for port in self.ports.values()]
        pending = wait_for_endpoints(
            endpoints,
            lambda endpoint: accepts_tcp(endpoint) and listens_on(process.pid, endpoint[1]),
            timeout,
            lambda: process_alive(process.pid),
        )
        if pending:
            self.stop()
            raise ServerStartError(
                f"exim did not listen on {format_endpoints(pending)}:\n"
                + log_excerpt(self._stderr, *sorted(self.log_directory.glob("*log")))
            )

    def stop(self, timeout: float = 10.0) -> None:
        if self._process is None:
            return
        process, self._process = self._process, None
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
        end_session(process.pid, "exim", timeout)
