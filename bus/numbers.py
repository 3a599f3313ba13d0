"""Whole numbers read from text that anyone may have written: a query parameter, a header, a port
in a dsn, a dead letter's origin.

``int()`` alone is too willing for these: it takes a sign, spaces, underscores and other scripts'
digits ("٤٢"), ``str.isdigit()`` passes "²", which ``int()`` then refuses, and past 4,300 digits
``int()`` raises instead of answering. Each of those was once a 500 or a listing that broke."""

from __future__ import annotations

__all__ = ["LARGEST", "whole_number"]

LARGEST = 2**63 - 1  # what Kafka's offsets, Java's long and most APIs' integers end at


def whole_number(text: str, largest: int = LARGEST) -> int | None:
    """``text`` as a whole number when it is written plainly (ASCII digits only: no sign, space,
    underscore or other script) and is at most ``largest``; None otherwise."""
    if not text or len(text) > len(str(largest)) or not (text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if number <= largest else None
