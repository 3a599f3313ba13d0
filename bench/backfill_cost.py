"""What `bus backfill` costs against a plain copy script, in the same run.

N Payment events (Avro, as an inbound adapter publishes them, ``--keys`` keys) on a 3-partition
canonical topic of the embedded broker, all routed (the router group's offsets committed at the
end), and a subscriber ``crm`` that joined later with one route (a condition every event meets and
a transform). Two ways to give it the history, interleaved over rounds, each onto a fresh hub
prefix:

- ``script``: read each canonical partition from the start and produce every record to the
  subscriber's delivery topic as it is (aiokafka, the same batching): what an operator's one-off
  script does, with no route run and nothing checked;
- ``backfill``: ``bus.app.backfill.Backfiller`` (the router's position and the delivery topic
  read, every record routed by the Dispatcher twice (to choose, then to write), superseded and
  delivered events looked for; here none are).

Reported: seconds and events/s of each per round, the ratio backfill / script of the rates, and
the backfill's dry run alone.

    .venv/bin/python bench/backfill_cost.py [--events 30000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write
from bus.app.backfill import Backfiller
from bus.codec import Codec
from bus.config.models import KafkaConfig
from bus.config.routes import RouteConfig, RouterConfig
from bus.event import Event
from bus.kafka.broker import EmbeddedBroker
from bus.kafka.topics import TopicNames
from schemas.catalog import SchemaCatalog

PARTITIONS = 3
ROUTE = {
    "name": "to-crm",
    "from": "Payment",
    "when": 'amount >= 0 and currency != "xxx"',
    "transform": {
        "map": {"payment_id": "payment_id", "amount": "amount * 100", "currency": "upper(currency)", "customer_id": "customer_id"}
    },
    "to": ["crm"],
}


def codec() -> Codec:
    made = Codec()
    catalog = SchemaCatalog.load()
    for number, name in enumerate(catalog.names(), start=1):
        made.add(name, number, catalog.get(name).parsed)
    return made


async def fill(bootstrap: str, names: TopicNames, events: int, keys: int, with_codec: Codec) -> None:
    """The canonical Payment topic with ``events`` events, all routed (the router group's offsets
    committed), and the subscriber's empty delivery topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in (names.canonical("Payment"), names.delivery("crm"))])
    finally:
        await admin.close()
    topic = names.canonical("Payment")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        sent = []
        for i in range(events):
            key = f"pi_{i % keys}"
            data = {"payment_id": key, "amount": i, "currency": "usd", "customer_id": f"cus_{i % 97}"}
            event = Event(schema="Payment", data=data, source="/bench", key=key, id=f"evt_{i}", type="Payment")
            value = with_codec.encode("Payment", data)
            sent.append(await producer.send(topic, value, key=key.encode(), headers=event.headers()))
        ends: dict[TopicPartition, int] = {}
        for future in sent:
            landed = await future
            tp = TopicPartition(topic, landed.partition)
            ends[tp] = max(ends.get(tp, 0), landed.offset + 1)
    finally:
        await producer.stop()
    group = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=f"{names.prefix}-router", enable_auto_commit=False)
    await group.start()
    try:
        group.assign(list(ends))
        await group.commit(ends)  # the embedded broker's end offsets can be too low: where the sends landed
    finally:
        await group.stop()


async def script(bootstrap: str, names: TopicNames) -> int:
    """Read every canonical partition to its end and produce each record to the delivery topic."""
    source, target = names.canonical("Payment"), names.delivery("crm")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await consumer.start()
    await producer.start()
    copied = 0
    try:
        for partition in range(PARTITIONS):
            tp = TopicPartition(source, partition)
            consumer.assign([tp])
            consumer.seek(tp, 0)
            pending, end = [], None
            while end is None or await consumer.position(tp) < end:
                batch = (await consumer.getmany(tp, timeout_ms=500)).get(tp, [])
                end = consumer.highwater(tp) if end is None else end
                for r in batch:
                    pending.append(await producer.send(target, r.value, key=r.key, headers=list(r.headers)))
                if len(pending) >= 1000:
                    for future in pending:
                        await future
                    copied += len(pending)
                    pending = []
            for future in pending:
                await future
            copied += len(pending)
    finally:
        await consumer.stop()
        await producer.stop()
    return copied


async def one_round(broker: EmbeddedBroker, events: int, keys: int, since: datetime) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for way in ("script", "backfill"):
        names = TopicNames(f"b{way}{time.monotonic_ns()}")
        made = codec()
        await fill(broker.bootstrap, names, events, keys, made)
        start = time.perf_counter()
        if way == "script":
            copied = await script(broker.bootstrap, names)
        else:
            kafka = KafkaConfig(bootstrap=broker.bootstrap, topic_prefix=names.prefix, partitions=PARTITIONS)
            backfiller = Backfiller(
                kafka, broker.bootstrap, names, routes=[RouteConfig.model_validate(ROUTE)], router=RouterConfig(),
                codec=made, tables={}, table_configs=[],
            )  # fmt: skip
            dry_start = time.perf_counter()
            dry = await backfiller.backfill("crm", since, dry_run=True)
            assert dry.to_send == events, dry
            found["dry_run_s"] = time.perf_counter() - dry_start
            start = time.perf_counter()
            copied = (await backfiller.backfill("crm", since)).sent
        seconds = time.perf_counter() - start
        assert copied == events, (way, copied)
        found[way] = {"seconds": seconds, "events_per_s": events / seconds}
    found["ratio"] = found["backfill"]["events_per_s"] / found["script"]["events_per_s"]
    return found


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--keys", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    since = datetime.now(UTC) - timedelta(seconds=1)
    async with EmbeddedBroker() as broker:
        rounds = []
        for number in range(args.rounds):
            found = await one_round(broker, args.events, args.keys, since)
            rounds.append(found)
            print(
                f"round {number + 1}: script {found['script']['events_per_s']:,.0f}/s, backfill "
                f"{found['backfill']['events_per_s']:,.0f}/s (dry run {found['dry_run_s']:.2f} s), ratio {found['ratio']:.2f}"
            )
    ratios = [r["ratio"] for r in rounds]
    print(f"backfill / script: median {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")
    path = write("backfill_cost", {"events": args.events, "keys": args.keys, "rounds": rounds})
    print(f"written to {path}")


if __name__ == "__main__":
    asyncio.run(main())
