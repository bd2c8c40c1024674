"""The round-trip runner's bookkeeping, against an in-memory mailbox and a fake submission.

Real servers cannot hold a message back on cue or fail a search on purpose; these tests
can, so they pin down late arrivals, leftovers, cancelled attempts, overlapping attempts
and reloads. The real-server tests (test_roundtrip_real_servers.py) cover the protocols.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.message import EmailMessage

import pytest

from mail_exporter.config.root import Config, parse_config
from mail_exporter.roundtrip import runner as runner_module
from mail_exporter.roundtrip.mailbox import Found
from mail_exporter.roundtrip.message import TaggedMessage, new_token, parse_tagged
from mail_exporter.roundtrip.outcome import Outcome, RoundTripFailure, Stage
from mail_exporter.roundtrip.runner import RoundTripRunner, RouteRunner
from mail_exporter.targets import Address

ROUTE = "loop"


def config(
    timeout: str = "300ms",
    interval: str = "60s",
    routes: Mapping[str, str] | None = None,
    sites: Mapping[str, str] | None = None,
) -> Config:
    """A config whose routes (name: timeout) point at a closed port, with fast polling;
    ``sites`` gives routes a ``site``."""
    sites = sites or {}
    entries = "\n".join(
        f"""  - name: {name}{f"{chr(10)}    site: {sites[name]}" if name in sites else ""}
    interval: {interval}
    timeout: {route_timeout}
    send: {{address: "127.0.0.1:1", module: submission, from: p@test.local, to: p@test.local}}
    receive: {{address: "127.0.0.1:1", module: imap, poll_interval: 20ms}}"""
        for name, route_timeout in (routes or {ROUTE: timeout}).items()
    )
    return parse_config(
        f"""
modules:
  submission: {{protocol: smtp}}
  imap: {{protocol: imap, tls: implicit, auth: {{username: p@test.local, password_env: HOME}}}}
roundtrip:
{entries}
"""
    )


@dataclass
class FakeServer:
    """A mailbox and an MTA in one: submitted messages arrive after ``delay`` unless held."""

    delay: float = 0.0
    hold: bool = False
    messages: dict[str, Found] = field(default_factory=dict)
    held: list[TaggedMessage] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    opened: int = 0
    open_delay: float = 0.0
    release_after: float | None = None
    """Seconds after a held submission from which a look sees it."""
    release_at: float | None = None
    broken_search: bool = False
    broken_delete: bool = False
    _uid: int = 0

    def deliver(self, message: TaggedMessage, folder: str = "INBOX") -> str:
        self._uid += 1
        uid = str(self._uid)
        self.messages[uid] = Found(folder, uid, message, 0.0)
        return uid

    async def submit(
        self,
        address: Address,
        module: object,
        message: EmailMessage,
        sender: str,
        to: str,
        memory: object,
    ) -> None:
        tagged = parse_tagged(bytes(message))
        assert tagged is not None
        if self.hold:
            self.held.append(tagged)
            if self.release_after is not None:
                self.release_at = time.monotonic() + self.release_after
        else:
            asyncio.get_running_loop().call_later(self.delay, self.deliver, tagged)

    def release(self) -> None:
        for message in self.held:
            self.deliver(message)
        self.held.clear()


class FakeMailbox:
    def __init__(self, server: FakeServer) -> None:
        self.server = server

    async def find(self, token: str) -> Found | None:
        if self.server.broken_search:
            raise RoundTripFailure(Stage.RECEIVE, "search: connection lost")
        release_at = self.server.release_at
        if release_at is not None and release_at - time.monotonic() < 0.05:
            # The look that overlaps the arrival sees it, once it has arrived.
            await asyncio.sleep(release_at - time.monotonic())
            self.server.release()
        for found in self.server.messages.values():
            if found.message.token == token:
                return replace(found, seen=time.monotonic())
        return None

    async def wait(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def tagged(self, route: str) -> list[Found]:
        return [f for f in self.server.messages.values() if f.message.route == route]

    async def delete(self, messages: Sequence[Found]) -> None:
        if self.server.broken_delete:
            raise RoundTripFailure(Stage.CLEANUP, "expunge: NO [CANNOT] read-only mailbox")
        for found in messages:
            del self.server.messages[found.uid]
            self.server.deleted.append(found.message.token)

    async def close(self) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    fake = FakeServer()

    async def open_mailbox(self: RouteRunner) -> FakeMailbox:
        fake.opened += 1
        await asyncio.sleep(fake.open_delay)
        return FakeMailbox(fake)

    monkeypatch.setattr(RouteRunner, "_open_mailbox", open_mailbox)
    monkeypatch.setattr(runner_module, "submit", fake.submit)
    yield fake


def route_runner(cfg: Config | None = None) -> RouteRunner:
    cfg = cfg or config()
    route = cfg.roundtrip[0]
    return RouteRunner(route, cfg.modules["submission"], cfg.modules["imap"])


def tagged(token: str, age: float, route: str = ROUTE) -> TaggedMessage:
    return TaggedMessage(token, route, time.time() - age, ())


async def test_success_is_timed_and_cleaned_up(server: FakeServer) -> None:
    server.delay = 0.03
    runner = route_runner()
    started = time.monotonic()
    outcome = await runner.run_once()
    took = time.monotonic() - started
    assert outcome.success
    assert outcome.duration is not None and 0.03 <= outcome.duration <= took
    assert server.messages == {}
    assert runner.stats.success is True
    assert runner.stats.delivery.count == 1
    assert runner.stats.last_success is not None


async def test_a_lost_message_is_counted_late_once_when_it_arrives(server: FakeServer) -> None:
    runner = route_runner()
    server.hold = True
    lost = await runner.run_once()
    assert lost.failure is Stage.TIMEOUT
    server.hold = False
    server.release()  # the queue is flushed: the lost message arrives
    found = await runner.run_once()
    assert found.success and found.late == 1
    assert server.messages == {}
    again = await runner.run_once()
    assert again.success and again.late == 0
    assert runner.stats.late == 1.0
    assert runner.stats.failures[Stage.TIMEOUT] == 1.0  # lost once, never twice


async def test_a_message_seen_after_the_deadline_is_late_not_success(server: FakeServer) -> None:
    server.hold = True
    server.release_after = 0.3  # arrives at the route's timeout: seen just after it
    runner = route_runner()
    outcome = await runner.run_once()
    assert outcome.failure is Stage.TIMEOUT and outcome.late == 1
    assert outcome.duration is None
    assert server.messages == {}
    assert runner.stats.late == 1.0
    assert runner.stats.success is False


async def test_only_tokens_this_process_issued_are_deleted_or_counted(
    server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Right headers and a token in the right form are not enough: a message is ours only
    if this process issued its token. Leftovers of an earlier run are not ours either."""
    runner = route_runner()
    server.hold = True
    assert (await runner.run_once()).failure is Stage.TIMEOUT  # a token of ours, lost
    (lost,) = server.held
    forged = [
        server.deliver(tagged(new_token(), age=3600)),  # an earlier run's, or forged
        server.deliver(tagged(new_token(), age=0)),  # another exporter's, in flight
        server.deliver(tagged(lost.token.upper(), age=3600)),  # the lost one's, almost
        server.deliver(replace(lost, route="loop2")),  # the lost token under another route
    ]
    server.hold = False
    outcome = await runner.run_once()
    assert outcome.success and outcome.late == 0
    assert set(server.messages) == set(forged)
    assert "route loop: 3 messages carry this route's headers but a token this process" in (
        caplog.text
    )
    server.release()  # the real one arrives after all: ours, late
    outcome = await runner.run_once()
    assert outcome.success and outcome.late == 1
    assert set(server.messages) == set(forged)
    assert runner.stats.late == 1.0
    assert caplog.text.count("messages carry") == 1  # logged when the number changes


async def test_issued_tokens_are_remembered_within_a_bound(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "ISSUED_MEMORY", 2)
    runner = route_runner()
    server.hold = True
    for _ in range(3):
        assert (await runner.run_once()).failure is Stage.TIMEOUT
    forgotten = server.held[0].token
    server.hold = False
    server.release()
    outcome = await runner.run_once()
    assert outcome.success and outcome.late == 2  # the newest two, still remembered
    assert [found.message.token for found in server.messages.values()] == [forgotten]


async def test_a_waiting_attempts_message_is_left_to_it(server: FakeServer) -> None:
    runner = route_runner()
    waiting = server.deliver(tagged("waiting", age=3600))
    runner._pending.add("waiting")  # another attempt of this route is still looking for it
    outcome = await runner.run_once()
    assert outcome.success
    assert set(server.messages) == {waiting}


async def test_a_cancelled_attempts_message_is_removed_later_without_counting(
    server: FakeServer,
) -> None:
    runner = route_runner(config(timeout="5s"))
    server.hold = True
    attempt = asyncio.create_task(runner.run_once())
    await asyncio.sleep(0.05)
    attempt.cancel()  # a reload or shutdown
    with pytest.raises(asyncio.CancelledError):
        await attempt
    server.hold = False
    server.release()
    outcome = await runner.run_once()
    assert outcome.success and outcome.late == 0
    assert server.messages == {}


async def test_a_broken_session_fails_receive_and_skips_cleanup(server: FakeServer) -> None:
    server.broken_search = True
    runner = route_runner()
    outcome = await runner.run_once()
    assert outcome.failure is Stage.RECEIVE and outcome.detail, outcome
    assert runner.stats.failures[Stage.RECEIVE] == 1.0
    assert runner.stats.last_failure_detail == outcome.detail


async def test_a_failed_cleanup_is_counted_on_top_of_a_success(server: FakeServer) -> None:
    server.broken_delete = True
    runner = route_runner()
    outcome = await runner.run_once()
    assert outcome.success and outcome.cleanup_failed
    assert len(server.messages) == 1
    assert runner.stats.success is True
    assert runner.stats.failures == {**dict.fromkeys(Stage, 0.0), Stage.CLEANUP: 1.0}
    server.broken_delete = False
    outcome = await runner.run_once()  # at once: younger than the timeout, and still ours
    assert outcome.success and not outcome.cleanup_failed and outcome.late == 0
    assert server.messages == {}


async def test_a_duplicate_of_the_attempts_own_message_goes_with_it(server: FakeServer) -> None:
    runner = route_runner()
    original = server.deliver

    def deliver_twice(message: TaggedMessage, folder: str = "INBOX") -> str:
        original(message, "Junk")  # e.g. delivered again after a lost reply from LMTP
        return original(message, folder)

    server.deliver = deliver_twice  # type: ignore[method-assign]
    outcome = await runner.run_once()
    assert outcome.success
    assert server.messages == {}


async def test_an_unexpected_error_costs_one_attempt(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: FakeMailbox, route: str) -> list[Found]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(FakeMailbox, "tagged", broken)
    runner = route_runner()
    outcome = await runner.run_once()
    assert outcome.failure is Stage.CLEANUP
    assert runner.stats.failures[Stage.CLEANUP] == 1.0


async def test_slow_attempts_do_not_delay_the_next(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "FIRST_RUN_SPREAD_SECONDS", 0.0)
    server.open_delay = 5.0  # every attempt hangs in its login
    runner = route_runner(config(interval="50ms"))
    runner.start()
    try:
        await asyncio.sleep(0.5)
        assert server.opened >= 5  # a new attempt every 50 ms although none has finished
    finally:
        runner.stop()


async def test_reload_keeps_unchanged_routes_running(server: FakeServer) -> None:
    runners = RoundTripRunner()
    runners.apply(config(routes={"a": "1s", "b": "1s"}))
    try:
        kept, replaced = runners.routes["a"], runners.routes["b"]
        kept.stats.record(Outcome(failure=Stage.SEND))
        runners.apply(config(routes={"a": "1s", "b": "2s", "c": "1s"}))
        assert runners.routes["a"] is kept
        assert kept.stats.failures[Stage.SEND] == 1.0
        assert runners.routes["b"] is not replaced
        assert set(runners.routes) == {"a", "b", "c"}
        runners.apply(config(routes={"c": "1s"}))
        assert set(runners.routes) == {"c"}
    finally:
        runners.stop()


def test_every_stage_is_exported_from_the_start() -> None:
    runners = RoundTripRunner()
    runners.routes[ROUTE] = route_runner()
    families = {family.name: family for family in runners.collect()}
    assert "mail_roundtrip_success" not in families  # no attempt has ended yet
    stages = {s.labels["stage"]: s.value for s in families["mail_roundtrip_failures"].samples}
    assert stages == dict.fromkeys(
        ("send", "send_auth", "receive", "receive_auth", "timeout", "cleanup"), 0.0
    )
    assert families["mail_roundtrip_late_arrivals"].samples[0].value == 0.0
    assert families["mail_roundtrip_junk"].samples[0].value == 0.0


def route_info(runners: RoundTripRunner) -> dict[str, str]:
    """Each route's site, as ``mail_roundtrip_route_info`` says (its value always 1)."""
    [family] = [f for f in runners.collect() if f.name == "mail_roundtrip_route_info"]
    assert {sample.value for sample in family.samples} == {1.0}
    return {sample.labels["route"]: sample.labels["site"] for sample in family.samples}


async def test_each_route_names_its_site_and_a_new_site_keeps_its_totals(
    server: FakeServer,
) -> None:
    """The site is a label of the route's info series only: the route's own series keep
    their labels, and a reload that changes nothing but the site keeps the route running
    with its totals (its series do not carry the site, so they must not start over)."""
    runners = RoundTripRunner()
    runners.apply(config(routes={"old": "1s", "new": "1s"}, sites={"old": "onprem"}))
    try:
        assert route_info(runners) == {"old": "onprem", "new": ""}
        kept = runners.routes["new"]
        kept.stats.record(Outcome(failure=Stage.SEND))
        runners.apply(
            config(routes={"old": "1s", "new": "1s"}, sites={"old": "onprem", "new": "m365"})
        )
        assert runners.routes["new"] is kept
        assert kept.route.site == "m365"
        assert route_info(runners) == {"old": "onprem", "new": "m365"}
        families = {family.name: family for family in runners.collect()}
        failures = families["mail_roundtrip_failures"].samples
        assert all(set(sample.labels) == {"route", "stage"} for sample in failures)
        assert {(s.labels["route"], s.labels["stage"]): s.value for s in failures}[
            ("new", "send")
        ] == 1.0
        runners.apply(config(routes={"old": "1s", "new": "2s"}, sites={"new": "m365"}))
        assert runners.routes["new"] is not kept  # another setting changed: a restart
        assert route_info(runners) == {"old": "", "new": "m365"}
    finally:
        runners.stop()
