"""Reloads of a running exporter never move a log counter backwards nor count a line twice.

Driven as a user would: a config file, ``POST /-/reload`` and ``/metrics`` over HTTP,
while a writer appends to the log the whole time. Some reloads change the logs section
(its collector is rebuilt and takes over from its predecessor), some do not (it is kept).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from mail_exporter.exporter import Exporter
from mail_exporter.web import make_app

LINE = "Jan 12 10:00:00 mail postfix/smtpd[1]: connect from host[192.0.2.1]\n"
CONNECTIONS = ("mail_smtpd_connections_total", {"mta": "postfix", "service": "smtpd"})
PARSED = ("mail_log_lines_total", {"mta": "postfix", "result": "parsed"})


class Writer:
    """Appends a line to the log every few milliseconds until stopped; counts them."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.written = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with self.log.open("a") as file:
            while not self._stop.wait(0.005):
                file.write(LINE)
                file.flush()
                self.written += 1

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def value(text: str, wanted: tuple[str, dict[str, str]]) -> float:
    """The sample's value; 0 while the family has no such series yet."""
    name, labels = wanted
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return 0.0


def write_config(path: Path, log: Path, **logs: object) -> None:
    section = {"enabled": True, "poll_interval": "20ms", "sources": [{"path": str(log)}], **logs}
    path.write_text(json.dumps({"collectors": {"logs": section}}))  # JSON is YAML


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[TestClient[object, object], Exporter]]:
    log, config = tmp_path / "mail.log", tmp_path / "config.yml"
    log.touch()
    write_config(config, log)
    exporter = Exporter(config, {})
    client: TestClient[object, object] = TestClient(TestServer(make_app(exporter)))
    await client.start_server()
    exporter.start()
    try:
        yield client, exporter
    finally:
        exporter.stop()
        await client.close()


async def scrape(client: TestClient[object, object]) -> str:
    response = await client.get("/metrics")
    assert response.status == 200
    return await response.text()


async def reload(client: TestClient[object, object]) -> None:
    response = await client.post("/-/reload")
    assert response.status == 200, await response.text()


async def test_reloads_never_move_a_counter_back_nor_count_a_line_twice(
    tmp_path: Path, served: tuple[TestClient[object, object], Exporter]
) -> None:
    client, _ = served
    log, config = tmp_path / "mail.log", tmp_path / "config.yml"
    source_up = ("mail_log_source_up", {"source": str(log)})
    deadline = time.monotonic() + 20
    while value(await scrape(client), source_up) != 1.0:  # reading from the end from now on
        assert time.monotonic() < deadline, "the log source never came up"
        await asyncio.sleep(0.05)
    seen: list[tuple[float, float]] = []

    async def observe() -> None:
        text = await scrape(client)
        seen.append((value(text, CONNECTIONS), value(text, PARSED)))

    changes: list[dict[str, object]] = [
        {"top_domains": 5},  # changed: rebuilt
        {"top_domains": 5},  # the same section: kept
        {"top_domains": 5, "poll_interval": "30ms"},  # changed again
        {"top_domains": 5, "poll_interval": "30ms", "timeout": "5s"},
        {"top_domains": 5, "poll_interval": "30ms", "timeout": "5s"},
        {},  # back to the first one
    ]
    with Writer(log) as writer:
        await asyncio.sleep(0.2)
        for change in changes:
            await observe()
            write_config(config, log, **change)
            await reload(client)
            await observe()
            await asyncio.sleep(0.2)
    deadline = time.monotonic() + 20
    while seen[-1][0] < writer.written:
        assert time.monotonic() < deadline, f"counted {seen[-1]}, written {writer.written}"
        await asyncio.sleep(0.05)
        await observe()
    await asyncio.sleep(0.3)  # nothing more may come: a line counted twice would show now
    await observe()
    assert seen[-1] == (writer.written, writer.written)
    for earlier, later in itertools.pairwise(seen):
        assert later[0] >= earlier[0] and later[1] >= earlier[1], seen
