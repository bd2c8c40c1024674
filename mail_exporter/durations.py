"""Prometheus-style durations (``500ms``, ``30s``, ``1h30m``) as seconds."""

from __future__ import annotations

import re

_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "y": 31536000.0,
}
# ASCII digits only (``\d`` and ``int()`` also take fullwidth and other scripts' digits), and
# at most 15 a part: thousands of digits would overflow the float or Python's int parsing.
_PART = re.compile(r"([0-9]{1,15})(ms|s|m|h|d|w|y)")
_WHOLE = re.compile(r"(?:[0-9]{1,15}(?:ms|s|m|h|d|w|y))+")


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration; ``ValueError`` naming the accepted forms otherwise."""
    if not _WHOLE.fullmatch(text):
        raise ValueError(
            f"invalid duration {text!r}: use a number and a unit such as 500ms, 30s, 5m"
        )
    return sum(int(amount) * _UNITS[unit] for amount, unit in _PART.findall(text))


def format_duration(seconds: float) -> str:
    """The shortest Prometheus form of a duration, for messages and the status page."""
    if seconds < 1 or seconds != int(seconds):
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    for unit, size in (("h", 3600), ("m", 60)):
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"
