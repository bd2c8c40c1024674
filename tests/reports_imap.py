"""A scripted IMAP server for the reports collector, honest or hostile, and a pass of the
collector against it; run as ``python -m tests.reports_imap CASE`` it serves CASE (of
:data:`CASES`), runs one pass in this process with the peak RSS reset before it
(``/proc/self/clear_refs``) and prints, as JSON, the pass's failure, its counters, the
commands the server saw, the seconds and the peak RSS (VmHWM), so that
tests/test_reports_imap_hostile.py can bound what a hostile server costs.

The server runs on its own event loop in a thread; what it sends in bulk it writes
chunk by chunk, so that its own memory stays small.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mail_exporter.collectors.base import CollectorError
from mail_exporter.collectors.reports.collector import ReportsCollector
from mail_exporter.collectors.reports.config import ReportsConfig
from mail_exporter.config.root import parse_config
from tests.scripted import scripted_server

MIB = 1024 * 1024
PASSWORD_VARIABLE = "REPORTS_IMAP_PASSWORD"
CHUNK = 64 * 1024
BACKUP = (
    b"From: backup@example.com\r\nTo: reports@example.com\r\n"
    b"Subject: Backup job nightly: Success\r\nDate: Sun, 06 Dec 2026 19:00:00 +0000\r\n"
    b"\r\nAll done.\r\n"
)
ARRIVED = "06-Dec-2026 19:00:00 +0000"

Writer = asyncio.StreamWriter
Answer = Callable[["ImapScript", Writer, str, str], Awaitable[bool]]
"""A hostile answer to one command (tag, the command after the tag); True: answered."""


@dataclass
class ImapScript:
    """An IMAP server holding ``messages`` by UID; ``answers`` replace its answers to the
    commands whose verb (``UID FETCH`` and ``UID SEARCH`` as two words) they name."""

    messages: dict[int, bytes] = field(default_factory=lambda: {1: BACKUP})
    arrived: dict[int, str] = field(default_factory=dict)  # INTERNALDATE, else ARRIVED
    uidvalidity: Callable[[], bytes] = lambda: b"7"
    capabilities: str = "IMAP4rev1 MOVE UIDPLUS"
    answers: dict[str, Answer] = field(default_factory=dict)
    keep_moved: bool = False
    seen: list[str] = field(default_factory=list)
    flagged: set[int] = field(default_factory=set)

    async def serve(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        greeting = self.answers.get("GREETING")
        if greeting is not None and await greeting(self, writer, "", ""):
            return
        writer.write(b"* OK [CAPABILITY " + self.capabilities.encode() + b"] ready\r\n")
        while line := await reader.readline():
            tag, _, command = line.decode("ascii", "replace").strip().partition(" ")
            self.seen.append(command)
            words = command.split()
            verb = " ".join(words[:2]).upper() if words[0].upper() == "UID" else words[0].upper()
            answer = self.answers.get(verb)
            if answer is not None and await answer(self, writer, tag, command):
                continue
            if verb == "LOGOUT":
                writer.write(f"* BYE bye\r\n{tag} OK done\r\n".encode())
                await writer.drain()
                return
            writer.write(self.answer(tag, verb, command))
            await writer.drain()

    def answer(self, tag: str, verb: str, command: str) -> bytes:
        if verb == "CAPABILITY":
            return f"* CAPABILITY {self.capabilities}\r\n{tag} OK done\r\n".encode()
        if verb == "SELECT":
            return (
                b"* %d EXISTS\r\n* OK [UIDVALIDITY " % len(self.messages)
                + self.uidvalidity()
                + f"] ok\r\n{tag} OK [READ-WRITE] selected\r\n".encode()
            )
        if verb == "UID SEARCH":
            asked = set(uid_set(command, 3, max(self.messages, default=0)))
            uids = [u for u in self.messages if u in asked and u not in self.flagged]
            since = re.search(r"SINCE (\S+)", command)
            if since:
                day = time.strptime(since.group(1), "%d-%b-%Y")[:3]
                uids = [u for u in uids if time.strptime(self.date(u)[:11], "%d-%b-%Y")[:3] >= day]
            return f"* SEARCH {' '.join(map(str, uids))}\r\n{tag} OK done\r\n".encode()
        if verb == "UID FETCH":
            return self.fetch(tag, command)
        if verb == "UID MOVE":
            for uid in uid_set(command):
                if not self.keep_moved:
                    self.messages.pop(uid, None)
            return f"{tag} OK moved\r\n".encode()
        if verb == "UID STORE":
            self.flagged.update(uid_set(command))
            return f"{tag} OK stored\r\n".encode()
        return f"{tag} OK done\r\n".encode()  # LOGIN, CREATE, NOOP

    def date(self, uid: int) -> str:
        return self.arrived.get(uid, ARRIVED)

    def fetch(self, tag: str, command: str) -> bytes:
        out = b""
        for uid in uid_set(command):
            body = self.messages.get(uid)
            if body is None:
                continue
            if "RFC822.SIZE" in command:
                items = (
                    f'UID {uid} RFC822.SIZE {len(body)} INTERNALDATE "06-Dec-2026 19:00:00 +0000"'
                )
                out += f"* {uid} FETCH ({items})\r\n".encode()
            else:
                partial = re.search(r"<0\.(\d+)>", command)
                part = body[: int(partial.group(1))] if partial else body
                out += b"* %d FETCH (UID %d BODY[]<0> {%d}\r\n%s)\r\n" % (uid, uid, len(part), part)
        return out + f"{tag} OK done\r\n".encode()


def uid_set(command: str, word: int = 2, star: int = 0) -> list[int]:
    """The UIDs of the set that is the command's ``word``-th word (``*``: ``star``)."""
    uids: list[int] = []
    for part in command.split()[word].split(","):
        low, _, high = part.partition(":")
        high = str(star) if high == "*" else high or low
        uids += range(int(low), max(int(low), int(high)) + 1)
    return uids


async def stream(writer: Writer, head: bytes, size: int, fill: bytes = b"x") -> None:
    """Write ``head`` and ``size`` bytes of ``fill``, a chunk at a time, until the client
    goes away."""
    writer.write(head)
    block = fill * (CHUNK // len(fill))
    sent = 0
    while sent < size:
        writer.write(block[: size - sent])
        sent += len(block)
        await writer.drain()


# --- Hostile answers ----------------------------------------------------------------


def huge_literal(script: ImapScript) -> None:
    """Announces 1 KiB, then answers the body fetch with a 500 MiB literal whatever the
    range asked."""

    async def answer(script: ImapScript, writer: Writer, tag: str, command: str) -> bool:
        if "RFC822.SIZE" in command:
            return False
        await stream(writer, b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % (500 * MIB), 500 * MIB)
        return True

    script.messages = {1: b"x" * 1024}
    script.answers["UID FETCH"] = answer


def lying_size(script: ImapScript) -> None:
    """Announces 1 KiB for a message of 4 MiB, but honours the range asked."""
    real = BACKUP + b"y" * (4 * MIB)
    script.messages = {1: real, 2: BACKUP}

    async def answer(script: ImapScript, writer: Writer, tag: str, command: str) -> bool:
        if "RFC822.SIZE" not in command:
            return False
        for uid in uid_set(command):
            writer.write(b"* %d FETCH (UID %d RFC822.SIZE 1024)\r\n" % (uid, uid))
        writer.write(f"{tag} OK done\r\n".encode())
        return True

    script.answers["UID FETCH"] = answer


def long_greeting(script: ImapScript) -> None:
    """Greets with 100 MiB that never end a line."""

    async def answer(script: ImapScript, writer: Writer, tag: str, command: str) -> bool:
        await stream(writer, b"* OK ", 100 * MIB)
        return True

    script.answers["GREETING"] = answer


def greeting_flood(script: ImapScript) -> None:
    """Follows its greeting with lines until the client goes away, and answers
    CAPABILITY with 8 MiB of names (and bytes that are no UTF-8)."""

    async def greeting(script: ImapScript, writer: Writer, tag: str, command: str) -> bool:
        writer.write(b"* OK ready\r\n" + b"* OK more\r\n" * 2000)
        return False

    async def capability(script: ImapScript, writer: Writer, tag: str, command: str) -> bool:
        await stream(writer, b"* CAPABILITY IMAP4rev1 \xff\xfe ", 8 * MIB - 64, b"X ")
        writer.write(f"\r\n{tag} OK done\r\n".encode())
        return True

    script.answers["GREETING"] = greeting
    script.answers["CAPABILITY"] = capability


def closes(script: ImapScript) -> None:
    """Closes the connection instead of answering SEARCH."""

    async def answer(script: ImapScript, writer: Writer, tag: str, command: str) -> bool:
        writer.close()
        await asyncio.sleep(60)
        return True

    script.answers["UID SEARCH"] = answer


def long_line(script: ImapScript) -> None:
    """Answers SEARCH with 100 MiB that never end a line."""

    async def answer(script: ImapScript, writer: Writer, tag: str, command: str) -> bool:
        await stream(writer, b"* SEARCH ", 100 * MIB, b"1 ")
        return True

    script.answers["UID SEARCH"] = answer


def million_uids(script: ImapScript) -> None:
    """Answers SEARCH with a million UIDs (backwards, some twice, some out of range); has
    messages only at the even ones up to 2000."""
    script.messages = {uid: BACKUP for uid in range(2, 2001, 2)}

    async def answer(script: ImapScript, writer: Writer, tag: str, command: str) -> bool:
        writer.write(b"* SEARCH 0 4294967296 99999999999999999999 2 2 4 4")
        for start in range(1_000_000, 0, -10_000):
            chunk = range(start, start - 10_000, -1)
            writer.write(b"".join(b" %d" % uid for uid in chunk))
            await writer.drain()
        writer.write(f"\r\n{tag} OK done\r\n".encode())
        return True

    script.answers["UID SEARCH"] = answer


def untagged_stream(script: ImapScript) -> None:
    """Answers SELECT with an endless stream of untagged lines."""

    async def answer(script: ImapScript, writer: Writer, tag: str, command: str) -> bool:
        await stream(writer, b"", 10_000 * MIB, b"* 1 EXISTS\r\n")
        return True

    script.answers["SELECT"] = answer


def many_lines(script: ImapScript) -> None:
    """Answers SELECT with 5000 untagged lines in one write, then normally."""

    async def answer(script: ImapScript, writer: Writer, tag: str, command: str) -> bool:
        writer.write(b"* OK still here\r\n" * 5000 + script.answer(tag, "SELECT", command))
        return True

    script.answers["SELECT"] = answer


def drip(script: ImapScript) -> None:
    """Answers SEARCH a byte a second, never ending the line."""

    async def answer(script: ImapScript, writer: Writer, tag: str, command: str) -> bool:
        writer.write(b"* SEARCH 1")
        for _ in range(600):
            await asyncio.sleep(1)
            writer.write(b" ")
            await writer.drain()
        return True

    script.answers["UID SEARCH"] = answer


def long_numbers(script: ImapScript) -> None:
    """Announces sizes and UIDs of 5000 digits, beside an honest one."""
    script.messages = {1: BACKUP, 2: BACKUP}

    async def answer(script: ImapScript, writer: Writer, tag: str, command: str) -> bool:
        if "RFC822.SIZE" not in command:
            return False
        digits = b"9" * 5000
        writer.write(b"* 1 FETCH (UID 1 RFC822.SIZE " + digits + b")\r\n")
        writer.write(b"* 3 FETCH (UID " + digits + b" RFC822.SIZE 10)\r\n")
        writer.write(b'* 2 FETCH (UID 2 RFC822.SIZE %d INTERNALDATE "x")\r\n' % len(BACKUP))
        writer.write(f"{tag} OK done\r\n".encode())
        return True

    script.answers["UID FETCH"] = answer


def foreign_uids(script: ImapScript) -> None:
    """Answers SEARCH with repeated and impossible UIDs and FETCH with UIDs not asked."""
    script.messages = {uid: BACKUP for uid in range(1, 6)}

    async def search(script: ImapScript, writer: Writer, tag: str, command: str) -> bool:
        writer.write(f"* SEARCH 2 2 2 0 4294967296 2\r\n* 5 EXISTS\r\n{tag} OK done\r\n".encode())
        return True

    async def fetch(script: ImapScript, writer: Writer, tag: str, command: str) -> bool:
        if "RFC822.SIZE" not in command:
            return False
        for uid in (4, 2, 2, 5):
            writer.write(b"* %d FETCH (UID %d RFC822.SIZE %d)\r\n" % (uid, uid, len(BACKUP)))
        writer.write(f"{tag} OK done\r\n".encode())
        return True

    script.answers["UID SEARCH"] = search
    script.answers["UID FETCH"] = fetch


CASES: dict[str, Callable[[ImapScript], None]] = {
    case.__name__: case
    for case in (
        huge_literal,
        lying_size,
        long_greeting,
        greeting_flood,
        closes,
        long_line,
        million_uids,
        untagged_stream,
        many_lines,
        drip,
        long_numbers,
        foreign_uids,
    )
}


# --- The collector against it ------------------------------------------------------


@contextmanager
def serving(script: ImapScript) -> Iterator[str]:
    """Serve ``script`` on loopback from a thread; yield its ``HOST:PORT``."""
    loop = asyncio.new_event_loop()
    ready: asyncio.Future[str] = loop.create_future()
    stop = asyncio.Event()

    async def run() -> None:
        async with scripted_server(script.serve) as address:
            ready.set_result(address)
            await stop.wait()
        handlers = asyncio.all_tasks() - {asyncio.current_task()}  # a script still talking
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    address = asyncio.run_coroutine_threadsafe(asyncio.wait_for(asyncio.shield(ready), 10), loop)
    try:
        yield address.result(10)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def settings(address: str, state_file: Path, **options: Any) -> ReportsConfig:
    os.environ[PASSWORD_VARIABLE] = "secret"
    module = {
        "protocol": "imap",
        "tls": "none",
        "allow_plaintext_auth": True,
        "timeout": options.pop("module_timeout", "10s"),
        "auth": {"username": "reports", "password_env": PASSWORD_VARIABLE},
    }
    section = {
        "enabled": True,
        "address": address,
        "module": "reports_imap",
        "state_file": str(state_file),
        "domains": ["example.com"],
        "timeout": "60s",
        "max_message_bytes": MIB,
        "notifications": [
            {"name": "nightly", "subject": "^Backup job nightly", "statuses": {"ok": "Success"}}
        ],
        **options,
    }
    text = json.dumps({"modules": {"reports_imap": module}, "collectors": {"reports": section}})
    reports = parse_config(text).collectors.section("reports")
    assert isinstance(reports, ReportsConfig)
    return reports


def one_pass(reports: ReportsCollector) -> tuple[str | None, dict[str, float]]:
    """Run a pass; its failure (None when it worked) and the samples of the counters."""
    try:
        families = list(reports.collect())
    except CollectorError as error:
        return str(error), {}
    samples = {}
    for family in families:
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return None, samples


def collector(settings: ReportsConfig) -> ReportsCollector:
    """A collector that runs a pass, in the caller's thread, at every collection."""
    ticks = itertools.count()
    return ReportsCollector(
        settings, clock=lambda: next(ticks) * 1e9, background=lambda work: work()
    )


def peak_rss() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]


def main(case: str, state_file: str) -> None:
    script = ImapScript()
    CASES[case](script)
    with serving(script) as address:
        reports = collector(settings(address, Path(state_file), module_timeout="5s"))
        Path("/proc/self/clear_refs").write_text("5")
        started = time.monotonic()
        failure, samples = one_pass(reports)
        seconds = time.monotonic() - started
        rss = peak_rss()
    print(
        json.dumps(
            {
                "failure": failure,
                "samples": samples,
                "seen": script.seen[:50],
                "seconds": seconds,
                "peak_rss_bytes": rss,
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
