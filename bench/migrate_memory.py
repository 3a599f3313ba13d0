"""Peak memory of `bus migrate run` against the size of the run, and of `bus migrate plan`.

A migration Job has a memory limit (the chart's: 1 GiB), and a source may hold millions of rows: a
run whose memory grew with its rows would be killed partway, and again by every resume. Each size
is a fresh process (its peak resident set, from getrusage) moving N legacy payment rows from a
PostgreSQL table into a fresh PostgreSQL table (the same integration as
bench/migrate_throughput.py), for a small and a large N. Reported: peak MB and the growth per 1,000
rows between the two sizes, for `run` and for `plan` (the goal for both: none beyond a fixed
cache; `plan` keeps each row's key and digest in a temporary SQLite database, 32 MiB of it in
memory).

    .venv/bin/python bench/migrate_memory.py [--small 50000] [--large 400000] [--commands run,plan]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import write
from bench.migrate_throughput import DSN, TARGET_COLUMNS, config


async def inside(command: str, source: str, target: str) -> dict[str, Any]:
    """In the measured process: the job, with the config loaded as `bus migrate` loads it."""
    from bus.adapter_api import AdapterRegistry
    from bus.app.migrate.plan import plan_migration
    from bus.app.migrate.run import run_migration
    from bus.config.loader import load_config
    from schemas.catalog import SchemaCatalog

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        registry = AdapterRegistry.from_entry_points()
        catalog = SchemaCatalog.load()
        loaded = load_config(config(folder, source, target), registry, known_schemas=lambda _: catalog.parsed())
        started = time.perf_counter()
        if command == "run":
            run = await run_migration(loaded, catalog, "bench", base_dir=folder, state_dir=folder / "state", registry=registry)
            assert run.status == "finished", run.status
            journal = sum(f.stat().st_size for f in (folder / "state").glob("journal.sqlite*"))
        else:
            await plan_migration(loaded, catalog, "bench", base_dir=folder)
            journal = 0
        return {
            "seconds": time.perf_counter() - started,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "journal_mb": journal / 1e6,
        }


def measure(command: str, source: str, target: str) -> dict[str, Any]:
    done = subprocess.run(  # noqa: PLW1510 - the exit code is checked below, with the output
        [sys.executable, __file__, "--inside", command, source, target], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"migrate {command} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def main(small: int, large: int, commands: tuple[str, ...] = ("run", "plan")) -> dict[str, Any]:
    import asyncpg

    db = await asyncpg.connect(DSN)
    suffix = uuid.uuid4().hex[:6]
    made: list[str] = []
    results: dict[str, dict[int, dict[str, Any]]] = {command: {} for command in commands}
    try:
        for rows in (small, large):
            source = f"bench_mem_source_{suffix}_{rows}"
            made.append(source)
            await db.execute(f"CREATE TABLE {source} (ref text PRIMARY KEY, amount_cents bigint, currency text, customer text)")
            await db.execute(
                f"INSERT INTO {source} SELECT 'B-' || lpad(i::text, 8, '0'), i * 10, CASE WHEN i % 3 = 0 THEN 'usd' ELSE 'eur' END, "  # noqa: S608
                f"'Müller & Søn ' || (i % 97) FROM generate_series(0, {rows} - 1) AS i"
            )
            for command in commands:
                target = f"bench_mem_target_{suffix}_{rows}_{command}"
                made.append(target)
                await db.execute(f"CREATE TABLE {target} ({TARGET_COLUMNS})")
                results[command][rows] = measured = measure(command, source, target)
                print(
                    f"{command:<4} {rows:>9,} rows: peak {measured['peak_mb']:7.1f} MB, {rows / measured['seconds']:9,.0f} rows/s"
                    + (f", journal {measured['journal_mb']:.1f} MB" if command == "run" else ""),
                    flush=True,
                )
    finally:
        for table in made:
            await db.execute(f"DROP TABLE IF EXISTS {table}")
        await db.close()
    growth = {
        command: (by_rows[large]["peak_mb"] - by_rows[small]["peak_mb"]) / (large - small) * 1000 for command, by_rows in results.items()
    }
    for command, kb in growth.items():
        print(f"{command}: {kb * 1000:.0f} bytes of peak memory per more row ({small:,} -> {large:,} rows)")
    body = {
        "rows": [small, large],
        "results": {c: {str(n): r for n, r in by_rows.items()} for c, by_rows in results.items()},
        "peak_mb_per_1000_rows": growth,
        "journal_bytes_per_row": results["run"][large]["journal_mb"] * 1e6 / large if "run" in results else None,
    }
    write("migrate_memory", body)
    return body


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=50_000)
    parser.add_argument("--large", type=int, default=400_000)
    parser.add_argument("--commands", default="run,plan", help="which to measure: run, plan or both")
    parser.add_argument("--inside", nargs=3, metavar=("COMMAND", "SOURCE", "TARGET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        print(json.dumps(asyncio.run(inside(*args.inside))))
    else:
        asyncio.run(main(args.small, args.large, tuple(args.commands.split(","))))
