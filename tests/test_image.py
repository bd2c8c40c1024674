"""The project's Dockerfile built with podman (tests/podman.py) and run as users run it.

The image serves /-/healthy and /metrics on the port it publishes (here on 127.0.0.1
only), its HEALTHCHECK passes when ``podman healthcheck run`` runs it, the exporter runs
as the image's unprivileged uid, and a config directory mounted read-only, with a
password file the image's group may read, is all it needs. Without a config, or with a
password file only root can read, it exits at once and says which file is at fault.
tests/test_deploy.py checks the Dockerfile's instructions without building it.
"""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.compiled import SHOW_MODULE_FILES, module_names
from tests.podman import Podman
from tests.realservers.runtime import free_port
from tests.test_deploy import CONFIG_PATH, EXPORTER_PORT, dockerfile_values

pytestmark = pytest.mark.integration

# The uid and gid the Dockerfile's USER names.
IMAGE_UID, IMAGE_GID = (int(part) for part in dockerfile_values("USER")[0].split(":"))

CONFIG = """\
modules:
  imap:
    protocol: imap
    tls: implicit
    auth: {username: probe@example.com, password_file: /etc/mail-exporter/probe.pass}
"""


def _get(url: str, timeout: float = 60.0) -> tuple[int, str]:
    """The status and body of ``url``, retried until it answers or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except (urllib.error.URLError, ConnectionError) as error:
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer: {error}") from error
            time.sleep(0.5)


def _config_dir(tmp_path: Path, password_mode: int, password_gid: int) -> Path:
    """A config directory as docs tell users to lay it out: the config readable by all,
    the password file by root and the group ``password_gid`` (if ``password_mode`` lets)."""
    directory = tmp_path / "mail-exporter"
    directory.mkdir()
    (directory / "mail_exporter.yml").write_text(CONFIG)
    password = directory / "probe.pass"
    password.write_text("a password\n")
    password.chmod(password_mode)
    os.chown(password, 0, password_gid)
    return directory


def _process_ids(podman: Podman, name: str) -> tuple[int, int]:
    """The real uid and gid of the container's main process, as the host sees them."""
    pid = podman.run("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
    status = Path(f"/proc/{pid}/status").read_text()
    uid = re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE)
    gid = re.search(r"^Gid:\s+(\d+)", status, re.MULTILINE)
    assert uid and gid, status
    return int(uid[1]), int(gid[1])


def test_image_serves_as_its_own_user_from_a_read_only_config_with_a_password_file(
    tmp_path: Path, podman: Podman, exporter_image: str
) -> None:
    config = _config_dir(tmp_path, 0o640, IMAGE_GID)
    port = free_port()
    with podman.container(
        exporter_image,
        "--publish", f"127.0.0.1:{port}:{EXPORTER_PORT}",
        "--volume", f"{config}:{Path(CONFIG_PATH).parent}:ro",
    ) as name:  # fmt: skip
        status, body = _get(f"http://127.0.0.1:{port}/-/healthy")
        assert status == 200, body
        status, metrics = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "mail_exporter_build_info{" in metrics
        # The config (and its password file) loaded: the module is there to probe with.
        assert "mail_exporter_config_last_reload_successful 1.0" in metrics
        check = podman.wait_healthy(name)
        assert check.returncode == 0, check.stdout + check.stderr
        assert _process_ids(podman, name) == (IMAGE_UID, IMAGE_GID)
        assert IMAGE_UID != 0 and IMAGE_GID != 0


def test_image_runs_the_compiled_log_parse(podman: Podman, exporter_image: str) -> None:
    """The Dockerfile builds the wheel with MAIL_EXPORTER_COMPILE=1: every module
    build_support lists is imported from its compiled extension, not its source."""
    modules = module_names()
    run = podman.run(
        "run", "--rm", "--entrypoint", "python", exporter_image, "-c", SHOW_MODULE_FILES,
        *modules, timeout=60,
    )  # fmt: skip
    files = run.stdout.split()
    assert len(files) == len(modules), run.stdout + run.stderr
    for module, file in zip(modules, files, strict=True):
        assert file.endswith(".so"), (module, file)


def test_image_without_a_config_exits_at_once_naming_the_file(
    podman: Podman, exporter_image: str
) -> None:
    run = podman.run("run", "--rm", exporter_image, check=False, timeout=60)
    assert run.returncode != 0
    assert f"{CONFIG_PATH}: 1 problem(s)\n  cannot read file: No such file or directory" in (
        run.stderr
    ), run.stderr


def test_image_refuses_a_password_file_its_user_cannot_read(
    tmp_path: Path, podman: Podman, exporter_image: str
) -> None:
    config = _config_dir(tmp_path, 0o600, 0)
    run = podman.run(
        "run", "--rm", "--volume", f"{config}:{Path(CONFIG_PATH).parent}:ro", exporter_image,
        check=False, timeout=60,
    )  # fmt: skip
    assert run.returncode != 0
    assert (
        "/etc/mail-exporter/probe.pass" in run.stderr and "Permission denied" in run.stderr
    ), run.stderr
