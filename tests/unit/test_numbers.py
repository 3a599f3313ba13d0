"""``whole_number``: text anyone may have written (a query parameter, a header, a port) read as a
whole number only when it is written plainly."""

from __future__ import annotations

import pytest

from bus.numbers import LARGEST, whole_number


@pytest.mark.parametrize(("text", "number"), [("0", 0), ("42", 42), ("0042", 42), (str(LARGEST), LARGEST)])
def test_plain_digits_are_read(text: str, number: int) -> None:
    assert whole_number(text) == number


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-1",
        "+1",
        " 1",
        "1 ",
        "1_000",
        "1.0",
        "0x10",
        "\u00b2",  # a digit to isdigit(), not to int()
        "\u0664\u0662",  # Arabic-Indic 42: int() takes it
        str(LARGEST + 1),
        "9" * 5000,  # int() raises past 4,300 digits
    ],
)
def test_anything_else_is_none(text: str) -> None:
    assert whole_number(text) is None


def test_the_largest_allowed_is_the_callers() -> None:
    assert whole_number("65535", 65535) == 65535
    assert whole_number("65536", 65535) is None
    assert whole_number("000065535", 65535) is None  # longer than the largest is written: refused unread
