"""Docker's dockerd for the container log tests: the runtime that writes Docker's real
``json-file`` records (podman 4.3's ``json-file`` is an alias of its CRI ``k8s-file``).

Debian's docker.io 20.10 with its containerd 1.6 is unpacked, not installed
(``apt-get download`` and ``dpkg -x`` into ``.cache/docker-logs/root``, like ``make
test-exim`` does for Exim), and runs with its own data root, exec root and socket, no
bridge and no iptables, so it touches nothing of the machine's. Its containers get the
hard limits as ulimits, as podman's do (tests/podman.py). It has no images of its own:
:meth:`Dockerd.load_image` copies them from podman's storage (``podman save | docker
load``), so no registry is needed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.podman import PODMAN_DIR, Podman, hard_limits, run_command

DOCKER_ROOT = PODMAN_DIR.parent / "docker-logs"
DOCKER_PACKAGES = ("docker.io", "containerd")
LOAD_TIMEOUT_SECONDS = 600.0
COMMAND_TIMEOUT_SECONDS = 120.0
DOCKERD_START_SECONDS = 60.0


class Dockerd:
    """Debian's dockerd, unpacked into the cache, on a socket and directories of its own.
    Its commands fail with an AssertionError that shows what they said, as podman's do."""

    def __init__(self, root: Path = DOCKER_ROOT) -> None:
        self.root = root
        self.binaries = root / "root" / "usr"
        self.data = root / "data"
        self.exec_root = Path(tempfile.mkdtemp(prefix="dockerd-"))
        self.socket = self.exec_root / "docker.sock"
        self.env = {
            **os.environ,
            "PATH": f"{self.binaries / 'bin'}:{self.binaries / 'sbin'}:{os.environ['PATH']}",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def unpack(self) -> None:
        if (self.binaries / "sbin" / "dockerd").exists():
            return
        work = Path(tempfile.mkdtemp(prefix="docker-debs-"))
        try:
            with contextlib.suppress(OSError):
                shutil.chown(work, "_apt")
            download = f"cd {work} && apt-get download -qq {' '.join(DOCKER_PACKAGES)}"
            run_command(["sh", "-c", download], self.env, COMMAND_TIMEOUT_SECONDS, True)
            unpacked = work / "root"
            for deb in work.glob("*.deb"):
                run_command(["dpkg", "-x", deb, unpacked], self.env, COMMAND_TIMEOUT_SECONDS, True)
            shutil.rmtree(self.root / "root", ignore_errors=True)
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.move(unpacked, self.root / "root")
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def start(self) -> None:
        self.unpack()
        self.data.mkdir(parents=True, exist_ok=True)
        nofile, nproc = hard_limits()
        command = [
            str(self.binaries / "sbin" / "dockerd"),
            f"--data-root={self.data}", f"--exec-root={self.exec_root}",
            f"--pidfile={self.exec_root / 'dockerd.pid'}", f"--host=unix://{self.socket}",
            "--iptables=false", "--ip-masq=false", "--bridge=none",
            "--exec-opt=native.cgroupdriver=cgroupfs", "--log-driver=json-file",
            f"--default-ulimit=nofile={nofile}:{nofile}", f"--default-ulimit=nproc={nproc}:{nproc}",
        ]  # fmt: skip
        log = open(self.exec_root / "dockerd.log", "wb")  # noqa: SIM115  (kept for stop)
        self.process = subprocess.Popen(
            command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + DOCKERD_START_SECONDS
        while self.run("version", check=False).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                said = (self.exec_root / "dockerd.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise AssertionError(f"dockerd did not start: {said}")
            time.sleep(0.2)

    def run(
        self, *arguments: str, timeout: float = COMMAND_TIMEOUT_SECONDS, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """The docker command, on this daemon's socket."""
        docker = [self.binaries / "bin" / "docker", f"--host=unix://{self.socket}"]
        return run_command([*docker, *arguments], self.env, timeout, check)

    def load_image(self, podman: Podman, image: str) -> str:
        """``image`` from podman's storage; the name it has here, podman's full one
        (``localhost/…``: a short name would be looked for on Docker Hub)."""
        name = podman.run("image", "inspect", "--format", "{{index .RepoTags 0}}", image)
        full_name = name.stdout.strip()
        if self.run("image", "inspect", full_name, check=False).returncode != 0:
            docker = f"{self.binaries / 'bin' / 'docker'} --host=unix://{self.socket}"
            load = f"podman save --format docker-archive {full_name} | {docker} load"
            command = ["bash", "-o", "pipefail", "-c", load]
            run_command(command, podman.environment, LOAD_TIMEOUT_SECONDS, True)
        return full_name

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        shutil.rmtree(self.exec_root, ignore_errors=True)
