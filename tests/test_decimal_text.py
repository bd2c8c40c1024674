"""Numbers from outside text: ASCII digits only, and not too many of them."""

from __future__ import annotations

import pytest

from mail_exporter.decimal_text import MAX_DIGITS, ascii_int
from mail_exporter.targets import parse_port


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("25", 25), ("604800", 604800), ("9" * MAX_DIGITS, int("9" * MAX_DIGITS))],
)
def test_ascii_numbers(text: str, value: int) -> None:
    assert ascii_int(text) == value


@pytest.mark.parametrize(
    "text",
    ["", "\u00b2", "\uff12\uff15", "\u0662\u0665", "2\u00b2", "-1", "+1", " 1", "1.0", "9" * 5000],
)
def test_anything_else_is_none(text: str) -> None:
    assert ascii_int(text) is None


def test_ports_take_five_digits_in_range() -> None:
    assert [parse_port(text) for text in ("1", "65535", "65536", "0", "00025", "000025")] == [
        1, 65535, None, None, 25, None,
    ]  # fmt: skip
