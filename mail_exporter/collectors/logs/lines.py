"""Bytes in, complete lines out: a partial last line waits for its rest, memory stays bounded.

Every follower (file, journal, standard input) reads chunks of bytes and hands them
to a :class:`LineSplitter`. A line is complete at its newline; what follows the last
newline is held back until the rest arrives. A line longer than ``max_line_bytes`` is
dropped whole (and counted), and while one is being dropped nothing of it is kept, so
a writer that never sends a newline costs at most ``max_line_bytes`` of memory.
Bytes that are not UTF-8 are replaced, never fatal.
"""

from __future__ import annotations


class LineSplitter:
    """Cuts a byte stream into lines; holds back the unfinished last line."""

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self.partial = b""
        self.too_long = 0  # lines dropped for their length
        self._dropping = False  # inside an overlong line: drop up to its newline

    def feed(self, data: bytes) -> list[str]:
        """The lines that ``data`` completes, without their newlines."""
        last = data.rfind(b"\n")
        if last < 0:
            self._hold(data)
            return []
        complete = self.partial + data[:last] if self.partial else data[:last]
        dropping = self._dropping
        self.partial, self._dropping = b"", False
        self._hold(data[last + 1 :])
        lines = complete.decode("utf-8", "replace").split("\n")
        if dropping:  # the first piece is the end of a line already counted as too long
            del lines[0]
        if len(complete) > self.max_line_bytes:
            kept = [line for line in lines if len(line) <= self.max_line_bytes]
            self.too_long += len(lines) - len(kept)
            return kept
        return lines

    def flush(self) -> list[str]:
        """The unfinished line as a line: its stream has ended."""
        rest, self.partial = self.partial, b""
        self._dropping = False
        return [rest.decode("utf-8", "replace")] if rest else []

    def _hold(self, rest: bytes) -> None:
        if self._dropping or not rest:
            return
        self.partial += rest
        if len(self.partial) > self.max_line_bytes:
            self.partial, self._dropping = b"", True
            self.too_long += 1
