"""A private rspamd on loopback: a normal worker that scans, a controller that serves
/metrics, nothing else (no proxy, no fuzzy storage, no Redis).

Debian's rspamd 3.4 runs from its packaged rules (``$CONFDIR/common.conf``), with this
instance's own top-level config, local.d, database, run and log directories in its work
directory. It runs as root (``-i``, rspamd's "insecure" switch): the test needs no user of
its own. Its DNS goes to a closed loopback port and gives up quickly, so checks that look
up blocklists fail at once instead of waiting for a resolver this machine may not reach.

The controller listens on 127.0.0.1 and ::1 with a password; ``controller_local`` is its
local.d/worker-controller.inc (where docs/pairing.md puts ``secure_ip``), merged with the
controller section as rspamd's own rspamd.conf merges it.
"""

import subprocess
import time
from pathlib import Path

from tests.realservers.runtime import (
    ServerStartError,
    free_port,
    http_ok,
    log_excerpt,
    start_with_fresh_ports,
    stop_session,
)

CONTROLLER_PASSWORD = "controller-secret"
START_SECONDS = 60.0
CLOSED_PORT = 9  # discard: nothing listens there on a test machine


class Rspamd:
    """Runs ``rspamd -f -i -c CONF`` from ``work_dir``: ``normal_port`` (scans, e.g. POST
    /checkv2) on 127.0.0.1 and ``controller_port`` (/metrics, /ping) on 127.0.0.1 and ::1."""

    def __init__(self, work_dir: Path, controller_local: str) -> None:
        self.work_dir = work_dir
        self.controller_local = controller_local
        self.config_path = work_dir / "rspamd.conf"
        self.log_path = work_dir / "log" / "rspamd.log"
        self.stderr_path = work_dir / "rspamd.stderr"
        self._process: subprocess.Popen[bytes] | None = None
        self._take_ports()

    def _take_ports(self) -> None:
        self.normal_port = free_port()
        self.controller_port = free_port()

    def start(self) -> None:
        start_with_fresh_ports(self._start, self._take_ports)

    def _start(self) -> None:
        try:
            self._prepare()
            with self.stderr_path.open("wb") as stderr:
                self._process = subprocess.Popen(
                    ["rspamd", "-f", "-i", "-c", str(self.config_path),
                     *(f"--var={name}={self.work_dir / directory}" for name, directory in (
                         ("DBDIR", "db"), ("RUNDIR", "run"), ("LOGDIR", "log"),
                         ("LOCAL_CONFDIR", "local")))],
                    stdin=subprocess.DEVNULL, stdout=stderr, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            self._wait_until_answering()
        except BaseException:
            self.stop()
            raise

    def _wait_until_answering(self) -> None:
        """Until both workers answer /ping; fails at once when rspamd exits (a bad config,
        a port taken)."""
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                break
            if http_ok(f"http://127.0.0.1:{self.controller_port}/ping") and http_ok(
                f"http://127.0.0.1:{self.normal_port}/ping"
            ):
                return
            time.sleep(0.2)
        raise ServerStartError(
            f"rspamd did not answer on {self.normal_port}/{self.controller_port}\n"
            f"{log_excerpt(self.stderr_path, self.log_path)}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        if self._process is None:
            return
        process, self._process = self._process, None
        stop_session(process, "rspamd", timeout)

    def _prepare(self) -> None:
        for directory in ("db", "run", "log", "local/local.d"):
            (self.work_dir / directory).mkdir(parents=True, exist_ok=True)
        (self.work_dir / "local" / "local.d" / "worker-controller.inc").write_text(
            self.controller_local
        )
        password = subprocess.run(
            ["rspamadm", "pw", "-p", CONTROLLER_PASSWORD],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.strip()  # fmt: skip
        self.config_path.write_text(f"""\
.include "$CONFDIR/common.conf"
options {{
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    dns {{
        nameserver = ["127.0.0.1:{CLOSED_PORT}"];
        timeout = 0.2s;
        retransmits = 1;
    }}
}}
logging {{
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    level = "info";
}}
worker "normal" {{
    bind_socket = "127.0.0.1:{self.normal_port}";
    .include "$CONFDIR/worker-normal.inc"
}}
worker "controller" {{
    bind_socket = "127.0.0.1:{self.controller_port}";
    bind_socket = "[::1]:{self.controller_port}";
    password = "{password}";
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/worker-controller.inc"
}}
""")
