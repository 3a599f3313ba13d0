"""``sql_poll``: read new and changed rows of a legacy table, in watermark order, as events.

Each query asks for the rows after the position, in ``(column, id)`` order, ``batch_size`` at a
time (keyset pagination: rows that share a timestamp are told apart by id, so none is skipped or
read twice). A batch's events are acknowledged by Kafka before the position moves past them, and
the position is saved in Kafka after every batch: a restart, even mid-backfill, resumes there.

Rows committed late are the classic gap of polling: a transaction stamps ``updated_at`` when it
writes and commits seconds later, after the poller has moved past that time. The query reads only
rows stamped before a horizon: the database's now() minus ``settle``, and, when the database lets
us see them, the start of the oldest open transaction (on PostgreSQL ``now()`` is the start of the
writing transaction, on MariaDB the start of the writing statement; either comes after the
transaction's start). A row stamped before the horizon is committed, so the position never passes
a row that could still appear. The horizon is read in a statement of its own before each read, so
the read's snapshot is taken after it: read in the same statement, the open transactions were
looked at after the snapshot, and a writer that committed in between was in neither.

With only ``id`` (no timestamp column) the adapter reads inserts, not updates, and assumes ids
become visible in order (a sequence handed out in one transaction and committed after a later one
can be passed by: use a timestamp column when writers overlap).

Some rows the watermark cannot reach: a NULL in the watermark column is never read, a MariaDB
zero date (0000-00-00, a legacy column's default) sorts first and is read only by a poll from the
start, and a time stamped far ahead (a typo'd year, 'infinity') is read only when that time comes. Every
``stray_check`` the adapter looks for them (by the watermark's index, at most 1,000 of each) and
says so: a WARNING when what it finds changes, and the count and first ids in the adapter's
progress (``/readyz`` detail, the management API, ``bus_adapter_progress{measure="stray_rows"}``).
"""

from __future__ import annotations

__all__ = ["SqlPollInbound"]

import asyncio
import contextlib
import datetime as dt
import functools
import json
import re
import time
from collections.abc import Awaitable
from decimal import Decimal
from typing import Any, ClassVar

from adapters.sql.catalog import Fetch, column_type, column_types, holds_time, session_zone, time_step, unique_keys
from adapters.sql.config import SqlPollConfig
from adapters.sql.pool import close_pool, describe, is_postgres, open_pool, pooler_said
from adapters.sql.pool import fetch as fetch_rows
from bus.adapter_api import Context, Health, Inbound, Intake, KafkaUnavailable, RetryableError, finish_read

_NO_PROCESS_PRIVILEGE = 1227  # MariaDB/MySQL: "Access denied; you need (at least one of) the PROCESS privilege(s)"
_STRAYS_COUNTED = 1000  # rows counted per kind of stray; beyond it, "more than 1,000"
_STRAYS_NAMED = 5  # ids named in the detail


def _encode(value: Any) -> Any:
    """A watermark value as JSON that keeps its type (the checkpoint is JSON; the query needs the type back)."""
    if isinstance(value, dt.datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "datetime" in value:
            return dt.datetime.fromisoformat(value["datetime"])
        if "date" in value:
            return dt.date.fromisoformat(value["date"])
        if "decimal" in value:
            return Decimal(value["decimal"])
    return value


_FINEST_STEP = 0.001  # a column finer than a millisecond: the horizon needs nothing more
_INNODB_TRX_AGE = 0.1  # seconds: how old MariaDB's INNODB_TRX may be (a cache refreshed at most this often)


async def _watermark_type(fetch: Fetch, config: SqlPollConfig, postgres: bool) -> tuple[str, int | None] | None:
    """The watermark column's data type and digits (``column_type``); None without a column or when the catalog does not say."""
    column = config.watermark.column
    if column is None:
        return None
    return await column_type(fetch, postgres=postgres, table=config.table, column=column)


def _queries_for(config: SqlPollConfig, found: tuple[str, int | None] | None, *, postgres: bool, transactions: bool) -> _Queries:
    """The statements for a watermark column of the type found: a time horizon for a time column
    (leaving its step), none for a column that holds no time (a version number); a type the
    catalog does not give is taken to be a time."""
    if found is not None and not holds_time(found[0]):
        return _Queries(config, postgres=postgres, transactions=transactions, timeless=True)
    step = time_step(*found) if found is not None and config.settle.total_seconds() else None
    step = step if step and step >= _FINEST_STEP else 0.0
    return _Queries(config, postgres=postgres, transactions=transactions, step=step, zero_dates=found is not None and not postgres)


_CLOCK_TOLERANCE = dt.timedelta(seconds=60)  # the database's clock may fall behind this host's by this much unsaid


def _span(delta: dt.timedelta) -> str:
    seconds = round(delta.total_seconds())
    return f"{seconds // 60} min" if seconds >= 120 else f"{seconds} s"


def _text(value: Any) -> str:
    return value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else str(value)


class _Queries:
    """The statements of one table, built once at start from checked identifiers."""

    def __init__(
        self,
        config: SqlPollConfig,
        *,
        postgres: bool,
        transactions: bool,
        step: float = 0.0,
        timeless: bool = False,
        zero_dates: bool = False,
    ) -> None:
        mark = config.watermark
        columns = config.columns
        if "*" not in columns:
            columns = columns + [c for c in (mark.column, mark.id) if c and c not in columns]
        order = [c for c in (mark.column, mark.id) if c]
        settle = config.settle.total_seconds()
        # A column that holds no time (a version number) has no time horizon: nothing to compare with now().
        horizon = self._horizon(postgres, settle, transactions, step) if mark.column and not timeless else None
        # The horizon's value, read first (see the module's docstring); "" when there is none.
        self.horizon = f"SELECT {horizon if postgres else f'CAST({horizon} AS DATETIME(6))'} AS horizon" if horizon else ""
        head = f"SELECT {', '.join(columns)} FROM {config.table}"  # noqa: S608 (checked identifiers; values bound)
        tail = f" ORDER BY {', '.join(order)} LIMIT {config.batch_size}"
        fixed = [f"({config.where})"] if config.where else []

        def where(*bound: str) -> str:
            """The conditions; the horizon's value is bound last, after a position's."""
            below = ""
            if horizon:
                number = max((int(n) for b in bound for n in re.findall(r"\$(\d+)", b)), default=0) + 1
                below = f"{mark.column} < " + (f"${number}::timestamptz" if postgres else "%s")
            found = [c for c in (*fixed, *bound, below) if c]
            return " WHERE " + " AND ".join(found) if found else ""

        if mark.column is None:
            after = f"{mark.id} > {'$1' if postgres else '%s'}"
        elif postgres:
            after = f"({mark.column}, {mark.id}) > ($1, $2)"
        else:  # expanded, so MariaDB uses the index as a range
            after = f"({mark.column} > %s OR ({mark.column} = %s AND {mark.id} > %s))"
        self.first = head + where() + tail
        # The newest row a poll would read now: where a poller that takes over from a migration starts.
        descending = ", ".join(f"{c} DESC" for c in order)
        self.newest = f"SELECT {', '.join(order)} FROM {config.table}" + where() + f" ORDER BY {descending} LIMIT 1"  # noqa: S608
        self.next = head + where(after) + tail
        # After the database's clock went back: every row from a time on (see SqlPollInbound._watch_clock).
        since = f"{mark.column} >= {'$1' if postgres else '%s'}" if mark.column else None
        self.since = head + where(since) + tail if since else ""
        # The database's clock, as wall-clock time (what a column without a zone holds) and as a moment.
        self.clock = "SELECT localtimestamp AS wall, now() AS moment" if postgres else "SELECT NOW(6) AS wall, NULL AS moment"
        self.strays = self._strays(config, postgres, [f"({config.where})"] if config.where else [], timeless, zero_dates)
        self.postgres = postgres
        self.transactions = transactions
        self.keyed = mark.column is not None
        self.step = step
        self.timed = self.keyed and not timeless and bool(settle)  # a time column under a horizon: its clock is watched

    @classmethod
    def _horizon(cls, postgres: bool, settle: float, transactions: bool, step: float) -> str | None:
        """Rows stamped before this are committed. ``step``: how finely the column tells times
        apart (``time_step``); a row stamped ``t`` may be written until ``t + step`` (a DATETIME of
        whole seconds holds 10:00:00 for a write at 10:00:00.9, a DATE the whole day), so the
        horizon is that much earlier."""
        horizon = cls._clock_horizon(postgres, settle, transactions)
        if horizon is None or step < _FINEST_STEP:
            return horizon
        return f"({horizon}) - make_interval(secs => {step:.6f})" if postgres else f"({horizon}) - INTERVAL {round(step * 1e6)} MICROSECOND"

    @staticmethod
    def _clock_horizon(postgres: bool, settle: float, transactions: bool) -> str | None:
        if postgres:
            clock = f"now() - make_interval(secs => {settle:.6f})" if settle else "now()"
            if not transactions:
                return clock if settle else None
            # LEAST ignores NULL: no open transaction, or none we may see, leaves the clock alone.
            oldest = (
                "(SELECT min(xact_start) FROM pg_stat_activity WHERE datname = current_database()"
                " AND backend_type = 'client backend' AND pid <> pg_backend_pid())"
            )
            return f"LEAST({clock}, {oldest})"
        if not transactions:
            return f"NOW(6) - INTERVAL {round(settle * 1_000_000)} MICROSECOND" if settle else None
        # INNODB_TRX is a cache refreshed at most every 100 ms: a transaction younger than that may
        # be missing from it, so the clock leaves at least that much.
        clock = f"NOW(6) - INTERVAL {round(max(settle, _INNODB_TRX_AGE) * 1_000_000)} MICROSECOND"
        oldest = "(SELECT MIN(trx_started) FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id <> CONNECTION_ID())"
        return f"LEAST({clock}, COALESCE({oldest}, '9999-12-31 23:59:59'))"

    @staticmethod
    def _strays(config: SqlPollConfig, postgres: bool, where: list[str], timeless: bool, zero_dates: bool) -> dict[str, str]:
        """What looks for rows the watermark cannot reach, by kind: NULL in the watermark column
        (never read); on MariaDB/MySQL, the zero date in a column the catalog says holds a time
        (``zero_dates``: read only by a poll from the start); and, for a time column (``settle`` on), times more than ``stray_ahead`` after
        the database's now (read only then). Each is a range of the watermark's index.

        MariaDB's ``IS NULL`` also matches the zero date in a NOT NULL date column (an ODBC
        convenience): the rows a backfill had read were said to be NULL and never read. ``<=>
        NULL`` means NULL alone."""
        mark = config.watermark
        if mark.column is None or config.stray_check is None:
            return {}
        head = f"SELECT {mark.id}, {mark.column} FROM {config.table} WHERE "  # noqa: S608 (checked identifiers)
        limit = f" LIMIT {_STRAYS_COUNTED + 1}"
        null = f"{mark.column} IS NULL" if postgres else f"{mark.column} <=> NULL"
        found = {"null": head + " AND ".join([*where, null]) + f" ORDER BY {mark.id}" + limit}
        if zero_dates:  # compared with another type's values, '0000-00-00' would be a warning at every look
            found["zero"] = head + " AND ".join([*where, f"{mark.column} = '0000-00-00'"]) + f" ORDER BY {mark.id}" + limit
        if config.settle.total_seconds() and not timeless:
            ahead = config.stray_ahead.total_seconds()
            clock = f"NOW(6) + INTERVAL {round(ahead * 1_000_000)} MICROSECOND"
            if postgres:
                clock = f"now() + make_interval(secs => {ahead:.6f})"
            found["ahead"] = head + " AND ".join([*where, f"{mark.column} > {clock}"]) + f" ORDER BY {mark.column}, {mark.id}" + limit
        return found

    async def read(self, fetch: Fetch, sql: str, args: list[Any]) -> list[dict[str, Any]]:
        """``sql`` with ``args``, the horizon read first in a statement of its own (its value bound last)."""
        if self.horizon:
            args = [*args, (await fetch(self.horizon, []))[0]["horizon"]]
        return await fetch(sql, args)

    def args(self, position: tuple[Any, Any] | None) -> list[Any]:
        if position is None:
            return []
        column, ident = position
        if not self.keyed:
            return [ident]
        return [column, ident] if self.postgres else [column, column, ident]


class SqlPollInbound(Inbound[SqlPollConfig]):
    Config: ClassVar[type[SqlPollConfig]] = SqlPollConfig
    summary: ClassVar[str] = "Read new and changed rows of a PostgreSQL or MariaDB/MySQL table by a watermark; position kept in Kafka."
    handover: ClassVar[bool] = True
    one_reader: ClassVar[bool] = True  # one replica polls: each would publish every row
    position_in_kafka: ClassVar[bool] = True  # the watermark: only the checkpoint topic keeps it

    position_filters: ClassVar[frozenset[str]] = frozenset({"where"})

    @classmethod
    def position_of(cls, config: SqlPollConfig) -> dict[str, Any] | None:
        mark = config.watermark
        source = {"table": config.table, "column": mark.column, "id": mark.id}
        # A `where` is ANDed with the watermark: one added only narrows what is read (a position
        # saved without it is still good, see same_source); one changed or dropped may widen it,
        # and a watermark taken among the old rows would pass over the new ones before it.
        return source if config.where is None else {**source, "where": " ".join(config.where.split())}

    @classmethod
    async def position_now(cls, config: SqlPollConfig) -> dict[str, Any] | None:
        """The newest row a poll would read now (within the settle horizon, before open
        transactions): a migration that reads the table afterwards has every row up to it, and
        the poller, started after this position, reads every row changed since (some of them the
        migration also wrote: written again by key, not doubled)."""
        dsn = config.dsn.get_secret_value()
        postgres = is_postgres(dsn)
        pool = await open_pool(dsn, 1, what=f"sql_poll {config.name}", reads_rows=True)
        try:
            fetch = functools.partial(fetch_rows, pool, postgres=postgres)
            column = await _watermark_type(fetch, config, postgres)
            queries = _queries_for(config, column, postgres=postgres, transactions=config.wait_for_transactions and postgres)
            found = await queries.read(fetch, queries.newest, [])
            row = found[0] if found else None
        finally:
            await close_pool(pool, dsn)
        if row is None:
            return None
        mark = config.watermark
        return {"column": _encode(row[mark.column]) if mark.column else None, "id": _encode(row[mark.id])}

    def __init__(self, config: SqlPollConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._dsn = config.dsn.get_secret_value()
        self._postgres = is_postgres(self._dsn)
        self._where = describe(self._dsn, config.table)
        self._queries = _Queries(config, postgres=self._postgres, transactions=config.wait_for_transactions)
        self._column: tuple[str, int | None] | None = None  # the watermark column's type and digits, learnt at the first poll
        self._intake = Intake(self.sink, config.emit, source=f"/inbound/{config.name}")
        self._interval = config.interval.total_seconds()
        self._position: tuple[Any, Any] | None = None
        self._pool: Any = None
        self._task: asyncio.Task[None] | None = None
        self._holding = False  # a batch handed to Kafka, its position not saved yet: a stop lets it finish
        self._stopping = asyncio.Event()
        self._problem = "not started"
        self.rows = 0  # rows published since start
        self._strays: dict[str, str] = {}  # kind -> what the last look found, for the detail
        self._stray_rows = 0
        self._strays_due = 0.0  # monotonic time of the next look
        self._keys_checked = False
        self._loose_keys = ""  # why (column, id) may not pick out one row: rows at a page's end can be passed over
        self._zone_notice = ""  # TIMESTAMP columns read in a session zone that is not UTC
        # The database's clock when last read, and this host's (epoch seconds) then: saved with the
        # position, so a clock gone back while the hub was down is found too (_watch_clock).
        self._clock: tuple[dt.datetime, float] | None = None
        self._read_from: dt.datetime | None = None  # set when the clock went back: the next query reads every row from it
        self.clock_went_back = 0  # times the database's clock was found gone back

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            return
        if self.ctx.checkpoints is None:
            raise RuntimeError(f"sql_poll {self.config.name} needs the hub's checkpoint store")
        saved = await self.ctx.checkpoints.load(self.config.name)
        # What the store says, also when it says nothing: a start after a pause reads from a position
        # forgotten meanwhile (``bus positions reset``) from the start, not from where it stood.
        self._position, self._read_from, self._clock = None, None, None
        if saved is not None:
            self._position = (_decode(saved.get("column")), _decode(saved.get("id")))
            read_from = _decode(saved.get("read_from"))
            self._read_from = read_from if isinstance(read_from, dt.datetime) else None
            clock = _decode(saved.get("clock"))
            if isinstance(clock, dt.datetime) and isinstance(saved.get("at"), int | float):
                self._clock = (clock, float(saved["at"]))
            self.ctx.logger.info("sql_poll %s resumes after %s", self.config.name, self._describe(self._position))
        self._stopping.clear()
        # The database is reached from the task: one that is down at start shows in /readyz and is
        # tried again every interval, and the rest of the hub starts.
        self._task = self.ctx.spawn(self._run(), name=f"sql-poll:{self.config.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            # A batch handed to Kafka is finished and its position saved; a query or a connection
            # still waiting for the database ends at once (nothing of it taken yet).
            self._stopping.set()
            await finish_read(task, holding=self._holding)
        pool, self._pool = self._pool, None
        if pool is not None:
            await close_pool(pool, self._dsn)

    def progress(self) -> dict[str, int | str]:
        found: dict[str, int | str] = {"rows": self.rows}
        if self.clock_went_back:
            found["clock_went_back"] = self.clock_went_back
        if self._strays:
            found["stray_rows"] = self._stray_rows
            found["strays"] = "; ".join(self._strays.values())
        return found

    def attention(self) -> str:
        return "; ".join(filter(None, [self._loose_keys, self._zone_notice, *self._strays.values()]))

    async def health(self) -> Health:
        return Health(not self._problem, self._problem)

    def _describe(self, position: tuple[Any, Any] | None) -> str:
        if position is None:
            return "the start"
        mark = self.config.watermark
        return f"{mark.column}={_text(position[0])}, {mark.id}={position[1]}" if mark.column else f"{mark.id}={position[1]}"

    # -- polling -----------------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if self._pool is None:
                    what = f"sql_poll {self.config.name} ({self._where})"
                    self._pool = await open_pool(
                        self._dsn, 1, what=what, autocommit=True, statement_timeout=self.config.statement_timeout_s, reads_rows=True
                    )
                if not self._keys_checked:
                    self._keys_checked = True
                    try:
                        await self._check_keys()
                        await self._learn_column()
                        await self._say_zone()
                    except Exception as exc:  # noqa: BLE001 - a catalog this server does not have: the poll goes on unchecked
                        self.ctx.logger.warning("sql_poll %s: could not check the watermark's columns: %r", self.config.name, exc)
                await self._drain()
                self._problem = ""
                if self._queries.strays and time.monotonic() >= self._strays_due:
                    assert self.config.stray_check is not None
                    self._strays_due = time.monotonic() + self.config.stray_check.total_seconds()
                    await self._look_for_strays()
            except RetryableError as exc:
                self._problem = str(exc)
                self.ctx.logger.warning("sql_poll %s: %s; trying again in %gs", self.config.name, exc, self._interval)
            except Exception as exc:  # noqa: BLE001 (a bug or a query the database refuses: shown in /readyz, polling goes on)
                self._problem = f"{self._where}: {type(exc).__name__}: {exc}{pooler_said(exc)}"
                self.ctx.logger.warning("sql_poll %s: query failed: %s", self.config.name, self._problem)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._interval)

    async def _drain(self) -> None:
        """Read batch after batch until a short one: a backfill runs at full speed, then the
        adapter waits ``interval`` between polls."""
        if self._queries.timed:
            await self._watch_clock()
        while not self._stopping.is_set():
            started = time.monotonic()
            rows = await self._query()
            self._problem = ""  # the source answers: ready, though a long backfill may go on for hours
            if rows:
                self._holding = True
                try:
                    await self._publish(rows)
                finally:
                    self._holding = False
                self.ctx.logger.info(
                    "sql_poll %s: %d row(s) in %.2fs; now after %s",
                    self.config.name, len(rows), time.monotonic() - started, self._describe(self._position),
                )  # fmt: skip
            if len(rows) < self.config.batch_size:
                return

    async def _fetch(self, sql: str, args: list[Any]) -> list[dict[str, Any]]:
        return await fetch_rows(self._pool, sql, args, postgres=self._postgres)

    async def _learn_column(self) -> None:
        """What the watermark column holds, from the catalog, and the horizon that fits it.

        How finely a time column tells times apart: the horizon leaves that much more. A DATETIME
        of whole seconds holds 10:00:00 for a row written at 10:00:00.9; a transaction open since
        10:00:00.5 made the horizon 10:00:00.5, and a row it wrote then, stamped 10:00:00 with a
        lower id than rows of that second read before it committed, was passed over. A date
        column is that, a whole day wide: a row with a lower id changed later the same day was
        never read.

        A column that holds no time (a version number a trigger bumps) cannot be compared with the
        database's clock: the query failed at every poll, whatever ``settle`` said. It is read
        without a time horizon, and what that cannot guard against is said."""
        if not self._queries.keyed:
            return
        self._column = await _watermark_type(self._fetch, self.config, self._postgres)
        self._queries = _queries_for(self.config, self._column, postgres=self._postgres, transactions=self._queries.transactions)
        column, ident = self.config.watermark.column, self.config.watermark.id
        if self._column is not None and not holds_time(self._column[0]):
            self.ctx.logger.warning(
                "sql_poll %s (%s): %s holds no time (%s): read in its order without a time horizon (settle and "
                "wait_for_transactions do not apply); a value a writer took before another writer's and committed after "
                "it is passed over (a sequence, for one); a column of the time of each change, or postgres_cdc, reads them all",
                self.config.name, self._where, column, self._column[0],
            )  # fmt: skip
            return
        step = self._queries.step
        if step >= 86_400:
            self.ctx.logger.warning(
                "sql_poll %s (%s): %s is a date: a day's rows are read once the day is over (rows changed on one day cannot "
                "be told apart by time; read during the day, a row changed later that day with a lower %s would be passed "
                "over); a column of the time of each change reads them as they come",
                self.config.name, self._where, column, ident,
            )  # fmt: skip
        elif step:
            self.ctx.logger.info(
                "sql_poll %s: %s tells times apart to %gs: rows are read once that much more than settle has passed",
                self.config.name, column, step,
            )  # fmt: skip

    async def _say_zone(self) -> None:
        """MariaDB/MySQL: TIMESTAMP columns read in a session zone that is not UTC, said once. Such
        a column holds a moment, but comes back as its wall-clock time in the session's zone, with
        no zone: ``timestamp()`` in the mapping takes it as UTC unless told the zone, and every
        time was off by the server's offset, unsaid."""
        if self._postgres:
            return
        found = await column_types(self._fetch, postgres=False, table=self.config.table)
        moments = sorted(c for c, (kind, _) in (found or {}).items() if kind == "timestamp")
        if not moments:
            return
        zone = await session_zone(self._fetch)
        if zone.is_utc:
            return
        self._zone_notice = (
            f"TIMESTAMP column(s) {', '.join(moments)} are read as wall-clock times in the database session's zone "
            f"({zone.described()}), with no zone, which timestamp() takes as UTC: map them as "
            f"timestamp({moments[0]}, \"<the server's zone>\") (an IANA name), or set the server's time_zone to '+00:00'"
        )
        self.ctx.logger.warning("sql_poll %s (%s): %s", self.config.name, self._where, self._zone_notice)

    async def _check_keys(self) -> None:
        """Whether the watermark picks out one row. Each page goes on after its last row's
        (column, id); rows that share it with that last row and come after it are passed over, with
        nothing said. A unique index on ``id`` (or on some of ``column`` and ``id``) rules that out;
        a table without one (a legacy table with no primary key, ``id`` naming a column that is not
        unique) is said at WARNING and in the console. A view is not checked: it has no indexes."""
        mark = self.config.watermark
        wanted = {c.lower() for c in (mark.column, mark.id) if c}
        kind, unique = await unique_keys(self._fetch, postgres=self._postgres, table=self.config.table)
        if kind != "table":  # a view has no indexes; an absent table fails the poll itself, saying so
            return
        if any(columns <= wanted for columns in unique):
            self._loose_keys = ""
            return
        pair = f"({mark.column}, {mark.id})" if mark.column else mark.id
        self._loose_keys = (
            f"{self.config.table} has no unique index on {mark.id}{' (or on ' + pair + ')' if mark.column else ''}: rows that "
            f"share {pair} with the last row of a page are passed over; name a unique column (the primary key) in watermark.id"
        )
        self.ctx.logger.warning("sql_poll %s (%s): %s", self.config.name, self._where, self._loose_keys)

    async def _look_for_strays(self) -> None:
        """Count the rows the watermark cannot reach; say so when what is found changes."""
        mark = self.config.watermark
        assert mark.column is not None  # strays are looked for only with a column
        found: dict[str, str] = {}
        total = 0
        for kind, sql in self._queries.strays.items():
            rows = await self._fetch(sql, [])
            if not rows:
                continue
            many = len(rows) > _STRAYS_COUNTED
            count = f"more than {_STRAYS_COUNTED:,}" if many else f"{len(rows):,}"
            total += len(rows) - many
            named = ", ".join(str(row[mark.id]) for row in rows[:_STRAYS_NAMED]) + (", ..." if len(rows) > _STRAYS_NAMED else "")
            if kind == "null":
                found[kind] = f"{count} row(s) with {mark.column} NULL are never read ({mark.id} {named})"
            elif kind == "zero":
                found[kind] = (
                    f"{count} row(s) with {mark.column} 0000-00-00 (the zero date, a legacy column's default) are read only "
                    f"by a poll from the start: a row stamped so after the poll moved on is never read ({mark.id} {named})"
                )
            else:
                first = _text(rows[0][mark.column])
                ahead = self.config.stray_ahead.total_seconds()
                found[kind] = (
                    f"{count} row(s) with {mark.column} more than {ahead:g}s after the database's now are read only when that "
                    f"time comes ({mark.id} {named}; the first at {first})"
                )
        if found != self._strays:
            if found:
                self.ctx.logger.warning("sql_poll %s (%s): %s", self.config.name, self._where, "; ".join(found.values()))
            else:
                self.ctx.logger.warning("sql_poll %s: no stray rows any more", self.config.name)
        self._strays, self._stray_rows = found, total

    async def _watch_clock(self) -> None:
        """Find the database's clock gone back, and read again the rows it may have stamped since.

        A legacy database that keeps local time in a column without a zone (MariaDB's DATETIME
        with NOW(), a PostgreSQL ``timestamp``) goes back an hour when summer time ends: rows
        changed in the hour that comes twice are stamped before the position the poller reached
        in its first pass, and were passed over for good, with nothing said (a clock corrected
        backwards, or a failover to a server in another zone, does the same). Each poll reads the
        database's clock and compares how far it moved with how far this host's moved since the
        last reading (kept with the position, so a hub that was down then finds it too). When it
        moved back by more than a minute, every row stamped since just before the move is read
        again: those read before come again with the same event ids (the id holds the row's
        time), and the subscribers' idempotency keys tell them apart."""
        rows = await self._fetch(self._queries.clock, [])
        if not rows:
            return
        position = self._position[0] if self._position is not None else None
        reading = rows[0]["moment"] if isinstance(position, dt.datetime) and position.tzinfo is not None else rows[0]["wall"]
        if not isinstance(reading, dt.datetime):
            return
        now, before = time.time(), self._clock
        self._clock = (reading, now)
        if before is None:
            return
        last, at = before
        if (last.tzinfo is None) != (reading.tzinfo is None):
            return
        back = (last + dt.timedelta(seconds=now - at)) - reading  # how far the database's clock fell behind this host's
        if back <= _CLOCK_TOLERANCE:
            return
        # Rows stamped after the move have times from just after `last - back` on (the clock read
        # `last` or later when it moved back by `back`): read every row from there again.
        start = last - back - self.config.settle - _CLOCK_TOLERANCE
        self.clock_went_back += 1
        if isinstance(position, dt.datetime) and (position.tzinfo is None) == (start.tzinfo is None) and start < position:
            self._read_from = start  # until a row is read from there: the time that comes twice may last an hour
            await self._save()
        self.ctx.logger.warning(
            "sql_poll %s (%s): the database's clock went back about %s (summer time ended in a database that keeps local "
            "time? a clock corrected? a failover?): rows stamped from %s on are read again, so that none stamped in the "
            "time that came twice is passed over; those read before come again with the same event ids",
            self.config.name, self._where, _span(back), _text(start),
        )  # fmt: skip

    async def _query(self) -> list[dict[str, Any]]:
        if self._read_from is not None:
            return await self._queries.read(self._fetch, self._queries.since, [self._read_from])
        sql = self._queries.first if self._position is None else self._queries.next
        args = self._queries.args(self._position)
        try:
            return await self._queries.read(self._fetch, sql, args)
        except Exception as exc:
            errno = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
            if errno == _NO_PROCESS_PRIVILEGE and self.config.wait_for_transactions and not self._postgres:
                self.ctx.logger.warning(
                    "sql_poll %s: no PROCESS privilege to see open transactions; relying on settle=%s alone",
                    self.config.name, self.config.settle,
                )  # fmt: skip
                self._queries = _queries_for(self.config, self._column, postgres=False, transactions=False)
                return await self._query()
            sqlstate = str(getattr(exc, "sqlstate", "") or "")
            if isinstance(exc, TimeoutError) or errno == 1205:
                raise RetryableError(
                    f"{self._where}: the query took longer than statement_timeout_s ({self.config.statement_timeout_s:g}s): "
                    "a lock another session holds, or no index on the watermark columns?"
                ) from exc
            if errno in {2002, 2003, 2006, 2013} or sqlstate[:2] in {"08", "57"} or isinstance(exc, (OSError, ConnectionError)):
                raise RetryableError(f"{self._where}: connection lost: {exc!r}") from exc
            raise

    async def _publish(self, rows: list[dict[str, Any]]) -> None:
        mark = self.config.watermark
        acks: list[Awaitable[None]] = []
        for row in rows:
            position = (row.get(mark.column) if mark.column else None, row[mark.id])
            version = f"@{_text(position[0])}" if mark.column else ""
            raw = json.dumps(row, default=_text, ensure_ascii=False).encode()
            try:
                acks.append(await self._intake.submit_document(row, raw=raw, event_id=f"{self.config.name}:{row[mark.id]}{version}"))
            except KafkaUnavailable as exc:
                raise RetryableError(f"Kafka did not take the rows: {exc}") from exc
        for ack in acks:
            try:
                await ack
            except KafkaUnavailable as exc:  # the position stays: the next poll reads these rows again
                raise RetryableError(f"Kafka did not acknowledge the rows: {exc}") from exc
        last = rows[-1]
        await self._save((last.get(mark.column) if mark.column else None, last[mark.id]))
        self.rows += len(rows)

    async def _save(self, position: tuple[Any, Any] | None = None) -> None:
        """Keep where the poll is in Kafka: the position (a new one, when given: a row read, so
        not from the time the clock went back any more), and the database's clock when last read."""
        read_from = self._read_from if position is None else None
        position = position or self._position
        assert self.ctx.checkpoints is not None and position is not None
        saved: dict[str, Any] = {"column": _encode(position[0]), "id": _encode(position[1])}
        if self._clock is not None:
            saved.update(clock=_encode(self._clock[0]), at=self._clock[1])
        if read_from is not None:
            saved["read_from"] = _encode(read_from)
        try:
            await self.ctx.checkpoints.save(self.config.name, saved)
        except KafkaUnavailable as exc:
            raise RetryableError(f"saving the position: {exc}") from exc
        self._position, self._read_from = position, read_from
