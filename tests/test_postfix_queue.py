"""Postfix queue collector against a real Postfix: each source agrees with ``postqueue -j``."""

from __future__ import annotations

import json
import logging
import os
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.core import Metric

from mail_exporter.collectors.base import CollectorError
from mail_exporter.collectors.postfix_queue.collector import PostfixQueueCollector
from mail_exporter.collectors.postfix_queue.config import PostfixQueueConfig
from mail_exporter.collectors.postfix_queue.reasons import (
    DEFER_REASONS,
    classify_reason,
    recipient_domain,
)
from mail_exporter.collectors.postfix_queue.showq import parse_showq
from mail_exporter.collectors.postfix_queue.snapshot import MAX_FIELD_BYTES, QUEUES, QueueSnapshot
from mail_exporter.collectors.postfix_queue.spool import (
    HEAD_BYTES,
    SpoolScanner,
    parse_defer_log,
    parse_queue_file_head,
    read_queue_file,
)
from mail_exporter.collectors.queues import read_head, top_with_other
from tests.conftest import new_postfix
from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import PKI
from tests.realservers.postfix import Postfix

pytestmark = pytest.mark.integration


class LoopbackServer:
    """A TCP server in a thread: ``reply`` is sent line by line per command, or nothing at all."""

    def __init__(self, banner: bytes | None, rcpt_reply: bytes = b"250 ok") -> None:
        self.banner = banner
        self.rcpt_reply = rcpt_reply
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            if self.banner is not None:
                threading.Thread(target=self._talk, args=(connection,), daemon=True).start()

    def _talk(self, connection: socket.socket) -> None:
        assert self.banner is not None
        with connection, connection.makefile("rb") as lines:
            connection.sendall(self.banner + b"\r\n")
            for line in lines:
                verb = line.split(b" ")[0].strip().upper()
                if verb == b"QUIT":
                    connection.sendall(b"221 bye\r\n")
                    return
                reply = self.rcpt_reply if verb == b"RCPT" else b"250 ok"
                connection.sendall(reply + b"\r\n")

    def close(self) -> None:
        self.listener.close()
        for connection in self.connections:
            connection.close()


@dataclass
class QueuedPostfix:
    server: Postfix
    expected: QueueSnapshot


def postqueue_snapshot(server: Postfix) -> QueueSnapshot:
    """What ``postqueue -j`` says, folded the way the collector should fold it."""
    output = subprocess.run(["postqueue", "-c", str(server.config_dir), "-j"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    snapshot = QueueSnapshot("postqueue")
    for line in output.splitlines():
        record = json.loads(line)
        snapshot.add_message(
            record["queue_name"], record["message_size"], float(record["arrival_time"])
        )
        if record["queue_name"] == "deferred":
            for recipient in record["recipients"]:
                if recipient.get("delay_reason"):
                    snapshot.add_deferral(recipient["address"], recipient["delay_reason"])
    return snapshot


def wait_for(
    server: Postfix, condition: str, check: object, timeout: float = 30.0
) -> QueueSnapshot:
    deadline = time.monotonic() + timeout
    while True:
        snapshot = postqueue_snapshot(server)
        if check(snapshot):  # type: ignore[operator]
            return snapshot
        if time.monotonic() > deadline:
            pytest.fail(f"the queue never reached {condition}: {snapshot}")
        time.sleep(0.2)


def postconf(server: Postfix, *arguments: str) -> None:
    subprocess.run(["postconf", "-c", str(server.config_dir), *arguments], check=True)


@pytest.fixture(scope="module")
def queued_postfix(
    tmp_path_factory: pytest.TempPathFactory, pki: PKI, dovecot: Dovecot
) -> Iterator[QueuedPostfix]:
    """Deferred (refused, timed out, 4xx), held and active mail in a private Postfix."""
    silent = LoopbackServer(banner=None)
    busy = LoopbackServer(banner=b"220 busy.example ESMTP", rcpt_reply=b"450 4.2.1 mailbox busy")
    server = new_postfix(tmp_path_factory, pki, dovecot)
    server.start()
    try:
        postconf(server, "-Me", "quick/unix=quick unix - - n - - smtp -o smtp_helo_timeout=1s")
        postconf(server, "-e", "transport_maps = inline:{"
                 f"slow.example=quick:[127.0.0.1]:{silent.port}, "
                 f"stuck.example=smtp:[127.0.0.1]:{silent.port}, "
                 f"busy.example=smtp:[127.0.0.1]:{busy.port}}}")  # fmt: skip
        subprocess.run(["postfix", "-c", str(server.config_dir), "reload"], check=True,
                       capture_output=True)  # fmt: skip
        with smtplib.SMTP("127.0.0.1", server.smtp_port) as client:
            for index, recipients in enumerate(
                [
                    ["a@refused.example", "b@refused.example"],
                    ["c@refused.example", "d@slow.example"],
                    ["e@busy.example"],
                    ["f@slow.example"],
                    ["g@refused.example"],
                ]
            ):
                body = f"Subject: queued {index}\r\n\r\n" + "x" * (500 * index)
                client.sendmail("sender@test.local", recipients, body)
            client.sendmail("sender@test.local", ["h@stuck.example"], "Subject: stuck\r\n\r\nwait")
        settled = wait_for(server, "5 deferred and 1 active",
                           lambda s: s.queues["deferred"].messages == 5 and s.queues["active"].messages == 1)  # fmt: skip
        listing = subprocess.run(["postqueue", "-c", str(server.config_dir), "-j"],
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
        held_id = next(  # hold the one refused-only message, keeping every reason deferred
            record["queue_id"]
            for record in map(json.loads, listing.splitlines())
            if [r["address"] for r in record["recipients"]] == ["g@refused.example"]
        )
        subprocess.run(["postsuper", "-c", str(server.config_dir), "-h", held_id], check=True,
                       capture_output=True)  # fmt: skip
        settled = wait_for(server, "1 held", lambda s: s.queues["hold"].messages == 1)
        yield QueuedPostfix(server, settled)
    finally:
        server.stop()
        silent.close()
        busy.close()


@pytest.mark.parametrize("source", ["spool", "showq", "postqueue"])
def test_each_source_agrees_with_postqueue(queued_postfix: QueuedPostfix, source: str) -> None:
    server = queued_postfix.server
    settings = PostfixQueueConfig.model_validate(
        {"source": source, "instances": [{"config_directory": str(server.config_dir)}]}
    )
    collector = PostfixQueueCollector(settings)
    snapshot = collector.snapshot(settings.instances[0])
    expected = postqueue_snapshot(server)  # again: nothing may have moved since the fixture
    assert snapshot.source == source
    for queue in QUEUES:
        got, want = snapshot.queues[queue], expected.queues[queue]
        assert (got.messages, got.size_bytes, got.oldest_arrival) == (
            want.messages, want.size_bytes, want.oldest_arrival
        ), queue  # fmt: skip
    assert expected.queues["deferred"].messages == 4
    assert expected.queues["hold"].messages == 1
    assert expected.queues["active"].messages == 1
    assert snapshot.reasons == expected.reasons
    assert set(snapshot.reasons) >= {"connection_refused", "timed_out", "remote_4xx"}
    assert snapshot.domains == expected.domains


def test_metrics_of_every_queue(queued_postfix: QueuedPostfix) -> None:
    settings = PostfixQueueConfig.model_validate(
        {"instances": [{"name": "out", "config_directory": str(queued_postfix.server.config_dir)}]}
    )
    families = {family.name: family for family in PostfixQueueCollector(settings).collect()}
    messages = {s.labels["queue"]: s.value for s in families["mail_queue_messages"].samples}
    assert messages == {"maildrop": 0, "incoming": 0, "active": 1, "deferred": 4, "hold": 1}
    ages = {
        s.labels["queue"]: s.value
        for s in families["mail_queue_oldest_message_age_seconds"].samples
    }
    assert ages["maildrop"] == 0 and ages["deferred"] > 0
    reasons = {s.labels["reason"] for s in families["mail_queue_deferred_recipients"].samples}
    assert reasons == set(DEFER_REASONS)
    sources = [
        (s.labels["mta_instance"], s.labels["source"])
        for s in families["mail_queue_source_info"].samples
    ]
    assert sources == [("out", "spool")]  # root may read the spool: the cheapest source wins
    assert all(s.labels["mta_instance"] == "out" for s in families["mail_queue_messages"].samples)


def test_arrival_comes_from_the_queue_file_not_mtime(queued_postfix: QueuedPostfix) -> None:
    # the first file: hashed subdirectories may be empty (the held message left one)
    deferred = next(
        p for p in (queued_postfix.server.queue_dir / "deferred").rglob("*") if p.is_file()
    )
    size, arrival = read_queue_file(str(deferred)) or (0, None)
    assert arrival is not None
    assert deferred.stat().st_mtime > arrival + 600  # Postfix set the mtime to the next retry


def listed(directory: Path) -> Iterator[Path]:
    """Files below ``directory`` in the order of its listings, subdirectories where met."""
    with os.scandir(directory) as listing:
        entries = list(listing)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from listed(Path(entry.path))
        elif entry.is_file(follow_symlinks=False):
            yield Path(entry.path)


def read_plainly(queue_directory: Path) -> QueueSnapshot:
    """The spool read the plain way: every queue file checked with ``fstat`` and its
    records walked, every defer log read through a file object, every message and
    recipient counted one at a time in listing order."""
    snapshot = QueueSnapshot("spool")
    logs = {path.name: path for path in listed(queue_directory / "defer")}
    for queue in QUEUES:
        for path in listed(queue_directory / queue):
            found = read_head(str(path), HEAD_BYTES)
            assert found is not None
            size, arrival = parse_queue_file_head(found[0])
            snapshot.add_message(queue, found[1] if size is None else size, arrival)
            if queue == "deferred" and path.name in logs:
                with logs[path.name].open("rb") as log:
                    for recipient, reason in parse_defer_log(log.read(MAX_FIELD_BYTES)):
                        snapshot.add_deferral(recipient, reason)
    return snapshot


def folded(snapshot: QueueSnapshot) -> tuple[object, ...]:
    """Everything a snapshot says, the order of its counters included (it breaks ties
    between domains at the cap)."""
    queues = {q: (s.messages, s.size_bytes, s.oldest_arrival) for q, s in snapshot.queues.items()}
    return queues, list(snapshot.reasons.items()), list(snapshot.domains.items())


def test_the_spool_scan_reads_what_a_plain_read_reads(queued_postfix: QueuedPostfix) -> None:
    queue_directory = queued_postfix.server.queue_dir
    scanner = SpoolScanner(queue_directory)
    first, later = scanner.scan(), scanner.scan()
    expected = folded(read_plainly(queue_directory))
    assert folded(first) == expected
    assert folded(later) == expected  # from what the first scan remembered
    assert first.queues["deferred"].messages == 4 and first.reasons


def test_the_spool_scan_leaves_access_times_alone(queued_postfix: QueuedPostfix) -> None:
    """A deferred queue file's mtime is its next retry, in the future: under ``relatime``
    every read would write its access time, a write to Postfix's disk at each scan."""
    queue_directory = queued_postfix.server.queue_dir
    files = [*listed(queue_directory / "deferred"), *listed(queue_directory / "defer")]
    assert any(path.stat().st_mtime > time.time() for path in files)
    for path in files:  # a second back: a read in the same clock tick would not show
        found = path.stat()
        os.utime(path, ns=(found.st_atime_ns - 1_000_000_000, found.st_mtime_ns))
    before = {path: path.stat().st_atime_ns for path in files}
    SpoolScanner(queue_directory).scan()
    assert {path: path.stat().st_atime_ns for path in files} == before


def test_the_spool_scan_without_the_right_to_keep_access_times(
    queued_postfix: QueuedPostfix,
) -> None:
    """Root without ``CAP_FOWNER`` may read the spool but not open it with ``O_NOATIME``:
    the scan reads it the ordinary way and counts the same."""
    queue_directory = queued_postfix.server.queue_dir
    program = (
        "import json, sys\n"
        "from mail_exporter.collectors.postfix_queue.spool import SpoolScanner\n"
        "snapshot = SpoolScanner(sys.argv[1]).scan()\n"
        "print(json.dumps([{q: s.messages for q, s in snapshot.queues.items()},"
        " snapshot.reasons, snapshot.domains]))\n"
    )
    command = ["setpriv", "--bounding-set=-fowner", "--", sys.executable, "-c", program]
    output = subprocess.run([*command, str(queue_directory)], capture_output=True, text=True,
                            check=True, timeout=60).stdout  # fmt: skip
    expected = read_plainly(queue_directory)
    messages = {q: s.messages for q, s in expected.queues.items()}
    assert json.loads(output) == [messages, expected.reasons, expected.domains]


@pytest.mark.parametrize(("reason", "kind"), [
    ("connect to mx.example.net[192.0.2.1]:25: Connection refused", "connection_refused"),
    ("connect to mx.example.net[192.0.2.1]:25: Connection timed out", "timed_out"),
    ("conversation with mx[192.0.2.1] timed out while receiving the initial server greeting", "timed_out"),
    ("Host or domain name not found. Name service error for name=x.invalid type=MX: Host not found, try again", "dns"),
    ("TLS is required, but was not offered by host mx.example.net[192.0.2.1]", "tls"),
    ("Cannot start TLS: handshake failure", "tls"),
    ("host mx.example.net[192.0.2.1] said: 451 4.7.1 Greylisted, try again later (in reply to RCPT TO command)", "remote_4xx"),
    ("lost connection with mx.example.net[192.0.2.1] while sending end of data", "other"),
    ("delivery temporarily suspended: connect to mx[192.0.2.1]:25: Connection refused", "connection_refused"),
    ("connect to mx.example.net[192.0.2.1]:25: No route to host", "connection_refused"),
    ("connect to mx.example.net[2001:db8::1]:25: Network is unreachable", "connection_refused"),
    # the remote answered: its words do not make it a DNS, time-out or TLS failure
    ("host mx[192.0.2.1] said: 450 4.7.1 Client host rejected: listed in dnsbl.example (in reply to RCPT TO command)", "remote_4xx"),
    ("host mx[192.0.2.1] said: 421 4.4.2 mx.example.net Error: timeout exceeded (in reply to end of DATA command)", "remote_4xx"),
    ("host mx[192.0.2.1] refused to talk to me: 421 4.7.0 Too many connections", "remote_4xx"),
    ("host mx[192.0.2.1] said: 454 4.7.0 TLS not available due to local problem (in reply to STARTTLS command)", "remote_4xx"),
    ("host mx[192.0.2.1] said: 550 5.1.1 User unknown (in reply to RCPT TO command)", "remote_5xx"),
    ("TLS is required, but host mx[192.0.2.1] refused to start TLS: 454 4.7.0 TLS not available", "tls"),
    ("lost connection with mxdns.example.net[192.0.2.1] while receiving the initial server greeting", "other"),
])  # fmt: skip
def test_reason_classes(reason: str, kind: str) -> None:
    assert classify_reason(reason) == kind


def test_domains_are_capped() -> None:
    counts = Counter({f"d{i}.example": 100 - i for i in range(50)})
    top = top_with_other(counts, 10)
    assert len(top) == 11
    assert top[0] == ("d0.example", 100)
    assert top[-1] == ("other", sum(100 - i for i in range(10, 50)))


@pytest.mark.parametrize(("address", "domain"), [
    ("user@Example.NET", "example.net"),
    ("<user@example.net>", "example.net"),
    ("root", "other"),
    ("<>", "other"),
    ("", "other"),
    ("user@", "other"),
])  # fmt: skip
def test_recipient_domain(address: str, domain: str) -> None:
    assert recipient_domain(address) == domain


def test_a_domain_named_other_joins_the_rest() -> None:
    counts = Counter({"other": 50, **{f"d{i}.example": 20 - i for i in range(12)}})
    top = top_with_other(counts, 10)
    assert [domain for domain, _ in top] == [*(f"d{i}.example" for i in range(10)), "other"]
    assert top[-1] == ("other", 50 + 10 + 9)  # the real "other" and d10, d11
    assert top_with_other(Counter({"other": 3, "a.example": 1}), 10) == [
        ("a.example", 1),
        ("other", 3),
    ]


def showq_record(*pairs: str) -> list[bytes]:
    """One showq record: name and value strings, then the empty name that ends it."""
    return [field.encode() for field in pairs] + [b""]


def test_showq_stream_parsing() -> None:
    fields = [
        *showq_record("protocol", "mail_queue_list_protocol"),
        *showq_record("queue_name", "deferred", "queue_id", "ABC", "time", "100", "size", "300",
                      "forced_expire", "0", "sender", "s@x", "recipient", "r@one.example",
                      "reason", "connect to x: Connection refused"),
        *showq_record("queue_name", "hold", "queue_id", "DEF", "time", "50", "size", "700",
                      "sender", "s@x", "recipient", "q@two.example"),
    ]  # fmt: skip
    snapshot = QueueSnapshot("showq")
    parse_showq(fields, snapshot)
    assert (snapshot.queues["deferred"].messages, snapshot.queues["deferred"].size_bytes) == (
        1,
        300,
    )
    assert snapshot.queues["hold"].oldest_arrival == 50.0
    assert snapshot.reasons == Counter({"connection_refused": 1})
    assert snapshot.domains == Counter({"one.example": 1})


def test_vanished_queue_file(tmp_path: Path) -> None:
    assert read_queue_file(str(tmp_path / "gone")) is None


def test_spool_skips_what_is_not_a_regular_file(tmp_path: Path) -> None:
    """A FIFO in a queue directory would make a plain open wait for a writer for ever."""
    queue_directory = make_queue_directory(tmp_path, *QUEUES)
    os.mkfifo(queue_directory / "deferred" / "4C3F41E0A1B")
    snapshots: list[QueueSnapshot] = []
    scanner = threading.Thread(
        target=lambda: snapshots.append(SpoolScanner(queue_directory).scan()), daemon=True
    )
    scanner.start()
    scanner.join(10)
    assert not scanner.is_alive(), "the scan waits on the FIFO"
    assert snapshots[0].queues["deferred"].messages == 0


@pytest.mark.parametrize(("log", "pairs"), [
    (b"recipient=a@x\noffset=1\nstatus=4.0.0\nreason=refused\n\n"
     b"recipient=b@y\nreason=timed out\n", [("a@x", "refused"), ("b@y", "timed out")]),
    (b"recipient=a@x\nrecipient=b@y\nreason=r\n", [("b@y", "r")]),  # the last recipient
    (b"recipient=a@x\nreason=r1\nreason=r2\n", [("a@x", "r1")]),  # one reason each
    (b"reason=r\nrecipient=a@x\n", []),  # a reason before any recipient, one without
    (b"recipient=\nreason=r\nrecipient=a@x\nreason=\n", [("a@x", "")]),
    (b"recipient=a@x\nrecipient=\nreason=r\n", []),
    (b"xrecipient=a@x\nreason=r\n", []),  # fields start their line
    (b"recipient=\xff@x\r\nreason=r\r\n", [("\ufffd@x\r", "r\r")]),
])  # fmt: skip
def test_defer_log_pairs(log: bytes, pairs: list[tuple[str, str]]) -> None:
    assert parse_defer_log(log) == pairs


def test_a_fifo_in_place_of_a_queue_file_is_not_waited_for(tmp_path: Path) -> None:
    """A FIFO swapped in after the listing is opened and read without blocking, then
    skipped, whether a writer holds it open (the read finds nothing yet) or not."""
    fifo = tmp_path / "4C3F41E0A1B"
    os.mkfifo(fifo)
    found: list[object] = []
    reader = threading.Thread(target=lambda: found.append(read_queue_file(str(fifo))), daemon=True)
    reader.start()
    reader.join(10)
    writer = os.open(fifo, os.O_RDWR)  # a writer that never writes
    try:
        reader = threading.Thread(
            target=lambda: found.append(read_queue_file(str(fifo))), daemon=True
        )
        reader.start()
        reader.join(10)
    finally:
        os.close(writer)
    assert found == [None, None]


def record(kind: bytes, data: bytes) -> bytes:
    return kind + bytes([len(data)]) + data


def test_a_queue_file_not_opened_by_its_size_record(tmp_path: Path) -> None:
    """Records in another order: the time record is found further on, and without a size
    record the file's size stands in for the message size."""
    queue_directory = make_queue_directory(tmp_path, *QUEUES)
    content = record(b"A", b"create_time=70") + record(b"T", b"70 5") + record(b"N", b"x" * 40)
    (queue_directory / "hold" / "4C3F41E0A1B").write_bytes(content)
    hold = SpoolScanner(queue_directory).scan().queues["hold"]
    assert (hold.messages, hold.size_bytes, hold.oldest_arrival) == (1, len(content), 70.0)


def make_queue_directory(root: Path, *queues: str) -> Path:
    for queue in queues:
        (root / queue).mkdir(parents=True)
    return root


def test_spool_without_a_queue_directory_fails(tmp_path: Path) -> None:
    present = [queue for queue in QUEUES if queue != "hold"]
    with pytest.raises(CollectorError, match=r"has no hold directory: not a Postfix queue"):
        SpoolScanner(make_queue_directory(tmp_path, *present)).scan()
    with pytest.raises(CollectorError, match=r"has no maildrop directory"):
        SpoolScanner(tmp_path / "typo").scan()


def test_spool_tolerates_missing_defer_logs_and_empty_hashed_directories(tmp_path: Path) -> None:
    queue_directory = make_queue_directory(tmp_path, *QUEUES, "deferred/A", "active/B/C")
    snapshot = SpoolScanner(queue_directory).scan()  # no defer/ at all
    assert all(stats.messages == 0 for stats in snapshot.queues.values())


def auto_settings(queue_directory: Path, config_directory: Path) -> PostfixQueueConfig:
    return PostfixQueueConfig.model_validate(
        {"instances": [{"config_directory": str(config_directory),
                        "queue_directory": str(queue_directory)}]}
    )  # fmt: skip


def test_auto_chooses_showq_when_the_spool_is_unreadable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No readable deferred/ (here: none at all), but a showq socket: showq is asked."""
    queue_directory = make_queue_directory(tmp_path, "active", "public")
    showq = queue_directory / "public" / "showq"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(showq))
        listener.listen()
        answer = threading.Thread(target=lambda: listener.accept()[0].close(), daemon=True)
        answer.start()  # an empty listing: a queue with nothing in it
        settings = auto_settings(queue_directory, tmp_path / "unused")
        collector = PostfixQueueCollector(settings)
        assert collector._choose_source(queue_directory)[0] == "showq"
        with caplog.at_level(logging.INFO):
            snapshot = collector.snapshot(settings.instances[0])
    assert snapshot.source == "showq"
    assert sum(stats.messages for stats in snapshot.queues.values()) == 0
    assert (
        f"postfix postfix: reading the queue from showq (the spool is not readable but {showq} "
        "is reachable)"
    ) in caplog.text


def test_auto_falls_back_to_postqueue(
    queued_postfix: QueuedPostfix, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A queue_directory with neither spool nor socket (a typo, say): postqueue -c still works."""
    server = queued_postfix.server
    settings = auto_settings(tmp_path / "typo", server.config_dir)
    collector = PostfixQueueCollector(settings)
    assert collector._choose_source(tmp_path / "typo")[0] == "postqueue"
    with caplog.at_level(logging.INFO):
        snapshot = collector.snapshot(settings.instances[0])
    assert snapshot.source == "postqueue"
    assert (
        snapshot.queues["deferred"].messages
        == postqueue_snapshot(server).queues["deferred"].messages
        == 4
    )
    assert (
        "postfix postfix: reading the queue from postqueue (neither the spool nor the showq "
        "socket is reachable)"
    ) in caplog.text


def samples(families: list[Metric], name: str) -> dict[tuple[str, ...], float]:
    """The samples of every family of that name (one per instance, merged as the set does)."""
    return {
        tuple(sample.labels.values()): sample.value
        for family in families
        if family.name == name
        for sample in family.samples
    }


def test_several_instances_and_one_that_fails(
    queued_postfix: QueuedPostfix,
    postfix: Postfix,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two real instances are exported side by side; a broken third costs only itself."""
    broken = tmp_path / "broken"
    settings = PostfixQueueConfig.model_validate({"source": "spool", "instances": [
        {"name": "out", "config_directory": str(queued_postfix.server.config_dir)},
        {"name": "in", "config_directory": str(postfix.config_dir)},
        {"name": "broken", "config_directory": str(postfix.config_dir),
         "queue_directory": str(broken)},
    ]})  # fmt: skip
    collector = PostfixQueueCollector(settings)
    with caplog.at_level(logging.INFO):
        for _ in range(2):
            families = list(collector.collect())
    assert samples(families, "mail_queue_collect_success") == {
        ("postfix", "out"): 1, ("postfix", "in"): 1, ("postfix", "broken"): 0
    }  # fmt: skip
    messages = samples(families, "mail_queue_messages")
    for name, server in (("out", queued_postfix.server), ("in", postfix)):
        expected = postqueue_snapshot(server)
        for queue in QUEUES:
            assert messages["postfix", name, queue] == expected.queues[queue].messages
    assert messages["postfix", "out", "deferred"] == 4
    assert {instance for _, instance, _ in messages} == {"out", "in"}  # nothing made up
    assert caplog.text.count("postfix instance broken: ") == 1  # said once while it lasts
    assert f"{broken} has no maildrop directory" in caplog.text

    make_queue_directory(broken, *QUEUES)
    with caplog.at_level(logging.INFO):
        families = list(collector.collect())
    assert samples(families, "mail_queue_collect_success")["postfix", "broken"] == 1
    assert samples(families, "mail_queue_messages")["postfix", "broken", "deferred"] == 0
    assert "postfix instance broken works again" in caplog.text


def test_every_instance_failing_fails_the_collector(tmp_path: Path) -> None:
    settings = PostfixQueueConfig.model_validate({"source": "spool", "instances": [
        {"name": "a", "queue_directory": str(tmp_path / "a")},
        {"name": "b", "queue_directory": str(tmp_path / "b")},
    ]})  # fmt: skip
    with pytest.raises(CollectorError) as raised:
        list(PostfixQueueCollector(settings).collect())
    assert str(raised.value).startswith("postfix instance a: ")
    assert "; postfix instance b: " in str(raised.value)
