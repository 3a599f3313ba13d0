"""Connection pools for PostgreSQL (asyncpg) and MariaDB/MySQL (aiomysql), shared by ``sql`` and
``sql_poll``. Each driver is imported only by the hubs that use it."""

from __future__ import annotations

__all__ = ["POOLER_HINT", "close_pool", "describe", "fetch", "is_postgres", "mysql_tls", "open_pool", "pooler_said", "postgres_connection"]

import asyncio
import contextlib
import ssl
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit, urlunsplit

from bus.adapter_api import RetryableError, dsn_servers

# `?pgbouncer=true` in a PostgreSQL DSN (the flag Prisma's users know): no named prepared statements
# kept per connection (asyncpg's statement cache). Behind a pooler in transaction mode (PgBouncer
# before 1.21, or without max_prepared_statements) a session's next statement may run on another
# server connection, where the statement asyncpg prepared does not exist: nearly every write
# failed ("prepared statement __asyncpg_stmt_4__ does not exist"). Not the default: preparing each
# statement where it runs cost the sql outbound a quarter of its rate against PostgreSQL itself
# (bench/RESULTS.md, 2026-12-07).
_POOLER_FLAG = "pgbouncer"
POOLER_HINT = (
    "a connection pooler in transaction mode (PgBouncer) runs the statements of one session on several server "
    "connections, and a prepared statement was not where it ran: add ?pgbouncer=true to the dsn"
)
_POOLER_ERRORS = {"26000", "42P05"}  # a prepared statement the pooler lost, or met twice


def pooler_said(exc: BaseException) -> str:
    """``POOLER_HINT`` after "; " when ``exc`` is what a pooler in transaction mode makes of prepared statements."""
    return f"; {POOLER_HINT}" if getattr(exc, "sqlstate", None) in _POOLER_ERRORS else ""


def postgres_connection(dsn: str) -> tuple[str, dict[str, Any]]:
    """The DSN asyncpg is given (without the hub's own ``pgbouncer`` flag, which it would send the
    server as a setting) and the options the flag asks for."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query, keep_blank_values=True)
    flag = query.pop(_POOLER_FLAG, None)
    if flag is None:
        return dsn, {}
    kept = urlencode(query, doseq=True)
    options = {"statement_cache_size": 0} if flag[-1].lower() == "true" else {}
    return urlunsplit(parts._replace(query=kept)), options


def is_postgres(dsn: str) -> bool:
    return dsn.startswith(("postgresql://", "postgres://"))


# MariaDB/MySQL TLS, named in the DSN's query as MySQL's own clients name it (mysql --ssl-mode...).
_SSL_MODES = {"disabled", "required", "verify_ca", "verify_identity"}
_SSL_OPTIONS = {"ssl-mode", "ssl-ca", "ssl-cert", "ssl-key"}


def mysql_tls(dsn: str) -> ssl.SSLContext | None:
    """The TLS a ``mysql://`` DSN asks for in its query: ``ssl-mode`` (DISABLED, REQUIRED: encrypted
    without checking the server's certificate, VERIFY_CA, VERIFY_IDENTITY: its name too; with
    ``ssl-ca`` alone, VERIFY_CA), ``ssl-ca`` (default: the system's CAs), ``ssl-cert`` and
    ``ssl-key`` (a client certificate). ValueError for anything else in the query: it was ignored,
    and ``?ssl=true`` connected in plain text, unsaid."""
    query = parse_qs(urlsplit(dsn).query, keep_blank_values=True)
    unknown = sorted(set(query) - _SSL_OPTIONS)
    if unknown:
        raise ValueError(
            f"the dsn's query has {', '.join(unknown)}, which the hub does not read for MariaDB/MySQL; it reads "
            f"{', '.join(sorted(_SSL_OPTIONS))} (ssl-mode: DISABLED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY)"
        )
    options = {name: values[-1] for name, values in query.items()}
    implied = "verify_ca" if "ssl-ca" in options else "required" if options else "disabled"  # as MySQL's own client implies
    mode = options.get("ssl-mode", implied).lower()
    if mode not in _SSL_MODES:
        raise ValueError(f"ssl-mode {options['ssl-mode']!r} is not one of DISABLED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY")
    if mode == "disabled":
        if len(options) > 1:
            raise ValueError("ssl-mode=DISABLED with ssl-ca, ssl-cert or ssl-key: say which is meant")
        return None
    if ("ssl-cert" in options) != ("ssl-key" in options):
        raise ValueError("give both ssl-cert and ssl-key for a client certificate, or neither")
    context = ssl.create_default_context(cafile=options.get("ssl-ca"))  # OSError when the file cannot be read
    if mode == "required":  # encrypted, as MySQL's REQUIRED: the certificate is not checked
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif mode == "verify_ca":
        context.check_hostname = False
    if "ssl-cert" in options:
        context.load_cert_chain(options["ssl-cert"], options["ssl-key"])
    return context


def describe(dsn: str, table: str) -> str:
    """host:port/table (the servers, comma-separated, when the dsn names several), for messages:
    never the user or the password."""
    return f"{dsn_servers(dsn)}/{table}"


# MariaDB/MySQL outside strict mode (``sql_mode=''``: MySQL 5.6's default, which many legacy
# servers keep for old applications) stores what it cannot hold with only a warning: a string cut
# to the column's length, an amount over a DECIMAL's range as its largest value (123456.79 into
# DECIMAL(5,2) is 999.99), an impossible date as 0000-00-00. A write that changes what the event
# said must fail, with the database's reason (a dead letter), not succeed with other data. Added to
# the session's own modes, whatever the server's are.
_STRICT = "sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'STRICT_ALL_TABLES')"


def _bits_as_numbers() -> dict[Any, Any]:
    """PyMySQL's conversions, with a BIT column's bytes read as the number they hold."""
    from pymysql.constants import FIELD_TYPE
    from pymysql.converters import conversions

    return {**conversions, FIELD_TYPE.BIT: lambda value: int.from_bytes(value, "big")}


async def open_pool(
    dsn: str,
    size: int,
    *,
    what: str,
    autocommit: bool = False,
    statement_timeout: float | None = None,
    writes: bool = False,
    reads_rows: bool = False,
) -> Any:
    """autocommit (MariaDB/MySQL): every statement its own transaction, so a reader sees each new
    commit (under REPEATABLE READ, an open transaction would keep showing its first snapshot).

    statement_timeout: how long a statement may wait, for a lock above all. PostgreSQL waits for a
    lock for ever by default: a session that forgot a transaction holding the table (a ``LOCK
    TABLE`` in psql, a migration half done) held every write of the subscriber behind it, and
    nothing said so. On PostgreSQL the driver cancels the statement (TimeoutError); on
    MariaDB/MySQL the lock waits (rows and metadata) end with error 1205.

    writes (MariaDB/MySQL): the sessions are in strict mode (``_STRICT``).

    reads_rows (PostgreSQL): the rows read are made into events: values come as ``pg_values``
    says (uuid and inet as text; a date or time Python cannot hold as PostgreSQL's text of it, not
    an error that fails the whole query).

    MariaDB/MySQL's BIT is read as a number on every pool: its driver gave bytes, so ``bool()`` of
    a ``BIT(1)`` flag (the legacy boolean) of 0, ``b"\\x00"``, was true, and a flag a migration
    wrote read back as other bytes than the value it wrote (a difference in every record)."""
    try:
        if is_postgres(dsn):
            import asyncpg

            target, options = postgres_connection(dsn)
            if reads_rows:
                from adapters.sql import pg_values

                options["init"] = pg_values.install
            return await asyncpg.create_pool(target, min_size=1, max_size=size, timeout=10, command_timeout=statement_timeout, **options)
        import aiomysql

        waits = max(1, round(statement_timeout)) if statement_timeout else None
        session = [f"lock_wait_timeout = {waits}, innodb_lock_wait_timeout = {waits}"] if waits else []
        if writes:
            session.append(_STRICT)
        init = f"SET SESSION {', '.join(session)}" if session else None

        url = urlsplit(dsn)
        tls = mysql_tls(dsn)
        return await aiomysql.create_pool(
            host=url.hostname or "localhost",
            port=url.port or 3306,
            user=unquote(url.username or ""),
            password=unquote(url.password or ""),
            db=url.path.lstrip("/"),
            minsize=1,
            maxsize=size,
            autocommit=autocommit,
            connect_timeout=10,
            init_command=init,
            ssl=tls,
            conv=_bits_as_numbers(),
        )
    except Exception as exc:  # any driver failure at connect: the caller retries
        raise RetryableError(f"{what}: cannot connect: {exc!r}") from exc


async def fetch(pool: Any, sql: str, args: list[Any], *, postgres: bool) -> list[dict[str, Any]]:
    """The rows of one query, as dicts, on a connection of ``pool``. MariaDB/MySQL: the read's
    transaction is ended, so the next read sees new commits (REPEATABLE READ keeps the first
    snapshot of a transaction; a no-op on an autocommit connection)."""
    if postgres:
        async with pool.acquire() as connection:
            return [dict(row) for row in await connection.fetch(sql, *args)]
    import aiomysql

    async with pool.acquire() as connection, connection.cursor(aiomysql.DictCursor) as cursor:
        await cursor.execute(sql, args)
        rows = list(await cursor.fetchall())
        await connection.commit()
        return rows


CLOSE_WITHIN = 10.0  # seconds for a pool's connections to be given back; then they are dropped


async def close_pool(pool: Any, dsn: str) -> None:
    """Close a pool, bounded: asyncpg's close waits for every connection to be given back, and a
    query that never ends held it, and so the stop, for good (asyncpg drops them all when its
    close is cancelled; aiomysql's close drops the free ones and waits for the others)."""
    if is_postgres(dsn):
        try:
            await asyncio.wait_for(pool.close(), timeout=CLOSE_WITHIN)
        except TimeoutError:
            pool.terminate()
    else:
        pool.close()
        try:
            await asyncio.wait_for(pool.wait_closed(), timeout=CLOSE_WITHIN)
        except TimeoutError:
            pool.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pool.wait_closed(), timeout=1)
