"""The deployment files: the Dockerfile, the compose demo stack and the systemd unit.

tests/test_image.py and tests/test_demo_stack.py build and run the image and the stack
with podman; these tests check the files themselves, each in seconds: the Dockerfile's
instructions, and that its HEALTHCHECK command really tells a running exporter from a
stopped one; that every file the compose stack mounts or builds from exists; and that
each program of the stack accepts its config as mounted:
Prometheus (``promtool check config``, with the shipped rules where the config expects
them), Alertmanager (``amtool check-config``), the exporter (``check-config``, with its
password secret and the demo CA in place), Postfix (``postconf``) and Dovecot
(``doveconf``). The demo CA script runs for real and its certificates verify the way the
exporter verifies them. The systemd unit goes through ``systemd-analyze verify`` (with
its drop-in) and its user through ``systemd-sysusers`` in a scratch root.
"""

from __future__ import annotations

import configparser
import functools
import json
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from mail_exporter.tls_facts import verify_chain
from tests.served import served_exporter

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "docker-compose.yml"
SYSTEMD_DIR = ROOT / "deploy" / "systemd"
UNIT = SYSTEMD_DIR / "mail-exporter.service"
SMART_DROP_IN = SYSTEMD_DIR / "mail-exporter-smart.conf"
DEFAULT_FILE = SYSTEMD_DIR / "mail-exporter.default"
SYSUSERS = SYSTEMD_DIR / "mail-exporter.sysusers"
MAKE_DEMO_CERTS = ROOT / "deploy" / "compose" / "certs" / "make-demo-certs"
CONTAINERS_DOC = ROOT / "docs" / "containers.md"

CONFIG_PATH = "/etc/mail-exporter/mail_exporter.yml"
EXPORTER_PORT = 9469


def _binary(name: str, package: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} is missing: apt-get install {package}"
    return path


def _run(*command: str | Path, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --- Dockerfile -----------------------------------------------------------------------


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    assert not pending, f"{path} ends inside a continued line"
    return instructions


def dockerfile_values(keyword: str, path: Path = DOCKERFILE) -> list[str]:
    return [arguments for name, arguments in dockerfile_instructions(path) if name == keyword]


def copied_sources(path: Path = DOCKERFILE) -> list[str]:
    """What the Dockerfile's COPY instructions copy from its build context, in order."""
    sources = []
    for arguments in dockerfile_values("COPY", path):
        words = [w for w in arguments.split() if not w.startswith("--")]
        sources += words[:-1]
    return sources


def healthcheck_command() -> list[str]:
    """The HEALTHCHECK's command, in exec form."""
    (healthcheck,) = dockerfile_values("HEALTHCHECK")
    options, separator, command = healthcheck.partition(" CMD ")
    assert separator, "HEALTHCHECK needs a CMD"
    assert "--timeout=5s" in options.split()
    parsed = json.loads(command)
    assert isinstance(parsed, list)
    return [str(part) for part in parsed]


def test_dockerfile_builds_a_wheel_and_installs_it_in_a_slim_non_root_stage() -> None:
    instructions = dockerfile_instructions()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in {f"{k} {v}" for k, v in instructions}
    stages = dockerfile_values("FROM")
    assert stages == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    final_stage = instructions[[k for k, _ in instructions].index("FROM", 2) :]
    build_stage = instructions[: len(instructions) - len(final_stage)]
    assert any(k == "RUN" and "pip wheel" in v and "/wheels ." in v for k, v in build_stage)
    # The project's wheel is built with its log parse compiled, by a compiler the build
    # stage alone installs (tests/test_image.py checks the image imports the compiled ones).
    (wheel,) = [v for k, v in build_stage if k == "RUN" and "pip wheel" in v]
    assert wheel.startswith("MAIL_EXPORTER_COMPILE=1 ")
    assert any(k == "RUN" and " gcc " in v for k, v in build_stage)
    assert not any(k == "RUN" and "gcc" in v for k, v in final_stage)
    # The final stage installs the project (the README's pip install) from those wheels only.
    (install,) = [v for k, v in final_stage if k == "RUN" and "pip install" in v]
    assert "from=build" in install
    assert "--no-index --find-links /wheels mail-exporter" in install
    assert not any(k == "COPY" and "--from=build" in v for k, v in final_stage)

    (user,) = dockerfile_values("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    assert any(f"useradd --system --uid {uid} " in v for k, v in final_stage if k == "RUN")
    assert dockerfile_values("EXPOSE") == [str(EXPORTER_PORT)]
    assert dockerfile_values("VOLUME") == ['["/etc/mail-exporter"]']
    (entrypoint,) = dockerfile_values("ENTRYPOINT")
    assert json.loads(entrypoint) == [
        "mail-exporter",
        "--config.file",
        CONFIG_PATH,
        "--web.listen-address",
        f":{EXPORTER_PORT}",
    ]
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"] and f"127.0.0.1:{EXPORTER_PORT}/-/healthy" in command[2]


def _dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(excludes, pattern) per line, in order; Docker's syntax for what this file uses."""
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.removeprefix("!").strip("/")
        regex = ""
        for part in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            regex += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                part, re.escape(part)
            )
        rules.append((not negated, re.compile(regex)))
    return rules


def in_build_context(path: str) -> bool:
    """Whether .dockerignore leaves ``path`` in the build context (the last match wins; a
    pattern matching a parent directory matches everything below it)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for excludes, pattern in _dockerignore_rules():
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            excluded = excludes
    return not excluded


def test_build_context_holds_what_the_dockerfile_copies_and_little_else() -> None:
    sources = copied_sources()
    assert sources, "the Dockerfile copies the project"
    for source in sources:
        assert (ROOT / source).exists(), source
        assert in_build_context(source.rstrip("/")), f".dockerignore leaves out {source}"
    # The package's readme (pyproject.toml) must be there, or the wheel does not build.
    assert "README.md" in sources
    for module in (ROOT / "mail_exporter").rglob("*.py"):
        assert in_build_context(str(module.relative_to(ROOT)))
    for outside in (".venv/bin/python", ".git/config", "tests/test_deploy.py", "bench/harness.py",
                    "deploy/compose/postfix/main.cf", "mail_exporter/__pycache__/cli.cpython-311.pyc"):  # fmt: skip
        assert not in_build_context(outside), outside


def _healthcheck_status(port: int) -> int:
    """Exit status of the Dockerfile's HEALTHCHECK command, aimed at ``port``."""
    program, flag, code = healthcheck_command()
    assert program == "python" and flag == "-c"
    assert code.count(f":{EXPORTER_PORT}/") == 1
    aimed = code.replace(f":{EXPORTER_PORT}/", f":{port}/")
    status = subprocess.run(
        [sys.executable, "-c", aimed], capture_output=True, timeout=10, check=False
    )
    return status.returncode


def test_healthcheck_command_tells_a_running_exporter_from_a_stopped_one(tmp_path: Path) -> None:
    config = tmp_path / "mail_exporter.yml"
    config.write_text("global: {interval: 30s}\n")
    with served_exporter(tmp_path, config) as served:
        assert _healthcheck_status(served.port) == 0, served.stderr()
    assert _healthcheck_status(served.port) != 0, "the exporter is gone: the check must fail"


# --- the compose demo stack -----------------------------------------------------------


@functools.cache
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name}"
    result: dict[str, Any] = services[name]
    return result


@dataclass(frozen=True)
class Mount:
    kind: str  # bind, volume or secret
    source: str  # a path relative to the compose file, or a named volume
    target: str


def mounts(name: str) -> list[Mount]:
    """The service's mounts: short-syntax volumes, and secrets at /run/secrets/NAME."""
    found = []
    for entry in service(name).get("volumes", []):
        assert isinstance(entry, str), "short syntax (SOURCE:TARGET[:ro]) only"
        source, target, *_ = entry.split(":")
        kind = "bind" if source.startswith((".", "/")) else "volume"
        found.append(Mount(kind, source, target))
    for secret in service(name).get("secrets", []):
        found.append(
            Mount("secret", compose()["secrets"][secret]["file"], f"/run/secrets/{secret}")
        )
    return found


def materialize(name: str, root: Path, volumes: dict[str, Path] | None = None) -> None:
    """Lay the service's mounts out under ``root`` as the container sees them: bind mounts
    and secrets copied from the repository, named volumes from ``volumes`` (else empty)."""
    for mount in mounts(name):
        destination = root / mount.target.lstrip("/")
        destination.parent.mkdir(parents=True, exist_ok=True)
        if mount.kind == "volume":
            source = (volumes or {}).get(mount.source)
            if source is None:
                destination.mkdir(exist_ok=True)
            else:
                shutil.copytree(source, destination, dirs_exist_ok=True)
        elif (COMPOSE_FILE.parent / mount.source).is_dir():
            shutil.copytree(COMPOSE_FILE.parent / mount.source, destination, dirs_exist_ok=True)
        else:
            shutil.copy(COMPOSE_FILE.parent / mount.source, destination)


def relocate(value: Any, root: Path, targets: list[str]) -> Any:
    """``value`` with every absolute path under one of the mount ``targets`` moved under ``root``."""
    if isinstance(value, dict):
        return {key: relocate(item, root, targets) for key, item in value.items()}
    if isinstance(value, list):
        return [relocate(item, root, targets) for item in value]
    if isinstance(value, str) and any(
        value == t or value.startswith(t.rstrip("/") + "/") for t in targets
    ):
        return str(root) + value
    return value


def flag_value(name: str, flag: str) -> str:
    """``--flag=VALUE`` from the service's command."""
    values = [
        str(part).split("=", 1)[1]
        for part in service(name)["command"]
        if str(part).startswith(f"{flag}=")
    ]
    assert len(values) == 1, f"{name} needs exactly one {flag}"
    return values[0]


def test_compose_file_has_the_demo_services() -> None:
    services = compose()["services"]
    assert {"mail-exporter", "postfix", "dovecot", "prometheus", "alertmanager", "grafana"} <= set(
        services
    )
    assert service("mail-exporter")["build"] == ".", "the exporter is built from the Dockerfile"
    for name, definition in services.items():
        for dependency in definition.get("depends_on", []):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        # Published only on loopback: nothing of the demo faces the network.
        for port in definition.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port}"
        for volume in (m.source for m in mounts(name) if m.kind == "volume"):
            assert volume in compose()["volumes"], f"{name} mounts undeclared volume {volume}"
    assert "127.0.0.1:9469:9469" in service("mail-exporter")["ports"]


def test_everything_the_stack_mounts_or_builds_from_exists() -> None:
    for name, definition in compose()["services"].items():
        for mount in mounts(name):
            if mount.kind != "volume":
                assert (COMPOSE_FILE.parent / mount.source).exists(), f"{name}: {mount.source}"
        if "build" not in definition:
            assert ":" in definition["image"], f"{name}: pin the image's version"
            continue
        context = COMPOSE_FILE.parent / definition["build"]
        dockerfile = context / "Dockerfile"
        assert dockerfile.is_file(), f"{name}: {dockerfile}"
        for source in copied_sources(dockerfile):
            assert (context / source).exists(), f"{name}: COPY {source}"
        conditions = {d: c.get("condition") for d, c in definition.get("depends_on", {}).items()} \
            if isinstance(definition.get("depends_on"), dict) else {}  # fmt: skip
        for dependency, condition in conditions.items():
            if condition == "service_healthy":
                built = compose()["services"][dependency]["build"]
                healthchecks = dockerfile_values(
                    "HEALTHCHECK", COMPOSE_FILE.parent / built / "Dockerfile"
                )
                assert healthchecks or "healthcheck" in compose()["services"][dependency]


def test_compose_prometheus_config_passes_promtool_with_the_shipped_rules(tmp_path: Path) -> None:
    promtool = _binary("promtool", "prometheus")
    materialize("prometheus", tmp_path)
    config_path = tmp_path / flag_value("prometheus", "--config.file").lstrip("/")
    check = _run(promtool, "check", "config", config_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: " in check.stdout and " rules found" in check.stdout

    # The rule file Prometheus loads is the shipped one, as mounted.
    config = yaml.safe_load(config_path.read_text())
    (rule_file,) = config["rule_files"]
    loaded = (config_path.parent / rule_file).resolve()
    assert loaded.read_text() == (ROOT / "alerting" / "mail_exporter.rules.yml").read_text()
    # It scrapes the exporter as the job the rules expect, and alerts the stack's Alertmanager.
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["mail"]["static_configs"] == [{"targets": [f"mail-exporter:{EXPORTER_PORT}"]}]
    assert 'up{job=~"mail|mail_probe.*"} == 0' in loaded.read_text()
    (alertmanagers,) = config["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"] == [{"targets": ["alertmanager:9093"]}]
    assert "127.0.0.1:9093:9093" in service("alertmanager")["ports"]


def test_compose_alertmanager_config_passes_amtool_and_routes_as_shipped(tmp_path: Path) -> None:
    amtool = _binary("amtool", "prometheus-alertmanager")
    materialize("alertmanager", tmp_path)
    config_path = tmp_path / flag_value("alertmanager", "--config.file").lstrip("/")
    check = _run(amtool, "check-config", config_path)
    assert check.returncode == 0, check.stdout + check.stderr
    # The shipped routing and inhibitions; receivers of the same names that send nothing
    # (no fake keys, no failing notifications).
    demo = yaml.safe_load(config_path.read_text())
    shipped = yaml.safe_load((ROOT / "alerting" / "alertmanager.yml").read_text())
    assert demo["route"] == shipped["route"]
    assert demo["inhibit_rules"] == shipped["inhibit_rules"]
    assert demo["receivers"] == [{"name": r["name"]} for r in shipped["receivers"]]


@pytest.fixture(scope="module")
def demo_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the certs service writes into the certs volume."""
    directory = tmp_path_factory.mktemp("volumes") / "certs"
    made = _run("sh", MAKE_DEMO_CERTS, directory)
    assert made.returncode == 0, made.stdout + made.stderr
    return directory


def test_demo_certificates_verify_for_the_service_names(demo_certs: Path) -> None:
    assert sorted(p.name for p in demo_certs.iterdir()) == [
        "ca.pem", "dovecot.key", "dovecot.pem", "postfix.key", "postfix.pem",
    ]  # fmt: skip
    for name in ("postfix", "dovecot"):
        assert (demo_certs / f"{name}.key").stat().st_mode & 0o077 == 0
        leaf = x509.load_pem_x509_certificate((demo_certs / f"{name}.pem").read_bytes())
        assert verify_chain([leaf], name, str(demo_certs / "ca.pem")) is None
        assert verify_chain([leaf], "mail.example.com", str(demo_certs / "ca.pem")) is not None
    # A second run (a restarted stack) keeps them.
    before = (demo_certs / "ca.pem").read_bytes()
    again = _run("sh", MAKE_DEMO_CERTS, demo_certs)
    assert again.returncode == 0 and "kept" in again.stdout
    assert (demo_certs / "ca.pem").read_bytes() == before


def test_compose_exporter_config_passes_check_config(tmp_path: Path, demo_certs: Path) -> None:
    root = tmp_path / "root"
    materialize("mail-exporter", root, {"certs": demo_certs})
    mounted = root / CONFIG_PATH.lstrip("/")
    document = yaml.safe_load(mounted.read_text())
    targets = [m.target for m in mounts("mail-exporter")]
    relocated = tmp_path / "mail_exporter.yml"
    relocated.write_text(json.dumps(relocate(document, root, targets)))  # JSON is YAML
    check = _run(sys.executable, "-m", "mail_exporter", "check-config", relocated)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "OK (6 modules, 6 targets, " in check.stdout

    # Every file the config names is one the container has: mounted, a secret or a volume.
    def paths(value: Any) -> Iterator[str]:
        if isinstance(value, dict):
            for item in value.values():
                yield from paths(item)
        elif isinstance(value, list):
            for item in value:
                yield from paths(item)
        elif isinstance(value, str) and value.startswith("/"):
            yield value

    for path in paths(document):
        assert relocate(path, root, targets) != path, f"{path} is not in the container"
    # Servers are addressed by service name, the name their certificates carry.
    for target in document["targets"]:
        host = target["address"].rsplit(":", 1)[0]
        assert host in compose()["services"] and (demo_certs / f"{host}.pem").exists()


def test_compose_exporter_reads_the_postfix_queue_as_the_image_user_in_postdrop() -> None:
    """The exporter's service keeps the image's uid and takes the postfix service's postdrop
    group, which may ask the showq socket of the spool volume they share."""
    uid, _, gid = service("mail-exporter")["user"].partition(":")
    assert uid == dockerfile_values("USER")[0].partition(":")[0]
    postfix_dockerfile = COMPOSE_FILE.parent / service("postfix")["build"] / "Dockerfile"
    assert any(
        f"groupadd --system --gid {gid} postdrop" in run
        for run in dockerfile_values("RUN", postfix_dockerfile)
    )
    assert "postfix-spool:/var/spool/postfix" in service("postfix")["volumes"]
    assert "postfix-spool:/var/spool/postfix:ro" in service("mail-exporter")["volumes"]


def test_demo_postfix_config_is_accepted_by_postconf(tmp_path: Path) -> None:
    postconf = _binary("postconf", "postfix")
    source = COMPOSE_FILE.parent / service("postfix")["build"]
    (tmp_path / "main.cf").write_text((source / "main.cf").read_text())
    shutil.copy(source / "master.cf", tmp_path / "master.cf")
    checks = {option: _run(postconf, "-c", tmp_path, option) for option in ("-n", "-M", "-P")}
    for check in checks.values():
        # postconf exits 0 on unknown settings, but warns about each on stderr.
        assert check.returncode == 0 and check.stderr == "", check.stderr
    lines = checks["-n"].stdout.splitlines()
    settings = {
        name.strip(): value.strip() for name, _, value in (line.partition("=") for line in lines)
    }
    assert settings["virtual_transport"] == "lmtp:inet:dovecot:24"
    assert settings["smtpd_sasl_path"] == "inet:dovecot:12345"
    assert settings["maillog_file"] == "/var/log/mail/mail.log"
    assert "mail-logs:/var/log/mail:ro" in service("mail-exporter")["volumes"]


def test_demo_dovecot_config_is_accepted_by_doveconf(tmp_path: Path, demo_certs: Path) -> None:
    doveconf = _binary("doveconf", "dovecot-core")
    source = COMPOSE_FILE.parent / service("dovecot")["build"] / "dovecot.conf"
    # The certificates are read while parsing: point at the demo CA's, as mounted.
    assert any(m.target == "/certs" for m in mounts("dovecot"))
    config = tmp_path / "dovecot.conf"
    config.write_text(source.read_text().replace("</certs/", f"<{demo_certs}/"))
    check = _run(doveconf, "-c", config, "-n")
    assert check.returncode == 0, check.stderr
    assert check.stderr == ""
    for port in (24, 110, 143, 993, 995, 12345):
        assert f"port = {port}\n" in check.stdout


def test_containers_doc_snippets_mount_what_their_configs_read(tmp_path: Path) -> None:
    """docs/containers.md: its exporter configs pass check-config, and each of its compose
    services runs the image from a read-only config, with a group to ask Postfix's showq,
    and mounts (read-only) the queue directory the configs name."""
    blocks = re.findall(r"```yaml\n(.*?)```", CONTAINERS_DOC.read_text(), re.DOTALL)
    documents = [yaml.safe_load(textwrap.dedent(block)) for block in blocks]
    configs = [d for d in documents if "collectors" in d]
    services = [d.get("services", d)["mail-exporter"] for d in documents if "collectors" not in d]
    assert len(configs) == 2 and len(services) == 2
    queue_directories = set()
    for number, config in enumerate(configs):
        path = tmp_path / f"config{number}.yml"
        path.write_text(json.dumps(config))
        check = _run(sys.executable, "-m", "mail_exporter", "check-config", path)
        assert check.returncode == 0, check.stdout + check.stderr
        for instance in config["collectors"]["postfix_queue"]["instances"]:
            queue_directories.add(instance["queue_directory"])
    for definition in services:
        assert definition["image"] == service("mail-exporter")["image"]
        assert definition["group_add"]
        targets = {}
        for volume in definition["volumes"]:
            _, target, options = volume.split(":")
            assert options == "ro", volume
            targets[target] = volume
        assert CONFIG_PATH in targets
        assert queue_directories <= set(targets)
        assert all(port.startswith("127.0.0.1:") for port in definition["ports"])


def test_grafana_gets_the_shipped_dashboards_and_the_stack_prometheus() -> None:
    grafana = {m.source: m.target for m in mounts("grafana")}
    provider_dir = grafana["./grafana/provisioning/dashboards"]
    assert provider_dir == "/etc/grafana/provisioning/dashboards"
    provider = yaml.safe_load(
        (ROOT / "grafana/provisioning/dashboards/mail_exporter.yml").read_text()
    )
    (dashboards,) = provider["providers"]
    assert dashboards["options"]["path"] == grafana["./grafana/dashboards"]
    home = service("grafana")["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (
        ROOT / "grafana/dashboards" / Path(home).relative_to(grafana["./grafana/dashboards"])
    ).is_file()

    # The shipped data source, with the stack's Prometheus as its URL.
    (source,) = [s for s, t in grafana.items() if t == "/etc/grafana/provisioning/datasources"]
    (demo,) = yaml.safe_load(next((COMPOSE_FILE.parent / source).glob("*.yml")).read_text())[
        "datasources"
    ]
    (shipped,) = yaml.safe_load(
        (ROOT / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    assert demo["url"] == "http://prometheus:9090"
    assert {**demo, "url": shipped["url"]} == shipped
    prometheus = yaml.safe_load(
        (COMPOSE_FILE.parent / "deploy/compose/prometheus/prometheus.yml").read_text()
    )
    assert demo["jsonData"]["timeInterval"] == prometheus["global"]["scrape_interval"]


# --- systemd --------------------------------------------------------------------------


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_systemd_unit_runs_hardened_as_its_own_user_with_the_debian_paths() -> None:
    service_section = unit()["Service"]
    assert shlex.split(service_section["ExecStart"])[1:4] == ["--config.file", CONFIG_PATH, "$ARGS"]
    assert service_section["EnvironmentFile"] == "-/etc/default/mail-exporter"
    assert service_section["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service_section["Restart"] == "on-failure"
    assert service_section["User"] == "mail-exporter"
    assert service_section["StateDirectory"] == "mail-exporter"
    expected = {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "read-only",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes", "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "RestrictNamespaces": "yes",
        "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native", "CapabilityBoundingSet": "",
    }  # fmt: skip
    assert {key: service_section.get(key) for key in expected} == expected
    # The services collector must see other users' processes.
    assert "ProtectProc" not in service_section
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_unit_installs_as_docs_running_says() -> None:
    guide = (ROOT / "docs" / "running.md").read_text()
    unit = (ROOT / "deploy" / "systemd" / "mail-exporter.service").read_text()
    guide_steps = [
        line.split("#")[0].strip()
        for line in guide.splitlines()
        if line.startswith(("python3 -m venv", "/opt/mail-exporter/bin/pip"))
    ]
    unit_steps = [
        line.removeprefix("#").split("#")[0].strip()
        for line in unit.splitlines()
        if line.lstrip("# ").startswith(("python3 -m venv", "/opt/mail-exporter/bin/pip"))
    ]
    assert len(guide_steps) == 2 and guide_steps == unit_steps


def test_systemd_unit_and_smart_drop_in_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = _binary("systemd-analyze", "systemd")
    # verify insists that ExecStart's program exists: the virtualenv's, as in /opt.
    installed = shlex.split(unit()["Service"]["ExecStart"])[0]
    assert installed == "/opt/mail-exporter/bin/mail-exporter"
    here = Path(sys.executable).parent / "mail-exporter"
    assert here.is_file(), "the project is installed in the test virtualenv"
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(installed, str(here)))
    check = _run(analyze, "verify", "--man=no", copy)
    # Unknown or misspelt settings are warnings on stderr, with exit status 0.
    assert check.returncode == 0 and check.stderr == "", check.stderr

    drop_ins = tmp_path / f"{UNIT.name}.d"
    drop_ins.mkdir()
    shutil.copy(SMART_DROP_IN, drop_ins / "smart.conf")
    check = _run(analyze, "verify", "--man=no", copy)
    assert check.returncode == 0 and check.stderr == "", check.stderr
    smart = configparser.ConfigParser(interpolation=None)
    smart.optionxform = str  # type: ignore[assignment,method-assign]
    smart.read(SMART_DROP_IN)
    assert smart["Service"]["NoNewPrivileges"] == "no"
    assert "CAP_SYS_RAWIO" in smart["Service"]["CapabilityBoundingSet"].split()


def test_environment_file_sets_args_for_a_shell_and_for_systemd() -> None:
    shown = _run("sh", "-c", f'. "{DEFAULT_FILE}" && printf "%s" "${{ARGS-unset}}"')
    assert shown.returncode == 0 and shown.stdout == ""
    assignments = [
        line for line in DEFAULT_FILE.read_text().splitlines() if not line.startswith("#")
    ]
    assert assignments == ['ARGS=""']


def test_sysusers_makes_the_user_a_member_of_postdrop_and_adm(tmp_path: Path) -> None:
    sysusers = _binary("systemd-sysusers", "systemd")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\nadm:x:4:\npostdrop:x:106:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\nadm:*::\npostdrop:*::\n")
    made = _run(sysusers, f"--root={tmp_path}", SYSUSERS)
    assert made.returncode == 0, made.stderr
    passwd = {
        line.split(":")[0]: line.split(":") for line in (etc / "passwd").read_text().splitlines()
    }
    user = passwd["mail-exporter"]
    assert 0 < int(user[2]) < 1000 and user[5] == "/nonexistent" and user[6] == "/usr/sbin/nologin"
    groups = {
        line.split(":")[0]: line.split(":")[3].split(",")
        for line in (etc / "group").read_text().splitlines()
    }
    assert "mail-exporter" in groups["postdrop"] and "mail-exporter" in groups["adm"]
    assert unit()["Service"]["User"] == "mail-exporter"
