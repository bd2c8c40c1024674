"""The collector framework: flags over config, failures and hangs contained, always reported;
scrapes at once share collections; a hung collector never holds up the exporter's exit."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from mail_exporter.collectors import base
from mail_exporter.collectors.base import (
    COLLECTORS,
    CollectorError,
    CollectorSet,
    enabled_collectors,
    register_collector,
)
from mail_exporter.config.collectors import CollectorSection, CollectorSections
from mail_exporter.config.root import Config
from mail_exporter.exposition import RenderedFamily, registry_parts
from tests.served import Reply, Served, get, served_exporter


class _Working:
    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("mail_test_value", "A test value.", value=7.0)


class _Broken:
    def collect(self) -> Iterable[Metric]:
        raise CollectorError("cannot read /var/spool/test: permission denied")


class _Hanging:
    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def collect(self) -> Iterable[Metric]:
        self.release.wait(30)
        return []


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch, release: threading.Event) -> None:
    monkeypatch.setattr(base, "COLLECTORS", {})
    register_collector("working", "test", CollectorSection)(lambda section, previous: _Working())
    register_collector("broken", "test", CollectorSection)(lambda section, previous: _Broken())
    register_collector("hanging", "test", CollectorSection)(
        lambda section, previous: _Hanging(release)
    )


def samples(families: Iterable[Metric]) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("collector", "")): sample.value
        for family in families
        for sample in family.samples
    }


def test_every_collector_has_its_section_and_every_section_its_collector() -> None:
    sections = Config.model_fields["collectors"].annotation.model_fields
    assert list(sections) == list(COLLECTORS)
    for name, spec in COLLECTORS.items():
        assert sections[name].annotation is spec.section, name
        assert getattr(Config().collectors, name) == spec.section(), name


# Runs the command line with one collector module left out, as when it is missing from
# the collectors package's import list: an empty module stands in for it.
LEFT_OUT = """
import sys, types
sys.modules["mail_exporter.collectors.sensors"] = types.ModuleType("mail_exporter.collectors.sensors")
from mail_exporter.cli import main
main(sys.argv[1:])
"""


def test_a_section_whose_collector_is_not_registered_is_a_config_error(tmp_path: Path) -> None:
    """Nothing registers its section, so switching it on is an unknown key, reported with
    its line by check-config (and so refused at start and at reloads, which read the file
    the same way), not a switch that silently does nothing."""
    config = tmp_path / "config.yml"
    config.write_text("collectors:\n  backups: {enabled: false}\n  sensors:\n    enabled: true\n")
    left_out = subprocess.run(
        [sys.executable, "-c", LEFT_OUT, "check-config", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert left_out.returncode == 1, left_out.stderr
    assert left_out.stderr.splitlines()[1:] == [
        "  collectors.sensors (line 3): unknown key: there is no collector sensors"
    ]
    complete = subprocess.run(
        [sys.executable, "-m", "mail_exporter", "check-config", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert complete.returncode == 0, complete.stderr


@pytest.mark.usefixtures("registered")
def test_flags_win_over_config() -> None:
    config = Config()
    assert enabled_collectors(config.collectors, {}) == []
    assert enabled_collectors(config.collectors, {"working": True}) == ["working"]
    assert enabled_collectors(config.collectors, {"working": True, "broken": False}) == ["working"]


@pytest.mark.usefixtures("registered")
def test_failures_and_hangs_are_contained(caplog: pytest.LogCaptureFixture) -> None:
    collector_set = CollectorSet(
        Config().collectors, {"working": True, "broken": True, "hanging": True}
    )
    collector_set.timeouts["hanging"] = 0.2
    try:
        first = samples(collector_set.collect())
        assert first[("mail_test_value", "")] == 7.0
        assert first[("mail_exporter_collector_success", "working")] == 1.0
        assert first[("mail_exporter_collector_success", "broken")] == 0.0
        assert first[("mail_exporter_collector_success", "hanging")] == 0.0
        assert first[("mail_exporter_collector_duration_seconds", "hanging")] < 5.0
        assert "permission denied" in caplog.text
        assert "no result within 0.2s" in caplog.text
        second = samples(collector_set.collect())  # the hung one is not started twice
        assert second[("mail_exporter_collector_success", "hanging")] == 0.0
        assert "previous collection is still running" in caplog.text
        assert caplog.text.count("permission denied") == 1  # said once while it lasts
    finally:
        collector_set.close()


def test_families_of_the_same_name_merge(monkeypatch: pytest.MonkeyPatch) -> None:
    class _Queue:
        def __init__(self, mta: str) -> None:
            self.mta = mta

        def collect(self) -> Iterable[Metric]:
            family = GaugeMetricFamily("mail_queue_messages", "Messages.", labels=["mta"])
            family.add_metric([self.mta], 3.0)
            yield family

    monkeypatch.setattr(base, "COLLECTORS", {})
    register_collector("first", "test", CollectorSection)(
        lambda section, previous: _Queue("postfix")
    )
    register_collector("second", "test", CollectorSection)(lambda section, previous: _Queue("exim"))
    collector_set = CollectorSet(Config().collectors, {"first": True, "second": True})
    try:
        families = [f for f in collector_set.collect() if f.name == "mail_queue_messages"]
    finally:
        collector_set.close()
    assert len(families) == 1
    assert sorted(s.labels["mta"] for s in families[0].samples) == ["exim", "postfix"]


def test_a_rendered_family_keeps_its_text_unless_another_collector_shares_its_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def family(name: str, mta: str) -> Metric:
        found = GaugeMetricFamily(name, "Messages.", labels=["mta"])
        found.add_metric([mta], 3.0)
        return found

    alone = RenderedFamily(family("mail_test_alone", "postfix"))
    shared = RenderedFamily(family("mail_queue_messages", "postfix"))
    other = family("mail_queue_messages", "exim")
    monkeypatch.setattr(base, "COLLECTORS", {})
    register_collector("first", "test", CollectorSection)(
        lambda section, previous: _Families([alone, shared])
    )
    register_collector("second", "test", CollectorSection)(
        lambda section, previous: _Families([other])
    )
    collector_set = CollectorSet(Config().collectors, {"first": True, "second": True})
    try:
        families = {f.name: f for f in collector_set.collect()}
    finally:
        collector_set.close()
    assert families["mail_test_alone"] is alone
    merged = families["mail_queue_messages"]
    assert sorted(s.labels["mta"] for s in merged.samples) == ["exim", "postfix"]
    assert len(shared.samples) == 1  # the collector's own family is left as it was
    parts = list(registry_parts(_Families(list(families.values()))))
    assert alone.part in [part for _, part in parts] and shared.part not in [p for _, p in parts]
    assert b"".join(text for text, _ in parts) == generate_latest(
        _Families(list(families.values()))
    )


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


@pytest.mark.usefixtures("registered")
def test_each_collector_reports_its_own_duration(release: threading.Event) -> None:
    """The hanging collector comes first: an instant one read after it is not charged its wait."""
    collector_set = CollectorSet(Config().collectors, {"hanging": True, "working": True})
    collector_set.timeouts["hanging"] = 0.2
    try:
        first = samples(collector_set.collect())
        waited = first[("mail_exporter_collector_duration_seconds", "hanging")]
        instant = first[("mail_exporter_collector_duration_seconds", "working")]
        assert first[("mail_exporter_collector_success", "hanging")] == 0.0
        assert first[("mail_exporter_collector_success", "working")] == 1.0
        assert instant < waited
        # Still running at the next scrape: how long it has been waited for, which only grows.
        second = samples(collector_set.collect())
        assert second[("mail_exporter_collector_duration_seconds", "hanging")] > waited
        assert second[("mail_exporter_collector_duration_seconds", "working")] < waited
    finally:
        collector_set.close()


class StatefulCollector:
    """Counts its collections (state a reload must keep) and whether it was closed."""

    built = 0

    def __init__(self) -> None:
        StatefulCollector.built += 1
        self.collections = 0
        self.closed = False

    def collect(self) -> Iterable[Metric]:
        self.collections += 1
        yield GaugeMetricFamily("mail_test_collections", "Collections.", value=self.collections)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def stateful(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stateful collectors under real section names, so that config changes reach them."""
    monkeypatch.setattr(base, "COLLECTORS", {})
    monkeypatch.setattr(StatefulCollector, "built", 0)
    for name in ("backups", "sensors", "services"):
        register_collector(name, "test", CollectorSection)(
            lambda section, previous: StatefulCollector()
        )


def stateful_collectors(collector_set: CollectorSet) -> dict[str, StatefulCollector]:
    running = collector_set.collectors
    found = {name: found for name, found in running.items() if isinstance(found, StatefulCollector)}
    assert found.keys() == running.keys()
    return found


def sections(backups: str, sensors: bool, services: bool = True) -> CollectorSections:
    return Config.model_validate({
        "collectors": {
            "backups": {"enabled": True, "backups": [{"name": backups, "path": "/var/backups/*"}]},
            "sensors": {"enabled": sensors},
            "services": {"enabled": services},
        }
    }).collectors  # fmt: skip


@pytest.mark.usefixtures("stateful")
def test_apply_keeps_unchanged_collectors_and_their_state() -> None:
    collector_set = CollectorSet(sections("mail", sensors=True), {})
    try:
        before = stateful_collectors(collector_set)
        list(collector_set.collect())
        assert StatefulCollector.built == 3
        collector_set.apply(sections("mail", sensors=True))  # the same file, read again
        assert stateful_collectors(collector_set) == before
        assert StatefulCollector.built == 3
        list(collector_set.collect())
        assert before["backups"].collections == 2

        collector_set.apply(sections("mail-weekly", sensors=False))
        after = stateful_collectors(collector_set)
        assert set(after) == {"backups", "services"}
        assert after["backups"] is not before["backups"] and StatefulCollector.built == 4
        assert after["services"] is before["services"] and not after["services"].closed
        assert before["backups"].closed and before["sensors"].closed
        assert samples(collector_set.collect())[("mail_exporter_collector_success", "backups")] == 1
    finally:
        collector_set.close()


@pytest.mark.usefixtures("stateful")
def test_a_flag_keeps_a_collector_whatever_its_enabled_key() -> None:
    """A collector switched on by its flag (its section says no) is kept like any other."""
    collector_set = CollectorSet(sections("mail", sensors=False), {"sensors": True})
    try:
        sensors = collector_set.collectors["sensors"]
        collector_set.apply(sections("mail", sensors=False))
        assert collector_set.collectors["sensors"] is sensors
    finally:
        collector_set.close()


class _Slow:
    def collect(self) -> Iterable[Metric]:
        time.sleep(0.5)
        yield GaugeMetricFamily("mail_test_value", "A test value.", value=7.0)


def test_concurrent_scrapes_share_one_collection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "COLLECTORS", {})
    register_collector("slow", "test", CollectorSection)(lambda section, previous: _Slow())
    collector_set = CollectorSet(Config().collectors, {"slow": True})
    results: list[dict[tuple[str, str], float]] = []
    start = threading.Barrier(2)

    def scrape() -> None:
        start.wait()
        results.append(samples(collector_set.collect()))

    scrapes = [threading.Thread(target=scrape) for _ in range(2)]
    try:
        for thread in scrapes:
            thread.start()
        for thread in scrapes:
            thread.join(10)
    finally:
        collector_set.close()
    assert len(results) == 2
    for found in results:
        assert found[("mail_exporter_collector_success", "slow")] == 1.0
        assert found[("mail_test_value", "")] == 7.0


def exim_section(tmp_path: Path, script: str, timeout: str) -> dict[str, object]:
    """An exim_queue collector without a spool, so that it runs ``script`` (as ``exim -bpc``)."""
    command = tmp_path / "exim"
    command.write_text(f"#!/bin/sh\n{script}\n")
    command.chmod(0o755)
    return {
        "enabled": True,
        "timeout": timeout,
        "spool_directory": str(tmp_path / "no-spool"),
        "exim_command": [str(command)],
    }


def write_config(tmp_path: Path, sections: dict[str, object]) -> Path:
    config = tmp_path / "config.yml"
    config.write_text(json.dumps({"collectors": sections}))  # JSON is YAML
    return config


def wait_for(path: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while not path.exists():
        assert process.poll() is None, "the exporter exited"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


class _Threads:
    """Records the thread of each of its collections."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def collect(self) -> Iterable[Metric]:
        self.threads.append(threading.current_thread())
        return []


def test_a_collectors_thread_is_kept_from_scrape_to_scrape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each collector's collections run in one thread of its own, started by the first scrape
    and kept for the next ones; switching the collector off ends it, and so does closing."""
    monkeypatch.setattr(base, "COLLECTORS", {})
    made: dict[str, _Threads] = {}
    for name in ("first", "second"):
        register_collector(name, "test", CollectorSection)(
            lambda section, previous, name=name: made.setdefault(name, _Threads())
        )
    collector_set = CollectorSet(Config().collectors, {"first": True, "second": True})
    try:
        for _ in range(3):
            list(collector_set.collect())
        first, second = made["first"].threads, made["second"].threads
        assert len(set(first)) == 1 and len(set(second)) == 1 and first[0] is not second[0]
        assert first[0].name == "collector first" and first[0].daemon
        collector_set.flags = {"first": True, "second": False}
        collector_set.apply(Config().collectors)
        second[0].join(10)
        assert not second[0].is_alive() and first[0].is_alive()
    finally:
        collector_set.close()
    first[0].join(10)
    assert not first[0].is_alive()


def test_concurrent_scrapes_over_http_both_get_the_collection(tmp_path: Path) -> None:
    """The second scrape arrives while the first one's collection runs: both report it.
    (Should the second arrive after the release, it makes a collection of its own, which
    answers at once: the test does not depend on timing to pass.)"""
    started, release = tmp_path / "started", tmp_path / "release"
    script = f"touch {started}; while [ ! -e {release} ]; do sleep 0.05; done; echo 3"
    config = write_config(tmp_path, {"exim_queue": exim_section(tmp_path, script, "20s")})
    replies: list[Reply] = []
    with served_exporter(tmp_path, config) as served:

        def scrape() -> None:
            replies.append(get(served.port, "/metrics"))

        first = threading.Thread(target=scrape)
        first.start()
        wait_for(started, served.process)
        second = threading.Thread(target=scrape)
        second.start()
        time.sleep(0.5)  # time for the second request to reach the exporter
        release.touch()
        first.join(20)
        second.join(20)
    assert len(replies) == 2
    for reply in replies:
        assert reply.status == 200
        assert 'mail_exporter_collector_success{collector="exim_queue"} 1.0' in reply.body
        assert 'mail_queue_messages{mta="exim",mta_instance="exim",queue="input"} 3.0' in reply.body


def stop(served: Served) -> None:
    """SIGTERM; the process must end with status 0 (killed, and the test failed, after 30s)."""
    served.process.send_signal(signal.SIGTERM)
    try:
        served.process.wait(30)
    except subprocess.TimeoutExpired:
        served.process.kill()
        pytest.fail(f"the exporter still ran 30s after SIGTERM:\n{served.stderr()}")
    assert served.process.returncode == 0, served.stderr()


def test_spool_fifos_and_link_cycles_neither_hang_nor_hold_up_the_exit(tmp_path: Path) -> None:
    """A FIFO in Exim's spool (a plain open would wait for a writer for ever) is skipped, a
    tree with link cycles is scanned once: both collectors answer, and the process exits at
    SIGTERM. A collector that is really stuck is the next test's."""
    spool = tmp_path / "exim" / "input"
    spool.mkdir(parents=True)
    os.mkfifo(spool / "1xX72l-0007Qa-1d-H")
    tree = tmp_path / "backups"
    (tree / "daily").mkdir(parents=True)
    (tree / "daily" / "mail.tar.zst").write_bytes(b"x")
    (tree / "daily" / "prev").symlink_to("..")
    (tree / "weekly").mkdir()
    (tree / "weekly" / "prev").symlink_to("..")
    config = write_config(tmp_path, {
        "exim_queue": {"enabled": True, "timeout": "1s", "spool_directory": str(spool.parent)},
        "backups": {"enabled": True, "timeout": "1s", "backups": [{"name": "tree", "path": str(tree)}]},
    })  # fmt: skip
    with served_exporter(tmp_path, config) as served:
        body = get(served.port, "/metrics").body
        stop(served)
    assert 'mail_exporter_collector_success{collector="exim_queue"} 1.0' in body
    assert 'mail_queue_messages{mta="exim",mta_instance="exim",queue="input"} 0.0' in body
    assert 'mail_exporter_collector_success{collector="backups"} 1.0' in body
    assert 'mail_host_backup_files{backup="tree"} 1.0' in body


def test_a_scrape_waiting_for_a_hung_collector_does_not_hold_up_the_exit(tmp_path: Path) -> None:
    """SIGTERM during a scrape that would wait a minute for its collector: the exporter
    exits within its grace period and says what it did not wait for."""
    pid_file = tmp_path / "exim.pid"
    script = f"echo $$ > {pid_file}; exec sleep 120"
    config = write_config(tmp_path, {"exim_queue": exim_section(tmp_path, script, "60s")})
    try:
        with served_exporter(tmp_path, config) as served:

            def scrape() -> None:
                with contextlib.suppress(OSError):  # the exporter exits without answering
                    get(served.port, "/metrics")

            threading.Thread(target=scrape, daemon=True).start()
            wait_for(pid_file, served.process)
            stop(served)
            assert "exiting without waiting for" in served.stderr()
            assert "collector exim_queue" in served.stderr()
    finally:
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
