"""Two real container runtimes for the container log tests: podman and Docker's dockerd.

**podman** (Debian's 4.3) runs as root with a private ``containers.conf`` and storage
under ``.cache/podman-logs``: ``default_ulimits`` set to the hard limits (podman's
defaults exceed what this kind of VM allows), runc with cgroupfs (crun 1.8 refuses the
hybrid cgroup layout), events to a file. Its ``k8s-file`` log driver writes the CRI
format; its ``json-file`` is only an alias of ``k8s-file`` (podman 4.3 writes CRI records
for both), so it cannot show Docker's format.

**dockerd** (Debian's docker.io 20.10 with its containerd 1.6) writes Docker's real
``json-file`` records. It is unpacked, not installed (``apt-get download`` and
``dpkg -x`` into ``.cache/docker-logs/root``, like ``make test-exim`` does for Exim), and
runs with its own data root, exec root and socket, no bridge and no iptables, so it
touches nothing of the machine's.

The images both run: Debian bookworm's minbase from this machine's apt sources
(``mmdebstrap``) piped into ``podman import``, and the same with Debian's Postfix
(``POSTFIX_IMAGE``, debconf answered as for "Local only"), cached in podman's storage;
dockerd gets them by ``podman save | docker load``. No registry is needed. The first
build takes about 45 s (the Postfix image 90 s), later runs find them cached.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CACHE = Path(__file__).resolve().parents[2] / ".cache"
PODMAN_ROOT = CACHE / "podman-logs"
DOCKER_ROOT = CACHE / "docker-logs"
IMAGE = "localhost/mail-exporter-logger:test"
POSTFIX_IMAGE = "localhost/mail-exporter-postfix:test"
POSTFIX_DEBCONF = (
    'printf "%s\\n" "postfix postfix/main_mailer_type select Local only" '
    '"postfix postfix/mailname string mail.test" | chroot "$1" debconf-set-selections'
)
APT_OPTIONS = ('Acquire::Check-Valid-Until "false"', 'Acquire::Check-Date "false"')
DOCKER_PACKAGES = ("docker.io", "containerd")
BUILD_TIMEOUT_SECONDS = 600.0
COMMAND_TIMEOUT_SECONDS = 120.0
DOCKERD_START_SECONDS = 60.0


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot run here; the message says why."""


def _run(
    command: list[str], env: dict[str, str] | None = None, timeout: float = COMMAND_TIMEOUT_SECONDS
) -> str:
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeUnavailable(
            f"{' '.join(command[:3])} … exited {done.returncode}: {done.stderr.strip()[-2000:]}"
        )
    return done.stdout


def _hard_limits() -> tuple[int, int]:
    """Open files and processes as the VM allows them: containers get no more than these."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    unlimited = resource.RLIM_INFINITY
    return (
        65536 if nofile == unlimited else nofile,
        32768 if nproc == unlimited else min(nproc, 32768),
    )


def _apt_sources() -> str:
    for candidate in ("/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"):
        if Path(candidate).is_file() and Path(candidate).stat().st_size:
            return candidate
    raise RuntimeUnavailable("no apt sources file to build the base image from")


class Podman:
    """podman with private config and storage; :meth:`command` runs it."""

    def __init__(self, root: Path = PODMAN_ROOT) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        nofile, nproc = _hard_limits()
        (root / "containers.conf").write_text(
            f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", '
            f'"nproc={nproc}:{nproc}"]\n[engine]\nruntime = "runc"\n'
            'cgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
        )
        (root / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{root / "graph"}"\n'
            f'runroot = "{root / "run"}"\n'
        )
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(root / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
        }

    def command(self, *arguments: str, timeout: float = COMMAND_TIMEOUT_SECONDS) -> str:
        return _run(["podman", *arguments], self.env, timeout)

    def ensure_image(self, image: str = IMAGE) -> None:
        """The minbase image (or, for POSTFIX_IMAGE, with Debian's Postfix), built once and
        kept in the private storage."""
        with contextlib.suppress(RuntimeUnavailable):
            self.command("image", "exists", image)
            return
        options = [f"--aptopt={option}" for option in APT_OPTIONS]
        if image == POSTFIX_IMAGE:  # what `apt-get install postfix` asks, answered
            options += ["--include=postfix", f"--essential-hook={POSTFIX_DEBCONF}"]
        build = (
            f"mmdebstrap --quiet --variant=minbase {' '.join(map(_quote, options))} bookworm - "
            f"{_apt_sources()} | podman import - {image}"
        )
        _run(["bash", "-o", "pipefail", "-c", build], self.env, BUILD_TIMEOUT_SECONDS)

    def log_path(self, container: str) -> Path:
        return Path(
            self.command("inspect", container, "--format", "{{.HostConfig.LogConfig.Path}}").strip()
        )


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


class Dockerd:
    """Debian's dockerd, unpacked into the cache, on a socket and directories of its own."""

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
            _run(["sh", "-c", f"cd {work} && apt-get download -qq {' '.join(DOCKER_PACKAGES)}"])
            unpacked = work / "root"
            for deb in work.glob("*.deb"):
                _run(["dpkg", "-x", str(deb), str(unpacked)])
            shutil.rmtree(self.root / "root", ignore_errors=True)
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.move(unpacked, self.root / "root")
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def start(self) -> None:
        self.unpack()
        self.data.mkdir(parents=True, exist_ok=True)
        nofile, nproc = _hard_limits()
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
        while True:
            with contextlib.suppress(RuntimeUnavailable):
                self.command("version")
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                said = (self.exec_root / "dockerd.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeUnavailable(f"dockerd did not start: {said}")
            time.sleep(0.2)

    def command(self, *arguments: str, timeout: float = COMMAND_TIMEOUT_SECONDS) -> str:
        docker = str(self.binaries / "bin" / "docker")
        return _run([docker, f"--host=unix://{self.socket}", *arguments], self.env, timeout)

    def load_image(self, podman: Podman, image: str = IMAGE) -> None:
        with contextlib.suppress(RuntimeUnavailable):
            self.command("image", "inspect", image)
            return
        docker = str(self.binaries / "bin" / "docker")
        load = (
            f"podman save --format docker-archive {image} | "
            f"{docker} --host=unix://{self.socket} load"
        )
        _run(["bash", "-o", "pipefail", "-c", load], podman.env, BUILD_TIMEOUT_SECONDS)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        shutil.rmtree(self.exec_root, ignore_errors=True)
