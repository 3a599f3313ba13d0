"""The headline: what a webhook-to-target event costs, through the whole hub (`bus run`, all roles
in one process, on its embedded broker), against the bare pipeline with the same hops.

    .venv/bin/python bench/latency.py [--rounds 3] [--seconds 8] [--loads 500,1000]
                                      [--pipelines raw,hub,hub-gc-default,hub-lineage-off] [--p99-limit-ms 250]

Per pipeline and load: CPU-us per event (the pipeline's process; its broker apart), p50/p95/p99
from the webhook POST to the target's receipt, and, after the fixed loads, the highest load it
holds with p99 under the limit (raised in steps of 250/s). Pipelines:

- ``raw``: the baseline (bench/raw_pipeline.py), the same three hops in plain aiokafka and raw
  sockets on its own embedded broker with the same Kafka settings: what this machine allows;
- ``hub``: `bus run` as shipped;
- ``hub-gc-default``: `bus run` with BUS_GC=default (Python's collector settings), to show what
  the collector tuning (bus/runtime/collector.py) gains;
- ``hub-lineage-off``: `bus run` with ``lineage: {enabled: false}``, to show what recording every
  event's path (the index behind ``GET /api/v1/events/{id}``) costs end to end.

Rounds interleave the pipelines (the order rotates each round), so a slower spell of the shared
machine hits them all; every figure is reported as a ratio to ``raw`` from the same round, as a
median with the spread over rounds. Open loop: request i is due at start + i/rate and its
latency counts from when it was *due*, so a pipeline that falls behind shows it (no coordinated
omission). Writes bench/results/latency-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import children, cpu_seconds, wait_ready, write
from bench.loadgen import RawSender, RawTarget
from bus.ports import free_port


def hub_config(target_port: int, http_port: int, ops_port: int, kafka: dict[str, Any]) -> dict[str, Any]:
    return {
        "kafka": {"bootstrap": "embedded", "partitions": 4, "session_timeout_ms": 3000, **kafka},
        "schema_registry": {"url": "embedded"},
        "http": {"host": "127.0.0.1", "port": http_port},
        "ops": {"host": "127.0.0.1", "port": ops_port},
        "inbound": [
            {
                "name": "payments",
                "type": "http_webhook",
                "path": "/hooks/payments",
                "emit": {
                    "schema": "Payment",
                    "id": "id",
                    "key": "data.id",
                    "map": {"payment_id": "data.id", "amount": "data.amount", "currency": "data.currency", "status": "data.status"},
                },
            }
        ],
        "routes": [{"name": "all", "from": "Payment", "to": ["target"]}],
        "outbound": [{"name": "target", "type": "http", "url": f"http://127.0.0.1:{target_port}/in", "delivery": {"concurrency": 32}}],
    }


async def offer(sender: RawSender, rate: int, seconds: float, prefix: str) -> tuple[dict[str, float], list[float], int]:
    """Send rate*seconds webhooks on schedule; returns the due time per event id, and how long
    each webhook took to be answered 202 (the hub answers once Kafka has the event), and how many
    were refused (a hub that cannot store events in time answers 503: it fell behind)."""
    due: dict[str, float] = {}
    answered: list[float] = []
    refused: list[str] = []
    tasks: list[asyncio.Task[None]] = []
    n = int(rate * seconds)

    async def post(event_id: str, i: int) -> None:
        body = {"id": event_id, "data": {"id": f"pi_{i}", "amount": 1000 + i, "currency": "usd", "status": "succeeded"}}
        status, answer = await sender.post(json.dumps(body).encode())
        if status == 503:
            refused.append(event_id)  # not taken, so not expected at the target
            return
        if status != 202:
            raise RuntimeError(f"webhook answered {status}: {answer[:200]!r}")
        answered.append(time.perf_counter() - due[event_id])

    start = time.perf_counter() + 0.05
    for i in range(n):
        when = start + i / rate
        delay = when - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        event_id = f"{prefix}-{i}"
        due[event_id] = when
        tasks.append(asyncio.create_task(post(event_id, i)))
    await asyncio.gather(*tasks)
    for event_id in refused:
        del due[event_id]
    return due, answered, len(refused)


async def idle_cpu(cpu: CpuProbe, seconds: float) -> float:
    """CPU the pipeline's process uses per second with no traffic (its background work: fetches,
    heartbeats, sweeps), after a second for the warm-up's last deliveries to settle."""
    await asyncio.sleep(1.0)
    before = cpu.read()[0]
    await asyncio.sleep(seconds)
    return (cpu.read()[0] - before) / seconds * 1000


def percentiles(latencies: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50_ms": cuts[49] * 1000, "p95_ms": cuts[94] * 1000, "p99_ms": cuts[98] * 1000, "max_ms": max(latencies) * 1000}


class CpuProbe:
    """CPU seconds used by the pipeline's process and by its embedded broker (its child)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        brokers = children(pid)
        self.broker = brokers[0] if len(brokers) == 1 else None

    def read(self) -> tuple[float, float]:
        return cpu_seconds(self.pid), cpu_seconds(self.broker) if self.broker is not None else float("nan")


async def run_load(sender: RawSender, target: RawTarget, rate: int, seconds: float, cpu: CpuProbe) -> dict[str, Any]:
    prefix = f"r{rate}-{time.monotonic_ns()}"
    before = cpu.read()
    due, answered, refused = await offer(sender, rate, seconds, prefix)
    deadline = time.perf_counter() + 30
    while any(k not in target.arrived for k in due) and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    missing = [k for k in due if k not in target.arrived]
    after = cpu.read()
    # CPU per event is steadier than latency on a shared machine: it does not depend on who else ran.
    per_event = {
        "pipeline_cpu_us_per_event": (after[0] - before[0]) / max(1, len(due)) * 1e6,
        "broker_cpu_us_per_event": (after[1] - before[1]) / max(1, len(due)) * 1e6,
    }
    latencies = [target.arrived[k] - t for k, t in due.items() if k in target.arrived]
    accepted = {f"accepted_{k}": v for k, v in percentiles(answered).items()}
    # A refused webhook is an event the pipeline could not take: the load did not hold.
    return {
        "offered_per_s": rate,
        "events": len(due),
        "missing": len(missing) + refused,
        "refused": refused,
        **percentiles(latencies),
        **accepted,
        **per_event,
    }


PIPELINES = ("raw", "hub", "hub-gc-default", "hub-lineage-off")


async def measure(pipeline: str, args: argparse.Namespace, kafka: dict[str, Any]) -> dict[str, Any]:
    """Start one pipeline as a process, offer every load, search for the highest load under the p99 limit."""
    target = RawTarget()
    await target.start()
    http_port, ops_port = free_port(), free_port()
    sender = RawSender("127.0.0.1", http_port, "/hooks/payments")
    limit = args.p99_limit_ms
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ}
        if pipeline.startswith("hub"):
            config = Path(folder) / "bus.yaml"
            document = hub_config(target.port, http_port, ops_port, kafka)
            if pipeline == "hub-lineage-off":
                document["lineage"] = {"enabled": False}
            config.write_text(yaml.safe_dump(document))
            command = [str(Path(sys.executable).with_name("bus")), "--log-level", "WARNING", "run", "-c", str(config)]
            ready_url = f"http://127.0.0.1:{ops_port}/readyz"
            env["BUS_GC"] = "default" if pipeline == "hub-gc-default" else "tuned"
        else:
            command = [sys.executable, str(Path(__file__).with_name("raw_pipeline.py")), "--http-port", str(http_port)]
            command += ["--target-port", str(target.port), "--partitions", str(kafka.get("partitions", 4))]
            flags = {"fetch_max_wait_ms": "--fetch-wait-ms", "linger_ms": "--linger-ms"}
            command += [f"{flags[k]}={v}" for k, v in kafka.items() if k in flags]
            ready_url = f"http://127.0.0.1:{http_port}/readyz"
        process = await asyncio.create_subprocess_exec(*command, env=env)
        try:
            await wait_ready(process, ready_url, pipeline)
            cpu = CpuProbe(process.pid)
            await run_load(sender, target, 200, 3, cpu)  # warm-up: connections, group joins, code paths
            idle = await idle_cpu(cpu, args.idle_seconds)
            print(f"{pipeline}: idle, {idle:.1f} ms of CPU per second", flush=True)
            rows = []
            for rate in [int(x) for x in args.loads.split(",")]:
                rows.append(await run_load(sender, target, rate, args.seconds, cpu))
                print(_row(pipeline, rows[-1]), flush=True)
            # Search upwards from the highest fixed load that held p99 under the limit, in steps of 250.
            best = max([r["offered_per_s"] for r in rows if r["p99_ms"] < limit and not r["missing"]], default=None)
            rate = (best or 0) + 250
            while rate <= args.search_limit and not any(r["offered_per_s"] == rate for r in rows):
                row = await run_load(sender, target, rate, args.seconds, cpu)
                print(_row(pipeline, row), flush=True)
                rows.append(row)
                if row["p99_ms"] >= limit or row["missing"]:
                    break
                rate += 250
            held = max([r["offered_per_s"] for r in rows if r["p99_ms"] < limit and not r["missing"]], default=None)
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            await process.wait()
            await sender.close()
            await target.stop()
    print(f"{pipeline}: highest offered load with p99 < {limit:.0f} ms: {held}/s\n", flush=True)
    return {"loads": rows, "highest_load_held": held, "idle_cpu_ms_per_s": idle}


def spread(values: list[float]) -> str:
    """Median and range over rounds: '1.42 (1.31 to 1.55)'."""
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} ({min(values):.2f} to {max(values):.2f})"


def summarise(rounds: list[dict[str, dict[str, Any]]], loads: list[int]) -> dict[str, Any]:
    """Every pipeline against raw, per round, then median and spread over rounds."""
    summary: dict[str, Any] = {}
    for pipeline in rounds[0]:
        entry: dict[str, Any] = {
            "highest_load_held": [r[pipeline]["highest_load_held"] for r in rounds],
            "idle_cpu_ms_per_s": [r[pipeline]["idle_cpu_ms_per_s"] for r in rounds],
        }
        for rate in loads:
            rows = [next(x for x in r[pipeline]["loads"] if x["offered_per_s"] == rate) for r in rounds]
            entry[f"cpu_us_per_event_at_{rate}"] = [x["pipeline_cpu_us_per_event"] for x in rows]
            entry[f"p99_ms_at_{rate}"] = [x["p99_ms"] for x in rows]
            if pipeline != "raw" and "raw" in rounds[0]:
                raws = [next(x for x in r["raw"]["loads"] if x["offered_per_s"] == rate) for r in rounds]
                ratios = [x["pipeline_cpu_us_per_event"] / b["pipeline_cpu_us_per_event"] for x, b in zip(rows, raws, strict=True)]
                entry[f"cpu_ratio_to_raw_at_{rate}"] = ratios
        summary[pipeline] = entry
    print("\nsummary over", len(rounds), "round(s): median (range)")
    for pipeline in rounds[0]:
        entry = summary[pipeline]
        held = [h for h in entry["highest_load_held"] if h is not None]
        print(f"  {pipeline}: holds {spread([float(h) for h in held])}/s with p99 under the limit")
        print(f"    idle: {spread(entry['idle_cpu_ms_per_s'])} ms of CPU per second")
        for rate in loads:
            line = f"    {rate:>5}/s  CPU-us per event {spread(entry[f'cpu_us_per_event_at_{rate}'])}"
            line += f"  p99 ms {spread(entry[f'p99_ms_at_{rate}'])}"
            if f"cpu_ratio_to_raw_at_{rate}" in entry:
                line += f"  CPU / raw {spread(entry[f'cpu_ratio_to_raw_at_{rate}'])}"
            print(line)
    return summary


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--loads", default="500,1000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="how long each pipeline's idle CPU is measured")
    parser.add_argument("--p99-limit-ms", type=float, default=250.0, help="the p99 a load must stay under to count as held")
    parser.add_argument("--search-limit", type=int, default=6000, help="highest load the search tries")
    parser.add_argument("--pipelines", default="raw,hub", help=f"comma-separated, from {', '.join(PIPELINES)}")
    parser.add_argument("--fetch-wait-ms", type=int, default=None, help="kafka.fetch_max_wait_ms (default: the hub's)")
    parser.add_argument("--linger-ms", type=int, default=None, help="kafka.linger_ms (default: the hub's)")
    parser.add_argument("--partitions", type=int, default=None, help="kafka.partitions (default 4)")
    args = parser.parse_args()
    pipelines = args.pipelines.split(",")
    if unknown := set(pipelines) - set(PIPELINES):
        parser.error(f"unknown pipeline(s) {', '.join(sorted(unknown))}")
    kafka = {
        k: v
        for k, v in {"fetch_max_wait_ms": args.fetch_wait_ms, "linger_ms": args.linger_ms, "partitions": args.partitions}.items()
        if v is not None
    }
    rounds: list[dict[str, dict[str, Any]]] = []
    for n in range(args.rounds):
        order = pipelines[n % len(pipelines) :] + pipelines[: n % len(pipelines)]
        print(f"round {n + 1}/{args.rounds}: {', '.join(order)}", flush=True)
        measured = {p: await measure(p, args, kafka) for p in order}
        rounds.append({p: measured[p] for p in pipelines})
    loads = [int(x) for x in args.loads.split(",")]
    summary = summarise(rounds, loads)
    settings = {"seconds_per_load": args.seconds, "p99_limit_ms": args.p99_limit_ms, "kafka": kafka}
    write("latency", {**settings, "rounds": rounds, "summary": summary})


def _row(pipeline: str, row: dict[str, Any]) -> str:
    return (
        f"{pipeline:>4} {row['offered_per_s']:>6}/s  p50 {row['p50_ms']:7.1f} ms  p95 {row['p95_ms']:7.1f} ms  "
        f"p99 {row['p99_ms']:7.1f} ms  max {row['max_ms']:7.1f} ms  missing {row['missing']} (refused {row['refused']})"
        f"  (webhook answered: p50 {row['accepted_p50_ms']:.1f} ms, p99 {row['accepted_p99_ms']:.1f} ms)"
        f"  CPU us/event: {pipeline} {row['pipeline_cpu_us_per_event']:.0f}, broker {row['broker_cpu_us_per_event']:.0f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
