"""What a database's catalog says about a table, for checks the adapters make before trusting it:
the column sets of its unique indexes (a key that picks out one row), and a column's data type
(whether it holds a time, and how finely it tells times apart)."""

from __future__ import annotations

__all__ = ["Fetch", "column_type", "holds_time", "time_step", "unique_keys"]

from collections.abc import Awaitable, Callable
from typing import Any

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


async def column_type(fetch: Fetch, *, postgres: bool, table: str, column: str) -> tuple[str, int | None] | None:
    """The data type of ``column`` of ``table`` or view (lower case: ``timestamp with time zone``,
    ``datetime``, ``bigint``) and its digits of fractional seconds; None when the catalog does not
    say (a server that hides it)."""
    schema, _, name = table.rpartition(".")
    if postgres:
        found = await fetch(
            "SELECT data_type AS kind, datetime_precision AS digits FROM information_schema.columns"
            " WHERE table_schema = COALESCE(NULLIF($1, ''), current_schema()) AND table_name = $2 AND column_name = $3",
            [schema.lower(), name.lower(), column.lower()],  # plain identifiers: PostgreSQL folds them to lower case
        )
    else:
        found = await fetch(
            "SELECT DATA_TYPE AS kind, DATETIME_PRECISION AS digits FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = COALESCE(NULLIF(%s, ''), DATABASE()) AND TABLE_NAME = %s AND COLUMN_NAME = %s",
            [schema, name, column],
        )
    if not found:
        return None
    digits = found[0]["digits"]
    return str(found[0]["kind"]).lower(), None if digits is None else int(digits)


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
