"""One header of a Kafka record (or of a record about to be produced) by name.

Headers are a list of (name, bytes) pairs; a name may come more than once (the first counts) and
a value may be null. Records read by aiokafka, the router's planned copies and dead letters all
carry them this way.
"""

from __future__ import annotations

__all__ = ["header_bytes", "header_text"]

from collections.abc import Iterable


def header_bytes(headers: Iterable[tuple[str, bytes | None]] | None, name: str) -> bytes | None:
    """The value of the first header called ``name``; None when there is none, or it is null."""
    for key, value in headers or ():
        if key == name:
            return bytes(value) if value is not None else None
    return None


def header_text(headers: Iterable[tuple[str, bytes | None]] | None, name: str) -> str:
    """The same as text (undecodable bytes replaced); "" when there is none, or it is null."""
    value = header_bytes(headers, name)
    return value.decode(errors="replace") if value is not None else ""
