"""Sharded /probe scraping, as docs/scaling.md shows it: a real Prometheus runs
examples/scaling/prometheus.yml against two real exporter replicas (each with
examples/scaling/mail_exporter.yml) and twenty scripted SMTP servers on loopback.

Only what cannot work on a test machine changes in the Prometheus config: the replicas'
addresses (loopback ports), the intervals (1 s) and the target list (the twenty servers).
Every target must be probed, by exactly one replica, and both replicas must get some.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.scripted import scripted_server, smtp_script
from tests.served import served_exporter, served_prometheus

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = ROOT / "examples" / "scaling"
PROMETHEUS_CONFIG = EXAMPLE_DIR / "prometheus.yml"
AGENT_CONFIG = EXAMPLE_DIR / "prometheus-agent.yml"
REPLICA_CONFIG = EXAMPLE_DIR / "mail_exporter.yml"
GUIDE = ROOT / "docs" / "scaling.md"
TARGET_COUNT = 20
DEADLINE_SECONDS = 30.0


class LoopbackSMTPServers:
    """``count`` scripted SMTP servers on 127.0.0.1, each on a port of its own, served by an
    event loop in a background thread."""

    def __init__(self, count: int) -> None:
        self.addresses: list[str] = []
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete,
                                        args=(self._serve(count),), daemon=True)  # fmt: skip
        self._thread.start()
        assert self._ready.wait(10), "the scripted SMTP servers did not start"

    async def _serve(self, count: int) -> None:
        self._stop = asyncio.Event()
        handler = smtp_script(
            ["220 mx.test.local ESMTP"], ["250-mx.test.local", "250 SIZE 10240000"]
        )
        async with AsyncExitStack() as stack:
            for _ in range(count):
                self.addresses.append(await stack.enter_async_context(scripted_server(handler)))
            self._ready.set()
            await self._stop.wait()

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def smtp_servers() -> Iterator[list[str]]:
    servers = LoopbackSMTPServers(TARGET_COUNT)
    try:
        yield servers.addresses
    finally:
        servers.close()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.load(response)


def wait_for(check: Callable[[], bool], what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not check():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in logs if p.exists())
            pytest.fail(f"{what} did not happen within {DEADLINE_SECONDS:.0f}s\n{tails}")
        time.sleep(0.25)


def replica_address_rules(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for rule in job["relabel_configs"] if rule.get("target_label") == "__address__"]


def for_this_machine(config: dict[str, Any], replica_ports: dict[str, int]) -> dict[str, Any]:
    """The example config with the replicas on loopback ports and 1 s intervals."""
    config["global"].update(scrape_interval="1s", scrape_timeout="1s")
    for job in config["scrape_configs"]:
        (rule,) = replica_address_rules(job)
        rule["replacement"] = f"127.0.0.1:{replica_ports[rule['replacement']]}"
    return config


def test_the_guide_shows_the_example_files() -> None:
    guide = GUIDE.read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", guide, flags=re.DOTALL)
    for example in (PROMETHEUS_CONFIG, REPLICA_CONFIG):
        assert example.read_text() in blocks, f"docs/scaling.md must show {example.name} as it is"
        assert str(example.relative_to(ROOT)) in guide


def test_example_configs_are_valid_and_the_agent_runs_shard_0(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: apt-get install prometheus"
    for flags, config in (([], PROMETHEUS_CONFIG), (["--agent"], AGENT_CONFIG)):
        check = subprocess.run([promtool, "check", "config", *flags, str(config)],
                               capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
    replica = subprocess.run([sys.executable, "-m", "mail_exporter", "check-config", str(REPLICA_CONFIG)],
                             capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert replica.returncode == 0, replica.stdout + replica.stderr

    server = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    agent = yaml.safe_load(AGENT_CONFIG.read_text())
    assert agent["scrape_configs"] == server["scrape_configs"][:1]
    assert agent["global"]["scrape_interval"] == server["global"]["scrape_interval"]
    assert agent["remote_write"][0]["url"].endswith("/api/v1/push")
    # Every job shards by the same modulus, keeps a shard of its own and probes a module
    # the replicas have.
    modules = set(yaml.safe_load(REPLICA_CONFIG.read_text())["modules"])
    shards = []
    for job in server["scrape_configs"]:
        rules = job["relabel_configs"]
        (hashmod,) = [r for r in rules if r.get("action") == "hashmod"]
        assert hashmod["source_labels"] == ["__param_target"]
        assert hashmod["modulus"] == len(server["scrape_configs"])
        (keep,) = [r for r in rules if r.get("action") == "keep"]
        assert keep["source_labels"] == [hashmod["target_label"]]
        shards.append(keep["regex"])
        assert set(job["params"]["module"]) <= modules
    assert sorted(shards) == [str(n) for n in range(len(shards))]


def test_twenty_targets_are_sharded_between_two_replicas(
    tmp_path: Path,
    smtp_servers: list[str],
    exit_stack: ExitStack,
) -> None:
    assert (
        shutil.which("prometheus") is not None
    ), "prometheus is missing: apt-get install prometheus"
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    replicas = sorted({rule["replacement"] for job in config["scrape_configs"]
                       for rule in replica_address_rules(job)})  # fmt: skip
    assert len(replicas) == 2
    # Each replica holds its port before the Prometheus config names it (tests/served.py).
    exporters = {replica: exit_stack.enter_context(served_exporter(tmp_path, REPLICA_CONFIG))
                 for replica in replicas}  # fmt: skip
    ports = {replica: exporter.port for replica, exporter in exporters.items()}
    # The example's file_sd path, relative to the config, now lists the twenty servers.
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "loopback.yml").write_text(json.dumps([{"targets": smtp_servers}]))
    prometheus_config = tmp_path / "prometheus.yml"
    running_config = for_this_machine(copy.deepcopy(config), ports)
    prometheus_config.write_text(json.dumps(running_config))  # JSON is YAML
    prometheus = exit_stack.enter_context(served_prometheus(tmp_path, prometheus_config))
    logs = [exporter.log for exporter in exporters.values()] + [prometheus.log]
    api = f"http://127.0.0.1:{prometheus.port}/api/v1"

    def probe_series() -> list[dict[str, Any]]:
        query = urllib.parse.quote('mail_probe_success{job="mail_probe"}')
        try:
            result: list[dict[str, Any]] = get_json(f"{api}/query?query={query}")["data"]["result"]
        except OSError:
            return []
        return result

    # Prometheus applies discovered targets on a 5 s tick: the first probes come after it.
    wait_for(lambda: {s["metric"]["instance"] for s in probe_series()} == set(smtp_servers),
             f"a probe of each of the {TARGET_COUNT} targets", logs)  # fmt: skip

    # Each target has one series, from one replica, and its probe passed.
    series = probe_series()
    assert len(series) == TARGET_COUNT
    exporter_of = {s["metric"]["instance"]: s["metric"]["exporter"] for s in series}
    # Named like a scheduled probe's target, for the per-server dashboard and the alerts.
    assert all(s["metric"]["target"] == s["metric"]["instance"] for s in series), series
    assert all(s["value"][1] == "1" for s in series), series
    # Where Prometheus actually sent each target's scrape: one active target per server,
    # at the replica its exporter label names; the other shard dropped it.
    targets = get_json(f"{api}/targets")["data"]
    active = [t for t in targets["activeTargets"] if t["labels"]["job"] == "mail_probe"]
    assert sorted(t["labels"]["instance"] for t in active) == sorted(smtp_servers)
    # Each job names its replica twice: its address, and the exporter label it adds.
    replica_port = {}
    for job in running_config["scrape_configs"]:
        (address,) = replica_address_rules(job)
        (label,) = [r for r in job["relabel_configs"] if r.get("target_label") == "exporter"]
        replica_port[label["replacement"]] = int(address["replacement"].rsplit(":", 1)[1])
    for target in active:
        url = urllib.parse.urlsplit(target["scrapeUrl"])
        assert url.path == "/probe"
        assert urllib.parse.parse_qs(url.query)["target"] == [target["labels"]["instance"]]
        assert url.port == replica_port[exporter_of[target["labels"]["instance"]]]
        assert target["labels"]["exporter"] == exporter_of[target["labels"]["instance"]]
    assert len(targets["droppedTargets"]) == TARGET_COUNT * (len(replicas) - 1)
    # Both replicas have work.
    shares = {name: list(exporter_of.values()).count(name) for name in replica_port}
    assert all(share > 0 for share in shares.values()), shares
