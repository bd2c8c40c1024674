"""What a server says, made safe to show: the one escaping for terminals, reports and logs.

A server chooses its replies, its certificate's names and, through them, the text of
verify errors. Shown as they are, a line break forges a line of a report (a fake
``Verdict: SUCCESS``) or of a log, an escape sequence rewrites the terminal, and a
bidi override reorders what is read. :func:`printable` escapes every character that
is not printable as Python knows it (control characters such as CR, LF, TAB and ESC,
Unicode line and paragraph separators, format characters such as the bidi controls,
surrogates), in the form Python writes it: ``\\r``, ``\\x1b``, ``\\u2028``. Its output
holds printable characters only, so escaping it again changes nothing.

Server text is escaped where it enters a probe's result (the session log, failure
details, TLS facts), so that every reader of the result (the report of ``probe`` and
``/probe?debug=true``, the status page, log lines) gets it safe.
"""

from __future__ import annotations


def _escaped(character: str) -> str:
    return character if character.isprintable() else character.encode("unicode_escape").decode()


def printable(data: bytes | str, limit: int | None = 120) -> str:
    """``data`` (bytes as UTF-8) with every unprintable character escaped, cut after
    ``limit`` characters (``None``: not cut)."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    if not text.isprintable():  # nearly every line is: one C call, not one per character
        text = "".join(map(_escaped, text))
    return text if limit is None or len(text) <= limit else text[:limit] + "…"
