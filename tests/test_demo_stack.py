"""The compose demo stack (docker-compose.yml) started with podman-compose and watched
until it works: every probe of the exporter and its round trip succeed, Prometheus has
loaded the shipped rules and scrapes every target, and Alertmanager is ready.

Everything runs from the compose file as users run it, with four differences that this
machine imposes, each kept to the test:

- Grafana is left out: it has no Debian package and no registry is reachable, so its
  image cannot be had here. tests/test_deploy.py checks what it is given.
- The images the file pulls from registries (prom/prometheus, prom/alertmanager) are
  stand-ins built from Debian's packages (tests/containers/) and tagged with the file's
  names; the exporter's image is the Dockerfile built on a stand-in for python:3.11-slim,
  and the demo's own images (certs, Postfix, Dovecot) build from their Dockerfiles on a
  stand-in for debian:bookworm-slim (tests/podman.py).
- Debian's podman-compose 1.0.3 ignores the file's top-level ``name``, so the project
  name is passed to it; and it does not wait for ``depends_on`` conditions: Dovecot and
  Postfix may start before the certs service has written the certificates, and their
  restart policy brings them back once it has (the test waits for that).
- The web interfaces are published on 127.0.0.1 as the file says, so the test needs
  ports 9469, 9090 and 9093 of this host's loopback free, and fails at once if not.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import yaml

from tests.conftest import _require_binary
from tests.podman import Podman
from tests.realservers.runtime import LOOPBACK_ADDRESSES, _bindable
from tests.test_deploy import ROOT, compose, service

pytestmark = pytest.mark.integration

# The services that run here: all but Grafana (see the module docstring).
SERVICES = ("certs", "dovecot", "postfix", "mail-exporter", "prometheus", "alertmanager")
STAND_INS = {"prometheus": "prometheus.Containerfile", "alertmanager": "alertmanager.Containerfile"}
# The round trip runs every 60 s (deploy/compose/mail-exporter/mail_exporter.yml), and the
# first one may meet a Dovecot still waiting for its certificates: two rounds and more.
STACK_TIMEOUT = 300.0

T = TypeVar("T")


def _published_ports() -> list[int]:
    ports = []
    for name in SERVICES:
        for port in service(name).get("ports", []):
            address, host_port, _ = port.split(":")
            assert address == "127.0.0.1", f"{name} publishes {port}"
            ports.append(int(host_port))
    return ports


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
        return text


def _eventually(
    stack: Podman, check: Callable[[], T], what: str, timeout: float = STACK_TIMEOUT
) -> T:
    """``check()``'s result once it stops raising AssertionError (or the server stops
    refusing); after ``timeout`` seconds a failure with its last complaint and the state
    and last log lines of each of the stack's containers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, urllib.error.URLError, ConnectionError) as error:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what}, after {timeout:.0f} s: {error}\n{_containers_report(stack)}"
                ) from error
            time.sleep(2)


def _containers_report(stack: Podman) -> str:
    label = f"label=io.podman.compose.project={compose()['name']}"
    listed = stack.run("ps", "--all", "--filter", label, "--format", "{{.Names}} {{.Status}}")
    report = [listed.stdout]
    for line in listed.stdout.splitlines():
        name = line.split()[0]
        logs = stack.run("logs", "--tail", "15", name, check=False)
        report.append(f"--- {name}\n{logs.stdout}{logs.stderr}")
    return "\n".join(report)


def _samples(metrics: str, name: str) -> dict[str, float]:
    """``name``'s samples: label text to value."""
    pattern = re.compile(rf"^{name}(\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    return {labels or "": float(value) for labels, value in pattern.findall(metrics)}


@pytest.fixture(scope="module")
def demo_stack(podman: Podman, exporter_image: str) -> Iterator[Podman]:
    """The stack up (all services but Grafana); down, with its volumes, at the end."""
    _require_binary("podman-compose")
    project = ("--project-name", compose()["name"], "--file", str(ROOT / "docker-compose.yml"))

    def down() -> None:
        podman.command("podman-compose", *project, "down", "--volumes", timeout=120, check=False)
        # Anonymous volumes (the images' VOLUME lines) outlive `down --volumes`.
        podman.run("volume", "prune", "--force", check=False)

    # What an interrupted run left: podman-compose would start its containers as they were.
    down()
    busy = [p for p in _published_ports() if not all(_bindable(a, p) for a in LOOPBACK_ADDRESSES)]
    assert not busy, f"the demo publishes ports {busy} on loopback, and they are taken"
    assert service("mail-exporter")["image"] == exporter_image
    for name, containerfile in STAND_INS.items():
        podman.stand_in(service(name)["image"], containerfile)
    # The demo's own images (certs, Postfix, Dovecot), built here rather than by
    # podman-compose, which builds only missing images: the layer cache keeps the
    # rebuild of unchanged sources to seconds, and a changed source is never run stale.
    for name in SERVICES:
        if "build" in service(name) and name != "mail-exporter":
            podman.build(service(name)["image"], ROOT / service(name)["build"])
    try:
        podman.command("podman-compose", *project, "up", "--detach", *SERVICES, timeout=300)
        yield podman
    finally:
        down()


def test_demo_exporter_probes_every_server_and_completes_the_round_trip(
    demo_stack: Podman,
) -> None:
    exporter = yaml.safe_load((ROOT / "deploy/compose/mail-exporter/mail_exporter.yml").read_text())
    targets = {target["name"] for target in exporter["targets"]}

    def all_succeed() -> str:
        metrics = _get_text("http://127.0.0.1:9469/metrics")
        probes = _samples(metrics, "mail_probe_success")
        succeeded = {t for t in targets if any(f'target="{t}"' in k and v == 1 for k, v in probes.items())}  # fmt: skip
        assert succeeded == targets, f"probes not (yet) succeeding: {targets - succeeded}"
        roundtrips = _samples(metrics, "mail_roundtrip_success")
        assert roundtrips and all(v == 1 for v in roundtrips.values()), roundtrips
        return metrics

    metrics = _eventually(demo_stack, all_succeed, "the demo's probes and round trip")
    # Postfix's log, read from the volume the postfix service writes it to: the round
    # trip's submission is in it.
    (source,) = exporter["collectors"]["logs"]["sources"]
    assert _samples(metrics, "mail_log_source_up")[f'{{source="{source["path"]}"}}'] == 1
    logins = _samples(metrics, "mail_logins_total")
    assert any('service="submission/smtpd"' in k and v >= 1 for k, v in logins.items()), logins
    # Postfix's queues, through the showq socket on the shared spool volume.
    queues = _samples(metrics, "mail_queue_collect_success")
    assert queues == {'{mta="postfix",mta_instance="postfix"}': 1}, queues
    sources = _samples(metrics, "mail_queue_source_info")
    assert sources == {'{mta="postfix",mta_instance="postfix",source="showq"}': 1}, sources


def test_demo_prometheus_loads_the_shipped_rules_and_scrapes_every_target(
    demo_stack: Podman,
) -> None:
    shipped = yaml.safe_load((ROOT / "alerting/mail_exporter.rules.yml").read_text())
    shipped_rules = {
        rule.get("alert") or rule.get("record") for group in shipped["groups"] for rule in group["rules"]
    }  # fmt: skip

    def rules_loaded() -> None:
        groups = _get_json("http://127.0.0.1:9090/api/v1/rules")["data"]["groups"]
        loaded = {rule["name"] for group in groups for rule in group["rules"]}
        assert loaded == shipped_rules, shipped_rules ^ loaded
        assert all(g["file"] == "/etc/prometheus/rules/mail_exporter.rules.yml" for g in groups)

    def targets_up() -> None:
        active = _get_json("http://127.0.0.1:9090/api/v1/targets")["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in active}
        assert health == {"mail": "up", "prometheus": "up", "alertmanager": "up"}, active

    _eventually(demo_stack, rules_loaded, "Prometheus's rules")
    _eventually(demo_stack, targets_up, "Prometheus's targets")


def test_demo_alertmanager_is_ready_with_the_demo_routing(demo_stack: Podman) -> None:
    _eventually(
        demo_stack, lambda: _get_text("http://127.0.0.1:9093/-/ready"), "Alertmanager's readiness"
    )
    status = _get_json("http://127.0.0.1:9093/api/v2/status")
    config = yaml.safe_load(status["config"]["original"])
    shipped = yaml.safe_load((ROOT / "deploy/compose/alertmanager/alertmanager.yml").read_text())
    assert config["route"]["receiver"] == shipped["route"]["receiver"]
    assert [r["name"] for r in config["receivers"]] == [r["name"] for r in shipped["receivers"]]
