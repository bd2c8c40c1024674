"""Property tests: arbitrary bytes and very long lines never raise and never grow memory."""

from __future__ import annotations

import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from mail_exporter.collectors.logs.counters import LogCounters
from mail_exporter.collectors.logs.dispatch import LineDispatcher
from mail_exporter.collectors.logs.lines import LineSplitter

FORMATS = ("syslog", "dovecot", "exim", "rspamd")
PREFIXES = [
    b"Jan 12 10:00:00 mail postfix/smtpd[1]: ",
    b"Jan 12 10:00:00 mail postfix/smtp[1]: 1A: to=<",
    b"Jan 12 10:00:00 mail postfix/qmgr[1]: 1A: from=<",
    b"Jan 12 10:00:00 mail postfix/postscreen[1]: ",
    b"Jan 12 10:00:00 mail dovecot: imap-login: ",
    b"Jan 12 10:00:00 mail amavis[1]: (1-1) ",
    b"Nov 28 01:51:16 imap-login: Info: Disconnected (auth failed, ",
    b"2024-01-12 10:00:01 1rOHxx-000abc-Ab ",
    b"2024-01-12 10:00:01 H=[1.2.3.4] rejected ",
    b"x: (default: ",
]
# Pieces of real lines, so generated text reaches deep into the parsers' branches.
WORDS = [b"status=", b", status=sent", b"delays=", b"dsn=", b"reject: ", b"NOQUEUE: ", b"<",
         b">", b"@", b": ", b" ", b"/", b"warning: ", b"TLS connection established", b": TLS",
         b"client=", b", sasl_method=", b"Login: ", b", method=", b"auth failed, ", b"=>",
         b"<=", b"T=", b"**", b"(default: ", b"): ", b"Blocked ", b"lost connection after ",
         b"\n", b"\xff", b"\x00", b"]", b"["]  # fmt: skip

chunks = st.lists(
    st.one_of(st.binary(max_size=64), st.sampled_from(WORDS), st.sampled_from(PREFIXES)),
    max_size=40,
)


def feed_all(data: bytes, log_format: str, max_line_bytes: int = 4096) -> LogCounters:
    counters = LogCounters(top_domains=5)
    feed = LineDispatcher(counters).feeder(log_format)
    splitter = LineSplitter(max_line_bytes)
    for line in splitter.feed(data) + splitter.flush():
        feed(line)
    return counters


@settings(max_examples=400, deadline=None)
@given(pieces=chunks, log_format=st.sampled_from(FORMATS))
def test_any_bytes_are_counted_never_raised(pieces: list[bytes], log_format: str) -> None:
    data = b"".join(pieces)
    counters = feed_all(data, log_format)
    lines = len(data.split(b"\n")) - (1 if data.endswith(b"\n") or not data else 0)
    assert sum(counters.lines.values()) <= max(lines, 0) + 1


@settings(max_examples=200, deadline=None)
@given(pieces=chunks)
def test_journal_and_message_routes_never_raise(pieces: list[bytes]) -> None:
    text = b"".join(pieces).decode("utf-8", "replace")
    dispatcher = LineDispatcher(LogCounters(top_domains=5))
    for program in ("postfix/smtpd", "postfix/smtp", "postfix/qmgr", "postfix/cleanup",
                    "postfix/bounce", "postfix/postscreen", "dovecot", "exim", "rspamd",
                    "amavis", "spamd", "clamd", ""):  # fmt: skip
        dispatcher.messages([(program, text)])
    assert sum(dispatcher.counters.lines.values()) == 13


@settings(max_examples=50, deadline=None)
@given(split=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=30))
def test_splitting_anywhere_gives_the_same_lines(split: list[int]) -> None:
    data = b"".join(b"line %d " % n + b"x" * (n % 700) + b"\n" for n in range(200))
    whole = LineSplitter(512)
    expected = whole.feed(data)
    pieces, position = LineSplitter(512), 0
    got: list[str] = []
    for size in split * 20:
        got += pieces.feed(data[position : position + size])
        position += size
    got += pieces.feed(data[position:])
    assert got == expected
    assert pieces.too_long == whole.too_long


def test_endless_line_keeps_memory_bounded() -> None:
    splitter = LineSplitter(max_line_bytes=16384)
    block = b"A" * 65536
    tracemalloc.start()
    try:
        for _ in range(300):  # ~20 MB without a newline
            assert splitter.feed(block) == []
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
    assert splitter.partial == b""
    assert splitter.feed(b"\nnext\n") == ["next"]
    assert splitter.too_long == 1


def test_many_distinct_domains_and_tags_keep_series_bounded() -> None:
    lines = []
    for n in range(20000):
        lines.append(f"Jan 12 10:00:00 mail postfix/qmgr[1]: Q{n}: from=<a@d{n}.example>, "
                     "size=1, nrcpt=1 (queue active)")  # fmt: skip
        lines.append(f"Jan 12 10:00:00 mail prog{n}[1]: hello")
    counters = LogCounters(top_domains=10)
    dispatcher = LineDispatcher(counters)
    for line in lines:
        dispatcher.syslog_line(line)
    assert len(counters.sender_domains.counts) <= 11
    assert len(counters.lines) <= 102
    assert counters.received[("postfix",)] == 20000


def tag_and_text(line: str) -> tuple[str, str]:
    """The syslog split spelled out slowly: the last word before the first ": ", less a
    trailing [pid]; a line without ": " has no tag."""
    colon = line.find(": ")
    if colon < 0:
        return "", line
    words = line[:colon].split(" ")
    tag = words[-1]
    if tag.endswith("]"):
        tag = tag[: tag.rfind("[")] if "[" in tag else tag[:-1]
    return tag, line[colon + 2 :]


syslog_like = st.lists(
    st.sampled_from(
        [
            "Jan 12 10:00:00 mail ",
            "postfix/smtpd",
            "postfix/qmgr",
            "dovecot",
            "[",
            "]",
            "[123]",
            ": ",
            " ",
            "connect from x[192.0.2.1]",
            "ABC12: from=<a@b>",
            ", size=1, nrcpt=1",
            "x",
        ]
    ),  # fmt: skip
    max_size=12,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(line=syslog_like)
def test_a_syslog_line_counts_as_its_tag_and_text(line: str) -> None:
    """A syslog line and the same tag and text as a journal message count alike."""
    whole, parts = LineDispatcher(LogCounters(5)), LineDispatcher(LogCounters(5))
    whole.syslog_line(line)
    parts.messages([tag_and_text(line)])
    for name in ("lines", "connections", "received", "sender_domains"):
        mine, theirs = getattr(whole.counters, name), getattr(parts.counters, name)
        assert getattr(mine, "counts", mine) == getattr(theirs, "counts", theirs), name
    assert sum(whole.counters.lines.values()) == 1
