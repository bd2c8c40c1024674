"""A private Net-SNMP agent on loopback that serves this machine's IF-MIB (its interfaces,
loopback among them) to one read-only community.

Its config and persistent state stay in its work directory (SNMP_PERSISTENT_DIR), and it
loads no MIB files: it answers by OID, as snmp_exporter asks.
"""

import os
import secrets
import subprocess
import time
from pathlib import Path

from tests.realservers.runtime import ServerStartError, free_port, log_excerpt, stop_session

START_SECONDS = 30.0
IF_NAME_OF_LOOPBACK = "1.3.6.1.2.1.31.1.1.1.1.1"  # ifName.1: "lo" on Linux


class Snmpd:
    """Runs ``snmpd -f -C -c CONF`` on UDP 127.0.0.1:``port`` for ``community``."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.community = f"test-{secrets.token_hex(4)}"
        self.port = free_port()  # free for TCP; UDP is checked by the start itself
        self.log_path = work_dir / "snmpd.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "snmpd.conf"
        config.write_text(
            f"agentAddress udp:{self.address}\nrocommunity {self.community} 127.0.0.1\n"
        )
        self._process = subprocess.Popen(
            ["snmpd", "-f", "-C", "-c", str(config), "-Lf", str(self.log_path),
             "-M", str(self.work_dir), "-m", ""],
            env=self._env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline and self._process.poll() is None:
            if self._answers():
                return
            time.sleep(0.2)
        self.stop()
        raise ServerStartError(
            f"snmpd did not answer on {self.address}\n{log_excerpt(self.log_path)}"
        )

    def _answers(self) -> bool:
        get = subprocess.run(
            ["snmpget", "-v2c", "-c", self.community, "-t", "1", "-r", "0", "-M", str(self.work_dir),
             "-m", "", self.address, IF_NAME_OF_LOOPBACK],
            env=self._env(), capture_output=True, text=True, check=False, timeout=10,
        )  # fmt: skip
        return get.returncode == 0

    def _env(self) -> dict[str, str]:
        """Net-SNMP's state (the agent's and snmpget's alike) in the work directory, not
        in /var/lib/snmp."""
        return {**os.environ, "SNMP_PERSISTENT_DIR": str(self.work_dir / "state")}

    def stop(self, timeout: float = 10.0) -> None:
        if self._process is None:
            return
        process, self._process = self._process, None
        stop_session(process, "snmpd", timeout)
