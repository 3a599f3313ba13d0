"""What leases cost (bus.kafka.lease): a hub with ``--sources`` pollers read by one process at a
time, each under its lease, against the code before leases (a worktree given with ``--before``)
running the same config, interleaved in one run. Per round and code: seconds from `bus run` to
/readyz 200, and the hub process's CPU per second while idle (pollers every 60 s, so polls do not
count), plus the embedded broker's (it answers every member's heartbeats).

    git worktree add /tmp/before <commit before leases>
    .venv/bin/python bench/lease_cost.py --before /tmp/before [--sources 10] [--rounds 3] [--idle 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import children, cpu_seconds, wait_ready, write
from bus.ports import free_port

HERE = Path(__file__).resolve().parents[1]


async def api() -> tuple[web.AppRunner, int]:
    """A REST API with nothing new: every poll is one small answer."""

    async def empty(request: web.Request) -> web.Response:
        return web.json_response({"data": []})

    app = web.Application()
    app.router.add_get("/api/{name}", empty)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def config(sources: int, api_port: int) -> dict[str, Any]:
    return {
        "kafka": {"bootstrap": "embedded", "topic_prefix": "lease", "partitions": 2, "session_timeout_ms": 6000},
        "http": {"host": "127.0.0.1", "port": free_port()},
        "ops": {"host": "127.0.0.1", "port": free_port()},
        "inbound": [
            {
                "name": f"source-{i}",
                "type": "http_poll",
                "interval": "60s",
                "url": f"http://127.0.0.1:{api_port}/api/source-{i}",
                "records": "data",
                "since": {"param": "updated_since", "field": "updated_at", "id": "id"},
                "emit": {"schema": "Customer", "key": "id", "map": {"customer_id": "id", "email": "email", "name": "name"}},
            }
            for i in range(sources)
        ],
    }


async def one(tree: Path, body: dict[str, Any], idle_s: float) -> dict[str, float]:
    """Start `bus run` from ``tree``'s code, time it to ready, then its idle CPU (and the broker's)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bus.yaml"
        path.write_text(yaml.safe_dump(body))
        env = {**os.environ, "PYTHONPATH": str(tree)}  # the tree's packages before the editable install's
        started = time.monotonic()
        command = ("-c", "from bus.app.cli import main; main()", "--log-level", "WARNING", "run", "-c", str(path))
        proc = await asyncio.create_subprocess_exec(sys.executable, *command, cwd=tree, env=env)
        try:
            await wait_ready(proc, f"http://127.0.0.1:{body['ops']['port']}/readyz", "the hub", seconds=120)
            ready_s = time.monotonic() - started
            await asyncio.sleep(3)  # the first polls and the groups' first heartbeats pass
            broker = children(proc.pid)
            hub0, broker0 = cpu_seconds(proc.pid), sum(cpu_seconds(p) for p in broker)
            await asyncio.sleep(idle_s)
            hub1, broker1 = cpu_seconds(proc.pid), sum(cpu_seconds(p) for p in broker)
        finally:
            proc.terminate()
            await proc.wait()
    per_s = 1000 / idle_s
    return {"ready_s": ready_s, "hub_cpu_ms_per_s": (hub1 - hub0) * per_s, "broker_cpu_ms_per_s": (broker1 - broker0) * per_s}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="a worktree of the code before leases")
    parser.add_argument("--sources", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle CPU measured per run")
    args = parser.parse_args()
    runner, port = await api()
    rounds: list[dict[str, dict[str, float]]] = []
    try:
        for n in range(args.rounds):
            found = {}
            for name, tree in (("before", args.before.resolve()), ("leases", HERE)):
                found[name] = await one(tree, config(args.sources, port), args.idle)
                print(f"round {n + 1} {name}: {found[name]}")
            rounds.append(found)
    finally:
        await runner.cleanup()
    summary = {
        name: {measure: statistics.median(r[name][measure] for r in rounds) for measure in rounds[0][name]} for name in ("before", "leases")
    }
    ratios = {measure: summary["leases"][measure] / summary["before"][measure] for measure in summary["before"]}
    print(f"medians: {summary}\nleases / before: {ratios}")
    write("lease_cost", {"sources": args.sources, "idle_s": args.idle, "rounds": rounds, "medians": summary, "ratios": ratios})


if __name__ == "__main__":
    asyncio.run(main())
