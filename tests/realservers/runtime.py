"""What the Dovecot and Postfix wrappers share: ports, directories, readiness and shutdown.

Both servers run as root and drop to unprivileged users, and both are stopped by waiting
for every process of their session to end, so a test run leaves no daemons behind.

A free port is only free when :func:`free_port` looks: until the server binds it, any
other process on the machine (a parallel test session, an outgoing connection's local
port) can take it. Servers started on such ports go through :func:`start_with_fresh_ports`,
which starts them again on new ports when the start failed on EADDRINUSE.
"""

import contextlib
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

LOOPBACK_ADDRESSES = ("127.0.0.1", "::1")
POLL_INTERVAL_SECONDS = 0.02
PORT_ATTEMPTS = 5
"""Starts tried in all before a port clash fails the start (each on fresh ports)."""
PORT_CLASH = "address already in use"
"""strerror(EADDRINUSE), as every server here prints it (Python's in lower case)."""
CONNECT_TIMEOUT_SECONDS = 2.0
_PROBLEM_PATTERN = re.compile(r"\b(fatal|panic|error|warning)\b", re.IGNORECASE)

Endpoint = tuple[str, int]
T = TypeVar("T")

_handed_out_ports: set[int] = set()


class ServerStartError(RuntimeError):
    """A server did not come up; the message carries excerpts of its logs."""


def _bindable(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """Return a port that is free on every loopback address and not handed out before."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        # The kernel may offer the same port again once it is closed, and it only checked
        # 127.0.0.1: the servers listen on ::1 as well.
        if port not in _handed_out_ports and all(_bindable(a, port) for a in LOOPBACK_ADDRESSES):
            _handed_out_ports.add(port)
            return port


def start_with_fresh_ports(
    start: Callable[[], T], take_ports: Callable[[], object] | None = None
) -> T:
    """``start()``; when it fails on a port clash, ``take_ports()`` and start again.

    Without ``take_ports``, ``start`` takes new ports itself each time. It cleans up
    after a failure and raises :class:`ServerStartError` or :class:`OSError` with the
    server's words; a clash is told by :data:`PORT_CLASH` in them. Other failures, and
    the last clash, are raised as they are.
    """
    for _ in range(PORT_ATTEMPTS - 1):
        try:
            return start()
        except (ServerStartError, OSError) as error:
            if PORT_CLASH not in str(error).lower():
                raise
        if take_ports is not None:
            take_ports()
    return start()


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` itself holds a TCP socket listening on ``port``.

    An answer on the port does not say whose server gave it: another one may have taken
    the port before this one could bind it. The kernel's socket tables do.
    """
    listening = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rpartition(":")[2], 16) == port:  # 0A: LISTEN
                listening.add(f"socket:[{inode}]")
    try:
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # the process is gone
        return False
    return any(_link(fd) in listening for fd in descriptors)


def _link(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:  # closed meanwhile
        return ""


def http_ok(url: str) -> bool:
    """Whether ``url`` answers 200 now (readiness checks of Prometheus and friends)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def loopback_endpoints(*ports: int) -> list[Endpoint]:
    """Every (address, port) pair a server listening on both loopback addresses serves."""
    return [(address, port) for port in ports for address in LOOPBACK_ADDRESSES]


def reachable_dir(name: str) -> Path:
    """A path in the system temp directory for files daemons open after dropping root.

    Dovecot's auth and mail processes and Postfix's master open such files by absolute
    path as unprivileged users. pytest's directories (/tmp/pytest-of-USER/...) are mode
    0700, and every new pytest session resets that mode, so granting access there would
    break the servers of a session still running next to it. Callers create and remove it.
    """
    return Path(tempfile.gettempdir()) / f"mail-exporter-{name}"


def accepts_tcp(endpoint: Endpoint) -> bool:
    try:
        with socket.create_connection(endpoint, timeout=CONNECT_TIMEOUT_SECONDS):
            return True
    except OSError:
        return False


def wait_for_endpoints(
    endpoints: Iterable[Endpoint],
    is_ready: Callable[[Endpoint], bool],
    timeout: float,
    still_running: Callable[[], bool],
) -> list[Endpoint]:
    """Poll until every endpoint is ready; return those still not ready when giving up.

    Gives up at the deadline or as soon as the server process is gone, so a server that
    dies on a bad config fails the start at once instead of after the whole timeout.
    """
    pending = list(endpoints)
    deadline = time.monotonic() + timeout
    while pending and still_running() and time.monotonic() < deadline:
        pending = [endpoint for endpoint in pending if not is_ready(endpoint)]
        if pending:
            time.sleep(POLL_INTERVAL_SECONDS)
    return pending


def format_endpoints(endpoints: Iterable[Endpoint]) -> str:
    return ", ".join(f"[{a}]:{p}" if ":" in a else f"{a}:{p}" for a, p in endpoints)


def log_excerpt(*paths: Path, first_problems: int = 5, last_lines: int = 30) -> str:
    """The first problem lines and the last lines of each log file, for error messages.

    A server that fails keeps repeating the symptom (one line per readiness poll) after
    logging the cause once, so the tail alone often hides the cause.
    """
    sections = []
    for path in paths:
        if not path.exists():
            sections.append(f"--- {path} does not exist ---")
            continue
        lines = path.read_text(errors="replace").splitlines()
        problems = [line for line in lines if _PROBLEM_PATTERN.search(line)][:first_problems]
        sections.append(f"--- first problems in {path} ---")
        sections.extend(problems or ["(none)"])
        sections.append(f"--- last lines of {path} ---")
        sections.extend(lines[-last_lines:])
    return "\n".join(sections)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line.rsplit(")", 1)[1].split()[0] == "Z"


def session_members(session_id: int) -> list[int]:
    """Live (non-zombie) processes in a session, read from /proc."""
    members = []
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name in parentheses may contain spaces: split after it.
            fields = stat_path.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we were looking
        state, session = fields[0], int(fields[3])
        if session == session_id and state != "Z":
            members.append(int(stat_path.parent.name))
    return members


def _wait_session_empty(session_id: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while session_members(session_id):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL_SECONDS)
    return True


def stop_session(process: subprocess.Popen[bytes], name: str, timeout: float) -> None:
    """Stop a server started as the leader of its own session: SIGTERM to the whole group
    at once (fast, and it ends children with clients still connected, which would
    otherwise outlive their master), SIGKILL to the leader after ``timeout``, then
    :func:`end_session`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)
    end_session(process.pid, name, timeout)


def end_session(session_id: int, name: str, timeout: float) -> None:
    """Wait until a server's session has no live process left; kill what outlives ``timeout``.

    Every daemon of either server stays in the session of its master process (Dovecot's
    master gets a new session from us, Postfix's master calls setsid() itself), so the
    session is exactly the set of processes the server started. Zombies are ignored: an
    orphan is reaped by init, which may take a moment.
    """
    if _wait_session_empty(session_id, timeout):
        return
    stragglers = session_members(session_id)
    for pid in stragglers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    warnings.warn(
        f"{name} left processes {stragglers} running {timeout}s after stop; killed them",
        stacklevel=2,
    )
    if not _wait_session_empty(session_id, timeout):
        raise RuntimeError(f"{name} processes {session_members(session_id)} survived SIGKILL")
