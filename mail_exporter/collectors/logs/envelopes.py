"""Container runtimes' log records opened: the program's own lines, split lines joined.

A program in a container writes to its standard output; the runtime wraps every piece
in a record of its own and the program's line is inside. Two record formats cover the
runtimes:

* ``docker``: Docker's ``json-file`` driver, one JSON object a line,
  ``{"log":"postfix/smtpd[81]: connect from ...\\n","stream":"stdout","time":"..."}``.
  Docker cuts a line longer than 16 KiB into records of 16 KiB; only the last one's
  ``log`` ends with ``\\n``, so records are joined until one does. The text is JSON
  escaped, ``<`` ``>`` ``&`` as ``\\u003c`` … (six bytes each), so a record may be six
  times as long as the text it carries.
* ``cri``: the Kubernetes CRI log format (``/var/log/pods/…``, containerd, CRI-O, and
  podman's ``k8s-file`` driver), ``TIME STREAM TAGS TEXT``:
  ``2026-12-06T19:27:25.142239238+00:00 stdout F postfix/smtpd[81]: connect from ...``.
  ``TAGS`` is ``F`` (full) or ``P`` (partial: the line goes on in the next record of
  that stream); runtimes cut at their buffer size (conmon 8 KiB, containerd 16 KiB).

Partial records are joined per stream (stdout and stderr interleave), and the join is
bounded by ``max_line_bytes`` (in characters): a longer line is dropped whole and
counted too long, and nothing of it is held while the rest arrives. What is held
between records is part of the position, so a restart or a reload joins exactly what
was being joined. A record that is not in the format (a file of another runtime, a
truncated write) is passed on as it is: it then counts as an unsupported line, visible,
rather than being dropped without a trace. The text inside is the program's own line,
in whatever format the source's ``format`` says (Postfix's ``maillog_file =
/dev/stdout`` writes ``Dec 06 19:52:59 vm postfix/smtpd[181]: …``, which the syslog
format reads like the syslog daemon's lines).
"""

from __future__ import annotations

import json
from typing import Literal

Runtime = Literal["docker", "cri"]

RUNTIME_SPLIT_BYTES = 16384
"""The longest record text the runtimes write by default (Docker, containerd; conmon 8 KiB)."""
JSON_ESCAPE_FACTOR = 6  # "\u003c" for "<"


def record_bytes(max_line_bytes: int) -> int:
    """The longest record read: a runtime's whole record for any line we would keep."""
    return JSON_ESCAPE_FACTOR * max(max_line_bytes, RUNTIME_SPLIT_BYTES) + 256


class Envelope:
    """Opens one file's records into lines; joins split lines per stream."""

    def __init__(self, runtime: Runtime, max_line_bytes: int) -> None:
        self.runtime = runtime
        self.max_line_bytes = max_line_bytes
        self.pending: dict[str, str] = {}  # stream: the text of its unfinished line
        self.dropping: set[str] = set()  # streams inside an overlong line
        self.too_long = 0

    def open(self, records: list[str]) -> list[str]:
        """The program's complete lines in ``records``, without their newlines."""
        split = self._docker if self.runtime == "docker" else self._cri
        lines: list[str] = []
        for record in records:
            parsed = split(record)
            if parsed is None:
                lines.append(record)
                continue
            stream, text, complete = parsed
            if not complete:
                self._hold(stream, text)
                continue
            if stream in self.dropping:
                self.dropping.discard(stream)
                continue
            line = self.pending.pop(stream, "") + text
            if len(line) > self.max_line_bytes:
                self.too_long += 1
            else:
                lines.append(line)
        return lines

    def take_too_long(self) -> int:
        count, self.too_long = self.too_long, 0
        return count

    def state(self) -> dict[str, object]:
        return {"pending": dict(self.pending), "dropping": sorted(self.dropping)}

    def restore(self, state: object) -> None:
        if not isinstance(state, dict):
            return
        pending, dropping = state.get("pending"), state.get("dropping")
        if isinstance(pending, dict):
            self.pending = {k: v for k, v in pending.items() if isinstance(v, str)}
        if isinstance(dropping, list):
            self.dropping = {stream for stream in dropping if isinstance(stream, str)}

    def _hold(self, stream: str, text: str) -> None:
        if stream in self.dropping:
            return
        held = self.pending.get(stream, "") + text
        if len(held) > self.max_line_bytes:
            self.pending.pop(stream, None)
            self.dropping.add(stream)
            self.too_long += 1
        else:
            self.pending[stream] = held

    @staticmethod
    def _docker(record: str) -> tuple[str, str, bool] | None:
        try:
            entry = json.loads(record)
        except ValueError:
            return None
        if not isinstance(entry, dict):
            return None
        text, stream = entry.get("log"), entry.get("stream", "")
        if not isinstance(text, str) or not isinstance(stream, str):
            return None
        if text.endswith("\n"):
            return stream, text[:-1], True
        return stream, text, False

    @staticmethod
    def _cri(record: str) -> tuple[str, str, bool] | None:
        fields = record.split(" ", 3)
        if len(fields) < 3 or not fields[0][:1].isdigit():
            return None
        stream, tags = fields[1], fields[2].split(":")
        text = fields[3] if len(fields) == 4 else ""
        return stream, text, "P" not in tags
