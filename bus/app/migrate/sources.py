"""Reading a migration's source: every row of a SQL table or query (PostgreSQL, MariaDB), or every
line of a CSV or JSON Lines file, as ``(where, row)``; a row that cannot be read arrives as its
error, to be refused like a bad row. Also what a run needs before it starts: how many rows there
are (for the ETA) and, for a file, the digest of its bytes (so the same file is not imported twice).
"""

from __future__ import annotations

__all__ = ["count_rows", "file_digest", "source_path", "source_rows"]

import csv
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bus.config.migrations import MigrationConfig
from bus.errors import BusError


def source_path(config: MigrationConfig, base_dir: Path) -> Path:
    source = config.source.file
    assert source is not None
    return source.path if source.path.is_absolute() else base_dir / source.path


def source_rows(config: MigrationConfig, base_dir: Path) -> AsyncIterator[tuple[str, Any]]:
    return _file_rows(config, base_dir) if config.source.file is not None else _sql_rows(config)


async def _file_rows(config: MigrationConfig, base_dir: Path) -> AsyncIterator[tuple[str, Any]]:
    """(where, row) per line of a CSV or JSON Lines file; a line that is not JSON: (where, ValueError)."""
    source = config.source.file
    assert source is not None
    path = source.path if source.path.is_absolute() else base_dir / source.path
    kind = source.format or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    try:
        with path.open(encoding=source.encoding, newline="") as handle:
            if kind == "csv":
                for line, row in enumerate(csv.DictReader(handle), start=2):
                    yield f"{path.name}:{line}", row
                return
            for line, text in enumerate(handle, start=1):
                if text.strip():
                    try:
                        yield f"{path.name}:{line}", json.loads(text)
                    except ValueError as exc:
                        yield f"{path.name}:{line}", ValueError(f"not JSON: {exc}")
    except OSError as exc:
        raise BusError(f"migration {config.name}: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:  # the whole file is in another encoding: say which setting to change
        raise BusError(
            f"migration {config.name}: {path} is not {source.encoding} text (byte {exc.start}: {exc.reason}); "
            "set source.file.encoding (e.g. latin-1)"
        ) from None


async def _sql_rows(config: MigrationConfig) -> AsyncIterator[tuple[str, Any]]:
    """Every row of the table or query, through a server-side cursor (batch_size at a time)."""
    from adapters.sql.pool import close_pool, is_postgres, open_pool

    source = config.source.sql
    assert source is not None
    dsn = source.dsn.get_secret_value()
    query = source.query or f"SELECT * FROM {source.table}"  # noqa: S608 - the table name matches ^[A-Za-z_][A-Za-z0-9_.]*$
    pool = await open_pool(dsn, 1, what=f"migration {config.name}")
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
                await cursor.execute(query)
                while rows := await cursor.fetchmany(source.batch_size):
                    for row in rows:
                        n += 1
                        yield f"row {n}", row
    finally:
        await close_pool(pool, dsn)


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
        kind = config.source.file.format or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
        return max(0, lines - 1) if kind == "csv" else lines
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
