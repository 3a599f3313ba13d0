"""Functions callable from expressions. Every function takes ``null`` in and gives ``null`` out
where that is the sensible reading (a missing field stays missing instead of failing).

Times are timezone-aware ``datetime`` values (UTC when the input names no zone), durations are
``timedelta``; ``timestamp + duration``, ``timestamp - timestamp`` and comparisons work as they
read. Money is ``Decimal``: ``minor_units("12.34", "usd") == 1234`` with the ISO 4217 exponent.
"""

from __future__ import annotations

__all__ = ["FUNCTIONS", "fixed_now", "parse_duration", "time_zone", "to_timestamp"]

import functools
import hashlib
import hmac
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bus.errors import PermanentError
from bus.jsontext import text_cell
from bus.moments import epoch_ms_moment
from bus.patterns import search

# ISO 4217 currencies whose minor unit is not 1/100 (the rest use 2 decimals).
_CURRENCY_EXPONENT = {
    **dict.fromkeys(
        ["bif", "clp", "djf", "gnf", "isk", "jpy", "kmf", "krw", "pyg", "rwf", "ugx", "uyi", "vnd", "vuv", "xaf", "xof", "xpf"], 0
    ),
    **dict.fromkeys(["bhd", "iqd", "jod", "kwd", "lyd", "omr", "tnd"], 3),
    "clf": 4,
    "uyw": 4,
}
# What now() gives inside ``fixed_now``; None: the clock's time.
_FIXED_NOW: ContextVar[datetime | None] = ContextVar("bus_fixed_now", default=None)


@contextmanager
def fixed_now(when: datetime) -> Iterator[None]:
    """``now()`` gives ``when`` inside (in this task and the tasks and threads it starts). A job
    that must render a mapping to the same value every time runs at one time, its own: a
    migration renders what it will write, journals it, writes it (rendering it again), reads it
    back to compare, and a resumed run renders it once more; a ``loaded_at: now()`` column read
    the clock at each of those and every row differed from itself."""
    token = _FIXED_NOW.set(when)
    try:
        yield
    finally:
        _FIXED_NOW.reset(token)


def _now() -> datetime:
    return _FIXED_NOW.get() or datetime.now(UTC)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _nullable(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(value: Any, *args: Any) -> Any:
        return None if value is None else fn(value, *args)

    wrapped.__name__ = fn.__name__
    return wrapped


_MAX_ROUND_DIGITS = 100  # round(x, 10**9) builds a number of 10**9 digits: minutes of CPU for one event


def _round(value: Any, digits: Any = 0) -> Any:
    if isinstance(digits, bool) or not isinstance(digits, int) or abs(digits) > _MAX_ROUND_DIGITS:
        raise ValueError(f"round: digits must be a whole number from -{_MAX_ROUND_DIGITS} to {_MAX_ROUND_DIGITS}, not {digits!r}")
    if type(value) is Decimal:
        _whole_fits(value)
    return round(value, digits) if digits else round(value)


# Python's own bound on whole numbers written as text. A decimal read from text can say 1e999999999
# in 11 characters; made whole (int, round) it became a number of a billion digits, minutes of CPU
# and gigabytes for one event, the process held meanwhile.
_MAX_WHOLE_DIGITS = 4300


def _whole_fits(value: Decimal) -> None:
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite number")
    if value.adjusted() >= _MAX_WHOLE_DIGITS:
        raise ValueError(f"{value:.6e} has more than {_MAX_WHOLE_DIGITS:,} digits")


def _int(value: Any) -> int:
    if type(value) is Decimal:
        _whole_fits(value)
    return int(value)


def _float(value: Any) -> float:
    """A float, finite: text that says "nan", "inf" or 1e999 is not a number a system meant (as
    JSON, which has no NaN or infinity, and whose numbers beyond a double the parser refuses)."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


_TRUE_WORDS = frozenset({"true", "t", "yes", "y", "on", "1"})
_FALSE_WORDS = frozenset({"false", "f", "no", "n", "off", "0", ""})


def _bool(value: Any) -> bool:
    """``bool(x)``: text as the systems that send it mean it. Python's ``bool("false")`` is True (any
    text but "" is), so ``bool(active)`` over a CSV column, a form field or an XML element made
    every "false" and "0" true, unsaid. Text is read as true/t/yes/y/on/1 or false/f/no/n/off/0
    (any case, around spaces; "" is false); other text is an error that names it. Numbers: any
    but 0 is true. Anything else as Python tells it (an empty list is false)."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        raise ValueError(f"bool: {value[:40]!r} is not a yes or a no (true/false, yes/no, on/off, 1/0, t/f, y/n)")
    return bool(value)


def _text(value: Any) -> str:
    """``str(x)``: the value as the hub writes it for other systems (``true``, a time in RFC 3339,
    a record or a list as its JSON text), not Python's forms (``True``,
    ``2026-11-01 08:00:00+00:00``, ``{'k': 1}``) that no other reader takes for the value."""
    if isinstance(value, str):
        return value
    if type(value) is int:  # str(id): the common case, as it was
        return str(value)
    try:
        return text_cell(value, "str() argument")
    except PermanentError as exc:  # NaN or an infinity: an expression's error, like any function's
        raise ValueError(str(exc)) from None


def _string(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(value: Any, *args: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {type(value).__name__}")
        return fn(value, *args)

    return wrapped


@functools.lru_cache(maxsize=64)
def time_zone(name: str) -> ZoneInfo:
    """An IANA time zone by name; ValueError naming it when there is none such."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name: UTC, Europe/Berlin, America/New_York)") from None


def to_timestamp(value: Any, zone: str | None = None) -> datetime | None:
    """ISO 8601 text, epoch milliseconds, or a datetime -> an aware datetime. A value that names
    no zone (text without an offset, a database's ``timestamp`` or ``DATETIME``) is wall-clock
    time in ``zone`` (UTC by default: a legacy system that keeps local time names its zone)."""
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC if zone is None else time_zone(zone))
    if isinstance(value, bool):
        raise TypeError("a boolean is not a timestamp")
    if isinstance(value, (int, float)):
        if (moment := epoch_ms_moment(value)) is None:  # an OSError or OverflowError, not an expression's error
            raise ValueError(f"{value!r} milliseconds since 1970 is no time between the years 1 and 9999")
        return moment
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC if zone is None else time_zone(zone))
    raise TypeError(f"cannot read {type(value).__name__} as a timestamp")


def _format_time(value: Any, fmt: str, zone: str | None = None) -> str | None:
    """``strftime`` of a time, in its own zone (UTC if it names none), or in ``zone``."""
    moment = to_timestamp(value)
    if moment is None:
        return None
    return (moment if zone is None else moment.astimezone(time_zone(zone))).strftime(fmt)


def parse_duration(value: Any) -> timedelta | None:
    """``"90s"``, ``"1h30m"``, ``"500ms"``, ``"2d"``, ``"1w"``; a number is seconds."""
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str):
        text = value.strip()
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
            raise ValueError(f"invalid duration {value!r} (examples: 500ms, 90s, 5m, 1h30m, 2d)")
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    else:
        raise TypeError(f"cannot read {type(value).__name__} as a duration")
    try:
        return timedelta(seconds=seconds)
    except (OverflowError, ValueError):  # past timedelta's 999,999,999 days, or NaN: an OverflowError is no config error
        raise ValueError(f"{value!r} is no duration this hub can hold (a finite length of at most 999,999,999 days)") from None


def _millis(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return int(value.total_seconds() * 1000)
    stamp = to_timestamp(value)
    assert stamp is not None
    return int(stamp.timestamp() * 1000)


def _iso(value: Any) -> str | None:
    stamp = to_timestamp(value)
    return None if stamp is None else stamp.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _decimal(value: Any) -> Decimal | None:
    """Money: a finite decimal (NaN and the infinities, which text can say, are no amount)."""
    if value is None:
        return None
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"{value!r} is not a number") from exc
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _exponent(currency: Any) -> int:
    if not isinstance(currency, str) or len(currency) != 3:
        raise ValueError(f"{currency!r} is not an ISO 4217 currency code")
    return _CURRENCY_EXPONENT.get(currency.lower(), 2)


def _minor_units(amount: Any, currency: Any) -> int | None:
    """Major units (``"12.34"``, 12.34) -> integer minor units (1234), rounding half to even."""
    value = _decimal(amount)
    if value is None:
        return None
    try:
        return int((value * (Decimal(10) ** _exponent(currency))).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    except InvalidOperation:  # the context's 28 digits: its own message is only the class's name
        raise ValueError(f"{amount!r} in minor units has more than 28 digits: no amount") from None


def _major_units(minor: Any, currency: Any) -> Decimal | None:
    value = _decimal(minor)
    return None if value is None else value.scaleb(-_exponent(currency))


_MAX_TEXT = 1_000_000  # the longest string a function may build from event values (see compiler.MAX_RESULT)


def _bounded(length: int, what: str) -> None:
    if length > _MAX_TEXT:
        raise ValueError(f"{what} would make {length} characters (limit {_MAX_TEXT})")


def _replace(s: str, old: Any, new: Any) -> str:
    _bounded(len(s) + (s.count(old) if old else len(s) + 1) * max(0, len(new) - len(old)), "replace")
    return s.replace(old, new)


def _join(items: Any, sep: Any) -> str:
    parts = [str(i) for i in items]
    _bounded(sum(map(len, parts)) + len(str(sep)) * max(0, len(parts) - 1), "join")
    return str(sep).join(parts)


def _coalesce(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _switch(value: Any, *cases: Any) -> Any:
    """switch(code, "OP", "open", "CL", "closed", "unknown"): the result paired with the first
    match; an odd last argument is the default (else null). Legacy codes to words in one place."""
    pairs, default = (cases[:-1], cases[-1]) if len(cases) % 2 else (cases, None)
    for i in range(0, len(pairs), 2):
        if value == pairs[i]:
            return pairs[i + 1]
    return default


def _find(items: Any, field: str, value: Any) -> Any:
    """find(link, "relation", "next"): the first element of a list of objects whose ``field``
    equals ``value`` (null if none): FHIR's Bundle.link, coded lists, name-value pairs."""
    if not isinstance(items, list):
        return None
    return next((i for i in items if isinstance(i, dict) and i.get(field) == value), None)


def _mask(value: Any, keep: int = 4, char: str = "*") -> str | None:
    """mask("4111111111111111") -> "************1111": all but the last ``keep`` characters hidden."""
    if value is None:
        return None
    text = str(value)
    shown = text[-keep:] if keep > 0 else ""
    _bounded(len(str(char)) * (len(text) - len(shown)) + len(shown), "mask")
    return char * (len(text) - len(shown)) + shown


def _hmac_sha256(value: Any, key: Any) -> str | None:
    """A keyed pseudonym (hex): the same input and key give the same output, and without the key
    no one can test guesses against it, as they could with a plain hash of a short identifier."""
    if value is None:
        return None
    return hmac.new(str(key).encode(), str(value).encode(), hashlib.sha256).hexdigest()


FUNCTIONS: dict[str, Callable[..., Any]] = {
    # strings
    "lower": _string(str.lower),
    "upper": _string(str.upper),
    "trim": _string(str.strip),
    "startswith": _string(str.startswith),
    "endswith": _string(str.endswith),
    "contains": lambda hay, needle: hay is not None and needle in hay,
    "matches": _string(lambda s, pattern: search(pattern, s)),  # RE2: linear in the value, whatever the pattern
    "replace": _string(_replace),
    "split": _string(lambda s, sep: s.split(sep)),
    "join": _nullable(_join),
    "substr": _string(lambda s, start, end=None: s[start:end]),
    # general
    "len": _nullable(len),
    "exists": lambda v: v is not None,
    "coalesce": _coalesce,
    "switch": _switch,
    "find": _find,
    "mask": _mask,
    "hmac_sha256": _hmac_sha256,
    "str": _nullable(_text),
    "int": _nullable(_int),
    "float": _nullable(_float),
    "bool": _nullable(_bool),
    "abs": _nullable(abs),
    "round": _nullable(_round),
    "min": lambda *vs: min(v for v in vs if v is not None) if any(v is not None for v in vs) else None,
    "max": lambda *vs: max(v for v in vs if v is not None) if any(v is not None for v in vs) else None,
    # time
    "now": _now,
    "timestamp": to_timestamp,
    "duration": parse_duration,
    "millis": _millis,
    "iso": _iso,
    "date": lambda v: None if v is None else _iso(v)[:10],  # type: ignore[index]
    "format_time": _format_time,
    # money
    "decimal": _decimal,
    "minor_units": _minor_units,
    "major_units": _major_units,
}
