"""What ``bus migrate`` reads back from and puts back into a ``sql`` target.

A record's address is the values of its key columns. ``read`` selects the mapped columns of many
keys at once (``key IN (...)`` for one key column, ``(k1 = .. AND k2 = ..) OR ...`` for more);
``restore`` upserts a before-image with the outbound's own upsert statement and deletes a row the
run created with its own delete statement, each batch in one transaction. Columns the mapping does
not write are neither compared nor restored (a row the run created is deleted whole).
"""

from __future__ import annotations

__all__ = ["SqlTargetState"]

import contextlib
import json
from typing import TYPE_CHECKING, Any

from adapters.sql.pool import fetch as fetch_rows
from adapters.sql.times import from_epoch
from bus.adapter_api import Event, RetryableError, comparable

if TYPE_CHECKING:
    from adapters.sql.outbound import SqlOutbound

READ_CHUNK = 500  # keys per SELECT (PostgreSQL allows 32,767 parameters)


class SqlTargetState:
    verifiable = True
    rollback = ""

    def __init__(self, outbound: SqlOutbound) -> None:
        self._out = outbound
        config = outbound.config
        self._key = list(config.key)
        self._columns = list(config.columns)
        self._postgres = outbound.is_postgres

    def record(self, event: Event) -> tuple[list[Any], dict[str, Any] | None]:
        row = self._out.rendered(event)
        self._as_json(row)
        return [row[k] for k in self._key], None if self._out.deletes(event, row) else row

    def _as_json(self, row: dict[str, Any]) -> None:
        """PostgreSQL's jsonb gives back its own text of what was written (``{"a": 1}`` for
        ``{"a":1}``, keys in its order): compared as text, every record written into one was a
        difference. Its text, both meant and held, is compared in one form (a ``json`` column keeps
        the text written, and a before-image put back is the text it held)."""
        for column in self._out.json_columns:
            value = row.get(column)
            if isinstance(value, str):
                with contextlib.suppress(ValueError):
                    row[column] = json.dumps(json.loads(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def _select(self, n: int) -> str:
        mark = self._out.dialect.mark
        names = list(dict.fromkeys([*self._key, *self._columns]))
        if len(self._key) == 1:
            where = f"{self._key[0]} IN ({', '.join(mark(self._key[0], i) for i in range(1, n + 1))})"
        else:
            width = len(self._key)
            where = " OR ".join(
                "(" + " AND ".join(f"{k} = {mark(k, r * width + j + 1)}" for j, k in enumerate(self._key)) + ")" for r in range(n)
            )
        # A TIMESTAMP column is read as the moment it holds (its wall-clock time would be in the
        # session's zone), as it was written (outbound.py).
        selected = [f"UNIX_TIMESTAMP({c}) AS {c}" if c in self._out.dialect.moments else c for c in names]
        # Identifiers are the config's checked plain names; values are bound parameters.
        return f"SELECT {', '.join(selected)} FROM {self._out.config.table} WHERE {where}"  # noqa: S608

    async def read(self, addresses: list[Any]) -> list[dict[str, Any] | None]:
        found: dict[str, dict[str, Any]] = {}
        pool = self._out.pool
        for start in range(0, len(addresses), READ_CHUNK):
            chunk = addresses[start : start + READ_CHUNK]
            args = [value for address in chunk for value in self._out.arguments(dict(zip(self._key, address, strict=True)), self._key)]
            sql = self._select(len(chunk))
            try:
                rows = await fetch_rows(pool, sql, args, postgres=self._postgres)
            except Exception as exc:
                raise self._out.classify(exc) from exc
            for row in rows:
                for column in self._out.dialect.moments:
                    if row[column] is not None:
                        row[column] = from_epoch(row[column])
                held = {c: row[c] for c in self._columns}
                self._as_json(held)
                found[_key_text([row[k] for k in self._key])] = held
        return [found.get(_key_text(address)) for address in addresses]

    async def restore(self, items: list[tuple[Any, dict[str, Any] | None]]) -> None:
        if self._out.pool is None:
            raise RetryableError(f"sql outbound {self._out.config.name} is not started")
        await self._out.write([self._out.restoring(before, list(address)) for address, before in items])


def _key_text(values: list[Any]) -> str:
    return repr(comparable(values))
