"""Two forms of a value that a migration keeps:

- the *canonical* form, for comparing what was meant with what a target holds. Numbers of every
  kind (int, float, Decimal) become one normalised decimal text (``12.5`` whether the target
  returned ``Decimal('12.50')`` or the mapping gave ``12.5``); timestamps become ISO text in UTC
  without a zone (a DATETIME column drops it); booleans become 1/0 (MariaDB has no boolean);
  bytes become hex; text stays exactly as it is, so a truncated string or a changed character is
  a difference. ``digest`` hashes the canonical JSON (sorted keys).
- the *typed* form, for keeping a target's values in the journal and writing them back on
  rollback with their own types (a Decimal column refuses text under asyncpg): JSON where
  Decimal, datetime, date, time and bytes are tagged objects.
"""

from __future__ import annotations

__all__ = [
    "ChecksumLines",
    "aligned",
    "canonical",
    "checksum_in_order",
    "differing_fields",
    "digest",
    "from_typed_json",
    "overall_checksum",
    "to_typed_json",
]

import base64
import hashlib
import json
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from bus.jsontext import encoder


def _number(value: int | float | Decimal) -> str:
    try:
        number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        return str(value)
    if not number.is_finite():
        return str(number)
    text = format(number.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def canonical(value: Any) -> Any:
    """The comparable form of a value (see the module docstring)."""
    kind = type(value)
    if kind is str or value is None:  # the common cases first: this runs for every field of every record
        return value
    if kind is int:
        return str(value)
    if kind is dict:
        return {str(k): canonical(v) for k, v in value.items()}
    if kind is list:  # a record's address (its key values): three times for every record of a run
        return [canonical(v) for v in value]
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float | Decimal):
        return _number(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return str(value)


# Made once: json.dumps and json.loads with options build a new encoder or decoder per call, and
# these run several times for every row a migration moves.
_canonical_json = encoder(sort_keys=True)
_typed_json = encoder()


def digest(value: Any) -> str:
    """sha256 of the canonical JSON of ``value`` (first 32 hex digits). A target may answer text
    that is no Unicode (a lone surrogate, ``"\\ud800"`` in its JSON): "surrogatepass" gives it
    bytes no real text has, so it differs from every value a run writes instead of failing."""
    return hashlib.sha256(_canonical_json(canonical(value)).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def aligned(expected: dict[str, Any] | None, actual: dict[str, Any] | None) -> dict[str, Any] | None:
    """``actual``, each field where ``expected`` has a time read as the time it names, and each
    where it has a number and ``actual`` text read as the number in it: a service keeps a time in a
    layout of its own (ISO 8601 text with "Z" or "+0000", with or without milliseconds; seconds or
    milliseconds since 1970) and may keep numbers as text (Shopify's prices, "19.90"), and compared
    as text every record written into one was a difference. Records and lists nested in records
    (an order's lines) are aligned too, a nested record to the fields meant (fields a service adds
    to a line are no differences, as at the top); a value that names no time or number stays as it
    is (a difference). Text meant stays text: "12.50" sent as text and 12.5 read back differ."""
    if not expected or not actual:
        return actual
    found: dict[str, Any] | None = None
    for name, want in expected.items():
        got = actual.get(name)
        now = _aligned_value(want, got)
        if now is not got:
            if found is None:
                found = dict(actual)
            found[name] = now
    return actual if found is None else found


def _aligned_value(want: Any, got: Any) -> Any:
    """``got`` as ``aligned`` reads it where ``want`` was meant: the same object when nothing changes."""
    if isinstance(want, datetime):
        return _moment(got) or got
    if isinstance(got, str) and isinstance(want, int | float | Decimal) and not isinstance(want, bool):
        number = _number_in(got)
        return got if number is None else number
    if isinstance(want, dict) and isinstance(got, dict):  # a nested record: the fields meant, as at the top
        fields = {k: _aligned_value(w, got.get(k)) for k, w in want.items()}
        return got if got.keys() == fields.keys() and all(fields[k] is got[k] for k in fields) else fields
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        items = [_aligned_value(w, g) for w, g in zip(want, got, strict=True)]
        return got if all(i is g for i, g in zip(items, got, strict=True)) else items
    return got


_EPOCH_MS = 100_000_000_000  # larger than this, seconds since 1970 would be after the year 5138: milliseconds


def _number_in(text: str) -> Decimal | None:
    """The number a service keeps as text (Shopify's prices: ``"19.90"``), or None."""
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _moment(value: Any) -> datetime | None:
    """The time ``value`` names (ISO 8601 text, or epoch seconds or milliseconds), or None."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if abs(value) >= _EPOCH_MS else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def differing_fields(expected: dict[str, Any] | None, actual: dict[str, Any] | None) -> dict[str, tuple[Any, Any]]:
    """field -> (expected, actual), canonical, for every field of ``expected`` the target holds
    otherwise. A missing row is the field ``(row)``; fields the target has beyond those
    expected (columns the mapping does not write, fields a service adds) are not differences. A
    time or a number the target keeps in its own layout is compared as what it names (``aligned``)."""
    actual = aligned(expected, actual)
    if expected is None or actual is None:
        if expected is None and actual is None:
            return {}
        return {"(row)": ("absent" if expected is None else "present", "absent" if actual is None else "present")}
    out: dict[str, tuple[Any, Any]] = {}
    for name, want in expected.items():
        want_c, got_c = canonical(want), canonical(actual.get(name))
        if want_c != got_c:
            out[name] = (want_c, got_c)
    return out


def overall_checksum(digests: dict[str, str]) -> str:
    """sha256 of the sorted ``key<TAB>digest`` lines, first 16 hex digits: independent of order."""
    return checksum_in_order(sorted(digests.items()))


def checksum_in_order(pairs: Iterable[tuple[str, str]]) -> str:
    """``overall_checksum`` of (key, digest) pairs that come sorted by key already (a journal read
    in key order: SQLite's text order is Python's, code point by code point), without holding them."""
    overall = ChecksumLines()
    for key, value in pairs:
        overall.add(key, value)
    return overall.hexdigest()


class ChecksumLines:
    """``overall_checksum`` fed one (key, digest) at a time, keys in sorted order."""

    __slots__ = ("_sha",)

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def add(self, key: str, value: str) -> None:
        self._sha.update(f"{key}\t{value}\n".encode())

    def hexdigest(self) -> str:
        return self._sha.hexdigest()[:16]


def _tag(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int or value is None:  # most values: nothing to tag
        return value
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, time):
        return {"$time": value.isoformat()}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dict):
        return {str(k): _tag(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_tag(v) for v in value]
    return value


_UNTAG: dict[str, Callable[[str], Any]] = {
    "$decimal": Decimal,
    "$datetime": datetime.fromisoformat,
    "$date": date.fromisoformat,
    "$time": time.fromisoformat,
    "$bytes": base64.b64decode,
}


def _untag(value: dict[str, Any]) -> Any:
    if len(value) == 1:
        ((name, text),) = value.items()
        if name in _UNTAG and isinstance(text, str):
            return _UNTAG[name](text)
    return value


def to_typed_json(value: Any) -> str:
    return _typed_json(_tag(value))


_typed_decoder = json.JSONDecoder(object_hook=_untag)


def from_typed_json(text: str) -> Any:
    return _typed_decoder.decode(text)
