"""`bus migrate run` into PostgreSQL against plain scripts moving the same rows, in the same run.

The source: N legacy payment rows in a PostgreSQL table. Three ways to move them into a target
table of the same database (each into its own fresh copy of the table), interleaved over rounds:

- ``copy``: a script reads the rows, maps them in Python, and loads them with COPY
  (``copy_records_to_table``): the fastest a load can be, with nothing checked;
- ``executemany``: the same, with ``INSERT ... ON CONFLICT DO UPDATE`` by ``executemany`` in
  batches of 1,000: what a hand-written load script does;
- ``migrate``: ``bus migrate run`` (in process): mapping, schema check and routing by the hub,
  before-images read and journaled, the sql outbound's upserts, the read-back of every record and
  the report at the end.

Reported: rows/s of each, and ``migrate`` as a ratio to each baseline per round, with the median
and spread. The goal (issue 23) is a ratio of at least 0.5 to a COPY or executemany script.

    .venv/bin/python bench/migrate_throughput.py --rows 100000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import write

DSN = "postgresql://postgres@127.0.0.1:5432/test"
TARGET_COLUMNS = "payment_id text PRIMARY KEY, amount bigint, currency text, customer text"


def mapped(row: Any) -> tuple[Any, ...]:
    return (row["ref"], row["amount_cents"], row["currency"], row["customer"])


async def copy_script(db: Any, source: str, target: str) -> None:
    rows = [mapped(r) for r in await db.fetch(f"SELECT * FROM {source}")]
    await db.copy_records_to_table(target, records=rows)


async def executemany_script(db: Any, source: str, target: str) -> None:
    upsert = (
        f"INSERT INTO {target} (payment_id, amount, currency, customer) VALUES ($1, $2, $3, $4) ON CONFLICT (payment_id) "
        "DO UPDATE SET amount = EXCLUDED.amount, currency = EXCLUDED.currency, customer = EXCLUDED.customer"
    )
    async with db.transaction():
        batch: list[tuple[Any, ...]] = []
        async for row in db.cursor(f"SELECT * FROM {source}", prefetch=1000):
            batch.append(mapped(row))
            if len(batch) == 1000:
                await db.executemany(upsert, batch)
                batch = []
        if batch:
            await db.executemany(upsert, batch)


def config(folder: Path, source: str, target: str) -> Path:
    document = {
        "kafka": {"bootstrap": "127.0.0.1:1", "topic_prefix": f"b{uuid.uuid4().hex[:8]}"},  # a migration needs no broker
        "routes": [{"name": "all", "from": "Payment", "to": ["books"]}],
        "outbound": [
            {
                "name": "books",
                "type": "sql",
                "dsn": DSN,
                "table": target,
                "key": ["payment_id"],
                "columns": {"payment_id": "payment_id", "amount": "amount", "currency": "currency", "customer": "customer_id"},
                "batch_size": 1000,
            }
        ],
        "migrations": [
            {
                "name": "bench",
                "source": {"sql": {"dsn": DSN, "table": source, "batch_size": 2000}},
                "emit": {
                    "schema": "Payment",
                    "key": "ref",
                    "map": {"payment_id": "ref", "amount": "amount_cents", "currency": "currency", "customer_id": "customer"},
                },
                "batch_size": 1000,
            }
        ],
    }
    path = folder / "bus.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def migrate_job(folder: Path, source: str, target: str) -> Any:
    """The run, with the config loaded (once per process, as `bus migrate run` does, and not timed:
    about a second of imports and compiling, whatever the rows)."""
    from bus.adapter_api import AdapterRegistry
    from bus.app.migrate.run import run_migration
    from bus.config.loader import load_config
    from schemas.catalog import SchemaCatalog

    registry = AdapterRegistry.from_entry_points()
    catalog = SchemaCatalog.load()
    path = config(folder, source, target)
    loaded = load_config(path, registry, known_schemas=lambda _: catalog.parsed())
    return run_migration(loaded, catalog, "bench", base_dir=folder, state_dir=folder / f"state-{target}", registry=registry)


async def main(rows: int, rounds: int) -> dict[str, Any]:
    import asyncpg

    db = await asyncpg.connect(DSN)
    suffix = uuid.uuid4().hex[:6]
    source = f"bench_source_{suffix}"
    await db.execute(f"CREATE TABLE {source} (ref text PRIMARY KEY, amount_cents bigint, currency text, customer text)")
    await db.copy_records_to_table(
        source, records=[(f"B-{i:07d}", i * 10, "eur" if i % 3 else "usd", f"Müller & Søn {i % 97}") for i in range(rows)]
    )
    seconds: dict[str, list[float]] = {"copy": [], "executemany": [], "migrate": []}
    made: list[str] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for round_ in range(rounds):
                for kind in ("copy", "executemany", "migrate") if round_ % 2 == 0 else ("migrate", "executemany", "copy"):
                    target = f"bench_target_{suffix}_{kind}_{round_}"
                    await db.execute(f"CREATE TABLE {target} ({TARGET_COLUMNS})")
                    made.append(target)
                    job = migrate_job(Path(tmp), source, target) if kind == "migrate" else None
                    started = time.perf_counter()
                    if kind == "copy":
                        await copy_script(db, source, target)
                    elif kind == "executemany":
                        await executemany_script(db, source, target)
                    else:
                        assert job is not None
                        run = await job
                        assert run.status == "finished", run.status
                    seconds[kind].append(time.perf_counter() - started)
                    assert await db.fetchval(f"SELECT count(*) FROM {target}") == rows
                    print(f"round {round_ + 1} {kind:<12} {rows / seconds[kind][-1]:>10,.0f} rows/s", flush=True)
    finally:
        for target in made:
            await db.execute(f"DROP TABLE IF EXISTS {target}")
        await db.execute(f"DROP TABLE IF EXISTS {source}")
        await db.close()
    ratios = {
        base: [b / m for b, m in zip(seconds[base], seconds["migrate"], strict=True)] for base in ("copy", "executemany")
    }  # migrate's rate / the baseline's rate = baseline seconds / migrate seconds
    body = {
        "rows": rows,
        "rounds": rounds,
        "rows_per_second": {k: [round(rows / s) for s in v] for k, v in seconds.items()},
        "ratio_to_copy": {"median": round(statistics.median(ratios["copy"]), 3), "rounds": [round(r, 3) for r in ratios["copy"]]},
        "ratio_to_executemany": {
            "median": round(statistics.median(ratios["executemany"]), 3),
            "rounds": [round(r, 3) for r in ratios["executemany"]],
        },
    }
    print(body)
    write("migrate_throughput", body)
    return body


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    asyncio.run(main(options.rows, options.rounds))
