"""The qmail queue collector: a queue directory tree, and qmail-qstat/qmail-qread outputs."""

import calendar
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from prometheus_client.core import Metric
from prometheus_client.samples import Sample

from mail_exporter.collectors import qmail_queue
from mail_exporter.collectors.base import COLLECTORS, CollectorError
from mail_exporter.collectors.qmail_queue import (
    QmailQueueCollector,
    QmailQueueConfig,
    parse_qread,
    parse_qstat,
    scan_queue_directory,
)
from mail_exporter.config.root import Config

FIXTURES = Path(__file__).parent / "fixtures" / "qmail"
QSTAT = ["cat", str(FIXTURES / "qmail-qstat.txt")]
QREAD = ["cat", str(FIXTURES / "qmail-qread.txt")]
NOW = time.time()


def metric(name: str, queue: str) -> str:
    return f"{name}{{mta=qmail,mta_instance=qmail,queue={queue}}}"


def values(families: Iterable[Metric]) -> dict[str, float]:
    """Samples by ``name{label=value,...}``, labels in order."""
    return {key(sample): sample.value for family in families for sample in family.samples}


def key(sample: Sample) -> str:
    labels = ",".join(f"{name}={value}" for name, value in sample.labels.items())
    return f"{sample.name}{{{labels}}}"


def collect(
    queue_directory: Path, qstat: list[str] = QSTAT, qread: list[str] = QREAD
) -> dict[str, float]:
    settings = QmailQueueConfig(
        queue_directory=queue_directory, qstat_command=qstat, qread_command=qread
    )
    return values(QmailQueueCollector(settings).collect())


def write(path: Path, size: int, age: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (NOW - age, NOW - age))


@pytest.fixture
def queue_directory(tmp_path: Path) -> Path:
    """A qmail queue: two preprocessed messages, three in todo (one with big-todo's split)."""
    queue = tmp_path / "queue"
    for name in ("info", "local", "remote", "intd", "bounce", "pid", "lock"):
        (queue / name).mkdir(parents=True)
    write(queue / "mess" / "3" / "100", 1000, age=7200)
    write(queue / "info" / "3" / "100", 20, age=7199)
    write(queue / "mess" / "5" / "200", 300, age=60)
    write(queue / "info" / "5" / "200", 20, age=59)
    write(queue / "mess" / "7" / "300", 50, age=5)
    write(queue / "todo" / "300", 40, age=5)
    write(queue / "todo" / "400", 40, age=1)  # its message file already gone
    write(queue / "mess" / "9" / "500", 70, age=30)
    write(queue / "todo" / "9" / "500", 40, age=30)
    write(queue / "todo" / "tmp.partial", 1, age=0)  # not named by an inode number
    return queue


# --- the queue directory ----------------------------------------------------------------


def test_directory_splits_queue_and_todo(queue_directory: Path) -> None:
    queues = scan_queue_directory(queue_directory)

    assert (queues["queue"].messages, queues["queue"].size_bytes) == (2, 1300)
    assert queues["queue"].oldest_arrival == pytest.approx(NOW - 7200)
    assert (queues["todo"].messages, queues["todo"].size_bytes) == (3, 120)
    assert queues["todo"].oldest_arrival == pytest.approx(NOW - 30)


def test_message_delivered_while_scanning_is_skipped(
    queue_directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = qmail_queue._queue_files

    def then_delivered(directory: Path) -> Iterator[os.DirEntry[str]]:
        for entry in listed(directory):
            if entry.name == "200":
                Path(entry.path).unlink()  # after listing, before the stat
            yield entry

    monkeypatch.setattr(qmail_queue, "_queue_files", then_delivered)
    queues = scan_queue_directory(queue_directory)
    assert (queues["queue"].messages, queues["queue"].size_bytes) == (1, 1000)


def test_collector_reports_the_directory(queue_directory: Path) -> None:
    samples = collect(queue_directory, qstat=["false"], qread=["false"])

    assert samples[metric("mail_queue_messages", "queue")] == 2
    assert samples[metric("mail_queue_messages", "todo")] == 3
    assert samples[metric("mail_queue_size_bytes", "queue")] == 1300
    assert samples[metric("mail_queue_size_bytes", "todo")] == 120
    since_written = time.time() - NOW  # the files' times are relative to NOW
    assert (
        7200
        <= samples[metric("mail_queue_oldest_message_age_seconds", "queue")]
        <= 7200 + since_written
    )
    assert (
        30 <= samples[metric("mail_queue_oldest_message_age_seconds", "todo")] <= 30 + since_written
    )
    assert samples["mail_queue_source_info{mta=qmail,mta_instance=qmail,source=directory}"] == 1


def test_empty_queue_reports_zero_for_both_queues(tmp_path: Path) -> None:
    for name in ("mess", "todo"):
        (tmp_path / name).mkdir()
    samples = collect(tmp_path)
    for queue in ("queue", "todo"):
        for name in ("messages", "size_bytes", "oldest_message_age_seconds"):
            assert samples[metric(f"mail_queue_{name}", queue)] == 0


# --- qmail-qstat and qmail-qread --------------------------------------------------------


def test_qstat_gives_the_todo_count() -> None:
    assert parse_qstat((FIXTURES / "qmail-qstat.txt").read_text()) == 1


@pytest.mark.parametrize(
    "output",
    [
        (FIXTURES / "qmail-qstat-unreadable.txt").read_text(),
        "messages in queue: 5\n",
        "qmail-qstat: not found\n",
    ],
    ids=["unreadable-queue", "truncated", "garbage"],
)
def test_qstat_refuses_other_output(output: str) -> None:
    with pytest.raises(ValueError, match="unexpected qmail-qstat output"):
        parse_qstat(output)


def test_qread_gives_count_bytes_and_oldest_arrival() -> None:
    stats = parse_qread((FIXTURES / "qmail-qread.txt").read_text())
    assert (stats.messages, stats.size_bytes) == (4, 1234 + 512 + 20480 + 333)
    assert stats.oldest_arrival == calendar.timegm((2026, 11, 3, 9, 15, 0))


def test_qread_of_an_empty_queue() -> None:
    stats = parse_qread("")
    assert (stats.messages, stats.size_bytes, stats.oldest_arrival) == (0, 0, None)


def test_unreadable_directory_falls_back_to_the_commands(tmp_path: Path) -> None:
    samples = collect(tmp_path / "missing")

    oldest = calendar.timegm((2026, 11, 3, 9, 15, 0))
    assert samples[metric("mail_queue_messages", "queue")] == 4
    assert samples[metric("mail_queue_messages", "todo")] == 1
    assert samples[metric("mail_queue_size_bytes", "queue")] == 22559
    age = samples[metric("mail_queue_oldest_message_age_seconds", "queue")]
    assert age == pytest.approx(max(0.0, time.time() - oldest), abs=5)
    # qmail-qread does not list todo: its size and age are unknown, so absent, not 0.
    assert metric("mail_queue_size_bytes", "todo") not in samples
    assert metric("mail_queue_oldest_message_age_seconds", "todo") not in samples
    assert samples["mail_queue_source_info{mta=qmail,mta_instance=qmail,source=commands}"] == 1


def test_both_failing_names_both_reasons(tmp_path: Path) -> None:
    with pytest.raises(CollectorError) as failure:
        collect(tmp_path / "missing", qread=[str(tmp_path / "no-qmail-qread")])
    message = str(failure.value)
    assert f"queue directory {tmp_path / 'missing' / 'mess'}: No such file or directory" in message
    assert f"{tmp_path / 'no-qmail-qread'}: No such file or directory" in message


def test_qread_failure_carries_its_message(tmp_path: Path) -> None:
    # qmail-qread writes its fatal errors to standard output and exits 111.
    qread = ["sh", "-c", "echo 'fatal: unable to chdir: access denied'; exit 111"]
    with pytest.raises(CollectorError, match="exit status 111: fatal: unable to chdir"):
        collect(tmp_path / "missing", qread=qread)


def test_qstat_that_could_not_read_the_queue_fails(tmp_path: Path) -> None:
    qstat = ["cat", str(FIXTURES / "qmail-qstat-unreadable.txt")]
    with pytest.raises(CollectorError, match="unexpected qmail-qstat output"):
        collect(tmp_path / "missing", qstat=qstat)


def test_registered_as_qmail_queue() -> None:
    spec = COLLECTORS["qmail_queue"]
    assert isinstance(spec.build(Config().collectors.qmail_queue, None), QmailQueueCollector)
