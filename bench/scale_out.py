"""Scale-out: router throughput with one and with two `bus run --role router` processes in one
consumer group, on the same pre-filled canonical topic (20 routes, as bench/router.py).

    .venv/bin/python bench/scale_out.py [--events 50000]

Each run uses its own topic prefix (so its own group and a fresh topic), filled before the
routers start; throughput is counted from the first routed event to the last, summed over the
processes' /metrics (polled every 50 ms). On a 2-core
machine the broker shares the cores with the routers, so the second process cannot double the
first: the ratio says how much of the machine's headroom the group uses.
Writes bench/results/scale_out-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import metric, write
from bench.hubs import HubProcess, feed_payments, schema_id
from bench.router import SUBSCRIBERS, twenty_route_dicts
from bus.kafka.broker import EmbeddedBroker

PARTITIONS = 4


def for_yaml(routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """In a config file ``${x}`` is an environment variable: template fields are written ``$${x}``."""
    return json.loads(json.dumps(routes).replace("${", "$${"))


async def run(bootstrap: str, processes: int, n: int) -> dict[str, Any]:
    prefix = f"scale{processes}"
    config = {
        "kafka": {"bootstrap": bootstrap, "partitions": PARTITIONS, "session_timeout_ms": 3000, "topic_prefix": prefix},
        "schema_registry": {"url": "embedded"},
        "routes": for_yaml(twenty_route_dicts()),
        # Outbound adapters are declared so their delivery topics exist; only routers run.
        "outbound": [{"name": s, "type": "http", "url": "http://127.0.0.1:9/unused"} for s in SUBSCRIBERS],
    }
    # The topic is filled before any router runs, so the clock times routing, not the feed. A
    # first process only registers the schemas (the ids live in the broker) and leaves.
    registrar = HubProcess(config, role="router")
    await registrar.start()
    schema = await schema_id(registrar)
    await registrar.stop()
    await feed_payments(bootstrap, f"{prefix}.canonical.Payment", schema, n)
    hubs = [HubProcess(config, role="router") for _ in range(processes)]
    try:
        await asyncio.gather(*(hub.start() for hub in hubs))  # joins and the first rebalance count: that is scaling out
        first = last = 0.0
        async with httpx.AsyncClient() as client:
            deadline = time.perf_counter() + 600
            while time.perf_counter() < deadline:
                pages = [await hub.metrics(client) for hub in hubs]
                routed = sum(metric(p, "bus_router_events_total", schema="Payment") for p in pages)
                now = time.perf_counter()
                if routed and not first:
                    first = now
                if routed >= n:
                    last = now
                    break
                await asyncio.sleep(0.05)
        shares = [metric(p, "bus_router_events_total", schema="Payment") for p in pages]
        return {"processes": processes, "events": n, "seconds": last - first, "events_per_s": n / (last - first), "per_process": shares}
    finally:
        for hub in hubs:
            await hub.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    async with EmbeddedBroker() as broker:
        rows = [await run(broker.bootstrap, k, args.events) for k in (1, 2)]
    for row in rows:
        print(f"{row['processes']} router process(es): {row['events_per_s']:>8,.0f} events/s   split {row['per_process']}")
    ratio = rows[1]["events_per_s"] / rows[0]["events_per_s"]
    print(f"two / one: {ratio:.2f}")
    write("scale_out", {"partitions": PARTITIONS, "runs": rows, "ratio_two_to_one": ratio})


if __name__ == "__main__":
    asyncio.run(main())
