"""Whole numbers written in ASCII digits, as mail servers, policies and configs write them.

``int()`` takes fullwidth and other scripts' digits, ``str.isdigit()`` is true for
superscripts that ``int()`` then refuses, and ``int()`` refuses more than 4,300 digits:
text from outside (a log line, a queue file, an MTA-STS policy, a config) goes through
:func:`ascii_int` instead, which answers ``None`` for anything but a short ASCII number.
"""

from __future__ import annotations

MAX_DIGITS = 18
"""Enough for any count, size or time these sources write; small enough to stay exact."""


def ascii_int(text: str, max_digits: int = MAX_DIGITS) -> int | None:
    """``text`` as a non-negative whole number, or None unless it is 1 to ``max_digits``
    ASCII digits."""
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None
