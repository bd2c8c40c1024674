"""The collector framework: flags over config, failures and hangs contained, always reported."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

import pytest
from prometheus_client.core import GaugeMetricFamily, Metric

from mail_exporter import collectors
from mail_exporter.collectors import (
    CollectorError,
    CollectorSet,
    enabled_collectors,
    register_collector,
)
from mail_exporter.config import Config


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
    monkeypatch.setattr(collectors, "COLLECTORS", {})
    register_collector("working", "test")(lambda config: _Working())
    register_collector("broken", "test")(lambda config: _Broken())
    register_collector("hanging", "test")(lambda config: _Hanging(release))


def samples(families: Iterable[Metric]) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("collector", "")): sample.value
        for family in families
        for sample in family.samples
    }


@pytest.mark.usefixtures("registered")
def test_flags_win_over_config() -> None:
    config = Config()
    assert enabled_collectors(config, {}) == []
    assert enabled_collectors(config, {"working": True}) == ["working"]
    assert enabled_collectors(config, {"working": True, "broken": False}) == ["working"]


@pytest.mark.usefixtures("registered")
def test_failures_and_hangs_are_contained(caplog: pytest.LogCaptureFixture) -> None:
    collector_set = CollectorSet(Config(), {"working": True, "broken": True, "hanging": True})
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

    monkeypatch.setattr(collectors, "COLLECTORS", {})
    register_collector("first", "test")(lambda config: _Queue("postfix"))
    register_collector("second", "test")(lambda config: _Queue("exim"))
    collector_set = CollectorSet(Config(), {"first": True, "second": True})
    try:
        families = [f for f in collector_set.collect() if f.name == "mail_queue_messages"]
    finally:
        collector_set.close()
    assert len(families) == 1
    assert sorted(s.labels["mta"] for s in families[0].samples) == ["exim", "postfix"]


@pytest.mark.usefixtures("registered")
def test_each_collector_reports_its_own_duration(release: threading.Event) -> None:
    """The hanging collector comes first: an instant one read after it is not charged its wait."""
    collector_set = CollectorSet(Config(), {"hanging": True, "working": True})
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
    monkeypatch.setattr(collectors, "COLLECTORS", {})
    monkeypatch.setattr(StatefulCollector, "built", 0)
    for name in ("backups", "sensors", "services"):
        register_collector(name, "test")(lambda config: StatefulCollector())


def stateful_collectors(collector_set: CollectorSet) -> dict[str, StatefulCollector]:
    running = collector_set.collectors
    found = {name: found for name, found in running.items() if isinstance(found, StatefulCollector)}
    assert found.keys() == running.keys()
    return found


def sections(backups: str, sensors: bool, services: bool = True) -> Config:
    return Config.model_validate({
        "collectors": {
            "backups": {"enabled": True, "backups": [{"name": backups, "path": "/var/backups/*"}]},
            "sensors": {"enabled": sensors},
            "services": {"enabled": services},
        }
    })  # fmt: skip


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
