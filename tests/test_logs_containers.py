"""Mail logs read from containers: Docker's json-file and the CRI format, through rotation.

The records are real: ``tests/fixtures/logs/container_*.log`` were written by podman and
dockerd (see the fixtures' README), and the end-to-end tests run a logger container on
each runtime (podman: tests/podman.py; dockerd: tests/realservers/dockerd.py) that
writes Postfix's own lines (``postfix_real.log``, as its ``maillog_file`` writes them) to
its standard output while the runtime rotates the log; every line must be counted
exactly once.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mail_exporter.collectors.logs.collector import LogsCollector
from mail_exporter.collectors.logs.containers import ContainersFollower, container_name
from mail_exporter.collectors.logs.counters import LogCounters
from mail_exporter.collectors.logs.dispatch import LineDispatcher
from mail_exporter.collectors.logs.envelopes import Envelope, Runtime, record_bytes
from mail_exporter.collectors.logs.lines import LineSplitter
from tests.conftest import _require_binary
from tests.podman import CONTAINER_LOGS, POSTFIX_IMAGE, Podman
from tests.realservers.dockerd import Dockerd
from tests.test_logs_followers import follow, open_collectors, settings, wait_for

__all__ = ["open_collectors"]  # the fixture, used by name

FIXTURES = Path(__file__).parent / "fixtures" / "logs"
POSTFIX_LINES = (FIXTURES / "postfix_real.log").read_text().splitlines()
LONG_LINE = (
    "Nov 28 01:51:15 mail postfix/cleanup[27908]: 1FCB42141C0: warning: header Subject: "
    + "x" * 40000
)
ERROR_LINES = ["postfix/postdrop[31]: warning: unable to look up public/pickup: No such file"]
LAST_WORDS = "postfix/postfix-script[40]: stopping the Postfix mail system"
WIDE = 65536  # max_line_bytes that keeps LONG_LINE

# What the fixtures' logger printed: the first 12 Postfix lines and the long one on
# stdout, ERROR_LINES on stderr between them, LAST_WORDS without a newline at the end.
FIXTURE_SCRIPT = (
    "head -n 6 /lines; cat /errors >&2; sed -n 7,12p /lines; cat /long; "
    "printf '%s' \"$(cat /last)\""
)
FIXTURE_STDOUT = [*POSTFIX_LINES[:12], LONG_LINE]


def records(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


# --- the records of each runtime, as they wrote them -----------------------------------


@pytest.mark.parametrize(
    ("fixture", "runtime", "pieces"),
    [
        ("container_json_file.log", "docker", 3),  # Docker cuts at 16 KiB
        ("container_k8s_file.log", "cri", 5),  # conmon at 8 KiB (then an empty F)
    ],
)
def test_split_lines_are_joined(fixture: str, runtime: Runtime, pieces: int) -> None:
    written = records(fixture)
    long_records = [r for r in written if "xxxxxxxx" in r]
    assert len(long_records) == pieces, "the runtime split the long line"
    envelope = Envelope(runtime, WIDE)
    lines = envelope.open(written)
    assert [line for line in lines if line not in ERROR_LINES] == FIXTURE_STDOUT
    assert lines.count(ERROR_LINES[0]) == 1
    assert envelope.pending == {"stdout": LAST_WORDS}, "the unfinished last line waits"


@pytest.mark.parametrize(
    ("fixture", "runtime"),
    [("container_json_file.log", "docker"), ("container_k8s_file.log", "cri")],
)
def test_records_in_any_pieces_and_restarts_join_the_same(fixture: str, runtime: Runtime) -> None:
    """Record by record, and with the envelope handed over between any two of them (a
    restart: its state goes through JSON in the state file), the lines are the same."""
    written = records(fixture)
    whole = Envelope(runtime, WIDE).open(written)
    for cut in range(len(written)):
        first = Envelope(runtime, WIDE)
        lines = first.open(written[:cut])
        second = Envelope(runtime, WIDE)
        second.restore(json.loads(json.dumps(first.state())))
        assert lines + second.open(written[cut:]) == whole


@pytest.mark.parametrize(
    ("fixture", "runtime"),
    [("container_json_file.log", "docker"), ("container_k8s_file.log", "cri")],
)
def test_a_split_line_too_long_is_dropped_whole_and_counted(fixture: str, runtime: Runtime) -> None:
    envelope = Envelope(runtime, 16384)
    lines: list[str] = []
    for record in records(fixture):  # one by one: nothing of the long line is held
        lines += envelope.open([record])
        assert sum(map(len, envelope.pending.values())) <= 16384
    assert envelope.take_too_long() == 1
    assert [line for line in lines if line not in ERROR_LINES] == FIXTURE_STDOUT[:-1]


def test_streams_are_joined_apart() -> None:
    cri = [
        "2026-12-06T19:27:25.1Z stdout P postfix/smtpd[1]: connect ",
        "2026-12-06T19:27:25.2Z stderr P postfix/smtpd[2]: warning: ",
        "2026-12-06T19:27:25.3Z stdout F from a[192.0.2.1]",
        "2026-12-06T19:27:25.4Z stderr F b",
        "2026-12-06T19:27:25.5Z stdout F ",
    ]
    assert Envelope("cri", 1000).open(cri) == [
        "postfix/smtpd[1]: connect from a[192.0.2.1]",
        "postfix/smtpd[2]: warning: b",
        "",
    ]


def test_records_not_in_the_format_are_passed_on() -> None:
    """A torn record is counted (as unsupported), not lost without a trace."""
    assert Envelope("docker", 1000).open(['{"log":"posti', "[1,2]"]) == ['{"log":"posti', "[1,2]"]
    assert Envelope("cri", 1000).open(["postfix/smtpd[1]: x"]) == ["postfix/smtpd[1]: x"]


def test_a_record_is_read_whole_up_to_its_escaped_size() -> None:
    """Docker writes ``<`` as six bytes: a 16 KiB piece of addresses is a 96 KiB record."""
    text = "<>" * 8192
    record = json.dumps({"log": text.replace("<", "\u003c"), "stream": "stdout"})
    record = record.replace("<", "\\u003c").replace(">", "\\u003e") + "\n"
    splitter = LineSplitter(record_bytes(16384))
    assert len(record) > 6 * 16384 and splitter.feed(record.encode()) == [record[:-1]]
    assert Envelope("docker", 16384).open([record[:-1]]) == []  # no newline: held


# --- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ({"type": "containers"}, "runtime (docker or cri) is required for type containers"),
        ({"type": "stdin", "runtime": "cri"}, "runtime is only allowed with type file or containers"),
        ({"path": "/x", "containers": ["postfix"]}, "containers and max_files are only allowed"),
        ({"path": "/x", "runtime": "podman"}, "Input should be 'docker' or 'cri'"),
        ({"type": "containers", "runtime": "cri", "max_files": 0}, "greater than or equal to 1"),
    ],
)  # fmt: skip
def test_config_mistakes(source: dict[str, object], problem: str) -> None:
    from mail_exporter.config.root import parse_config
    from mail_exporter.config.validation import ConfigError

    text = json.dumps({"collectors": {"logs": {"enabled": True, "sources": [source]}}})
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    assert problem in str(raised.value)


def test_default_globs_are_the_labels(tmp_path: Path) -> None:
    config = settings(
        tmp_path,
        {"type": "containers", "runtime": "docker"},
        {"type": "containers", "runtime": "cri"},
    )
    assert [source.label for source in config.sources] == [
        "/var/lib/docker/containers/*/*-json.log",
        "/var/log/pods/*/*/*.log",
    ]


# --- names ------------------------------------------------------------------------------


def test_container_names_as_each_runtime_records_them(tmp_path: Path) -> None:
    docker = tmp_path / "docker" / "abc"
    docker.mkdir(parents=True)
    (docker / "config.v2.json").write_text(json.dumps({"ID": "abc", "Name": "/mailserver"}))
    podman = tmp_path / "podman" / "def" / "userdata"
    podman.mkdir(parents=True)
    (podman.parents[1] / "containers.json").write_text(
        json.dumps([{"id": "xyz", "names": ["other"]}, {"id": "def", "names": ["postfix"]}])
    )
    pods = tmp_path / "pods" / "mail_mailserver-0_0f3c-11" / "postfix"
    pods.mkdir(parents=True)
    assert container_name(str(docker / "abc-json.log")) == "mailserver"
    assert container_name(str(podman / "ctr.log")) == "postfix"
    assert container_name(str(pods / "0.log")) == "mail/mailserver-0/postfix"
    assert container_name(str(tmp_path / "elsewhere.log")) == str(tmp_path / "elsewhere.log")


# --- the kubelet's layout and rotation, on files written here -----------------------------


def cri(line: str) -> str:
    return f"2026-12-06T19:27:25.000000000Z stdout F {line}\n"


def reference(lines: list[str]) -> Counter[tuple[str, ...]]:
    """The line counts that the lines, read straight, give."""
    counters = LogCounters(10, 10, 3600)
    feed = LineDispatcher(counters).feeder("syslog")
    for line in lines:
        feed(line)
    return Counter(counters.lines)


def line_counts(collector: LogsCollector) -> Counter[tuple[str, ...]]:
    with collector.counters.lock:
        return Counter(collector.counters.lines)


def read_lines(collector: LogsCollector) -> int:
    return collector.followers[0].lines_read


def kubelet_rotate(log: Path) -> None:
    """What the kubelet's container log manager does: gzip the rotated files but the
    newest, rename the log to LOG.YYYYMMDD-HHMMSS (unique here), then the runtime reopens."""
    for old in log.parent.glob(log.name + ".*"):
        if old.suffix != ".gz":
            with open(old, "rb") as plain, gzip.open(f"{old}.gz", "wb") as packed:
                shutil.copyfileobj(plain, packed)
            old.unlink()
    log.rename(f"{log}.{time.strftime('%Y%m%d-%H%M%S')}{uuid.uuid4().hex[:6]}")


def test_pods_found_by_glob_and_name_rotated_by_the_kubelet(
    tmp_path: Path, open_collectors: list[LogsCollector]
) -> None:
    pods = tmp_path / "pods"
    postfix = pods / "mail_mailserver-0_0f3c" / "postfix"
    dovecot = pods / "mail_mailserver-0_0f3c" / "dovecot"
    for directory in (postfix, dovecot):
        directory.mkdir(parents=True)
        (directory / "0.log").write_text(cri("postfix/smtpd[1]: before we started"))
    source = {"type": "containers", "runtime": "cri", "path": f"{pods}/*/*/*.log",
              "containers": ["mail/*/postfix"]}  # fmt: skip
    collector = follow(open_collectors, settings(tmp_path, source))
    follower = collector.followers[0]
    assert isinstance(follower, ContainersFollower)
    wait_for(lambda: follower.up)
    assert list(follower.logs) == [str(postfix / "0.log")]
    written: list[str] = []
    log = postfix / "0.log"
    for round_ in range(6):
        with open(log, "a") as file:
            for line in POSTFIX_LINES:
                file.write(cri(line))
                written.append(line)
        if round_ % 2:
            kubelet_rotate(log)
            log.touch()
        time.sleep(0.2)  # the kubelet rotates every 10 s at most: each file is seen
    with open(dovecot / "0.log", "a") as file:  # not selected
        file.write(cri(POSTFIX_LINES[0]))
    restarted = postfix / "1.log"  # the container restarts: a new file, found by a scan
    restarted.write_text("".join(cri(line) for line in POSTFIX_LINES))
    written += POSTFIX_LINES
    wait_for(lambda: read_lines(collector) >= len(written), timeout=30)
    time.sleep(0.5)
    assert read_lines(collector) == len(written)
    assert line_counts(collector) == reference(written)
    assert follower.rotations["rename"] == 3


def test_at_most_max_files_newest_first(
    tmp_path: Path, open_collectors: list[LogsCollector]
) -> None:
    for n in range(5):
        log = tmp_path / "pods" / f"ns_pod{n}_uid" / "postfix" / "0.log"
        log.parent.mkdir(parents=True)
        log.write_text(cri(f"postfix/smtpd[{n}]: connect from a[192.0.2.1]"))
        os.utime(log, (1000 + n, 1000 + n))
    source = {"type": "containers", "runtime": "cri", "path": f"{tmp_path}/pods/*/*/*.log",
              "max_files": 2}  # fmt: skip
    collector = follow(open_collectors, settings(tmp_path, source, start_at="beginning"))
    wait_for(lambda: read_lines(collector) == 2)
    follower = collector.followers[0]
    assert isinstance(follower, ContainersFollower)
    assert sorted(Path(path).parts[-3] for path in follower.logs) == ["ns_pod3_uid", "ns_pod4_uid"]


def test_no_container_log_yet_is_not_silent(
    tmp_path: Path, open_collectors: list[LogsCollector]
) -> None:
    source = {"type": "containers", "runtime": "docker", "path": f"{tmp_path}/*/*-json.log",
              "containers": ["postfix"]}  # fmt: skip
    collector = follow(open_collectors, settings(tmp_path, source))
    follower = collector.followers[0]
    wait_for(lambda: follower.problem != "not started")
    assert not follower.up
    assert follower.problem == f"waiting for a log of postfix at {tmp_path}/*/*-json.log"


def test_restart_continues_each_file(tmp_path: Path, open_collectors: list[LogsCollector]) -> None:
    log = tmp_path / "pods" / "ns_pod_uid" / "postfix" / "0.log"
    log.parent.mkdir(parents=True)
    log.write_text("")
    source = {"type": "containers", "runtime": "cri", "path": f"{tmp_path}/pods/*/*/*.log"}
    config = settings(tmp_path, source, state_file=str(tmp_path / "state.json"))
    first = follow(open_collectors, config)
    wait_for(lambda: first.followers[0].up)
    with open(log, "a") as file:  # the restart comes in the middle of a split line
        file.write(cri(POSTFIX_LINES[0]) + cri(POSTFIX_LINES[1][:30]).replace(" F ", " P ", 1))
    wait_for(lambda: read_lines(first) == 1)
    first.close()
    with open(log, "a") as file:
        file.write(cri(POSTFIX_LINES[1][30:]))
    second = follow(open_collectors, config)
    wait_for(lambda: read_lines(second) == 1)
    time.sleep(0.3)
    assert read_lines(second) == 1
    assert line_counts(second) == reference(POSTFIX_LINES[1:2])


# --- real runtimes ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def logger_image(podman: Podman) -> str:
    """The logger containers' image: the base image, whose shell and coreutils suffice."""
    return podman.base_image()


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Dockerd]:
    _require_binary("apt-get")
    daemon = Dockerd()
    try:
        daemon.start()
    except AssertionError as error:
        daemon.stop()
        pytest.fail(f"dockerd (Debian's docker.io, unpacked) cannot run here: {error}",
                    pytrace=False)  # fmt: skip
    yield daemon
    daemon.stop()


def logger_files(directory: Path, rounds: int) -> tuple[list[str], list[str]]:
    """The files the logger container prints (mounted read-only), and what it will print."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "lines").write_text("\n".join(POSTFIX_LINES) + "\n")
    (directory / "long").write_text(LONG_LINE + "\n")
    (directory / "errors").write_text("\n".join(ERROR_LINES) + "\n")
    (directory / "last").write_text(LAST_WORDS)
    (directory / "ready").mkdir()
    names = ("lines", "long", "errors", "last", "ready")
    mounts = [f"--volume={directory / name}:/{name}:ro" for name in names]
    return mounts, [*POSTFIX_LINES, LONG_LINE, *ERROR_LINES] * rounds


ROTATING_SCRIPT = (  # rounds paced so that each log file lives for a few of our polls
    "while [ ! -e /ready/go ]; do sleep 0.1; done; "
    'i=0; while [ $i -lt "$1" ]; do cat /lines /long; cat /errors >&2; i=$((i+1)); '
    "sleep 0.2; done"
)


def write_when_followed(
    collector: LogsCollector, logger: Path, start: Callable[[], None], finish: Callable[[], None]
) -> None:
    """Start the container (it waits), let a scan find its log, then let it write."""
    follower = collector.followers[0]
    assert isinstance(follower, ContainersFollower)
    start()
    wait_for(lambda: bool(follower.logs), timeout=30)
    (logger / "ready" / "go").touch()
    finish()


@pytest.mark.parametrize("driver", ["k8s-file", "json-file"])
def test_podman_rotated_while_writing(
    driver: str,
    podman: Podman,
    logger_image: str,
    tmp_path: Path,
    open_collectors: list[LogsCollector],
) -> None:
    """podman's json-file is k8s-file under another name: CRI records either way."""
    rounds = 40
    mounts, written = logger_files(tmp_path / "logger", rounds)
    name = f"logs-{uuid.uuid4().hex[:8]}"
    source = {"type": "containers", "runtime": "cri", "path": CONTAINER_LOGS, "containers": [name]}
    collector = follow(open_collectors, settings(tmp_path, source, max_line_bytes=WIDE))
    try:
        write_when_followed(
            collector,
            tmp_path / "logger",
            lambda: podman.run(
                "run", "--detach", f"--name={name}", "--network=none", *mounts,
                f"--log-driver={driver}", "--log-opt=max-size=64k",
                logger_image, "sh", "-c", ROTATING_SCRIPT, "logger", str(rounds),
            ),
            lambda: podman.run("wait", name, timeout=120),
        )  # fmt: skip
        wait_for(lambda: read_lines(collector) >= len(written), timeout=60)
        time.sleep(0.5)
        assert read_lines(collector) == len(written)
        assert line_counts(collector) == reference(written)
        assert collector.followers[0].rotations.get("rename", 0) >= 5  # conmon's ctr.log.tmp
    finally:
        podman.run("rm", "--force", name)


def test_docker_json_file_rotated_while_writing(
    dockerd: Dockerd,
    podman: Podman,
    logger_image: str,
    tmp_path: Path,
    open_collectors: list[LogsCollector],
) -> None:
    image = dockerd.load_image(podman, logger_image)
    rounds = 40
    mounts, written = logger_files(tmp_path / "logger", rounds)
    name = f"logs-{uuid.uuid4().hex[:8]}"
    logs = f"{dockerd.data}/containers/*/*-json.log"
    source = {"type": "containers", "runtime": "docker", "path": logs, "containers": [name]}
    collector = follow(open_collectors, settings(tmp_path, source, max_line_bytes=WIDE))
    try:
        write_when_followed(
            collector,
            tmp_path / "logger",
            lambda: dockerd.run(
                "run", "--detach", f"--name={name}", "--network=none", *mounts,
                "--log-driver=json-file", "--log-opt=max-size=100k", "--log-opt=max-file=3",
                "--log-opt=compress=true", image, "sh", "-c", ROTATING_SCRIPT, "logger", str(rounds),
            ),
            lambda: dockerd.run("wait", name, timeout=120),
        )  # fmt: skip
        wait_for(lambda: read_lines(collector) >= len(written), timeout=60)
        time.sleep(0.5)
        assert read_lines(collector) == len(written)
        assert line_counts(collector) == reference(written)
        assert collector.followers[0].rotations.get("rename", 0) >= 5  # ID-json.log.1
    finally:
        dockerd.run("rm", "--force", name)


def test_a_directory_it_may_not_list_is_named(
    tmp_path: Path, open_collectors: list[LogsCollector], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a user other than root, Docker's 0710 directories match nothing: glob() says
    no more than that, so the follower looks and says why."""
    from mail_exporter.collectors.logs import containers

    locked = tmp_path / "containers"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        containers.os, "access", lambda path, mode: path != str(locked) and real_access(path, mode)
    )
    source = {"type": "containers", "runtime": "docker", "path": f"{locked}/*/*-json.log"}
    collector = follow(open_collectors, settings(tmp_path, source))
    follower = collector.followers[0]
    wait_for(lambda: follower.problem != "not started")
    assert follower.problem == (
        f"cannot list {locked}: permission denied (see docs/container-logs.md)"
    )


def test_a_name_it_may_not_read_is_not_taken_for_the_path(
    tmp_path: Path, open_collectors: list[LogsCollector], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker's config.v2.json is 0600 root: the container is not silently unselected."""
    from mail_exporter.collectors.logs import containers

    log = tmp_path / "abc" / "abc-json.log"
    log.parent.mkdir()
    log.write_text("")
    config = log.parent / "config.v2.json"

    def unreadable(path: str) -> str:
        raise PermissionError(13, "Permission denied", str(config))

    monkeypatch.setattr(containers, "container_name", unreadable)
    source = {"type": "containers", "runtime": "docker", "path": f"{tmp_path}/*/*-json.log",
              "containers": ["postfix"]}  # fmt: skip
    collector = follow(open_collectors, settings(tmp_path, source))
    follower = collector.followers[0]
    wait_for(lambda: follower.problem != "not started")
    assert follower.problem == (
        f"cannot read the container's name in {config}: permission denied "
        "(see docs/container-logs.md)"
    )


def test_a_reload_takes_over_every_file_mid_line(
    tmp_path: Path, open_collectors: list[LogsCollector]
) -> None:
    """The successor continues each container's file after the last line counted, with
    the piece of a split line its predecessor held."""
    logs = [tmp_path / "pods" / f"ns_pod{n}_uid" / "postfix" / "0.log" for n in range(2)]
    for log in logs:
        log.parent.mkdir(parents=True)
        log.write_text("")
    source = {"type": "containers", "runtime": "cri", "path": f"{tmp_path}/pods/*/*/*.log"}
    first = follow(open_collectors, settings(tmp_path, source))
    wait_for(lambda: first.followers[0].up)
    line = POSTFIX_LINES[10]
    for log in logs:
        with open(log, "a") as file:
            file.write(cri(line) + cri(line[:20]).replace(" F ", " P ", 1))
    wait_for(lambda: read_lines(first) == 2)
    second = follow(open_collectors, settings(tmp_path, source, top_domains=3), first)
    for log in logs:
        with open(log, "a") as file:
            file.write(cri(line[20:]))
    wait_for(lambda: read_lines(second) == 4)
    time.sleep(0.3)
    assert read_lines(second) == 4
    assert line_counts(second) == reference([line] * 4)


def test_a_kubelet_rotation_while_down_is_read_from_its_new_name(
    tmp_path: Path, open_collectors: list[LogsCollector]
) -> None:
    """Restarted after the kubelet renamed 0.log to 0.log.YYYYMMDD-HHMMSS, the rest of the
    old file is found there (by its inode) before the new 0.log is read."""
    log = tmp_path / "pods" / "ns_pod_uid" / "postfix" / "0.log"
    log.parent.mkdir(parents=True)
    log.write_text("")
    source = {"type": "containers", "runtime": "cri", "path": f"{tmp_path}/pods/*/*/*.log"}
    config = settings(tmp_path, source, state_file=str(tmp_path / "state.json"))
    first = follow(open_collectors, config)
    wait_for(lambda: first.followers[0].up)
    with open(log, "a") as file:
        file.write(cri(POSTFIX_LINES[0]))
    wait_for(lambda: read_lines(first) == 1)
    first.close()
    with open(log, "a") as file:
        file.write("".join(cri(line) for line in POSTFIX_LINES[1:30]))
    kubelet_rotate(log)
    log.write_text("".join(cri(line) for line in POSTFIX_LINES[30:]))
    second = follow(open_collectors, config)
    wait_for(lambda: read_lines(second) >= len(POSTFIX_LINES) - 1)
    time.sleep(0.3)
    assert read_lines(second) == len(POSTFIX_LINES) - 1
    assert line_counts(second) == reference(POSTFIX_LINES[1:])


def test_a_file_it_cannot_read_is_reported(
    tmp_path: Path, open_collectors: list[LogsCollector]
) -> None:
    good = tmp_path / "pods" / "ns_pod0_uid" / "postfix" / "0.log"
    bad = tmp_path / "pods" / "ns_pod1_uid" / "postfix" / "0.log"
    good.parent.mkdir(parents=True)
    good.write_text("")
    bad.mkdir(parents=True)  # matched by the glob, opened, but no file to read
    source = {"type": "containers", "runtime": "cri", "path": f"{tmp_path}/pods/*/*/*.log"}
    collector = follow(open_collectors, settings(tmp_path, source))
    follower = collector.followers[0]
    wait_for(lambda: follower.problem not in ("not started", None))
    assert not follower.up
    assert follower.problem == f"cannot read {bad}: [Errno 21] Is a directory"
    bad.rmdir()  # its container is gone: no problem any more
    wait_for(lambda: follower.up, timeout=20)


POSTFIX_SCRIPT = r"""
postconf -e maillog_file=/dev/stdout inet_interfaces=loopback-only inet_protocols=ipv4 \
  mydestination= mynetworks=127.0.0.0/8 default_transport=smtp relay_transport=smtp \
  'relayhost=[127.0.0.1]:9' smtp_dns_support_level=disabled
postconf -M 'postlog/unix-dgram=postlog unix-dgram n - n - 1 postlogd'
/usr/lib/postfix/configure-instance.sh - >/dev/null 2>&1
postfix start-fg & master=$!
for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/25) 2>/dev/null && break; sleep 0.1; done
exec 3<>/dev/tcp/127.0.0.1/25
reply() { while read -r line <&3; do case "$line" in [0-9][0-9][0-9]" "*) return;; esac; done; }
chat() { printf '%s\r\n' "$1" >&3; reply; }
reply; chat 'EHLO client.test'; chat 'MAIL FROM:<a@example.org>'; chat 'RCPT TO:<b@example.net>'
chat 'DATA'; chat "$(printf 'Subject: t\r\n\r\nhello\r\n.')"; chat 'QUIT'
for i in $(seq 100); do postqueue -j | grep -q delay_reason && break; sleep 0.1; done
postfix stop; wait $master 2>/dev/null; exit 0
"""


@pytest.mark.parametrize("runtime", ["podman", "dockerd"])
def test_a_real_postfix_in_a_container(
    runtime: str,
    podman: Podman,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    open_collectors: list[LogsCollector],
) -> None:
    """Debian's Postfix 3.7 with ``maillog_file = /dev/stdout`` (``postfix start-fg``), as
    in a container image: its lines, read from the runtime's files, are all understood."""
    image = podman.stand_in(POSTFIX_IMAGE, "postfix.Containerfile")
    name = f"postfix-{uuid.uuid4().hex[:8]}"
    script = tmp_path / "postfix.sh"
    script.write_text(POSTFIX_SCRIPT)
    arguments = ["run", "--detach", f"--name={name}", "--network=none",
                 f"--volume={script}:/run.sh:ro"]  # fmt: skip
    if runtime == "podman":
        engine: Podman | Dockerd = podman
        logs, kind = CONTAINER_LOGS, "cri"
        arguments.append("--log-driver=k8s-file")
    else:
        engine = daemon = request.getfixturevalue("dockerd")
        image = daemon.load_image(podman, image)
        logs, kind = f"{daemon.data}/containers/*/*-json.log", "docker"
        arguments.append("--log-driver=json-file")
    source = {"type": "containers", "runtime": kind, "path": logs, "containers": [name]}
    collector = follow(open_collectors, settings(tmp_path, source))
    try:
        engine.run(*arguments, image, "bash", "/run.sh")
        engine.run("wait", name, timeout=120)
        follower = collector.followers[0]
        assert isinstance(follower, ContainersFollower)
        wait_for(lambda: bool(follower.logs), timeout=30)
        (path,) = follower.logs
        written = Envelope(kind, 16384).open(Path(path).read_text().splitlines())  # type: ignore[arg-type]
        wait_for(lambda: read_lines(collector) >= len(written), timeout=30)
    finally:
        engine.run("rm", "--force", name)
    time.sleep(0.3)
    assert read_lines(collector) == len(written)
    counts = line_counts(collector)
    assert counts == reference(written)
    postfix = {key: n for key, n in counts.items() if key[0] == "postfix"}
    assert [key for key in postfix if key[2] == "unsupported"] == []
    assert postfix[("postfix", "postfix/smtpd", "parsed")] >= 4
    with collector.counters.lock:
        assert collector.counters.connections[("postfix", "smtpd")] >= 1
        assert [key for key in collector.counters.deliveries if key[2] == "deferred"]


@pytest.mark.parametrize(
    ("fixture", "runtime"),
    [("container_postfix_json_file.log", "docker"), ("container_postfix_k8s_file.log", "cri")],
)
def test_a_real_containers_postfix_lines_are_understood(fixture: str, runtime: Runtime) -> None:
    """Postfix's ``maillog_file = /dev/stdout`` lines (``Dec 06 19:52:59 vm postfix/…``, the
    day zero-padded, unlike syslog's) as the runtimes recorded them."""
    lines = Envelope(runtime, 16384).open(records(fixture))
    assert len(lines) == 14 and lines[-1] == "Terminated"  # bash, about the stopped master
    counters = LogCounters(10, 10, 3600)
    feed = LineDispatcher(counters).feeder("syslog")
    for line in lines:
        feed(line)
    assert {key: n for key, n in counters.lines.items() if key[2] == "unsupported"} == {
        ("other", "none", "unsupported"): 1
    }
    assert counters.connections[("postfix", "smtpd")] == 2
    assert [n for key, n in counters.deliveries.items() if key[2] == "deferred"] == [1]


def test_a_name_recorded_after_the_log_appeared_is_found_at_the_next_scan(
    tmp_path: Path, open_collectors: list[LogsCollector]
) -> None:
    log = tmp_path / "abc" / "abc-json.log"
    log.parent.mkdir()
    log.write_text("")
    source = {"type": "containers", "runtime": "docker", "path": f"{tmp_path}/*/*-json.log",
              "containers": ["postfix"]}  # fmt: skip
    collector = follow(open_collectors, settings(tmp_path, source))
    follower = collector.followers[0]
    wait_for(lambda: follower.problem != "not started")
    assert not follower.up
    (log.parent / "config.v2.json").write_text(json.dumps({"Name": "/postfix"}))
    wait_for(lambda: follower.up, timeout=20)
    assert list(follower.logs) == [str(log)]
