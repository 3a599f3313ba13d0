"""What a database's catalog says about a table, for checks the adapters make before trusting it:
the column sets of its unique indexes (a key that picks out one row), and a column's data type
(whether it holds a time, and how finely it tells times apart)."""

from __future__ import annotations

__all__ = ["Fetch", "SessionZone", "column_type", "column_types", "holds_time", "session_zone", "time_step", "unique_keys"]

from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

Fetch = Callable[[str, list[Any]], Awaitable[list[dict[str, Any]]]]  # (sql, args) -> rows as dicts


async def unique_keys(fetch: Fetch, *, postgres: bool, table: str) -> tuple[str, list[set[str]]]:
    """What ``table`` is ("table", "view": anything without indexes, or "absent") and the column
    sets (lower case: PostgreSQL folds unquoted names, MariaDB ignores their case) of its unique
    indexes, its primary key included. ``table`` may be ``schema.table``."""
    if postgres:
        kind = await fetch("SELECT relkind::text AS kind FROM pg_class WHERE oid = to_regclass($1)", [table])
        if not kind:
            return "absent", []
        if kind[0]["kind"] not in ("r", "p"):
            return "view", []
        indexes = await fetch(
            "SELECT array_agg(a.attname::text) AS columns FROM pg_index i"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL GROUP BY i.indexrelid",
            [table],
        )
        return "table", [{str(c).lower() for c in row["columns"]} for row in indexes]
    schema, _, name = table.rpartition(".")
    where = "TABLE_SCHEMA = COALESCE(NULLIF(%s, ''), DATABASE()) AND TABLE_NAME = %s"
    kind = await fetch(f"SELECT TABLE_TYPE AS kind FROM information_schema.TABLES WHERE {where}", [schema, name])  # noqa: S608
    if not kind:
        return "absent", []
    if kind[0]["kind"] != "BASE TABLE":
        return "view", []
    indexes = await fetch(
        f"SELECT INDEX_NAME AS name, COLUMN_NAME AS col FROM information_schema.STATISTICS WHERE {where} AND NON_UNIQUE = 0",  # noqa: S608
        [schema, name],
    )
    by_index: dict[str, set[str]] = {}
    for row in indexes:
        by_index.setdefault(str(row["name"]), set()).add(str(row["col"]).lower())
    return "table", list(by_index.values())


async def column_types(fetch: Fetch, *, postgres: bool, table: str) -> dict[str, tuple[str, int | None]] | None:
    """Each column of ``table`` or view (by its name in lower case) -> its data type (lower case:
    ``timestamp with time zone``, ``datetime``, ``numeric``, ``bigint``) and its digits: of
    fractional seconds for a time, of decimal places for a fixed-point number (None: as many as
    given). None when there is no such table. ``table`` may be ``schema.table``."""
    if postgres:
        found = await fetch(
            "SELECT attname::text AS name, format_type(atttypid, NULL) AS kind, CASE"
            " WHEN atttypid IN ('timestamp'::regtype, 'timestamptz'::regtype, 'time'::regtype, 'timetz'::regtype)"
            " THEN CASE WHEN atttypmod < 0 THEN 6 ELSE atttypmod END"
            " WHEN atttypid = 'numeric'::regtype AND atttypmod >= 4 THEN (atttypmod - 4) & 65535 END AS digits"
            " FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            [table],
        )
    else:
        schema, _, name = table.rpartition(".")
        found = await fetch(
            "SELECT COLUMN_NAME AS name, DATA_TYPE AS kind, COALESCE(DATETIME_PRECISION, NUMERIC_SCALE) AS digits"
            " FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = COALESCE(NULLIF(%s, ''), DATABASE()) AND TABLE_NAME = %s",
            [schema, name],
        )
    if not found:
        return None
    return {str(r["name"]).lower(): (str(r["kind"]).lower(), None if r["digits"] is None else int(r["digits"])) for r in found}


async def column_type(fetch: Fetch, *, postgres: bool, table: str, column: str) -> tuple[str, int | None] | None:
    """The data type of ``column`` and its digits (``column_types``); None when the catalog does not say."""
    found = await column_types(fetch, postgres=postgres, table=table)
    return None if found is None else found.get(column.lower())


def holds_time(kind: str) -> bool:
    """Whether a column of this data type holds a time (a date, a timestamp, a datetime)."""
    return kind == "date" or kind.startswith(("timestamp", "datetime"))


def time_step(kind: str, digits: int | None) -> float | None:
    """How finely a column of this type tells times apart, in seconds: 86,400 for a date, 1 for a
    time of whole seconds (MariaDB's DATETIME and TIMESTAMP by default, PostgreSQL's
    ``timestamp(0)``), 0.001 for milliseconds; None for a type that holds no time, or digits the
    catalog does not give."""
    if kind == "date":
        return 86_400.0
    if holds_time(kind) and digits is not None:
        return float(10**-digits)
    return None


class SessionZone(NamedTuple):
    """A MariaDB/MySQL session's zone: its name (SYSTEM's as the server calls it), its offset from
    UTC now, and whether it has summer time (not the same offset in January and July)."""

    name: str
    offset_s: int
    summer_time: bool

    @property
    def is_utc(self) -> bool:
        return self.offset_s == 0 and not self.summer_time

    def described(self) -> str:
        hours, minutes = divmod(abs(self.offset_s) // 60, 60)
        now = f"UTC{'-' if self.offset_s < 0 else '+'}{hours:02d}:{minutes:02d} now"
        return f"{self.name}, {now}" + (", with summer time" if self.summer_time else "")


async def session_zone(fetch: Fetch) -> SessionZone:
    """The zone a MariaDB/MySQL session reads and writes TIMESTAMP columns' wall-clock times in."""
    [found] = await fetch(
        "SELECT @@session.time_zone AS zone, @@system_time_zone AS system, TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(), NOW()) AS utc_offset,"
        " UNIX_TIMESTAMP('2025-07-15 12:00:00') - UNIX_TIMESTAMP('2025-01-15 12:00:00') AS span",
        [],
    )
    name = str(found["system"] if found["zone"] == "SYSTEM" else found["zone"])
    return SessionZone(name, int(found["utc_offset"]), int(found["span"]) != 181 * 86_400)
