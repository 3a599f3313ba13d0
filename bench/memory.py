"""Memory: RSS of the all-in-one hub (`bus run`) after 100k and after 1M events routed and delivered.

    .venv/bin/python bench/memory.py [--events 1000000]

The bench starts the embedded broker, a hub process pointed at it (one route, delivering to a
`file` outbound: fast and local, so the hub's own memory is what is measured), then produces
canonical Payment events straight into Kafka while sampling the hub's RSS from /proc every
second against its delivered count (/metrics). Issue 8's goal: flat between 100k and 1M, under
200 MB. Writes bench/results/memory-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import metric, rss_mb, write
from bench.hubs import HubProcess, feed_payments, schema_id
from bus.kafka.broker import EmbeddedBroker


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    n = args.events
    marks = sorted({min(100_000, n // 10), n})
    with tempfile.TemporaryDirectory() as outbox:
        async with EmbeddedBroker() as broker:
            config = {
                "kafka": {"bootstrap": broker.bootstrap, "partitions": 4, "session_timeout_ms": 3000, "topic_prefix": "mem"},
                "schema_registry": {"url": "embedded"},
                "routes": [{"name": "all", "from": "Payment", "to": ["lake"]}],
                "outbound": [{"name": "lake", "type": "file", "path": outbox, "fsync": False, "delivery": {"concurrency": 64}}],
            }
            hub = HubProcess(config)
            await hub.start()
            try:
                started_rss = rss_mb(hub.pid)
                feeding = asyncio.create_task(feed_payments(broker.bootstrap, "mem.canonical.Payment", await schema_id(hub), n))
                samples: list[tuple[float, float, float]] = []  # (seconds, delivered, rss MB)
                at_marks: dict[int, float] = {}
                began = time.perf_counter()
                async with httpx.AsyncClient() as client:
                    while len(at_marks) < len(marks):
                        delivered = metric(await hub.metrics(client), "bus_deliveries_total", subscriber="lake", outcome="delivered")
                        rss = rss_mb(hub.pid)
                        samples.append((time.perf_counter() - began, delivered, rss))
                        for mark in marks:
                            if delivered >= mark and mark not in at_marks:
                                at_marks[mark] = rss
                                print(
                                    f"{int(delivered):>9,} delivered  RSS {rss:6.1f} MB  ({time.perf_counter() - began:5.1f} s)", flush=True
                                )
                        if feeding.done() and feeding.exception():
                            raise feeding.exception()  # type: ignore[misc]
                        await asyncio.sleep(1)
                await feeding
            finally:
                await hub.stop()
    peak = max(s[2] for s in samples)
    first, last = at_marks[marks[0]], at_marks[marks[-1]]
    print(f"\nRSS at start {started_rss:.1f} MB; at {marks[0]:,}: {first:.1f} MB; at {marks[-1]:,}: {last:.1f} MB; peak {peak:.1f} MB")
    print(f"growth from {marks[0]:,} to {marks[-1]:,} events: {last - first:+.1f} MB (goal: flat, and under 200 MB)")
    write(
        "memory",
        {
            "events": n,
            "rss_mb_at_start": started_rss,
            "rss_mb_at": {str(k): v for k, v in at_marks.items()},
            "rss_mb_peak": peak,
            "events_per_s": n / samples[-1][0],
            "samples": samples,
        },
    )


if __name__ == "__main__":
    asyncio.run(main())
