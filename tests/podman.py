"""Podman for the tests that run containers: the image tests (tests/test_image.py,
tests/test_demo_stack.py) and the container log tests (tests/test_logs_containers.py).
One private configuration and storage, and the base image that no registry can give here.

Docker does not run on the test machines; Debian's podman 4.3 does, as root, with
settings of its own (kept out of the system's /etc/containers and /var/lib/containers):

- ``default_ulimits`` set to the hard limits: the VM forbids raising RLIMIT_NOFILE and
  RLIMIT_NPROC, and podman's defaults ask for more;
- runc with cgroupfs and a file events log: crun 1.8 refuses the hybrid cgroup layout,
  and there is no systemd;
- netavark and aardvark-dns (``make test-podman`` unpacks them under .cache/podman) as
  the network backend, so that the compose services find each other by name, as Docker's
  resolver lets them;
- storage, network definitions and images under .cache/podman, so that the base image
  and the build's layers are made once per machine and reused by later runs;
- ``--format docker`` for every build, since the OCI format drops HEALTHCHECK.

No registry is reachable, so the base images the Dockerfiles name are made here and
tagged with those names: ``debian:bookworm-slim`` is a minimal bookworm made by
mmdebstrap from this machine's apt sources (``make test-podman``), imported once, and the
stand-ins under tests/containers/ build on it from Debian's packages (Python in a
virtualenv for ``python:3.11-slim``; Prometheus and Alertmanager for the demo's images;
Debian's Postfix for the log tests). Builds reach PyPI and the Debian mirror only; pip
inside a build gets the host's CA bundle mounted read-only, never copied into an image.

Podman's ``k8s-file`` log driver writes the CRI format to ``ctr.log`` in each container's
directory of the storage (``CONTAINER_LOGS``); its ``json-file`` is only an alias of
``k8s-file`` in 4.3, so Docker's format comes from dockerd (tests/realservers/dockerd.py),
which is given this storage's images by ``podman save``.

There is no systemd to schedule health checks: tests call ``podman healthcheck run``.
Podman 4.3 keeps netavark's address leases and aardvark-dns's files in the fixed
/run/containers/networks; they are kept by network name, and the tests' network names are
their own.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PODMAN_DIR = ROOT / ".cache" / "podman"
GRAPH_ROOT = PODMAN_DIR / "storage"
CONTAINER_LOGS = f"{GRAPH_ROOT}/overlay-containers/*/userdata/ctr.log"
NETAVARK_DIR = PODMAN_DIR / "netavark" / "usr" / "lib" / "podman"
BASE_TARBALL = PODMAN_DIR / "bookworm-minbase.tar"
CONTAINERS_DIR = Path(__file__).resolve().parent / "containers"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

# The names the Dockerfiles and docker-compose.yml use for images from registries.
DEBIAN_IMAGE = "debian:bookworm-slim"
PYTHON_IMAGE = "mail-exporter-test/python:3.11-slim"
EXPORTER_IMAGE = "mail-exporter"
# Debian's Postfix for the container log tests (tests/containers/postfix.Containerfile).
POSTFIX_IMAGE = "mail-exporter-test/postfix"

DEFAULT_SUBNET = "10.94.69.0/24"
SUBNET_POOL = "10.94.70.0/23"
# The VM's limit on processes; podman's own default asks for more.
MAX_NPROC = 32768
# Open files where the hard limit is unlimited (a container cannot be given that).
UNLIMITED_NOFILE = 65536
BUILD_TIMEOUT = 900.0


class PodmanUnavailable(Exception):
    """Podman, or what ``make test-podman`` prepares for it, is missing."""


def hard_limits() -> tuple[int, int]:
    """Open files and processes as the VM allows them: containers get no more than these."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    unlimited = resource.RLIM_INFINITY
    return (
        UNLIMITED_NOFILE if nofile == unlimited else nofile,
        MAX_NPROC if nproc == unlimited else min(nproc, MAX_NPROC),
    )


def _environment() -> dict[str, str]:
    """The variables that point podman at the private configuration and storage."""
    # Run-time state belongs on tmpfs (podman tells a reboot by its absence), one
    # directory per checkout so that two checkouts on one machine never share it.
    checkout = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    run_dir = Path("/run/mail-exporter-tests") / checkout
    nofile, nproc = hard_limits()
    containers_conf = PODMAN_DIR / "containers.conf"
    storage_conf = PODMAN_DIR / "storage.conf"
    containers_conf.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        f'events_logfile_path = "{run_dir}/events.log"\n'
        f'tmp_dir = "{run_dir}/libpod"\n'
        f'helper_binaries_dir = ["{NETAVARK_DIR}", "/usr/lib/podman", "/usr/libexec/podman"]\n'
        "[network]\n"
        'network_backend = "netavark"\n'
        f'network_config_dir = "{PODMAN_DIR}/networks"\n'
        # Away from podman's default 10.88.0.0/16 and 10.89.0.0/16, which a podman with
        # the system's settings (the CNI backend) may use on this machine at the same time.
        f'default_subnet = "{DEFAULT_SUBNET}"\n'
        f'default_subnet_pools = [{{"base" = "{SUBNET_POOL}", "size" = 24}}]\n'
    )
    storage_conf.write_text(
        "[storage]\n"
        'driver = "overlay"\n'
        f'graphroot = "{GRAPH_ROOT}"\n'
        f'runroot = "{run_dir}/storage"\n'
    )
    return {
        **os.environ,
        "CONTAINERS_CONF": str(containers_conf),
        "CONTAINERS_STORAGE_CONF": str(storage_conf),
        # podman-compose builds with podman's default format, which this makes Docker's.
        "BUILDAH_FORMAT": "docker",
    }


class Podman:
    """The podman command with the private settings; see the module docstring."""

    def __init__(self) -> None:
        if os.geteuid() != 0:
            raise PodmanUnavailable("the container tests run podman as root (as CI does)")
        missing = [name for name in ("podman", "runc") if not shutil.which(name)]
        if missing:
            raise PodmanUnavailable(f"{', '.join(missing)} not installed (make test-packages)")
        for needed in (NETAVARK_DIR / "netavark", NETAVARK_DIR / "aardvark-dns", BASE_TARBALL):
            if not needed.exists():
                raise PodmanUnavailable(f"{needed} is missing (make test-podman)")
        self.environment = _environment()

    def run(
        self, *arguments: str | Path, timeout: float = 120.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.command("podman", *arguments, timeout=timeout, check=check)

    def command(
        self, program: str, *arguments: str | Path, timeout: float = 120.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``program`` (podman, podman-compose) with the private settings."""
        return run_command([program, *arguments], self.environment, timeout, check)

    def has_image(self, name: str) -> bool:
        return self.run("image", "exists", name, check=False).returncode == 0

    def build(self, tag: str, context: Path, *options: str, file: Path | None = None) -> None:
        """Build ``context`` (its Dockerfile, or ``file``) as ``tag``; podman's layer cache
        makes a rebuild of unchanged sources take seconds."""
        self.run(
            "build",
            "--format",
            "docker",
            "--volume",
            f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro",
            "--tag",
            tag,
            *(("--file", str(file)) if file else ()),
            *options,
            context,
            timeout=BUILD_TIMEOUT,
        )

    def base_image(self) -> str:
        """``debian:bookworm-slim``, imported from the cached tarball once per storage."""
        if not self.has_image(DEBIAN_IMAGE):
            self.run("import", BASE_TARBALL, DEBIAN_IMAGE, timeout=300)
        return DEBIAN_IMAGE

    def stand_in(self, tag: str, containerfile: str) -> str:
        """``tag`` built from tests/containers/``containerfile`` on the base image."""
        self.base_image()
        self.build(tag, CONTAINERS_DIR, file=CONTAINERS_DIR / containerfile)
        return tag

    def exporter_image(self) -> str:
        """The project's Dockerfile, built on the Python stand-in, as docker-compose.yml
        names it."""
        python = self.stand_in(PYTHON_IMAGE, "python.Containerfile")
        self.build(EXPORTER_IMAGE, ROOT, "--build-arg", f"PYTHON_IMAGE={python}")
        return EXPORTER_IMAGE

    @contextmanager
    def container(
        self, image: str, *options: str, arguments: tuple[str, ...] = ()
    ) -> Iterator[str]:
        """A container of ``image`` started in the background; its name. It is removed at
        the end, its log shown in the failure when it stopped on its own."""
        name = f"mail-exporter-test-{uuid.uuid4().hex[:12]}"
        self.run("run", "--detach", "--name", name, *options, image, *arguments)
        try:
            yield name
        finally:
            self.run("rm", "--force", "--time", "2", name, check=False)

    def wait_healthy(self, name: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run the container's HEALTHCHECK (no systemd schedules it) until it passes, or
        return the last failure after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            check = self.run("healthcheck", "run", name, check=False)
            if check.returncode == 0 or time.monotonic() > deadline:
                return check
            time.sleep(1)


def run_command(
    command: list[str | Path], environment: dict[str, str], timeout: float, check: bool
) -> subprocess.CompletedProcess[str]:
    """``command`` run from the checkout; with ``check``, a failure names it and shows
    what it said."""
    done = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        check=False,
        cwd=ROOT,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, command))} exited {done.returncode}:\n"
            f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    return done
