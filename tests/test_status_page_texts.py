"""The status page's texts: what it says about failing collectors, targets and round trips,
and what to do when nothing is watched. Rendered from real parts (a real queue collector
on a directory that is no queue, a real round trip to a closed loopback port); the page
through a browser is tests/test_status_page.py."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mail_exporter.config.root import parse_config
from mail_exporter.discovery import NOTHING_FOUND, DiscoveredConfig
from mail_exporter.exporter import Exporter
from mail_exporter.probes.result import Failure, FailureReason, Phase, ProbeResult
from mail_exporter.roundtrip.outcome import Outcome, Stage
from mail_exporter.roundtrip.runner import RouteRunner
from mail_exporter.scheduler import TargetState
from mail_exporter.status_page import DETAIL_LIMIT, QUEUE_COLLECTORS, render_status_page
from tests.realservers.runtime import free_port

QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[Exporter]:
    """An exporter whose postfix_queue reads ``tmp_path/spool`` and whose round trip and
    target point at a closed loopback port; nothing runs until a test asks."""
    closed = free_port()
    config = tmp_path / "config.yml"
    config.write_text(
        "modules:\n"
        "  smtp: {protocol: smtp, timeout: 2s}\n"
        "  imap: {protocol: imap, tls: implicit, timeout: 2s, auth: {username: p,"
        " password_env: HOME}}\n"
        f"targets:\n  - {{name: mx1, address: '127.0.0.1:{closed}', module: smtp}}\n"
        "collectors:\n"
        "  postfix_queue:\n"
        f"    {{enabled: true, source: spool, instances: [{{queue_directory: {tmp_path}/spool}}]}}\n"
        "roundtrip:\n"
        "  - name: loop\n"
        f'    send: {{address: "127.0.0.1:{closed}", module: smtp, from: p@example.com,'
        " to: p@example.com}\n"
        f'    receive: {{address: "127.0.0.1:{closed}", module: imap}}\n'
    )
    exporter = Exporter(config, {})
    yield exporter
    exporter.stop()


def row(page: str, first_cell: str) -> str:
    match = re.search(rf"<tr><td>{re.escape(first_cell)}</td>.*?</tr>", page)
    assert match is not None, page
    return match.group(0)


def section(page: str, heading: str) -> str:
    return page.split(f"<h2>{heading}</h2>", 1)[1].split("<h2>", 1)[0]


def route_runner(exporter: Exporter) -> RouteRunner:
    modules = exporter.config.modules
    return RouteRunner(exporter.config.roundtrip[0], modules["smtp"], modules["imap"])


def refused(detail: str) -> ProbeResult:
    return ProbeResult(
        protocol="smtp", failure=Failure(Phase.CONNECT, FailureReason.CONNECT, detail)
    )


def page_after_queue_collection(exporter: Exporter) -> str:
    """The page as /, with the queue collectors asked first."""
    return render_status_page(exporter, exporter.collectors.families_of(QUEUE_COLLECTORS))


def test_a_failing_queue_collector_is_shown_with_its_error_and_its_recovery(
    exporter: Exporter, tmp_path: Path
) -> None:
    for queue in QUEUES[:-1]:  # no hold: not a Postfix queue directory
        (tmp_path / "spool" / queue).mkdir(parents=True)
    page = page_after_queue_collection(exporter)
    failing = row(page, "postfix_queue")
    assert '<td class="down">failing</td>' in failing, failing
    assert "has no hold directory: not a Postfix queue directory" in failing, failing
    assert re.search(
        r'<td class="down when">\d\d:\d\d:\d\d UTC \(\d+ s ago\)</td>', failing
    ), failing
    queues = section(page, "Queues")
    assert "The queues could not be read. postfix_queue: failed: " in queues, queues
    assert "has no hold directory" in queues and "enable" not in queues, queues
    failing_since = exporter.collectors.health()["postfix_queue"].failing_since
    page_after_queue_collection(exporter)  # still failing: since the first failure
    assert exporter.collectors.health()["postfix_queue"].failing_since == failing_since

    (tmp_path / "spool" / "hold").mkdir()
    page = page_after_queue_collection(exporter)
    recovered = row(page, "postfix_queue")
    assert '<td class="up">ok</td>' in recovered, recovered
    assert re.search(r"<td>failed: .*has no hold directory.* \(\d+ s ago\)</td>", recovered)
    assert "<td>postfix</td><td>postfix</td><td>hold</td>" in section(page, "Queues")


def test_collectors_not_collected_yet_say_so(exporter: Exporter) -> None:
    """The page asks only the queue collectors; the others show their last scrape's outcome."""
    page = render_status_page(exporter, [])
    assert '<td>postfix_queue</td><td class="pending">not collected yet</td>' in page, page


async def test_a_round_trip_shows_its_failing_stage_and_what_happened(exporter: Exporter) -> None:
    runner = route_runner(exporter)
    outcome = await runner.run_once()
    assert outcome.failure is Stage.RECEIVE
    assert outcome.detail == "connect: Connection refused", outcome.detail
    exporter.roundtrip.routes = {"loop": runner}
    loop = row(render_status_page(exporter, []), "loop")
    assert "<td>receive: connect: Connection refused</td>" in loop, loop
    assert re.search(r'<td>\d+ s ago</td><td class="down when">\d\d:\d\d:\d\d UTC', loop), loop
    assert "<td>never</td>" in loop, loop


def test_a_hostile_reply_is_escaped_made_printable_and_bounded(exporter: Exporter) -> None:
    hostile = "<script>alert(1)</script>\r\n250 OK forged line & more " + "x" * 5000
    runner = route_runner(exporter)
    runner.stats.record(Outcome(failure=Stage.SEND, detail=hostile))
    exporter.roundtrip.routes = {"loop": runner}
    target = exporter.config.targets[0]
    state = TargetState(target, exporter.config.modules[target.module])
    state.record(refused("<img src=x onerror=alert(2)>" + "y" * 5000))
    exporter.scheduler.states = {target.name: state}
    page = render_status_page(exporter, [])
    assert "<script>" not in page and "<img" not in page
    loop = row(page, "loop")
    assert (
        "<td>send: &lt;script&gt;alert(1)&lt;/script&gt;\\r\\n250 OK forged line &amp; more x"
        in loop
    )
    assert "x" * DETAIL_LIMIT not in loop and "x…</td>" in loop, loop
    mx1 = row(page, "mx1")
    assert "&lt;img src=x onerror=alert(2)&gt;y" in mx1 and "y" * DETAIL_LIMIT not in mx1, mx1


def test_a_target_shows_its_last_probe_and_since_when_it_is_down(exporter: Exporter) -> None:
    target = exporter.config.targets[0]
    state = TargetState(target, exporter.config.modules[target.module])
    exporter.scheduler.states = {target.name: state}
    down = refused("Connection refused")
    state.record(down)
    first = state.down_since
    assert first is not None and state.probed_at == first
    state.record(down)
    assert state.down_since == first and state.probed_at is not None
    mx1 = row(render_status_page(exporter, []), "mx1")
    since = time.strftime("%H:%M:%S UTC", time.gmtime(first))
    cells = rf'<td class="down">down</td><td>\d+ s ago</td><td class="down when">{since} \('
    assert re.search(cells, mx1), mx1
    assert "<td>connect: Connection refused</td>" in mx1, mx1
    state.record(ProbeResult(protocol="smtp", success=True))
    assert state.down_since is None
    mx1 = row(render_status_page(exporter, []), "mx1")
    assert '<td class="up">up</td><td>0 s ago</td><td></td>' in mx1, mx1


def written(tmp_path: Path, text: str) -> Exporter:
    config = tmp_path / "watching.yml"
    config.write_text(text)
    return Exporter(config, {})


def test_next_steps_only_where_nothing_is_watched(tmp_path: Path, exporter: Exporter) -> None:
    assert "Next steps" not in render_status_page(exporter, [])
    empty = written(tmp_path, "collectors: {host: {enabled: true}}\n")
    try:
        page = render_status_page(empty, [])
        steps = section(page, "Next steps")
        assert "The config file probes no server" in steps, steps
        assert '<a href="/config/example">example config</a>' in steps, steps
        assert "<code>mail-exporter --config.file mail_exporter.yml</code>" in steps, steps
        text = "# nothing found\n"
        empty.discovered = DiscoveredConfig(text, parse_config(text), "no mail server", False)
        steps = section(render_status_page(empty, []), "Next steps")
        assert NOTHING_FOUND in steps and "/config/example" in steps, steps
        empty.discovered = DiscoveredConfig(text, parse_config(text), "postfix", True)
        page = render_status_page(empty, [])
        assert "Next steps" not in page
        assert "<code>mail-exporter discover &gt; mail_exporter.yml</code>, then" in page, page
    finally:
        empty.stop()


def test_an_unreadable_instance_beside_a_readable_one_has_its_row(tmp_path: Path) -> None:
    """The collector works (one instance is read), so its health is fine: the queue table
    itself says which instance could not be read."""
    for queue in QUEUES:
        (tmp_path / "spool" / queue).mkdir(parents=True)
    exporter = written(
        tmp_path,
        "collectors:\n  postfix_queue:\n    enabled: true\n    source: spool\n"
        f"    instances: [{{queue_directory: {tmp_path}/spool}},"
        f" {{name: second, queue_directory: {tmp_path}/missing}}]\n",
    )
    try:
        page = page_after_queue_collection(exporter)
    finally:
        exporter.stop()
    queues = section(page, "Queues")
    assert "<td>postfix</td><td>postfix</td><td>hold</td>" in queues, queues
    unreadable = '<td class="down">unreadable (the log says why)</td>'
    assert f"<tr><td>postfix</td><td>second</td><td></td>{unreadable}</tr>" in queues, queues
    assert '<td>postfix_queue</td><td class="up">ok</td>' in page, page
