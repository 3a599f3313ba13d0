"""PostgreSQL values as the hub's readers take them: as JSON would hold them where asyncpg gives
Python objects a mapping cannot use, and never an error for one value.

Connections that read rows (``open_pool(..., reads_rows=True)``: ``sql_poll``, a migration's
SQL source) install these codecs:

- ``uuid``, ``inet``, ``cidr``, ``bit`` and ``varbit`` come as their text, as ``postgres_cdc``
  gives them (pgoutput sends text). asyncpg gave ``UUID`` and ``ipaddress`` objects: a table
  keyed by uuid mapped as ``customer_id: id`` had every row refused ("of type UUID, expected
  string"), and ``lower(id)`` failed.
- ``date``, ``timestamp`` and ``timestamptz`` come as asyncpg gives them (``infinity`` too, as
  ``date.max``/``datetime.max``), but for a value Python cannot hold. PostgreSQL keeps dates from
  4713 BC to 5874897 AD, Python from year 1 to 9999, and asyncpg raised for one value outside
  (a typo'd ``20224-01-01``, a ``0044-03-15 BC``), failing the whole query: a ``sql_poll`` failed
  at every poll on that one row and read nothing after it, a migration stopped there. Such a
  value comes as PostgreSQL's own text of it (``10000-01-01``, ``0044-03-15 00:00:00 BC``,
  ``10000-01-01 00:00:00+00``), as MariaDB's driver hands a date it cannot hold
  (``0000-00-00``). The row goes on; a mapping that puts the value into a time refuses that row
  with the value named (a dead letter, a refused row of a migration), and one that does not use
  it is not held up.

Times are decoded from PostgreSQL's binary form (counts of days or microseconds since
2000-01-01), so the text does not depend on the session's DateStyle or TimeZone; the cost is
about a third of a microsecond per value (measured against asyncpg's own decoder, 200,000 rows).
The encoders take what asyncpg's take, and that text back (a position saved from such a row)."""

from __future__ import annotations

__all__ = ["install"]

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

_Y2K = dt.datetime(2000, 1, 1)
_Y2K_UTC = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_Y2K_DATE = dt.date(2000, 1, 1)
_Y2K_ORDINAL = _Y2K_DATE.toordinal()
_CYCLE_DAYS = 146_097  # the Gregorian calendar repeats every 400 years
_CYCLE_MICROSECONDS = _CYCLE_DAYS * 86_400_000_000
_DATE_INFINITY, _DATE_NEG_INFINITY = 2**31 - 1, -(2**31)
_TIME_INFINITY, _TIME_NEG_INFINITY = 2**63 - 1, -(2**63)
_TEXT = re.compile(r"(\d{4,})-(\d\d)-(\d\d)(?: (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?)?(\+00)?( BC)?")


def _year(year: int) -> str:
    """PostgreSQL's year: at least four digits, and years before 1 as ``N BC`` (0 is 1 BC)."""
    return f"{year:04d}" if year > 0 else f"{1 - year:04d}"


def _era(year: int) -> str:
    return "" if year > 0 else " BC"


def _date_text(days: int) -> str:
    cycles, rest = divmod(days, _CYCLE_DAYS)  # whole 400-year cycles, and a rest in 2000 to 2399, which Python holds
    day = _Y2K_DATE + dt.timedelta(days=rest)
    year = day.year + 400 * cycles
    return f"{_year(year)}-{day.month:02d}-{day.day:02d}{_era(year)}"


def _time_text(microseconds: int, zone: str) -> str:
    cycles, rest = divmod(microseconds, _CYCLE_MICROSECONDS)
    moment = _Y2K + dt.timedelta(microseconds=rest)
    year = moment.year + 400 * cycles
    fraction = f".{moment.microsecond:06d}".rstrip("0") if moment.microsecond else ""
    clock = f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}{fraction}"
    return f"{_year(year)}-{moment.month:02d}-{moment.day:02d} {clock}{zone}{_era(year)}"


def _decode_date(value: tuple[int]) -> dt.date | str:
    (days,) = value
    if days == _DATE_INFINITY:
        return dt.date.max
    if days == _DATE_NEG_INFINITY:
        return dt.date.min
    try:
        return _Y2K_DATE + dt.timedelta(days=days)
    except OverflowError:
        return _date_text(days)


def _time_decoder(epoch: dt.datetime, zone: str) -> Callable[[tuple[int]], dt.datetime | str]:
    """A ``timestamp`` (``epoch`` naive) or ``timestamptz`` (``epoch`` in UTC) decoder. Infinity
    comes naive for both, as asyncpg gives it."""

    def decode(value: tuple[int]) -> dt.datetime | str:
        (microseconds,) = value
        if microseconds == _TIME_INFINITY:
            return dt.datetime.max
        if microseconds == _TIME_NEG_INFINITY:
            return dt.datetime.min
        try:
            return epoch + dt.timedelta(microseconds=microseconds)
        except OverflowError:
            return _time_text(microseconds, zone)

    return decode


_decode_timestamp = _time_decoder(_Y2K, "")
_decode_timestamptz = _time_decoder(_Y2K_UTC, "+00")


def _parsed(text: str) -> tuple[int, int]:
    """Our own text of a value beyond Python's years, back as (days, microseconds of the day)."""
    found = _TEXT.fullmatch(text.strip())
    if found is None:
        raise TypeError(f"{text!r} is not a date or a time")
    year, month, day, hour, minute, second, fraction, _, bc = found.groups()
    year = 1 - int(year) if bc else int(year)
    cycles, rest = divmod(year - 2000, 400)
    days = dt.date(2000 + rest, int(month), int(day)).toordinal() - _Y2K_ORDINAL + cycles * _CYCLE_DAYS
    clock = (int(hour or 0) * 3600 + int(minute or 0) * 60 + int(second or 0)) * 1_000_000 + int((fraction or "0").ljust(6, "0"))
    return days, clock


def _encode_date(value: Any) -> tuple[int]:
    if isinstance(value, str):
        return (_parsed(value)[0],)
    if value == dt.date.max:
        return (_DATE_INFINITY,)
    if value == dt.date.min:
        return (_DATE_NEG_INFINITY,)
    return (value.toordinal() - _Y2K_ORDINAL,)


def _microseconds(since: dt.timedelta) -> int:
    return (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds


def _encode_timestamp(value: Any) -> tuple[int]:
    if isinstance(value, str):
        days, clock = _parsed(value)
        return (days * 86_400_000_000 + clock,)
    if value == dt.datetime.max:
        return (_TIME_INFINITY,)
    if value == dt.datetime.min:
        return (_TIME_NEG_INFINITY,)
    if not isinstance(value, dt.datetime):  # a date, at midnight (asyncpg's own encoder refuses it)
        value = dt.datetime(value.year, value.month, value.day)
    return (_microseconds(value.replace(tzinfo=None) - _Y2K),)


def _encode_timestamptz(value: Any) -> tuple[int]:
    if isinstance(value, str):
        return _encode_timestamp(value)
    if isinstance(value, dt.datetime) and value.tzinfo is None and value in (dt.datetime.max, dt.datetime.min):
        return _encode_timestamp(value)
    if not isinstance(value, dt.datetime):  # a date: midnight where this host is, as asyncpg takes it
        value = dt.datetime(value.year, value.month, value.day)
    return (_microseconds(value.astimezone(dt.UTC) - _Y2K_UTC),)


_CODECS = {
    "date": (_encode_date, _decode_date),
    "timestamp": (_encode_timestamp, _decode_timestamp),
    "timestamptz": (_encode_timestamptz, _decode_timestamptz),
}


_AS_TEXT = ("uuid", "inet", "cidr", "bit", "varbit")


async def install(connection: Any) -> None:
    """Decode this asyncpg connection's values as the module says (a pool's ``init``)."""
    for name, (encoder, decoder) in _CODECS.items():
        await connection.set_type_codec(name, schema="pg_catalog", encoder=encoder, decoder=decoder, format="tuple")
    for name in _AS_TEXT:
        await connection.set_type_codec(name, schema="pg_catalog", encoder=str, decoder=str, format="text")
