"""Reading a migration's source: every row of a SQL table or query (PostgreSQL, MariaDB), or every
record of a CSV or JSON Lines file, as ``(where, row)``; a row that cannot be read arrives as an
``UnreadableRow`` (why, and its text), to be refused like a bad row while the others go on. Also
what a run needs before it starts: how many rows there are (for the ETA) and, for a file, the
digest of its bytes (so the same file is not imported twice).

A file is read as its declared encoding, and what is not text in that encoding stays with the row
it is in: that row is refused ("not utf-8 text", its bytes shown as ``\\xNN``), not the whole run
(a legacy export with a few lines in another encoding is common). A UTF-8 file may start with a
byte order mark (Excel's "CSV UTF-8"); it is not part of the first column's name. A CSV record
whose number of fields is not the header's (an unquoted comma shifts every column after it) is
refused, and so is one the csv module cannot parse; a field may be up to 64 MiB.
"""

from __future__ import annotations

__all__ = ["UnreadableRow", "count_rows", "file_digest", "row_json", "source_path", "source_rows"]

import asyncio
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from bus.config.migrations import MigrationConfig
from bus.documents import (
    CsvRecord,
    LineTooLong,
    bounded_lines,
    csv_header_problem,
    csv_records,
    parse_json,
    text_codec,
    undecodable,
)
from bus.errors import BusError
from bus.jsontext import dumps as json_dumps

log = logging.getLogger("bus.migrate")

_UNDECODED = re.compile("[\udc80-\udcff]")  # bytes the encoding could not decode, kept by "surrogateescape"
_SURROGATE = re.compile("[\ud800-\udfff]")  # no character: undecoded bytes, or half of a surrogate pair alone


class UnreadableRow(ValueError):
    """A row of the source that cannot be read (not text in the file's encoding, not JSON, not a
    CSV record of the header's width): refused with this reason; ``text`` is what was read (a
    line, a record's fields), shown in the plan and the report."""

    def __init__(self, reason: str, text: Any = None) -> None:
        super().__init__(reason)
        self.text = text


def row_json(row: Any) -> str | None:
    """The row as JSON text to show in a plan or a report, or None: always valid Unicode (an
    undecoded byte shows as ``\\xNN``, a lone surrogate as ``\\udXXX``), so that the journal,
    a terminal and the report's files can hold it."""
    if isinstance(row, UnreadableRow):
        row = row.text
    elif isinstance(row, Exception):
        return None
    if row is None:
        return None
    text = json_dumps(row)
    return _SURROGATE.sub(_escaped, text) if _SURROGATE.search(text) else text


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    # Inside a JSON string: "\\" is one backslash, so the reader sees the escape as text.
    return f"\\\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\\\u{code:04x}"


def source_path(config: MigrationConfig, base_dir: Path) -> Path:
    source = config.source.file
    assert source is not None
    return source.path if source.path.is_absolute() else base_dir / source.path


def source_rows(config: MigrationConfig, base_dir: Path) -> AsyncIterator[tuple[str, Any]]:
    return _file_rows(config, base_dir) if config.source.file is not None else _sql_rows(config)


def _open(config: MigrationConfig, path: Path) -> Any:
    source = config.source.file
    assert source is not None
    try:
        return path.open(encoding=text_codec(source.encoding), errors="surrogateescape", newline="")
    except OSError as exc:
        raise BusError(f"migration {config.name}: cannot read {path}: {exc.strerror or exc}") from None


def _kind(config: MigrationConfig) -> str:
    assert config.source.file is not None
    return config.source.file.kind


def _delimiter(config: MigrationConfig) -> str:
    assert config.source.file is not None
    return config.source.file.delimiter


def _not_text(config: MigrationConfig, text: str) -> UnreadableRow:
    source = config.source.file
    assert source is not None
    shown = text.encode(source.encoding, "surrogateescape").decode(source.encoding, "backslashreplace")
    return UnreadableRow(
        f"not {source.encoding} text (the bytes shown as \\xNN); if the whole file is in another encoding, set "
        "source.file.encoding (e.g. latin-1)",
        shown,
    )


async def _file_rows(config: MigrationConfig, base_dir: Path) -> AsyncIterator[tuple[str, Any]]:
    """(where, row) per record of a CSV or JSON Lines file; one that cannot be read: (where, UnreadableRow)."""
    path = source_path(config, base_dir)
    encoding = config.source.file.encoding if config.source.file is not None else "utf-8"
    with _open(config, path) as handle:
        # UTF-16 or UTF-32: a broken character cannot be refused on its line alone (the reader
        # stopped there with a UnicodeDecodeError, the run half done); checked whole, first.
        if why := await asyncio.to_thread(undecodable, handle, encoding):
            raise BusError(f"migration {config.name}: {path} is {why}; no row was read")
        try:
            rows = _csv_rows(config, path, handle) if _kind(config) == "csv" else _jsonl_rows(config, path, handle)
            for where, row in rows:
                yield where, row
        except OSError as exc:
            raise BusError(f"migration {config.name}: cannot read {path}: {exc.strerror or exc}") from None


def _jsonl_rows(config: MigrationConfig, path: Path, handle: Any) -> Iterator[tuple[str, Any]]:
    first = True
    for line, text in enumerate(bounded_lines(handle), start=1):
        start = text.head if isinstance(text, LineTooLong) else text
        if not start.strip():
            continue
        if first and start.lstrip().startswith("["):  # a JSON array (an API's export), not one object per line
            raise BusError(
                f"migration {config.name}: {path} holds a JSON array, not JSON Lines (one object per line); "
                f"convert it first, e.g. jq -c '.[]' {path.name} > {path.stem}.jsonl"
            )
        first = False
        where = f"{path.name}:{line}"
        if isinstance(text, LineTooLong):
            yield where, UnreadableRow(f"{text}; the line is skipped", f"{text.head}...")
            continue
        if _UNDECODED.search(text):
            yield where, _not_text(config, text.rstrip("\r\n"))
            continue
        try:
            yield where, parse_json(text)  # as every document the hub reads: 256 levels deep at most, no NaN
        except ValueError as exc:
            yield where, UnreadableRow(f"not JSON: {exc}", text.rstrip("\r\n"))


def _csv_header(config: MigrationConfig, path: Path, record: CsvRecord | None) -> list[str]:
    if record is None:
        raise BusError(f"migration {config.name}: {path} has no header line (the first line names the columns)")
    if record.values is None:
        raise BusError(f"migration {config.name}: the header of {path} is not CSV: {record.error}")
    header = record.values
    if any(_UNDECODED.search(name) for name in header):
        raise BusError(f"migration {config.name}: the header of {path} is not text in the file's encoding; set source.file.encoding")
    problem = csv_header_problem(header, _delimiter(config))
    if problem:
        raise BusError(f"migration {config.name}: {path}: {problem}")
    return header


def _csv_rows(config: MigrationConfig, path: Path, handle: Any) -> Iterator[tuple[str, Any]]:
    records = csv_records(handle, _delimiter(config))
    header = _csv_header(config, path, next(records, None))
    width = len(header)
    for record in records:
        where, values = f"{path.name}:{record.line}", record.values  # the line the record starts on
        if values is None:
            yield where, UnreadableRow(record.error, record.text)
        elif _UNDECODED.search(record.text):
            yield where, _not_text(config, record.text)
        elif len(values) != width:
            why = "a separator or quote in a value that is not quoted?" if len(values) > width else "a record cut short?"
            yield where, UnreadableRow(f"{len(values)} fields where the header has {width} ({why})", values)
        else:
            yield where, dict(zip(header, values, strict=True))


async def _sql_rows(config: MigrationConfig) -> AsyncIterator[tuple[str, Any]]:
    """Every row of the table or query, through a server-side cursor (batch_size at a time)."""
    from adapters.sql.pool import close_pool, is_postgres, open_pool

    source = config.source.sql
    assert source is not None
    dsn = source.dsn.get_secret_value()
    query = source.query or f"SELECT * FROM {source.table}"  # noqa: S608 - the table name matches ^[A-Za-z_][A-Za-z0-9_.]*$
    pool = await open_pool(dsn, 1, what=f"migration {config.name}", reads_rows=True)
    n = 0
    try:
        if is_postgres(dsn):
            async with pool.acquire() as conn, conn.transaction(readonly=True):
                async for record in conn.cursor(query, prefetch=source.batch_size):
                    n += 1
                    yield f"row {n}", dict(record)
        else:
            import aiomysql

            async with pool.acquire() as conn, conn.cursor(aiomysql.SSDictCursor) as cursor:
                # Read only, as PostgreSQL's above: a query that would write fails, on any engine (MyISAM too).
                await cursor.execute("START TRANSACTION READ ONLY")
                zone = await _session_zone(conn)
                try:
                    await cursor.execute(query)
                    _say_timestamp_columns(config, cursor.description or (), zone)
                    while rows := await cursor.fetchmany(source.batch_size):
                        for row in rows:
                            n += 1
                            yield f"row {n}", row
                finally:
                    await conn.rollback()
    finally:
        await close_pool(pool, dsn)


async def _session_zone(connection: Any) -> Any:
    """The MariaDB/MySQL session's zone (``adapters.sql.catalog.session_zone``), on ``connection``."""
    import aiomysql

    from adapters.sql.catalog import session_zone

    async def fetch(sql: str, args: list[Any]) -> list[dict[str, Any]]:
        async with connection.cursor(aiomysql.DictCursor) as cursor:
            await cursor.execute(sql, args)
            return list(await cursor.fetchall())

    return await session_zone(fetch)


_TIMESTAMP_TYPES = {7, 17}  # MySQL's protocol: TIMESTAMP, TIMESTAMP2


def _say_timestamp_columns(config: MigrationConfig, description: Any, zone: Any) -> None:
    """TIMESTAMP columns of a MariaDB/MySQL source read in a session zone that is not UTC: they come
    as wall-clock times there, with no zone, which ``timestamp()`` in the mapping takes as UTC
    unless told; every time would be moved by the server's offset, unsaid."""
    moments = [str(column[0]) for column in description if column[1] in _TIMESTAMP_TYPES]
    if moments and not zone.is_utc:
        log.warning(
            "migration %s: TIMESTAMP column(s) %s of the source are read as wall-clock times in the database session's zone "
            "(%s), with no zone, which timestamp() takes as UTC: map them as timestamp(%s, \"<the server's zone>\") (an IANA "
            "name), or set the server's time_zone to '+00:00'",
            config.name, ", ".join(moments), zone.described(), moments[0],
        )  # fmt: skip


def file_digest(path: Path) -> str:
    """sha256 of the file's bytes."""
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


async def count_rows(config: MigrationConfig, base_dir: Path) -> int | None:
    """How many rows the source holds (None when it cannot be told cheaply): for progress."""
    if config.source.file is not None:
        path = source_path(config, base_dir)
        try:
            with path.open("rb") as handle:
                lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
        except OSError:
            return None
        return max(0, lines - 1) if _kind(config) == "csv" else lines
    from adapters.sql.pool import close_pool, is_postgres, open_pool

    source = config.source.sql
    assert source is not None
    dsn = source.dsn.get_secret_value()
    query = source.query or f"SELECT * FROM {source.table}"  # noqa: S608 - a checked plain name
    sql = f"SELECT count(*) FROM ({query}) AS source_rows"  # noqa: S608 - the configured query itself
    pool = await open_pool(dsn, 1, what=f"migration {config.name}")
    try:
        async with pool.acquire() as conn:
            if is_postgres(dsn):
                return int(await conn.fetchval(sql))
            async with conn.cursor() as cursor:
                await cursor.execute(sql)
                (n,) = await cursor.fetchone()
                return int(n)
    except Exception:  # noqa: BLE001 - a count is a nicety; the run reads the rows anyway
        return None
    finally:
        await close_pool(pool, dsn)
