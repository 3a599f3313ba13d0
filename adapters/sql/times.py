"""How a time goes into a SQL column, by the column's type (read from the catalog).

The drivers write a time as they find it, and each database reads it its own way; left to them,
one moment landed in different places by database and by the sender's offset:

- columns that hold no zone (PostgreSQL ``timestamp``, MariaDB/MySQL ``DATETIME``) take the
  wall-clock time in the outbound's ``timezone`` (asyncpg refused an aware time; PyMySQL wrote the
  time's own wall clock, so offsets became zones);
- ``DATE`` and ``TIME`` columns take the date or the time of day there (asyncpg took the sender's);
- MariaDB/MySQL ``TIMESTAMP`` columns take the moment itself, as seconds since 1970 for
  ``FROM_UNIXTIME`` (they read a wall-clock time in the session's zone, often not UTC);
- a time is cut to the digits of a second its column keeps (PostgreSQL rounds, so 23:59:59.9996
  into ``timestamp(0)`` became the next day, where MariaDB cuts).

Per column, built once from the catalog: ``takes_wall_clock`` says the column takes the wall-clock
time as it is (the outbound converts those inline: most columns, on the hot path), and
``converter`` gives the one function that does anything else.
"""

from __future__ import annotations

__all__ = ["Convert", "converter", "epoch", "from_epoch", "takes_wall_clock"]

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from functools import partial
from typing import Any

from adapters.sql.catalog import holds_time
from bus.adapter_api import PermanentError

Convert = Callable[[Any], Any]  # a column's value as the event gives it -> as the column takes it

_STEPS = [10 ** (6 - digits) for digits in range(7)]  # microseconds in the last digit a column keeps
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_EARLIEST_TIMESTAMP = datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)  # MariaDB/MySQL TIMESTAMP's first second


def _step(digits: int | None) -> int:
    return _STEPS[min(6, digits)] if digits is not None else 1


def takes_wall_clock(kind: str, digits: int | None, *, postgres: bool) -> bool:
    """Whether a column of type ``kind`` takes a time as its wall-clock time in the outbound's zone,
    nothing more: PostgreSQL ``timestamp`` of six digits; on MariaDB/MySQL every type but DATE,
    TIME, TIMESTAMP and a DATETIME of fewer digits (a type not known yet included)."""
    if postgres:
        return kind == "timestamp without time zone" and _step(digits) == 1
    return kind not in ("date", "time", "timestamp") and not (holds_time(kind) and _step(digits) > 1)


def converter(kind: str, digits: int | None, *, postgres: bool, zone: tzinfo, column: str, where: str) -> Convert | None:
    """What a value goes through on its way into a column of type ``kind`` (``column_types``)
    that does not just take the wall-clock time (``takes_wall_clock``); None when it goes as it is."""
    step = _step(digits)
    if kind == "date":
        return partial(_date, zone)
    if kind in ("time", "time without time zone"):
        return partial(_time_of_day, zone, step)
    if not postgres and kind == "timestamp":
        return partial(_moment, zone, step, column, where)
    if kind == "timestamp without time zone" or not postgres:  # a DATETIME (or timestamp) of fewer digits
        return partial(_wall, zone, step)
    if holds_time(kind) and step > 1:  # timestamptz of fewer digits
        return partial(_cut_value, step)
    return None


def epoch(value: Any) -> Any:
    """An aware time as seconds since 1970 with six decimal places (Decimal: exact, where a float
    loses the last digit), for ``FROM_UNIXTIME``; anything else as it is."""
    if not isinstance(value, datetime):
        return value
    return Decimal((value - _EPOCH) // _MICROSECOND).scaleb(-6)


def from_epoch(seconds: Any) -> datetime:
    """The moment ``UNIX_TIMESTAMP`` answered (an int or a Decimal), in UTC."""
    return _EPOCH + timedelta(microseconds=int(Decimal(seconds) * 1_000_000))


def _wall(zone: tzinfo, step: int, value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        value = value.astimezone(zone).replace(tzinfo=None)
    return _cut(value, step)


def _cut_value(step: int, value: Any) -> Any:
    return _cut(value, step)


def _cut(value: Any, step: int) -> Any:
    if isinstance(value, datetime) and value.microsecond % step:
        return value.replace(microsecond=value.microsecond - value.microsecond % step)
    return value


def _date(zone: tzinfo, value: Any) -> Any:
    if isinstance(value, datetime):
        return (value.astimezone(zone) if value.tzinfo is not None else value).date()
    return value


def _time_of_day(zone: tzinfo, step: int, value: Any) -> Any:
    if isinstance(value, datetime):
        local = value.astimezone(zone) if value.tzinfo is not None else value
        return local.time().replace(microsecond=local.microsecond - local.microsecond % step)
    return value


def _moment(zone: tzinfo, step: int, column: str, where: str, value: Any) -> Any:
    """A value for a MariaDB/MySQL TIMESTAMP column, as the moment it names (a time without a
    zone, or text of one, is in ``zone``). The column holds 1970-01-01 00:00:01 UTC at the
    earliest, and FROM_UNIXTIME gives NULL for an earlier one, even in strict mode."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise PermanentError(f"{where}: column {column} is a TIMESTAMP and takes a time, not {value!r}") from None
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time())
    if not isinstance(value, datetime):
        raise PermanentError(f"{where}: column {column} is a TIMESTAMP and takes a time, not {type(value).__name__} {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    if value < _EARLIEST_TIMESTAMP:
        raise PermanentError(
            f"{where}: column {column} is a TIMESTAMP, which holds no time before 1970-01-01 00:00:01 UTC: "
            f"{value.isoformat()} would be stored as NULL; use a DATETIME column for it"
        )
    return _cut(value, step)
