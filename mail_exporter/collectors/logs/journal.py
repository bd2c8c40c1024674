"""Following the systemd journal through ``journalctl --follow --output=json``.

Entries of any listed unit (``journal_units``, e.g. ``postfix@-.service``) or of any
listed syslog identifier (``journal_identifiers``, e.g. ``amavis``) reach the parsers as
(SYSLOG_IDENTIFIER, MESSAGE), the same routes as syslog lines; no list means the whole
journal. The cursor of the last entry counted is the position: a restart (with a state
file) or a reload continues ``--after-cursor`` it.

The filter is journalctl's match arguments, not ``--unit``/``--identifier``: journalctl
ANDs the group of its ``--unit`` options with the group of its ``--identifier`` options,
so both kinds at once matched only an entry of a listed unit that also had a listed
identifier (for the shipped example, nothing). Matches are ORed within one field and
across a ``+`` argument, so :func:`journal_matches` gives
``_SYSTEMD_UNIT=postfix@-.service _SYSTEMD_UNIT=dovecot.service + SYSLOG_IDENTIFIER=amavis``:
one journalctl, one cursor. ``_SYSTEMD_UNIT=`` is also narrower than ``--unit``, which
adds systemd's own messages about the unit (``UNIT=``: started, stopped, CPU time
consumed) and its core dumps (``COREDUMP_UNIT=``): those are not the mail programs'
lines and would only count as unsupported. journald sets ``_SYSTEMD_UNIT`` from the
cgroup of the process that logged; a program that logs through syslog from outside
the unit (a cron job's ``sendmail``) is reached by its identifier instead.

journalctl waits without a word when there is no journal to read (no systemd-journald,
a container), which is how other exporters end up silently counting nothing. So before
starting it, and again every ``RETRY_SECONDS`` while it is not running, the follower
checks that the command exists and that journal files exist (in ``journal_directory``,
or /run/log/journal and /var/log/journal); if not, ``mail_log_source_up`` is 0 and the
reason is logged. journalctl exiting is reported with its status and error output.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
from pathlib import Path

from mail_exporter.collectors.logs.config import LogsConfig, LogSource
from mail_exporter.collectors.logs.follower import CHUNK_BYTES, Follower, Position
from mail_exporter.collectors.logs.lines import LineSplitter

SYSTEM_JOURNALS = (Path("/run/log/journal"), Path("/var/log/journal"))
RETRY_SECONDS = 10.0
STDERR_BYTES = 2048


def has_journal_files(directory: Path) -> bool:
    """Journal files in ``directory`` or one level below (the machine-id directory)."""
    patterns = ("*.journal", "*.journal~", "*/*.journal", "*/*.journal~")
    return any(next(directory.glob(pattern), None) for pattern in patterns)


def journal_matches(units: list[str], identifiers: list[str]) -> list[str]:
    """journalctl match arguments for entries of any of ``units`` or any of ``identifiers``."""
    groups = (
        [f"_SYSTEMD_UNIT={unit}" for unit in units],
        [f"SYSLOG_IDENTIFIER={name}" for name in identifiers],
    )
    matches: list[str] = []
    for group in filter(None, groups):
        matches += ["+", *group] if matches else group
    return matches


def text_of(value: object) -> str | None:
    """A journal field: a string, or an array of bytes when it is not valid UTF-8."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, int) for item in value):
        with contextlib.suppress(ValueError):
            return bytes(value).decode("utf-8", "replace")
    return None


def journal_entry(line: str) -> tuple[str, str, str | None]:
    """(program, message, cursor) of one JSON entry; a broken entry reads as unknown."""
    try:
        entry = json.loads(line)
    except ValueError:
        return "", line, None
    if not isinstance(entry, dict):
        return "", line, None
    program = text_of(entry.get("SYSLOG_IDENTIFIER")) or ""
    message = text_of(entry.get("MESSAGE"))
    cursor = entry.get("__CURSOR")
    if not isinstance(cursor, str):
        cursor = None
    return program, line if message is None else message, cursor


class JournalFollower(Follower):
    def __init__(self, source: LogSource, settings: LogsConfig) -> None:
        super().__init__(source, settings)
        self.cursor: str | None = None
        self._stderr = b""

    def restore(self, position: Position) -> None:
        cursor = position.get("cursor")
        self.cursor = cursor if isinstance(cursor, str) else None

    def command(self) -> list[str]:
        source = self.source
        command = [*source.journal_command, "--follow", "--output=json", "--no-pager",
                   "--output-fields=SYSLOG_IDENTIFIER,MESSAGE"]  # fmt: skip
        if source.journal_directory is not None:
            command.append(f"--directory={source.journal_directory}")
        if self.cursor is not None:
            command += [f"--after-cursor={self.cursor}", "--no-tail"]
        elif self.start_at == "end":
            command.append("--lines=0")
        else:
            command.append("--no-tail")
        return command + journal_matches(source.journal_units, source.journal_identifiers)

    def unavailable(self) -> str | None:
        """Why the journal cannot be followed, or ``None``."""
        program = self.source.journal_command[0]
        if shutil.which(program) is None:
            return f"{program} not found: cannot read the journal (see journal_command)"
        configured = self.source.journal_directory
        directories = [configured] if configured is not None else list(SYSTEM_JOURNALS)
        if not any(has_journal_files(directory) for directory in directories):
            where = " or ".join(str(directory) for directory in directories)
            return (
                f"no journal files in {where}: systemd-journald does not run here or keeps "
                "no journal, and journalctl would wait without a word"
            )
        return None

    def run(self) -> None:
        while not self.stopping():
            problem = self.unavailable()
            if problem is None:
                problem = self._follow()
            if problem is not None:
                self.report(problem)
            self.wait(RETRY_SECONDS)

    def _follow(self) -> str | None:
        """Run journalctl until it ends or we stop; what went wrong, if anything."""
        try:
            process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as error:
            return f"cannot run {self.source.journal_command[0]}: {error.strerror}"
        self.report(None)
        try:
            self._read(process)
        finally:
            self._end(process)
        if self.stopping():
            return None
        said = self._stderr.decode("utf-8", "replace").strip() or "no message"
        return f"journalctl exited with status {process.returncode}: {said}"

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None and process.stderr is not None
        stdout, stderr = process.stdout.fileno(), process.stderr.fileno()
        splitter = LineSplitter(self.max_line_bytes)
        self._stderr = b""
        watched = [stdout, stderr]
        while not self.stopping():
            ready, _, _ = select.select(watched, [], [], self.poll_interval)
            if stderr in ready:
                complaint = os.read(stderr, STDERR_BYTES)
                if not complaint:
                    watched.remove(stderr)
                self._stderr = (self._stderr + complaint)[-STDERR_BYTES:]
            if stdout not in ready:
                continue
            data = os.read(stdout, CHUNK_BYTES)
            if not data:
                return
            self._deliver_entries(splitter.feed(data), splitter)

    def _deliver_entries(self, lines: list[str], splitter: LineSplitter) -> None:
        self.too_long += splitter.too_long
        splitter.too_long = 0
        if not lines or self._feed is None:
            return
        entries = [journal_entry(line) for line in lines]
        self.lines_read += len(entries)
        self._feed.messages([(program, message) for program, message, _ in entries])
        cursors = [cursor for _, _, cursor in entries if cursor is not None]
        if cursors:
            self.cursor = cursors[-1]
            self.progressed({"cursor": self.cursor})

    @staticmethod
    def _end(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
