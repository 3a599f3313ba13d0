"""The sql outbound's group commit against one transaction per event, on the local PostgreSQL and
MariaDB, in the same run: N upserts delivered the way the delivery loop does (up to
``concurrency`` calls at once, different keys), once with ``batch_size: 1`` and once with the
default. Reports events/s, transactions, and the ratio. No Kafka: this isolates the database side.
Writes bench/results/sql_batch-<timestamp>.json.

    .venv/bin/python bench/sql_batch.py [--events 5000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import time
import uuid
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from adapters.sql.config import SqlOutboundConfig
from adapters.sql.outbound import SqlOutbound
from bus.adapter_api import Context
from bus.event import Event

DATABASES = {"postgresql": "postgresql://postgres@127.0.0.1:5432/test", "mariadb": "mysql://root@127.0.0.1:3306/test"}


async def execute(adapter: SqlOutbound, sql: str) -> None:
    await adapter._write([(sql, [])])  # the adapter's own pool, for set-up and clean-up


async def run(kind: str, dsn: str, batch_size: int, events: int, concurrency: int) -> dict[str, Any]:
    table = f"bench_ledger_{uuid.uuid4().hex[:8]}"
    config = SqlOutboundConfig.model_validate(
        {
            "name": "bench",
            "type": "sql",
            "dsn": dsn,
            "table": table,
            "columns": {"payment_id": "payment_id", "amount": "amount", "status": "status"},
            "key": ["payment_id"],
            "batch_size": batch_size,
            "pool_size": 4,
        }
    )
    adapter = SqlOutbound(config, Context(name="bench", logger=logging.getLogger("bench")))
    await adapter.start()
    try:
        await execute(adapter, f"CREATE TABLE {table} (payment_id VARCHAR(64) PRIMARY KEY, amount BIGINT, status VARCHAR(16))")
        adapter.transactions = 0
        batch = [
            Event(schema="Payment", source="bench", data={"payment_id": f"pi_{i}", "amount": i, "status": "succeeded"}, key=f"pi_{i}")
            for i in range(events)
        ]
        slots = asyncio.Semaphore(concurrency)

        async def one(event: Event) -> None:
            async with slots:
                await adapter.deliver(event)

        cpu, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(e) for e in batch))
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
        transactions = adapter.transactions
        await execute(adapter, f"DROP TABLE {table}")
    finally:
        await adapter.stop()
    return {"events": events, "seconds": seconds, "cpu_seconds": cpu_seconds, "transactions": transactions}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=8, help="delivery.concurrency (the hub's default is 8)")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    print(f"{'database':12} {'batch_size':>10} {'events/s':>10} {'transactions':>13}")
    for kind, dsn in DATABASES.items():
        for batch_size in (1, 200):
            r = await run(kind, dsn, batch_size, args.events, args.concurrency)
            results[f"{kind}/batch_size={batch_size}"] = r
            print(f"{kind:12} {batch_size:>10} {r['events'] / r['seconds']:>10,.0f} {r['transactions']:>13,}")
        one, grouped = results[f"{kind}/batch_size=1"], results[f"{kind}/batch_size=200"]
        ratio = (grouped["events"] / grouped["seconds"]) / (one["events"] / one["seconds"])
        results[f"{kind}/ratio"] = ratio
        print(f"{kind:12} group commit / one transaction per event: {ratio:.2f}x")
    out = Path(__file__).parent / "results" / f"sql_batch-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "sql_batch",
                "date": datetime.now(UTC).isoformat(),
                "events": args.events,
                "concurrency": args.concurrency,
                "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
                "versions": {p: version(p) for p in ("asyncpg", "aiomysql")},
                "results": results,
            },
            indent=2,
        )
    )
    print(f"written: {out}")


if __name__ == "__main__":
    asyncio.run(main())
