"""Reloads and the background work: scheduled probes and round trips go on across them.

A reload that leaves a target or a route as it was must not cancel its probe or attempt in
flight, nor move its beat; a changed one restarts, a removed one stops, and a new
``global.concurrency`` applies to the probes in flight as well as to the next ones.
"""

from __future__ import annotations

import asyncio
import select
import signal
import socket
import socketserver
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mail_exporter.config.root import parse_config
from mail_exporter.exporter import Exporter
from mail_exporter.roundtrip import runner as runner_module
from mail_exporter.roundtrip.outcome import Stage
from mail_exporter.scheduler import Scheduler
from tests import test_roundtrip_runner
from tests.served import get, served_exporter
from tests.test_roundtrip_runner import ROUTE, FakeServer, tagged
from tests.test_roundtrip_runner import config as route_config

SLOW_BANNER_SECONDS = 1.5

fake_mail = test_roundtrip_runner.server
"""The round-trip runner tests' fake submission server and mailbox, as fixture ``fake_mail``."""


class _SlowSmtp(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, banner_delay: float) -> None:
        super().__init__(("127.0.0.1", 0), _SlowSmtpSession)
        self.banner_delay = banner_delay
        self.lock = threading.Lock()
        self.open = 0
        self.most_open = 0
        self.completed = 0
        self.dropped = 0
        """Sessions the client left before saying QUIT: probes cut short."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def count(self, opened: int) -> None:
        with self.lock:
            self.open += opened
            self.most_open = max(self.most_open, self.open)


class _SlowSmtpSession(socketserver.StreamRequestHandler):
    """An SMTP server that takes its time to greet, then answers EHLO and QUIT."""

    server: _SlowSmtp

    def handle(self) -> None:
        self.server.count(+1)
        try:
            self._converse()
        except OSError:
            self._end(completed=False)
        finally:
            self.server.count(-1)

    def _converse(self) -> None:
        readable, _, _ = select.select([self.connection], [], [], self.server.banner_delay)
        if readable and not self.connection.recv(1, socket.MSG_PEEK):
            self._end(completed=False)  # the client left before the greeting
            return
        self.wfile.write(b"220 slow.test ESMTP\r\n")
        while line := self.rfile.readline():
            verb = line.strip().split(b" ")[0].upper()
            if verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                self._end(completed=True)
                return
            self.wfile.write(b"250 slow.test\r\n" if verb in (b"EHLO", b"HELO") else b"502 no\r\n")
        self._end(completed=False)

    def _end(self, completed: bool) -> None:
        with self.server.lock:
            if completed:
                self.server.completed += 1
            else:
                self.server.dropped += 1


@contextmanager
def slow_smtp(banner_delay: float = SLOW_BANNER_SECONDS) -> Iterator[_SlowSmtp]:
    server = _SlowSmtp(banner_delay)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def samples(text: str, name: str) -> dict[str, float]:
    """``name``'s values by target in an exposition."""
    return {
        found.labels["target"]: found.value
        for family in text_string_to_metric_families(text)
        for found in family.samples
        if found.name == name
    }


def test_sighups_let_scheduled_probes_finish_and_keep_their_beat(tmp_path: Path) -> None:
    """A probe takes 1.5 s and SIGHUP comes every 0.5 s: results still arrive on the beat."""
    with slow_smtp() as smtp:
        config = tmp_path / "config.yml"
        config.write_text(
            textwrap.dedent(f"""\
                global: {{interval: 2s}}
                modules:
                  slow: {{protocol: smtp, timeout: 10s}}
                targets:
                  - {{name: slow, address: "{smtp.address}", module: slow}}
                """)
        )
        with served_exporter(tmp_path, config) as served:
            successes: set[float] = set()
            text = ""
            ends = time.monotonic() + 10
            while time.monotonic() < ends:
                served.process.send_signal(signal.SIGHUP)
                time.sleep(0.5)
                text = get(served.port, "/metrics").body
                successes |= set(
                    samples(text, "mail_probe_last_success_timestamp_seconds").values()
                )
            dropped, completed = smtp.dropped, smtp.completed  # before the exporter stops
        assert served.stderr().count("configuration reloaded") >= 10
        assert samples(text, "mail_probe_success") == {"slow": 1.0}
        assert len(successes) >= 2, "the last success did not advance across reloads"
        assert dropped == 0, "a reload cut a probe short"
        # One probe per 2 s beat, none restarted: at most one more than the beats that fit.
        assert completed <= 10 / 2 + 1


def scheduler_config(address: str, concurrency: int, timeout: str = "2s", targets: int = 4) -> str:
    entries = "".join(
        f'  - {{name: t{i}, address: "{address}", module: slow}}\n' for i in range(targets)
    )
    return (
        f"global: {{interval: 1s, concurrency: {concurrency}}}\n"
        f"modules:\n  slow: {{protocol: smtp, timeout: {timeout}}}\n"
        f"targets:\n{entries}"
    )


async def wait_until(condition: object, seconds: float = 15.0) -> None:
    assert callable(condition)
    ends = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < ends, "timed out waiting"
        await asyncio.sleep(0.05)


async def test_a_changed_target_restarts_and_a_removed_one_stops() -> None:
    with slow_smtp(banner_delay=0.2) as smtp:
        scheduler = Scheduler()
        scheduler.apply(parse_config(scheduler_config(smtp.address, 8, targets=3)))
        try:
            await wait_until(lambda: all(s.result for s in scheduler.states.values()))
            kept, changed = scheduler.states["t0"], scheduler.states["t1"]
            text = scheduler_config(smtp.address, 8, targets=2)
            text = text.replace("name: t1, ", "name: t1, interval: 3s, ")
            scheduler.apply(parse_config(text))
            assert set(scheduler.states) == {"t0", "t1"}
            assert scheduler.states["t0"] is kept
            assert scheduler.states["t1"] is not changed and scheduler.states["t1"].result is None
            assert b't2"' not in b"".join(scheduler.render())
            await wait_until(lambda: scheduler.states["t1"].result is not None)
        finally:
            scheduler.stop()


async def test_a_new_concurrency_counts_the_probes_in_flight() -> None:
    """Raising the bound lets exactly the new number run; lowering it lets the probes in
    flight end and starts no new one until they are below it."""
    with slow_smtp(banner_delay=60) as smtp:  # every probe hangs until its timeout
        scheduler = Scheduler()
        scheduler.apply(parse_config(scheduler_config(smtp.address, 2, timeout="3s")))
        try:
            await wait_until(lambda: smtp.open == 2)
            scheduler.apply(parse_config(scheduler_config(smtp.address, 3, timeout="3s")))
            await wait_until(lambda: smtp.open == 3)
            await asyncio.sleep(0.5)
            assert smtp.most_open == 3  # the two in flight kept their slots
            assert smtp.dropped == 0  # and were not cancelled
            scheduler.apply(parse_config(scheduler_config(smtp.address, 1, timeout="3s")))
            await wait_until(lambda: smtp.dropped == 3)  # the three in flight time out...
            smtp.most_open = smtp.open
            await asyncio.sleep(1.5)
            assert smtp.most_open == 1  # ...and only one runs from then on
        finally:
            scheduler.stop()


# --- round trips ---------------------------------------------------------------------------


async def test_reloads_let_round_trips_in_flight_finish(
    tmp_path: Path, fake_mail: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delivery takes 1.5 s and a reload comes every 0.5 s: attempts still succeed."""
    monkeypatch.setattr(runner_module, "FIRST_RUN_SPREAD_SECONDS", 0.0)
    fake_mail.delay = SLOW_BANNER_SECONDS
    config = tmp_path / "config.yml"
    config.write_text(
        textwrap.dedent("""\
            modules:
              submission: {protocol: smtp}
              imap: {protocol: imap, allow_plaintext_auth: true, auth: {username: p@test.local, password_env: HOME}}
            roundtrip:
              - name: loop
                interval: 2s
                timeout: 10s
                send: {address: "127.0.0.1:1", module: submission, from: p@t.local, to: p@t.local}
                receive: {address: "127.0.0.1:1", module: imap, poll_interval: 20ms}
            """)
    )
    exporter = Exporter(config, {})
    exporter.start()
    try:
        runner = exporter.roundtrip.routes["loop"]
        ends = time.monotonic() + 6
        while time.monotonic() < ends:
            await exporter.reload()
            await asyncio.sleep(0.5)
        assert exporter.roundtrip.routes["loop"] is runner
        assert runner.stats.success is True
        assert runner.stats.delivery.count >= 2
        assert fake_mail.messages == {}  # each attempt removed its message
    finally:
        exporter.stop()


async def test_a_changed_route_hands_its_messages_on_their_way_to_the_new_one(
    fake_mail: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attempt cut short by a reload that changes its route leaves its message behind:
    the route's next attempt removes it at once, and counts the one lost before as late."""
    monkeypatch.setattr(runner_module, "FIRST_RUN_SPREAD_SECONDS", 0.0)
    fake_mail.hold = True
    runners = runner_module.RoundTripRunner()
    runners.apply(route_config(timeout="1s", interval="1200ms"))
    try:
        old = runners.routes[ROUTE]
        await wait_until(lambda: old.stats.failures[Stage.TIMEOUT] == 1)  # one declared lost
        await wait_until(lambda: len(fake_mail.held) == 2)  # and the next one on its way
        runners.apply(route_config(timeout="2s", interval="60s"))  # changed: it is cut short
        fake_mail.hold = False
        fake_mail.release()  # both messages arrive now
        fake_mail.deliver(tagged("foreign", age=0))
        new = runners.routes[ROUTE]
        await wait_until(lambda: new.stats.success is not None)
        assert new.stats.success and new.stats.late == 1
        assert {found.message.token for found in fake_mail.messages.values()} == {"foreign"}
    finally:
        runners.stop()


def route_sites_config(sites: dict[str, str]) -> str:
    """Routes (name: site) to a closed port: each attempt fails at once at ``receive``."""
    entries = "".join(
        f"  - name: {name}\n    site: {site}\n    interval: 1s\n"
        '    send: {address: "127.0.0.1:1", module: submission, from: p@t.local, to: p@t.local}\n'
        '    receive: {address: "127.0.0.1:1", module: imap}\n'
        for name, site in sites.items()
    )
    return (
        "modules:\n  submission: {protocol: smtp}\n"
        "  imap: {protocol: imap, tls: implicit, auth: {username: p@t.local, password_env: HOME}}\n"
        f"roundtrip:\n{entries}"
    )


def route_series(text: str) -> tuple[dict[str, str], dict[str, float]]:
    """Each route's site from ``mail_roundtrip_route_info`` (whose value must be 1), and its
    ``receive`` failures."""
    sites, failures = {}, {}
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == "mail_roundtrip_route_info":
                assert found.value == 1.0
                sites[found.labels["route"]] = found.labels["site"]
            elif found.name == "mail_roundtrip_failures_total":
                assert "site" not in found.labels  # dashboards join on route
                if found.labels["stage"] == "receive":
                    failures[found.labels["route"]] = found.value
    return sites, failures


def test_sighup_relabels_a_route_site_without_restarting_it(tmp_path: Path) -> None:
    """The exporter process names each route's site; a SIGHUP that moves a route to another
    site shows the new one at once and keeps the route's counters going."""
    config = tmp_path / "config.yml"
    config.write_text(route_sites_config({"old": "onprem", "new": "m365"}))
    with served_exporter(tmp_path, config) as served:
        ends = time.monotonic() + 20
        sites, failures = route_series(get(served.port, "/metrics").body)
        while failures.get("new", 0.0) < 2:
            assert time.monotonic() < ends, "no failed attempt was counted"
            time.sleep(0.2)
            sites, failures = route_series(get(served.port, "/metrics").body)
        assert sites == {"old": "onprem", "new": "m365"}
        config.write_text(route_sites_config({"old": "onprem", "new": "gmail"}))
        served.process.send_signal(signal.SIGHUP)
        while sites["new"] != "gmail":
            assert time.monotonic() < ends, "the new site never showed"
            time.sleep(0.2)
            sites, after = route_series(get(served.port, "/metrics").body)
        assert sites == {"old": "onprem", "new": "gmail"}
        assert after["new"] >= failures["new"], "the route started over"
