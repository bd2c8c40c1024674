"""Following files through rotation, restarts, reloads; standard input; the journal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mail_exporter.collectors.base import COLLECTORS
from mail_exporter.collectors.logs.collector import LogsCollector
from mail_exporter.collectors.logs.config import LogsConfig, LogSource
from mail_exporter.collectors.logs.follower import DISPATCH_LINES, Feed, StdinFollower
from mail_exporter.collectors.logs.journal import JournalFollower
from mail_exporter.collectors.logs.lines import LineSplitter

H = "Jan 12 10:00:00 mail postfix/smtpd[1]:"


def connect(n: int) -> str:
    return f"{H} connect from host{n}[192.0.2.1]\n"


def settings(tmp_path: Path, *sources: dict[str, object], **more: object) -> LogsConfig:
    return LogsConfig.model_validate(
        {"enabled": True, "poll_interval": "20ms", "sources": list(sources), **more}
    )


def connections(collector: LogsCollector) -> int:
    with collector.counters.lock:
        return sum(collector.counters.connections.values())


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def settle(collector: LogsCollector, expected: int) -> None:
    """Wait until ``expected`` connections are counted, then make sure no more come."""
    wait_for(lambda: connections(collector) >= expected)
    time.sleep(0.3)
    assert connections(collector) == expected


@pytest.fixture
def open_collectors() -> Iterator[list[LogsCollector]]:
    started: list[LogsCollector] = []
    yield started
    for collector in started:
        collector.close()


def follow(
    started: list[LogsCollector], config: LogsConfig, previous: LogsCollector | None = None
) -> LogsCollector:
    collector = LogsCollector(config, previous)
    started.append(collector)
    return collector


def test_splitter_holds_partial_lines_and_drops_long_ones() -> None:
    splitter = LineSplitter(max_line_bytes=300)
    assert splitter.feed(b"one\ntw") == ["one"]
    assert splitter.feed(b"o\n") == ["two"]
    assert splitter.feed(b"x" * 200) == []
    assert splitter.feed(b"x" * 200) == []  # over the limit: dropped, nothing kept
    assert splitter.partial == b""
    assert splitter.feed(b"xx\nthree\n" + b"y" * 400 + b"\nfour\n") == ["three", "four"]
    assert splitter.too_long == 2
    assert splitter.feed(b"\xff\xfe bad utf-8\n") == ["\ufffd\ufffd bad utf-8"]


def test_starts_at_the_end_and_reads_what_comes(
    tmp_path: Path, open_collectors: list[LogsCollector]
) -> None:
    log = tmp_path / "mail.log"
    log.write_text(connect(0) * 5)
    collector = follow(open_collectors, settings(tmp_path, {"path": str(log)}))
    wait_for(lambda: collector.followers[0].up)
    with log.open("a") as file:
        file.write(connect(1))
        file.write(f"{H} connect from partial")  # no newline yet: must wait
    settle(collector, 1)
    with log.open("a") as file:
        file.write("[192.0.2.1]\n")
    settle(collector, 2)


def test_start_at_beginning(tmp_path: Path, open_collectors: list[LogsCollector]) -> None:
    log = tmp_path / "mail.log"
    log.write_text(connect(0) * 5)
    collector = follow(
        open_collectors, settings(tmp_path, {"path": str(log)}, start_at="beginning")
    )
    settle(collector, 5)


def test_a_file_that_appears_later_is_read_whole(
    tmp_path: Path, open_collectors: list[LogsCollector]
) -> None:
    log = tmp_path / "mail.log"
    collector = follow(open_collectors, settings(tmp_path, {"path": str(log)}))
    time.sleep(0.1)
    follower = collector.followers[0]
    assert not follower.up and follower.problem == f"waiting for {log} to appear"
    log.write_text(connect(0) * 3)
    settle(collector, 3)
    assert follower.up


class Writer:
    """Appends numbered lines from a thread, as a daemon would, until told to stop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()  # held while a line is written, so a rotation is atomic
        self.written = 0
        self._file = path.open("a", buffering=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                self._file.write(connect(self.written))
                self.written += 1
            time.sleep(0.0005)

    def reopen(self) -> None:
        with self.lock:
            self._file.close()
            self._file = self.path.open("a", buffering=1)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._file.close()


def follow_empty_file(log: Path, started: list[LogsCollector]) -> LogsCollector:
    log.touch()
    collector = follow(started, settings(log.parent, {"path": str(log)}))
    wait_for(lambda: collector.followers[0].up)
    return collector


def test_rename_rotation_while_writing(
    tmp_path: Path, open_collectors: list[LogsCollector]
) -> None:
    log = tmp_path / "mail.log"
    collector = follow_empty_file(log, open_collectors)
    with Writer(log) as writer:
        for generation in range(1, 4):
            time.sleep(0.15)
            os.rename(log, tmp_path / f"mail.log.{generation}")
            time.sleep(0.05)  # the daemon keeps writing to the renamed file for a while
            log.touch()
            writer.reopen()
        time.sleep(0.15)
    settle(collector, writer.written)
    assert collector.followers[0].rotations == {"rename": 3}


def test_copytruncate_rotation_while_writing(
    tmp_path: Path, open_collectors: list[LogsCollector]
) -> None:
    log = tmp_path / "mail.log"
    collector = follow_empty_file(log, open_collectors)
    with Writer(log) as writer:
        for _ in range(3):
            time.sleep(0.15)
            with writer.lock:  # logrotate's copy and truncate, with no line in between
                shutil.copyfile(log, tmp_path / "mail.log.1")
                os.truncate(log, 0)
        time.sleep(0.15)
    settle(collector, writer.written)
    assert collector.followers[0].rotations == {"truncate": 3}


def inotify_watches() -> tuple[int, int]:
    """This process's inotify descriptors, and the watches they hold."""
    descriptors = watches = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") != "anon_inode:inotify":
                continue
            info = Path(f"/proc/self/fdinfo/{name}").read_text()
        except OSError:
            continue
        descriptors += 1
        watches += info.count("inotify wd:")
    return descriptors, watches


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
def test_a_written_file_is_read_at_once_not_at_the_next_poll(
    tmp_path: Path, open_collectors: list[LogsCollector]
) -> None:
    log = tmp_path / "mail.log"
    log.touch()
    before = inotify_watches()
    config = settings(tmp_path, {"path": str(log)}, poll_interval="1h")
    collector = follow(open_collectors, config)
    wait_for(lambda: collector.followers[0].up)
    time.sleep(0.1)  # past the first look: the follower waits on the quiet file
    with log.open("a") as file:
        file.write(connect(1))
    wait_for(lambda: connections(collector) == 1)  # long before the hour's poll
    # one watch, for the file at the path, through rotations (the poll finds the new file)
    fast = follow(open_collectors, settings(tmp_path, {"path": str(tmp_path / "b.log")}))
    wait_for(lambda: "to appear" in (fast.followers[0].problem or ""))  # then read whole
    for generation in range(3):
        (tmp_path / "b.log").write_text(connect(generation))
        wait_for(lambda g=generation: connections(fast) == g + 1)
        os.rename(tmp_path / "b.log", tmp_path / f"b.log.{generation + 1}")
    assert inotify_watches() == (before[0] + 2, before[1] + 2)
    started = time.monotonic()
    collector.close()  # not held by the hour's wait
    fast.close()
    assert time.monotonic() - started < 30
    assert inotify_watches() == before  # all let go with the followers


def test_restart_with_a_state_file(tmp_path: Path, open_collectors: list[LogsCollector]) -> None:
    log, state = tmp_path / "mail.log", tmp_path / "state.json"
    log.write_text(connect(0) * 2)
    config = settings(tmp_path, {"path": str(log)}, state_file=str(state))
    first = LogsCollector(config)
    wait_for(lambda: first.followers[0].up)
    with log.open("a") as file:
        file.write(connect(1) * 3 + f"{H} connect from half")
    settle(first, 3)
    first.close()
    assert json.loads(state.read_text())["sources"][f"file:{log}"]["partial"]
    with log.open("a") as file:  # written while the exporter is down
        file.write("[192.0.2.1]\n" + connect(2) * 4)
    second = follow(open_collectors, config)
    settle(second, 5)  # the finished half line and the four: nothing twice, nothing lost


def test_restart_after_a_rotation_while_down(
    tmp_path: Path, open_collectors: list[LogsCollector]
) -> None:
    log, state = tmp_path / "mail.log", tmp_path / "state.json"
    log.touch()
    config = settings(tmp_path, {"path": str(log)}, state_file=str(state))
    first = LogsCollector(config)
    wait_for(lambda: first.followers[0].up)
    first.close()
    with log.open("a") as file:
        file.write(connect(0) * 2)
    os.rename(log, tmp_path / "mail.log.1")
    log.write_text(connect(1) * 3)
    second = follow(open_collectors, config)
    settle(second, 5)


def test_a_rebuilt_collector_takes_over_from_its_predecessor(
    tmp_path: Path, open_collectors: list[LogsCollector]
) -> None:
    """The registered factory hands the running collector to its successor, which stops it
    and continues after its last line, with its counters and each source's own counts."""
    log = tmp_path / "mail.log"
    log.touch()
    config = settings(tmp_path, {"path": str(log)})
    spec = COLLECTORS["logs"]
    first = spec.build(config, None)
    assert isinstance(first, LogsCollector)
    open_collectors.append(first)
    wait_for(lambda: first.followers[0].up)
    with log.open("a") as file:
        file.write(connect(0) * 2)
    settle(first, 2)
    with Writer(log) as writer:  # lines come before, while and after one takes over
        time.sleep(0.1)
        second = spec.build(settings(tmp_path, {"path": str(log)}, top_domains=3), first)
        assert isinstance(second, LogsCollector)
        open_collectors.append(second)
        time.sleep(0.1)
    assert second.counters is first.counters
    settle(second, 2 + writer.written)
    assert second.followers[0].lines_read == 2 + writer.written


def test_stdin(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    config = settings(tmp_path, {"type": "stdin"})
    follower = StdinFollower(config.sources[0], config, descriptor=read_end)
    collector = LogsCollector(settings(tmp_path))
    feed = Feed(collector.dispatcher.syslog_lines, collector.dispatcher.messages,
                collector.counters.lock, lambda: None)  # fmt: skip
    follower.start(feed, None)
    os.write(write_end, (connect(0) * 3 + f"{H} connect from last[192.0.2.1]").encode())
    os.close(write_end)  # EOF: the unfinished last line counts too
    wait_for(lambda: follower.problem == "standard input is closed")
    assert connections(collector) == 4
    follower.stop()
    os.close(read_end)


FAKE_JOURNALCTL = """\
import json, sys, time
calls, entries, *arguments = sys.argv[1:]
print(json.dumps(arguments), file=open(calls, "a"))
# journalctl(1): FIELD=value matches of one field are ORed, of different fields ANDed,
# and a "+" ORs the groups on either side of it. No match: every entry.
groups = [[]]
for argument in arguments:
    if argument == "+":
        groups.append([])
    elif not argument.startswith("-"):
        groups[-1].append(argument.split("=", 1))
def wanted(entry):
    return any(
        all(any(entry.get(field) == value for field, value in group if field == name)
            for name in {field for field, _ in group})
        for group in groups
    )
for line in open(entries):
    try:
        entry = json.loads(line)
    except ValueError:
        entry = None
    if entry is None or wanted(entry):
        print(line, end="", flush=True)
time.sleep(30)
"""


def journal_entries(count: int) -> str:
    entries = [{"__CURSOR": f"s=1;i={n}", "_SYSTEMD_UNIT": "postfix@-.service",
                "SYSLOG_IDENTIFIER": "postfix/smtpd",
                "MESSAGE": f"connect from host{n}[192.0.2.1]"} for n in range(count)]  # fmt: skip
    entries.append({"__CURSOR": "s=1;i=x", "_SYSTEMD_UNIT": "dovecot.service",
                    "SYSLOG_IDENTIFIER": "dovecot",
                    "MESSAGE": list(b"imap-login: Login: user=<\xff>, method=PLAIN, rip=1")})  # fmt: skip
    return "".join(json.dumps(entry) + "\n" for entry in entries) + "not json\n"


def fake_journalctl(tmp_path: Path, entries: str) -> tuple[list[str], Path]:
    """A journalctl that logs its arguments to the returned file and prints ``entries``."""
    script, calls, entries_file = (
        tmp_path / "journalctl.py",
        tmp_path / "calls",
        tmp_path / "entries",
    )
    script.write_text(FAKE_JOURNALCTL)
    entries_file.write_text(entries)
    return [sys.executable, str(script), str(calls), str(entries_file)], calls


def journal_directory(tmp_path: Path) -> Path:
    """A directory that passes for a journal (the fake journalctl does not read it)."""
    directory = tmp_path / "journal"
    (directory / "machine").mkdir(parents=True)
    (directory / "machine" / "system.journal").touch()
    return directory


def test_journal_entries_and_cursor(tmp_path: Path, open_collectors: list[LogsCollector]) -> None:
    command, calls = fake_journalctl(tmp_path, journal_entries(3))
    journal_dir = journal_directory(tmp_path)
    source = {"type": "journal", "journal_units": ["postfix@-.service", "dovecot.service"],
              "journal_directory": str(journal_dir), "journal_command": command}  # fmt: skip
    first = LogsCollector(settings(tmp_path, source))
    settle(first, 3)
    with first.counters.lock:
        assert first.counters.logins[("dovecot", "imap", "PLAIN")] == 1
        assert first.counters.lines[("other", "none", "unsupported")] == 1
    second = follow(open_collectors, settings(tmp_path, source, top_domains=3), first)
    wait_for(lambda: len(calls.read_text().splitlines()) == 2)
    arguments = [json.loads(line) for line in calls.read_text().splitlines()]
    assert "--lines=0" in arguments[0] and "_SYSTEMD_UNIT=postfix@-.service" in arguments[0]
    assert "--after-cursor=s=1;i=x" in arguments[1]
    assert f"--directory={journal_dir}" in arguments[1]
    second.close()


@pytest.mark.parametrize(
    ("units", "identifiers", "matches"),
    [
        ([], [], []),
        (["postfix@-.service", "dovecot.service"], [],
         ["_SYSTEMD_UNIT=postfix@-.service", "_SYSTEMD_UNIT=dovecot.service"]),
        ([], ["amavis", "clamd"], ["SYSLOG_IDENTIFIER=amavis", "SYSLOG_IDENTIFIER=clamd"]),
        (["postfix@-.service", "dovecot.service"], ["amavis"],
         ["_SYSTEMD_UNIT=postfix@-.service", "_SYSTEMD_UNIT=dovecot.service", "+",
          "SYSLOG_IDENTIFIER=amavis"]),
    ],
)  # fmt: skip
def test_journalctl_is_asked_for_units_or_identifiers(
    units: list[str], identifiers: list[str], matches: list[str]
) -> None:
    source = LogSource(type="journal", journal_units=units, journal_identifiers=identifiers)
    command = JournalFollower(source, settings(Path("."))).command()
    assert command[-len(matches) or len(command) :] == matches
    assert not any(
        argument.startswith(("--unit", "--identifier", "-u", "-t")) for argument in command
    )


def test_unit_names_are_completed_as_journalctl_would() -> None:
    source = LogSource(type="journal", journal_units=["dovecot", "postfix@-.service"])
    assert source.journal_units == ["dovecot.service", "postfix@-.service"]


MAIL_HOST_JOURNAL = [
    {"_SYSTEMD_UNIT": "postfix@-.service", "SYSLOG_IDENTIFIER": "postfix/smtpd",
     "MESSAGE": "connect from mx.example.net[192.0.2.1]"},
    {"_SYSTEMD_UNIT": "dovecot.service", "SYSLOG_IDENTIFIER": "dovecot",
     "MESSAGE": "imap-login: Login: user=<u@example.org>, method=PLAIN, rip=192.0.2.2, "
                "lip=192.0.2.3, mpid=7, TLS"},
    {"_SYSTEMD_UNIT": "amavis.service", "SYSLOG_IDENTIFIER": "amavis",
     "MESSAGE": "(01234-02) Passed CLEAN {RelayedInbound}, [192.0.2.1]:5 <a@b> -> <c@d>, "
                "Hits: -1.0, size: 1234, 300 ms"},
    # systemd about the unit: journalctl --unit would show it, _SYSTEMD_UNIT= does not.
    {"_SYSTEMD_UNIT": "init.scope", "_PID": "1", "UNIT": "postfix@-.service",
     "SYSLOG_IDENTIFIER": "systemd", "MESSAGE": "Started postfix@-.service - Postfix Mail "
                                                "Transport Agent (instance -)."},
    {"_SYSTEMD_UNIT": "cron.service", "SYSLOG_IDENTIFIER": "CRON",
     "MESSAGE": "(root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)"},
]  # fmt: skip
"""A mail host's journal: one entry of each listed unit and identifier, two of neither."""


def count_units_or_identifiers(
    open_collectors: list[LogsCollector], source: dict[str, object]
) -> None:
    """Exactly the Postfix, Dovecot and amavis entries of MAIL_HOST_JOURNAL are counted."""
    source = {"type": "journal", "journal_units": ["postfix@-.service", "dovecot.service"],
              "journal_identifiers": ["amavis"], **source}  # fmt: skip
    collector = follow(open_collectors, settings(Path("."), source, start_at="beginning"))
    counters = collector.counters

    def lines_counted() -> int:
        with counters.lock:
            return sum(counters.lines.values())

    wait_for(lambda: lines_counted() >= 3)
    time.sleep(0.3)
    with counters.lock:
        assert dict(counters.connections) == {("postfix", "smtpd"): 1}
        assert dict(counters.logins) == {("dovecot", "imap", "PLAIN"): 1}
        assert dict(counters.filter_results) == {("amavis", "clean", "passed"): 1}
        assert sum(counters.lines.values()) == 3


def test_units_or_identifiers_with_journalctl_semantics(
    tmp_path: Path, open_collectors: list[LogsCollector]
) -> None:
    """The fake journalctl applies journalctl(1)'s match rules to MAIL_HOST_JOURNAL."""
    entries = "".join(
        json.dumps({"__CURSOR": f"s=1;i={n}", **entry}) + "\n"
        for n, entry in enumerate(MAIL_HOST_JOURNAL)
    )
    command, _ = fake_journalctl(tmp_path, entries)
    count_units_or_identifiers(
        open_collectors,
        {"journal_directory": str(journal_directory(tmp_path)), "journal_command": command},
    )


JOURNAL_REMOTE = Path("/usr/lib/systemd/systemd-journal-remote")


def test_units_or_identifiers_in_a_real_journal(
    tmp_path: Path, open_collectors: list[LogsCollector]
) -> None:
    """The real journalctl on a journal file, written without journald.

    systemd-journal-remote turns journal export format into a journal file, trusted
    fields (``_SYSTEMD_UNIT``) included, which journald would not take from a client.
    """
    assert JOURNAL_REMOTE.exists(), "systemd-journal-remote is missing: apt-get install it"
    assert shutil.which("journalctl") is not None, "journalctl is missing: apt-get install systemd"
    export = "".join(
        "".join(f"{field}={value}\n" for field, value in fields.items()) + "\n"
        for fields in (
            {"__REALTIME_TIMESTAMP": str(1_700_000_000_000_000 + n),
             "__MONOTONIC_TIMESTAMP": str(n + 1), "_BOOT_ID": "5" * 32, **entry}
            for n, entry in enumerate(MAIL_HOST_JOURNAL)
        )
    )  # fmt: skip
    directory = tmp_path / "journal"
    directory.mkdir()
    written = subprocess.run(
        [str(JOURNAL_REMOTE), f"--output={directory / 'remote.journal'}", "-"],
        input=export.encode(), capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr.decode()
    count_units_or_identifiers(open_collectors, {"journal_directory": str(directory)})


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ({"journal_command": ["/nonexistent/journalctl"]},
         "/nonexistent/journalctl not found: cannot read the journal (see journal_command)"),
        ({"journal_directory": "EMPTY"},
         "no journal files in EMPTY: systemd-journald does not run here or keeps no journal, "
         "and journalctl would wait without a word"),
    ],
)  # fmt: skip
def test_an_unreadable_journal_is_reported(
    tmp_path: Path, open_collectors: list[LogsCollector], source: dict[str, object], problem: str
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    source = {key: str(empty) if value == "EMPTY" else value for key, value in source.items()}
    collector = follow(open_collectors, settings(tmp_path, {"type": "journal", **source}))
    follower = collector.followers[0]
    wait_for(lambda: follower.problem != "not started")
    assert follower.problem == problem.replace("EMPTY", str(empty))
    assert not follower.up
    samples = {s.name: s.value for family in collector.collect() for s in family.samples
               if s.name == "mail_log_source_up"}  # fmt: skip
    assert samples == {"mail_log_source_up": 0.0}


def test_journalctl_without_a_journal_is_not_silent(
    tmp_path: Path, open_collectors: list[LogsCollector]
) -> None:
    """journalctl exists but finds no journal: the peer bug would yield nothing quietly.

    An empty journal directory makes this hold on any host, with or without journald.
    """
    empty = tmp_path / "journal"
    empty.mkdir()
    assert shutil.which("journalctl") is not None, "journalctl is missing: apt-get install systemd"
    collector = follow(
        open_collectors, settings(tmp_path, {"type": "journal", "journal_directory": str(empty)})
    )
    follower = collector.followers[0]
    wait_for(lambda: follower.problem != "not started")
    assert follower.problem is not None and "no journal files" in follower.problem


@pytest.mark.parametrize(
    ("sources", "problem"),
    [
        ([{"type": "journal", "path": "/x"}], "path is only allowed with type file or containers"),
        ([{"type": "file"}], "path is required for type file"),
        ([{"path": "/x", "journal_units": ["a"]}], "journal_* keys are only allowed with type journal"),
        ([{"type": "journal", "format": "exim"}], "journal entries carry their program name"),
        ([{"type": "journal", "journal_units": ["postfix@*.service"]}],
         "unit 'postfix@*.service': list each unit by its name, patterns are not expanded"),
        ([{"type": "journal", "journal_units": ["dovecot service"]}],
         "unit 'dovecot service' must be a systemd unit name"),
        ([{"type": "stdin"}, {"type": "stdin"}], "each log source must be given once: stdin"),
        ([{"path": "/x"}, {"path": "/x", "format": "exim"}], "each log source must be given once: /x"),
    ],
)  # fmt: skip
def test_config_mistakes(sources: list[dict[str, object]], problem: str) -> None:
    from mail_exporter.config.root import parse_config
    from mail_exporter.config.validation import ConfigError

    text = json.dumps({"collectors": {"logs": {"enabled": True, "sources": sources}}})
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    assert problem in str(raised.value)


@pytest.mark.parametrize(
    ("names", "problem"),
    [
        ([""], "syslog name must not be empty"),
        (["mta out"], "syslog name 'mta out' must not contain whitespace"),
        (["submission\t"], "syslog name 'submission\\t' must not contain whitespace"),
        (["mta-out/"], "syslog name 'mta-out/' must not start or end with /"),
        (["postfix/submission"], "syslog name 'postfix/submission' needs no entry: "
         "postfix/... and postfix-NAME/... tags are Postfix's already"),
        (["postfix-out"], "syslog name 'postfix-out' needs no entry: "
         "postfix/... and postfix-NAME/... tags are Postfix's already"),
        ([7], "Input should be a valid string"),
    ],
)  # fmt: skip
def test_postfix_syslog_name_mistakes(names: list[object], problem: str) -> None:
    from mail_exporter.config.root import parse_config
    from mail_exporter.config.validation import ConfigError

    text = json.dumps({"collectors": {"logs": {"enabled": True, "postfix_syslog_names": names}}})
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    assert raised.value.problems == [f"collectors.logs.postfix_syslog_names[0] (line 1): {problem}"]


def test_configured_postfix_syslog_names_reach_the_parser(
    tmp_path: Path, open_collectors: list[LogsCollector]
) -> None:
    from mail_exporter.config.root import parse_config

    log = tmp_path / "mail.log"
    log.write_text(
        "Jan 12 10:00:00 mail mta-out/smtpd[1]: connect from a[192.0.2.1]\n"
        "Jan 12 10:00:00 mail submission/smtpd[2]: connect from b[192.0.2.2]\n"
    )
    config = parse_config(
        "collectors:\n  logs:\n    enabled: true\n    start_at: beginning\n"
        f"    poll_interval: 20ms\n    sources: [{{path: {log}}}]\n"
        "    postfix_syslog_names: [mta-out]\n"
    )
    collector = follow(open_collectors, config.collectors.logs)
    counters = collector.counters

    def lines_counted() -> int:
        with counters.lock:
            return sum(counters.lines.values())

    wait_for(lambda: lines_counted() == 2)
    assert dict(counters.connections) == {("postfix", "mta-out/smtpd"): 1}
    assert dict(counters.lines) == {
        ("postfix", "mta-out/smtpd", "parsed"): 1,
        ("other", "submission/smtpd", "unsupported"): 1,
    }


def test_a_large_batch_reaches_the_dispatcher_in_slices_in_order() -> None:
    """A compiled dispatcher never lets another thread run inside one call: a read of
    many short lines goes to it in slices of DISPATCH_LINES, every line once, in order."""
    lines = [f"line {n}" for n in range(2 * DISPATCH_LINES + 7)]
    messages = [("postfix/smtpd", text) for text in lines[: DISPATCH_LINES + 1]]
    given_lines: list[list[str]] = []
    given_messages: list[list[tuple[str, str]]] = []
    feed = Feed(given_lines.append, given_messages.append, threading.Lock(), lambda: None)
    feed.lines(lines)
    feed.messages(messages)
    feed.lines(lines[:3])
    assert [len(batch) for batch in given_lines] == [DISPATCH_LINES, DISPATCH_LINES, 7, 3]
    assert [line for batch in given_lines[:3] for line in batch] == lines
    assert [len(batch) for batch in given_messages] == [DISPATCH_LINES, 1]
    assert [message for batch in given_messages for message in batch] == messages
