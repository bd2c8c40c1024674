"""The Exim queue collector: spool parsing on fabricated files, and agreement with a real Exim."""

import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from prometheus_client.core import Metric
from prometheus_client.samples import Sample

from mail_exporter.collectors.base import COLLECTORS, CollectorError
from mail_exporter.collectors.exim_queue import (
    HEADER_READ_LIMIT,
    EximQueueCollector,
    EximQueueConfig,
    HeaderFacts,
    SpoolScan,
    parse_header,
    scan_spool,
)
from mail_exporter.config.root import Config
from tests.conftest import real_exim_or_fail
from tests.realservers.exim import Exim, exim_work_dir

OLD_ID = "1xX72l-0007Qa-1d"  # up to Exim 4.96
NEW_ID = "1xX72l-0000000Jqwe-0Z3f"  # Exim 4.97 and later
NOW = int(time.time())

INPUT = "mail_queue_messages{mta=exim,mta_instance=exim,queue=input}"
SIZE = "mail_queue_size_bytes{mta=exim,mta_instance=exim,queue=input}"
AGE = "mail_queue_oldest_message_age_seconds{mta=exim,mta_instance=exim,queue=input}"
FROZEN = "mail_queue_frozen_messages{mta=exim,mta_instance=exim}"


def header_file(
    message_id: str, received: int, flags: bytes = b"", recipient: str = "rcpt@test.local"
) -> bytes:
    """A -H file as Exim writes it: id, owner, sender, time, flags, recipients, headers."""
    start = (
        f"{message_id}-H\nroot 0 0\n<sender@test.local>\n{received} 0\n"
        "-received_time_usec .250000\n-ident root\n-received_protocol local\n"
    )
    end = f"-body_linecount 1\n-deliver_firsttime\nXX\n1\n{recipient}\n\n018  Subject: queued\n"
    return start.encode() + flags + end.encode()


def write_message(
    input_directory: Path, message_id: str, received: int, flags: bytes = b"", split: bool = False
) -> int:
    """A message's -H and -D files (in its split subdirectory if asked); returns their size."""
    directory = input_directory / message_id[5] if split else input_directory
    directory.mkdir(parents=True, exist_ok=True)
    header = header_file(message_id, received, flags)
    data = f"{message_id}-D\nhello\n".encode()
    (directory / f"{message_id}-H").write_bytes(header)
    (directory / f"{message_id}-D").write_bytes(data)
    return len(header) + len(data)


def values(families: Iterable[Metric]) -> dict[str, float]:
    """Samples by ``name{label=value,...}``, labels in order."""
    return {key(sample): sample.value for family in families for sample in family.samples}


def key(sample: Sample) -> str:
    labels = ",".join(f"{name}={value}" for name, value in sample.labels.items())
    return f"{sample.name}{{{labels}}}"


def collect(spool: Path, command: list[str], timeout: str = "5s") -> dict[str, float]:
    settings = EximQueueConfig(spool_directory=spool, exim_command=command, timeout=timeout)
    return values(EximQueueCollector(settings).collect())


def fake_exim(script: str) -> list[str]:
    """A stand-in for exim: a shell script that gets -bpc as $1."""
    return ["sh", "-c", script, "exim4"]


# --- -H files -------------------------------------------------------------------------


def test_header_gives_received_time_and_frozen_flag() -> None:
    frozen = header_file(OLD_ID, 1_700_000_000, b"-frozen 1700000600\n")
    assert parse_header(frozen, OLD_ID) == HeaderFacts(1_700_000_000.0, frozen=True)
    thawed = header_file(NEW_ID, 1_700_000_000, b"-manual_thaw\n")
    assert parse_header(thawed, NEW_ID) == HeaderFacts(1_700_000_000.0, frozen=False)


def test_header_skips_acl_variable_values_by_their_length() -> None:
    value = b"line one\n-frozen 1\nXX\n"  # looks like flags and the end of them
    flags = b"-aclm spoof %d\n%s\n--aclc tainted 3\nabc\n-frozen 1700000600\n" % (
        len(value),
        value,
    )
    frozen = HeaderFacts(1_700_000_000.0, frozen=True)
    assert parse_header(header_file(OLD_ID, 1_700_000_000, flags), OLD_ID) == frozen
    only_in_a_value = b"-aclm spoof %d\n%s\n" % (len(value), value)
    thawed = HeaderFacts(1_700_000_000.0, frozen=False)
    assert parse_header(header_file(OLD_ID, 1_700_000_000, only_in_a_value), OLD_ID) == thawed


def test_header_that_is_not_exims_has_no_facts() -> None:
    assert parse_header(header_file(OLD_ID, 1_700_000_000), NEW_ID) is None
    assert parse_header(b"1xX72l-0007Qa-1d-H\nroot 0 0\n<>\nyesterday 0\n", OLD_ID) is None
    assert parse_header(b"", OLD_ID) is None


def test_header_cut_at_the_read_limit_counts_as_not_frozen() -> None:
    huge = b"x" * HEADER_READ_LIMIT
    flags = b"-aclm big %d\n%s\n-frozen 1700000600\n" % (len(huge), huge)
    head = header_file(OLD_ID, 1_700_000_000, flags)[:HEADER_READ_LIMIT]
    assert parse_header(head, OLD_ID) == HeaderFacts(1_700_000_000.0, frozen=False)


# --- the spool ------------------------------------------------------------------------


def test_spool_counts_both_id_lengths_split_and_unsplit(tmp_path: Path) -> None:
    input_directory = tmp_path / "input"
    ids = ["1xX72l-0007Qa-1d", "1xX73m-0007Qb-2e", NEW_ID, "1xX74n-0000000Jqwf-0Z3g"]
    size = write_message(input_directory, ids[0], NOW - 3600)
    size += write_message(input_directory, ids[1], NOW - 60, split=True)
    size += write_message(input_directory, ids[2], NOW - 7200, b"-frozen 1\n")
    size += write_message(input_directory, ids[3], NOW - 10, b"-frozen 1\n", split=True)

    scan = scan_spool(input_directory)

    assert (scan.queue.messages, scan.queue.size_bytes, scan.frozen) == (4, size, 2)
    assert scan.queue.oldest_arrival == NOW - 7200


def test_spool_ignores_what_is_not_a_queued_message(tmp_path: Path) -> None:
    input_directory = tmp_path / "input"
    size = write_message(input_directory, OLD_ID, NOW - 100)
    (input_directory / "1xX99z-0007Zz-9z-D").write_text("data without a -H file yet\n")
    (input_directory / f"{OLD_ID}-J").write_text("journal\n")
    (input_directory / "hdr.1xX99y-0007Zy-9y").write_text("-H being written\n")
    (input_directory / "1xX99z-0007Zz-9z-H.old").write_text("not a spool name\n")
    (input_directory / "ab").mkdir()  # not a split subdirectory
    write_message(input_directory / "ab", "1xX98a-0007Za-9a", NOW - 999_999)
    (tmp_path / "msglog").mkdir()

    scan = scan_spool(input_directory)

    assert (scan.queue.messages, scan.queue.size_bytes) == (1, size)


def test_message_gone_between_listing_and_reading_is_skipped(tmp_path: Path) -> None:
    input_directory = tmp_path / "input"
    size = write_message(input_directory, OLD_ID, NOW - 100)
    # A dangling -H link lists like a file and then fails to open, as a delivered message does.
    (input_directory / "1xX99z-0007Zz-9z-H").symlink_to(tmp_path / "delivered-H")

    scan = scan_spool(input_directory)

    assert (scan.queue.messages, scan.queue.size_bytes) == (1, size)


def test_spool_skips_what_is_not_a_regular_file(tmp_path: Path) -> None:
    """A FIFO named like a -H file would make a plain open wait for a writer for ever."""
    input_directory = tmp_path / "input"
    size = write_message(input_directory, OLD_ID, NOW - 100)
    os.mkfifo(input_directory / "1xX99z-0007Zz-9z-H")
    scans: list[SpoolScan] = []
    scanner = threading.Thread(
        target=lambda: scans.append(scan_spool(input_directory)), daemon=True
    )
    scanner.start()
    scanner.join(10)
    assert not scanner.is_alive(), "the scan waits on the FIFO"
    assert (scans[0].queue.messages, scans[0].queue.size_bytes) == (1, size)


def test_unparsable_header_counts_without_an_age(tmp_path: Path) -> None:
    input_directory = tmp_path / "input"
    write_message(input_directory, OLD_ID, NOW - 100)
    (input_directory / f"{NEW_ID}-H").write_bytes(b"\0" * 512)  # as left by a crash

    scan = scan_spool(input_directory)

    assert scan.queue.messages == 2
    assert scan.queue.size_bytes > 512
    assert scan.queue.oldest_arrival == NOW - 100


def test_collector_reports_the_spool(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    size = write_message(spool / "input", OLD_ID, NOW - 3600, b"-frozen 1\n")
    size += write_message(spool / "input", NEW_ID, NOW - 60)

    samples = collect(spool, fake_exim("exit 1"))

    assert samples[INPUT] == 2
    assert samples[SIZE] == size
    assert 3600 <= samples[AGE] <= 3600 + (time.time() - NOW)  # NOW: when the module loaded
    assert samples[FROZEN] == 1
    assert samples["mail_queue_source_info{mta=exim,mta_instance=exim,source=spool}"] == 1


def test_empty_spool_reports_zero(tmp_path: Path) -> None:
    (tmp_path / "input").mkdir()
    samples = collect(tmp_path, fake_exim("exit 1"))
    assert (samples[INPUT], samples[SIZE], samples[AGE], samples[FROZEN]) == (0, 0, 0, 0)


# --- exim -bpc when the spool cannot be read -------------------------------------------


def test_unreadable_spool_falls_back_to_bpc_count_only(tmp_path: Path) -> None:
    samples = collect(tmp_path / "missing", fake_exim('test "$1" = -bpc && echo 7'))
    assert samples == {
        INPUT: 7,
        "mail_queue_source_info{mta=exim,mta_instance=exim,source=bpc}": 1,
    }  # no size, age or frozen count: unknown, not 0


def test_both_failing_names_both_reasons(tmp_path: Path) -> None:
    with pytest.raises(CollectorError) as failure:
        collect(tmp_path / "missing", [str(tmp_path / "no-exim4")])
    message = str(failure.value)
    assert f"spool {tmp_path / 'missing' / 'input'}: No such file or directory" in message
    assert f"{tmp_path / 'no-exim4'} -bpc: No such file or directory" in message


def test_bpc_failure_carries_exims_message(tmp_path: Path) -> None:
    with pytest.raises(CollectorError, match=r"exit status 1: exim: permission denied"):
        collect(tmp_path / "missing", fake_exim("echo 'exim: permission denied' >&2; exit 1"))


def test_bpc_with_unexpected_output_fails(tmp_path: Path) -> None:
    with pytest.raises(CollectorError, match=r"unexpected output 'hello'"):
        collect(tmp_path / "missing", fake_exim("echo hello"))


def test_hung_bpc_is_killed_within_the_section_timeout(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(CollectorError, match=r"no answer within 0\.4s, killed"):
        collect(tmp_path / "missing", fake_exim("exec sleep 30"), timeout="500ms")
    assert time.monotonic() - started < 30  # killed, not waited for


def test_registered_as_exim_queue() -> None:
    spec = COLLECTORS["exim_queue"]
    assert isinstance(spec.build(Config().collectors.exim_queue, None), EximQueueCollector)


# --- a real Exim ----------------------------------------------------------------------


@pytest.fixture
def work_dir() -> Iterator[Path]:
    with exim_work_dir() as directory:
        yield directory


def real_exim(work_dir: Path, split_spool: bool = False) -> Exim:
    """A private Exim; fails the test with the reason when it cannot run here."""
    return real_exim_or_fail(lambda: Exim(work_dir, split_spool=split_spool))


def received_times(spool: Path) -> list[int]:
    """The received time on the fourth line of every -H file, read independently."""
    return [int(path.read_text().splitlines()[3].split()[0]) for path in spool.glob("input/**/*-H")]


@pytest.mark.parametrize("split_spool", [False, True], ids=["unsplit", "split"])
def test_agrees_with_a_real_exim(work_dir: Path, split_spool: bool) -> None:
    exim = real_exim(work_dir, split_spool)
    ids = [
        exim.queue("sender@test.local", f"rcpt{n}@test.local", "body " * (20 * n)) for n in range(4)
    ]
    exim.freeze(ids[1])
    exim.freeze(ids[3])
    layout = {path.parent.name for path in exim.spool_directory.glob("input/**/*-H")}
    assert layout == ({id_[5] for id_ in ids} if split_spool else {"input"})

    samples = collect(exim.spool_directory, exim.command)

    assert samples[INPUT] == exim.count() == 4
    assert samples[FROZEN] == exim.frozen_count() == 2
    shown = exim.listing()  # exim -bp: headers and body, without the envelope
    assert sum(shown.values()) < samples[SIZE] < sum(shown.values()) + 4 * 1024
    oldest = min(received_times(exim.spool_directory))
    assert scan_spool(exim.spool_directory / "input").queue.oldest_arrival == oldest
    assert 0 <= samples[AGE] == pytest.approx(time.time() - oldest, abs=2)


def test_bpc_fallback_with_a_real_exim(work_dir: Path, tmp_path: Path) -> None:
    exim = real_exim(work_dir)
    for n in range(3):
        exim.queue("sender@test.local", f"rcpt{n}@test.local", "hello")

    samples = collect(tmp_path / "not-the-spool", exim.command)

    assert samples[INPUT] == exim.count() == 3
    assert "mail_queue_source_info{mta=exim,mta_instance=exim,source=bpc}" in samples
    assert SIZE not in samples and AGE not in samples and FROZEN not in samples


def test_real_exim_failing_too_names_both_reasons(work_dir: Path, tmp_path: Path) -> None:
    exim = real_exim(work_dir)
    command = [*exim.command[:-1], str(tmp_path / "missing.conf")]  # -C a missing config

    with pytest.raises(CollectorError) as failure:
        collect(tmp_path / "not-the-spool", command)

    message = str(failure.value)
    assert f"{tmp_path / 'not-the-spool' / 'input'}: No such file or directory" in message
    assert "-bpc: exit status 1:" in message
    assert "missing.conf" in message
