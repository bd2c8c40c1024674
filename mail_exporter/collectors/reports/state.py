"""What the reports collector keeps between passes and restarts, in ``state_file``.

- Where reading stopped: the mailbox's name, its UIDVALIDITY, the last UID read, and
  the newest arrival time (INTERNALDATE) of a message read. A pass reads only UIDs
  above the last; another mailbox means reading from UID 1 again. Another UIDVALIDITY
  (the mailbox was recreated or restored, or a broken server makes up a new one at
  every session) means UIDs say nothing any more: the pass reads from UID 1 again,
  but only messages that arrived since the day before the newest one read (IMAP's
  SEARCH SINCE takes whole days), so that a server changing UIDVALIDITY at every pass
  costs each pass the recent unfiled messages, not the whole mailbox, and new mail is
  still reached. The report ids below keep every report counted once; messages filed
  as processed are not read again (moved out, or flagged and searched UNKEYWORD).
- The reports counted, by (kind, reporter, report id), each as a 128-bit hash of the
  three: a fixed 32 characters whatever a stranger put into a report, at most
  :data:`MAX_REPORT_IDS` of them, the oldest dropped first (a report re-sent a hundred
  thousand reports later counts again).
- Each notification rule's and status's newest message time, so that
  ``mail_notification_last_timestamp_seconds`` survives restarts.

The file is JSON, written whole to a temporary file beside it (mode 0600: it says who
reports on the domains) and renamed over it, so a crash leaves the old file or the new
one, never half of either. A missing file is a first start. A file that cannot be read
or does not parse is an error, logged with the path, and the pass refuses to run
(``mail_exporter_collector_success`` 0) until it is fixed or removed: starting over
instead would read the mailbox from its first message again and count every
notification and every report no longer remembered a second time, while refusing loses
nothing (the mail waits in the mailbox). Removing the file is the way to start over.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DAY_SECONDS = 86_400.0
MAX_REPORT_IDS = 100_000
MAX_STATE_BYTES = 16 * 1024 * 1024
"""Far above the biggest file this writes (about 4 MB at MAX_REPORT_IDS)."""
VERSION = 1


class StateError(Exception):
    """The state file cannot be read, parsed or written; the message says which and why."""


def report_key(kind: str, reporter: str, report_id: str) -> str:
    text = "\0".join((kind, reporter, report_id))
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@dataclass
class ReportsState:
    mailbox: str | None = None
    uidvalidity: int | None = None
    last_uid: int = 0
    reports: OrderedDict[str, None] = field(default_factory=OrderedDict)
    notifications: dict[tuple[str, str], float] = field(default_factory=dict)
    read_until: float | None = None

    def seen(self, key: str) -> bool:
        return key in self.reports

    def remember(self, key: str) -> None:
        self.reports[key] = None
        while len(self.reports) > MAX_REPORT_IDS:
            self.reports.popitem(last=False)

    def start_at(self, mailbox: str, uidvalidity: int) -> int:
        """The last UID read of ``mailbox`` as it is now (0: read it all), forgetting the
        position when the mailbox or its UIDVALIDITY changed (and, for another mailbox,
        the arrival time read until)."""
        if self.mailbox != mailbox:
            self.read_until = None
        if (self.mailbox, self.uidvalidity) != (mailbox, uidvalidity):
            self.mailbox, self.uidvalidity, self.last_uid = mailbox, uidvalidity, 0
        return self.last_uid

    @property
    def since(self) -> float | None:
        """The arrival time from which a mailbox read again from UID 1 is read (None:
        all of it): the day before the newest message read, once one was."""
        if self.last_uid or self.read_until is None:
            return None
        return self.read_until - DAY_SECONDS

    def arrived(self, arrival: float, now: float) -> None:
        """Note a message read that arrived at ``arrival`` (no later than ``now``: a
        server's date in the future would hide the messages before it)."""
        arrival = min(arrival, now)
        if self.read_until is None or arrival > self.read_until:
            self.read_until = arrival


def load_state(path: Path) -> ReportsState:
    """The state in ``path``; a fresh one when it does not exist; StateError otherwise."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return ReportsState()
    except OSError as error:
        raise StateError(f"cannot read state file {path}: {error.strerror or error}") from None
    if len(data) > MAX_STATE_BYTES:
        raise StateError(f"state file {path} is larger than {MAX_STATE_BYTES} bytes")
    try:
        return _state(json.loads(data))
    except (ValueError, TypeError, KeyError) as error:
        raise StateError(f"state file {path} is not a reports state: {error}") from None


def _state(data: Any) -> ReportsState:
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise ValueError(f"expected an object with version {VERSION}")
    mailbox, uidvalidity, last_uid = data["mailbox"], data["uidvalidity"], data["last_uid"]
    if not (mailbox is None or isinstance(mailbox, str)):
        raise ValueError("mailbox must be a string")
    if not (uidvalidity is None or _count(uidvalidity)) or not _count(last_uid):
        raise ValueError("uidvalidity and last_uid must be whole numbers")
    reports = data["reports"]
    if not isinstance(reports, list) or not all(isinstance(key, str) for key in reports):
        raise ValueError("reports must be a list of strings")
    notifications = {}
    for entry in data["notifications"]:
        rule, status, timestamp = entry["rule"], entry["status"], entry["timestamp"]
        if not (isinstance(rule, str) and isinstance(status, str)):
            raise ValueError("a notification's rule and status must be strings")
        notifications[rule, status] = float(timestamp)
    read_until = data.get("read_until")  # absent from files written before it was kept
    if read_until is not None:
        read_until = float(read_until)
    kept = OrderedDict.fromkeys(reports[-MAX_REPORT_IDS:])
    return ReportsState(mailbox, uidvalidity, last_uid, kept, notifications, read_until)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def save_state(path: Path, state: ReportsState) -> None:
    """Write ``state`` to ``path`` atomically, readable by its owner only; StateError."""
    data = {
        "version": VERSION,
        "mailbox": state.mailbox,
        "uidvalidity": state.uidvalidity,
        "last_uid": state.last_uid,
        "read_until": state.read_until,
        "reports": list(state.reports),
        "notifications": [
            {"rule": rule, "status": status, "timestamp": timestamp}
            for (rule, status), timestamp in sorted(state.notifications.items())
        ],
    }
    text = json.dumps(data, separators=(",", ":")).encode()
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as error:
        raise StateError(f"cannot write state file {path}: {error.strerror or error}") from None
    try:
        with os.fdopen(descriptor, "wb") as file:  # mkstemp makes it 0600
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise StateError(f"cannot write state file {path}: {error.strerror or error}") from None
