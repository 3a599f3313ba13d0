"""``sql`` outbound: upsert, insert or delete each event in a PostgreSQL or MariaDB/MySQL table.

Statements are built once at start from the config (identifiers are checked to be plain names;
values are always bound parameters).

Batches: the delivery loop hands events of different keys over concurrently; calls that arrive
while a transaction is running queue up and go together in the next one (group commit,
bus/batching.py: up to
``batch_size`` events per transaction, consecutive events with the same statement sent with
``executemany``), so a busy table gets one commit per batch instead of one per event, and a
quiet one waits for nothing. If a batch fails on one row, it is rolled back and its events are
written one transaction each, so only the bad row is dead-lettered.

Errors are classified by what the database said:

- retried: connection loss, timeouts, deadlocks, serialization failures, too many connections;
- permanent (dead letter with the database's message): constraint violations, bad data, a
  missing table or column: the same statement would fail again.
"""

from __future__ import annotations

__all__ = ["SqlOutbound"]

import contextlib
from datetime import datetime
from itertools import groupby
from typing import Any, ClassVar

from adapters.sql.catalog import column_types, session_zone, unique_keys
from adapters.sql.config import SqlOutboundConfig
from adapters.sql.numbers import Places, places_of
from adapters.sql.pool import POOLER_HINT, close_pool, describe, is_postgres, open_pool
from adapters.sql.pool import fetch as fetch_rows
from adapters.sql.target_state import SqlTargetState
from adapters.sql.times import Convert, converter, epoch, takes_wall_clock
from bus.adapter_api import (
    Body,
    Context,
    Event,
    GroupCommit,
    Health,
    Outbound,
    PermanentError,
    RetryableError,
    TargetNotReady,
    TargetOptions,
    compile_expression,
    target_json,
    time_zone,
)

_STRUCTURED = (dict, list)  # values that go into a column as their JSON text


class _Dialect:
    """The statements and the driver of one database family."""

    def __init__(self, config: SqlOutboundConfig) -> None:
        self.config = config
        cols = list(config.columns)
        self.columns = cols
        self.key = config.key
        # MariaDB/MySQL TIMESTAMP columns (from the catalog): they hold a moment, and read a
        # wall-clock time given to them in the session's zone. Each takes FROM_UNIXTIME(epoch).
        self.moments: frozenset[str] = frozenset()

    def mark(self, column: str, n: int) -> str:
        """The placeholder of the ``n``-th value (from 1) of a statement, a value of ``column``."""
        raise NotImplementedError

    def marks(self, columns: list[str]) -> list[str]:
        """The placeholders of ``columns``, in order."""
        return [self.mark(c, n) for n, c in enumerate(columns, 1)]

    def upsert(self) -> str:
        raise NotImplementedError

    def values(self) -> str:
        return f"({', '.join(self.marks(self.columns))})"

    def head(self) -> str:
        # Identifiers are checked plain names (config.py); values are bound parameters.
        return f"INSERT INTO {self.config.table} ({', '.join(self.columns)}) VALUES "  # noqa: S608

    def insert(self) -> str:
        return self.head() + self.values()

    def rows(self, statement: str) -> tuple[str, str, str] | None:
        """An insert or upsert as (head, one row's values, tail), where its rows go in one statement."""
        return None

    def delete(self) -> str:
        where = " AND ".join(f"{k} = {p}" for k, p in zip(self.key, self.marks(self.key), strict=True))
        return f"DELETE FROM {self.config.table} WHERE {where}"  # noqa: S608 (checked identifiers, bound values)


class _Postgres(_Dialect):
    def mark(self, column: str, n: int) -> str:
        return f"${n}"

    def upsert(self) -> str:
        updates = [c for c in self.columns if c not in self.key]
        action = "DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in updates) if updates else "DO NOTHING"
        return f"{self.insert()} ON CONFLICT ({', '.join(self.key)}) {action}"


class _MySql(_Dialect):
    def mark(self, column: str, n: int) -> str:
        return "FROM_UNIXTIME(%s)" if column in self.moments else "%s"

    def upsert(self) -> str:
        return f"{self.insert()}{self.upsert_tail()}"

    def upsert_tail(self) -> str:
        updates = [c for c in self.columns if c not in self.key] or self.key[:1]
        return " ON DUPLICATE KEY UPDATE " + ", ".join(f"{c} = VALUES({c})" for c in updates)

    def rows(self, statement: str) -> tuple[str, str, str] | None:
        """An insert or upsert as (head, one row's values, tail), to send many rows in one
        statement: aiomysql's executemany does so only when every value is a bare ``%s``, and
        sends a statement per row otherwise (a TIMESTAMP column's FROM_UNIXTIME)."""
        head = self.head()
        if not statement.startswith(head):
            return None
        values = self.values()
        tail = statement[len(head) + len(values) :]
        return (head, values, tail) if tail in ("", self.upsert_tail()) else None


class SqlOutbound(Outbound[SqlOutboundConfig]):
    Config: ClassVar[type[SqlOutboundConfig]] = SqlOutboundConfig
    summary: ClassVar[str] = "Upsert, insert or delete each event in a PostgreSQL or MariaDB/MySQL table."

    def __init__(self, config: SqlOutboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        dsn = config.dsn.get_secret_value()
        self._postgres = is_postgres(dsn)
        self._dialect: _Dialect = _Postgres(config) if self._postgres else _MySql(config)
        self._values = Body(config.columns)
        self._zone = time_zone(config.timezone)
        # How a time goes into each column, by its type (adapters/sql/times.py): the columns that
        # take its wall-clock time in ``timezone`` as it is, converted inline (until the catalog is
        # read, every MariaDB/MySQL column, as DATETIME does), and the others' conversions.
        self._wall_clock: frozenset[str] = frozenset() if self._postgres else frozenset(config.columns)
        self._times: dict[str, Convert] = {}
        # Columns a record or a list goes into as its JSON text: neither driver takes one (asyncpg
        # "expected str, got dict" for a json, jsonb or text column; PyMySQL "dict can not be used
        # as parameter"), so every such event was dead-lettered. PostgreSQL arrays take a list as
        # it is (the catalog says which columns are arrays).
        self._arrays: frozenset[str] = frozenset()
        self.json_columns: frozenset[str] = frozenset()  # PostgreSQL jsonb: what bus migrate reads back is compared as JSON
        # The mapped columns that keep a fixed number of decimal places (adapters/sql/numbers.py).
        self._places = Places({}, {}, round_them=False, where="")
        self._learned = False  # the table's columns read from the catalog (at start, or at the first write)
        self._zone_notice = ""  # a session zone with summer time, for TIMESTAMP columns (the console's attention)
        # MariaDB/MySQL: an upsert whose key no unique index matches is a plain INSERT (PostgreSQL
        # refuses it): every redelivery and every update added a row, unsaid. Checked before the
        # first write, and again before each write until it holds.
        self._key_checked = self._postgres or config.operation != "upsert"
        self._delete_when = compile_expression(config.delete_when) if config.delete_when else None
        build = {"upsert": self._dialect.upsert, "insert": self._dialect.insert, "delete": self._dialect.delete}
        self._statement = build[config.operation]()
        self._delete = self._dialect.delete()
        self._pool: Any = None
        self._where = describe(dsn, config.table)
        # A refused row fails its batch; written one by one, only that row fails. A lost
        # connection or a deadlock fails them all alike: no point in trying each.
        self._batches: GroupCommit[tuple[str, list[Any]]] = GroupCommit(
            self._write, max_batch=config.batch_size, name=f"sql-batch:{config.name}",
            one_by_one=lambda exc: not isinstance(exc, RetryableError),
        )  # fmt: skip
        self.transactions = 0  # committed transactions (benchmarks compare it with events)

    async def start(self) -> None:
        if self._pool is None:
            dsn = self.config.dsn.get_secret_value()
            self._pool = await open_pool(
                dsn,
                self.config.pool_size,
                what=f"sql {self.config.name} ({self._where})",
                statement_timeout=self.config.statement_timeout_s,
                writes=True,
            )
        with contextlib.suppress(Exception):  # not readable yet: the first delivery reads it, or says why it cannot
            await self._learn_columns()

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await close_pool(pool, self.config.dsn.get_secret_value())

    def progress(self) -> dict[str, int | str]:
        return {"transactions": self.transactions}

    def attention(self) -> str:
        return self._zone_notice

    async def health(self) -> Health:
        return Health(self._pool is not None, "" if self._pool is not None else "not connected")

    def rendered(self, event: Event) -> dict[str, Any]:
        """The row's columns as this event gives them (before any statement is chosen), as the
        columns take them: a record or a list as its JSON text, times in columns without a zone as
        their wall-clock time in ``timezone`` (in date and time-of-day columns, their date or time
        of day there), in MariaDB/MySQL TIMESTAMP columns as moments, cut to the digits their
        column keeps, and numbers checked against their column's decimal places (PermanentError
        when one would change)."""
        row = self._values.render(event)
        for column, value in row.items():
            if isinstance(value, _STRUCTURED) and column not in self._arrays:
                row[column] = target_json(value, f"column {column}")
        for column in self._wall_clock:
            value = row[column]
            if isinstance(value, datetime) and value.tzinfo is not None:
                row[column] = value.astimezone(self._zone).replace(tzinfo=None)
        for column, convert in self._times.items():
            row[column] = convert(row[column])
        if self._places:
            self._places.fit(row)
        return row

    def arguments(self, row: dict[str, Any], columns: list[str]) -> list[Any]:
        """The statement's values of ``columns``: a TIMESTAMP column's moment as seconds since
        1970 with its microseconds (Decimal: exact, where a float loses the last digit)."""
        if not self._dialect.moments:
            return [row[c] for c in columns]
        moments = self._dialect.moments
        return [epoch(row[c]) if c in moments else row[c] for c in columns]

    async def _learn_columns(self) -> None:
        """The mapped columns' types, from the catalog: which keep a fixed number of decimal places
        or of digits of a second, and (PostgreSQL) which are ``timestamp`` (without time zone) and
        which are arrays. A table not there yet is left for the write to say so (the config's
        target is not set up)."""
        if self._learned or self._pool is None:
            return
        found = await column_types(self._catalog_fetch, postgres=self._postgres, table=self.config.table)
        if found is None:
            return
        mapped = {c: found[c.lower()] for c in self.config.columns if c.lower() in found}  # unquoted names fold
        plain = {c for c, (kind, digits) in mapped.items() if takes_wall_clock(kind, digits, postgres=self._postgres)}
        if not self._postgres:  # a column the catalog does not list: as before (the write names it)
            plain |= set(self.config.columns) - set(mapped)
        self._wall_clock = frozenset(plain)
        self._times = {
            c: convert
            for c, (kind, digits) in mapped.items()
            if c not in plain
            and (convert := converter(kind, digits, postgres=self._postgres, zone=self._zone, column=c, where=self._where)) is not None
        }
        if self._postgres:
            self._arrays = frozenset(c for c, (kind, _) in mapped.items() if kind.endswith("[]"))
            self.json_columns = frozenset(c for c, (kind, _) in mapped.items() if kind == "jsonb")
        else:
            # A TIMESTAMP column holds a moment and reads a wall-clock time in the session's zone
            # (the server's own unless set): the moment goes in instead, whatever that zone is.
            self._dialect.moments = frozenset(c for c, (kind, _) in mapped.items() if kind == "timestamp")
            if self._dialect.moments:
                with contextlib.suppress(Exception):  # a notice only: a server that cannot answer it still takes the writes
                    await self._say_summer_time()
            build = {"upsert": self._dialect.upsert, "insert": self._dialect.insert, "delete": self._dialect.delete}
            self._statement = build[self.config.operation]()
            self._delete = self._dialect.delete()
        places = {c: n for c, (kind, digits) in mapped.items() if (n := places_of(kind, digits)) is not None}
        kinds = {c: mapped[c][0] for c in places}
        self._places = Places(places, kinds, round_them=self.config.numbers == "round", where=self._where)
        self._learned = True

    async def _say_summer_time(self) -> None:
        """A session zone with summer time, said once: MariaDB/MySQL reads every time given to a
        TIMESTAMP column as a wall-clock time in it (FROM_UNIXTIME's too), and in the hour its
        clocks go back that time names two moments: the later is stored an hour early."""
        zone = await session_zone(self._catalog_fetch)
        if zone.summer_time:
            self._zone_notice = (
                f"the database session's zone ({zone.name}) has summer time; in the hour its clocks go back, a time for "
                f"TIMESTAMP column(s) {', '.join(sorted(self._dialect.moments))} in that hour's second pass is stored an hour "
                "early (MariaDB/MySQL cannot tell the two apart). A server whose time_zone is '+00:00', or DATETIME columns, "
                "avoid it"
            )
            self.ctx.logger.warning("sql %s: %s", self.config.name, self._zone_notice)

    async def _catalog_fetch(self, sql: str, args: list[Any]) -> list[dict[str, Any]]:
        return await fetch_rows(self._pool, sql, args, postgres=self._postgres)

    def deletes(self, event: Event, row: dict[str, Any]) -> bool:
        """Whether this event deletes its row (``operation: delete``, or ``delete_when`` holds)."""
        if self._delete_when is not None and self._delete_when(event.data, event.meta()):
            return True
        return self.config.operation == "delete"

    def statement(self, event: Event) -> tuple[str, list[Any]]:
        row = self.rendered(event)
        if self._delete_when is not None and self._delete_when(event.data, event.meta()):
            return self._delete, self.arguments(row, self.config.key)
        if self.config.operation == "delete":
            return self._statement, self.arguments(row, self.config.key)
        return self._statement, self.arguments(row, self._dialect.columns)

    def restoring(self, before: dict[str, Any] | None, address: list[Any]) -> tuple[str, list[Any]]:
        """What puts back a row as it was (``bus migrate rollback``): its before-image upserted, or
        the row deleted when there was none."""
        if before is None:
            return self._dialect.delete(), self.arguments(dict(zip(self.config.key, address, strict=True)), self.config.key)
        return self._dialect.upsert(), self.arguments(before, self._dialect.columns)

    # What bus migrate uses (adapters/sql/target_state.py): the same pool, statements and errors.
    @property
    def pool(self) -> Any:
        return self._pool

    @property
    def is_postgres(self) -> bool:
        return self._postgres

    @property
    def dialect(self) -> _Dialect:
        return self._dialect

    def classify(self, exc: Exception) -> Exception:
        return _classify(exc, self._where)

    async def write(self, statements: list[tuple[str, list[Any]]]) -> None:
        """Statements in one transaction (a failure rolls all back), classified like deliveries."""
        if self._pool is None:
            raise RetryableError(f"sql outbound {self.config.name} is not started")
        await self._write(statements)

    def target_state(self, options: TargetOptions) -> SqlTargetState:
        return SqlTargetState(self)

    delivers_many: ClassVar[bool] = True

    async def deliver_many(self, events: list[Event]) -> None:
        """Every event's statement in one transaction (``bus migrate``'s loads)."""
        await self.learn()
        await self.write([self.statement(event) for event in events])

    async def learn(self) -> None:
        """The table's columns, if not read yet (a table created after the start is read now)."""
        if self._pool is None:
            raise RetryableError(f"sql outbound {self.config.name} is not started")
        if not self._learned:
            try:
                await self._learn_columns()
            except Exception as exc:
                raise self.classify(exc) from exc

    async def deliver(self, event: Event) -> None:
        await self.learn()
        if self.config.batch_size == 1:  # concurrent single transactions across the pool, not one at a time
            await self._write([self.statement(event)])
        else:
            await self._batches.submit(self.statement(event))

    async def _check_key(self) -> None:
        kind, unique = await unique_keys(self._catalog_fetch, postgres=False, table=self.config.table)
        if kind == "absent":
            return  # the write says so (the target is not set up); checked again before the next
        wanted = {k.lower() for k in self.config.key}
        if kind == "view" or any(columns <= wanted for columns in unique):  # a view is not checked
            self._key_checked = True
            return
        raise TargetNotReady(
            f"{self._where}: the target is not set up for this config (no unique index matches the key columns "
            f"{', '.join(self.config.key)}: an upsert would insert a new row for every event, never update one); "
            "add a primary key or unique index on them, or say operation: insert"
        )

    async def _write(self, statements: list[tuple[str, list[Any]]]) -> None:
        """One transaction; consecutive statements of the same text go as one executemany."""
        if not self._key_checked:
            try:
                await self._check_key()
            except TargetNotReady:
                raise
            except Exception as exc:
                raise _classify(exc, self._where) from exc
        try:
            if self._postgres:
                async with self._pool.acquire() as connection, connection.transaction():
                    for sql, run in groupby(statements, key=lambda s: s[0]):
                        rows = [args for _, args in run]
                        if len(rows) == 1:
                            await connection.execute(sql, *rows[0])
                        else:
                            await connection.executemany(sql, rows)
            else:
                async with self._pool.acquire() as connection:
                    try:
                        async with connection.cursor() as cursor:
                            for sql, run in groupby(statements, key=lambda s: s[0]):
                                rows = [args for _, args in run]
                                if len(rows) == 1:
                                    await cursor.execute(sql, rows[0])
                                elif self._dialect.moments and (parts := self._dialect.rows(sql)) is not None:
                                    await _execute_rows(cursor, parts, rows)
                                else:
                                    await cursor.executemany(sql, rows)
                        await connection.commit()
                    except BaseException:
                        await connection.rollback()
                        raise
        except Exception as exc:
            if _code_of(exc) in _READ_ONLY_ERRORS:
                await self._reconnect_later()
            raise _classify(exc, self._where) from exc
        self.transactions += 1

    async def _reconnect_later(self) -> None:
        """Every connection of the pool closed when next given back or taken: the next write
        connects afresh (to the server that takes writes now, when the dsn names several)."""
        with contextlib.suppress(Exception):  # a pool that cannot say so is retried as it is
            if self._postgres:
                await self._pool.expire_connections()
            else:
                await self._pool.clear()


# A server that takes no writes: a standby, or a primary set read-only (for maintenance, or by a
# cloud service whose storage is full). Every event would fail the same way: it is the setup's
# fault, never the event's. The pool's connections are dropped, so the next try connects afresh
# and a DSN naming several servers finds the one that takes writes now.
_READ_ONLY = (
    "the server takes no writes: a standby, or a server set read-only (a failover under way, or a dsn that reaches a standby: "
    "name the servers with ?target_session_attrs=read-write)"
)
_READ_ONLY_ERRORS = {"25006", 1290, 1792, 1836}  # PostgreSQL's SQLSTATE; MariaDB/MySQL --read-only, read-only transaction, read-only mode

# What says the target's schema or grants do not match the config (SQLSTATEs; MySQL error numbers).
_PG_SETUP = {
    "42P01": "no such table",
    "42703": "no such column",
    "3F000": "no such schema",
    "42501": "permission denied",
    "42883": "no such function or operator",
    "42P10": "no unique index matches the key columns (the upsert's conflict target)",
    "25006": _READ_ONLY,
    # A prepared statement a pooler in transaction mode lost (26000) or met twice (42P05).
    "26000": POOLER_HINT,
    "42P05": POOLER_HINT,
}
_MYSQL_SETUP = {
    1146: "no such table",
    1054: "no such column",
    1049: "no such database",
    1142: "permission denied on the table",
    1143: "permission denied on a column",
    1044: "permission denied on the database",
    1290: _READ_ONLY,
    1792: _READ_ONLY,
    1836: _READ_ONLY,
}


async def _execute_rows(cursor: Any, parts: tuple[str, str, str], rows: list[list[Any]]) -> None:
    """Many rows of an insert in as few statements as fit aiomysql's limit of a statement's size
    (as its executemany does for bare placeholders)."""
    head, values, tail = parts
    chunk: list[str] = []
    size = len(head) + len(tail)
    for args in rows:
        one = cursor.mogrify(values, args)
        if chunk and size + len(one) + 1 > cursor.max_stmt_length:
            await cursor.execute(head + ",".join(chunk) + tail)
            chunk, size = [], len(head) + len(tail)
        chunk.append(one)
        size += len(one) + 1
    await cursor.execute(head + ",".join(chunk) + tail)


def _code_of(exc: Exception) -> int | str | None:
    """MariaDB/MySQL's error number, or PostgreSQL's SQLSTATE."""
    if exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return getattr(exc, "sqlstate", None)


def _classify(exc: Exception, where: str) -> Exception:
    """Retry what may work next time; dead-letter what the database will refuse again."""
    # PostgreSQL SQLSTATE classes: 08 connection, 40 transaction rollback (deadlock, serialization),
    # 53 insufficient resources, 57 operator intervention (shutdown). Everything else is about the data.
    # A missing table, column or schema, or a missing privilege, is the target's configuration (a
    # migration not run yet, a grant forgotten), not the event's fault: every event would fail the
    # same way until someone fixes it, and then every one should go through. Retried behind the
    # circuit breaker, with the reason in /readyz and the WARNING log, never dead-lettered as data.
    # MySQL/MariaDB error numbers first (PyMySQL errors carry a SQLSTATE too, but "HY000" says
    # nothing: a lock wait timeout has it): 1205 lock wait timeout, 1213 deadlock, 1040 too many
    # connections, 2002/2003/2006/2013 connection lost or refused.
    errno = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    if errno is not None:
        if errno in _MYSQL_SETUP:
            return TargetNotReady(f"{where}: the target is not set up for this config ({_MYSQL_SETUP[errno]}): {exc}")
        if errno in {1205, 1213, 1040, 2002, 2003, 2006, 2013}:
            return RetryableError(f"{where}: {exc}")
        return PermanentError(f"{where}: {type(exc).__name__}: {exc}")
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate is not None:
        if sqlstate in _PG_SETUP:
            return TargetNotReady(f"{where}: the target is not set up for this config ({_PG_SETUP[sqlstate]}): {exc}")
        if sqlstate[:2] in {"08", "40", "53", "57"}:
            return RetryableError(f"{where}: {exc}")
        return PermanentError(f"{where}: {type(exc).__name__}: {exc}")
    if isinstance(exc, TimeoutError):  # the driver gave up on the statement (statement_timeout_s)
        return RetryableError(f"{where}: no answer within statement_timeout_s (a lock another session holds on the table?)")
    if isinstance(exc, (OSError, ConnectionError)):
        return RetryableError(f"{where}: {exc!r}")
    return PermanentError(f"{where}: {type(exc).__name__}: {exc}")
