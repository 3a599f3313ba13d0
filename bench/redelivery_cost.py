"""What `bus redeliver` costs against a plain copy script, in the same run.

N events (400 bytes, ``--keys`` keys) on a 3-partition delivery topic of the embedded broker, all
settled (the delivery group's offsets committed at the end). Two ways to send them all again,
interleaved over rounds, each onto a fresh copy of the topic:

- ``script``: read each partition from the start and produce every record again to its partition
  (aiokafka, the same batching): what an operator's one-off script does, with nothing checked;
- ``redeliver``: ``bus.redelivery.Redeliverer`` (the dead letters and the committed offsets read,
  every record read twice, superseded events and earlier copies left out; here none are).

Reported: seconds and events/s of each per round, the ratio redeliver / script of the rates, and
the redeliver's dry run alone.

    .venv/bin/python bench/redelivery_cost.py [--events 100000] [--rounds 3]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write
from bus.config.models import KafkaConfig
from bus.kafka.broker import EmbeddedBroker
from bus.kafka.topics import TopicNames
from bus.redelivery import Redeliverer

PARTITIONS = 3


async def fill(bootstrap: str, names: TopicNames, events: int, keys: int) -> None:
    """The delivery topic of ``erp`` with ``events`` events, all committed by its delivery group."""
    topic = names.delivery("erp")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        sent = [
            await producer.send(topic, b"x" * 400, key=b"k%d" % (i % keys), partition=i % PARTITIONS, headers=[("ce_id", b"e%d" % i)])
            for i in range(events)
        ]
        for future in sent:
            await future
    finally:
        await producer.stop()
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    group = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=names.delivery_group("erp"), enable_auto_commit=False)
    await group.start()
    try:
        group.assign(tps)
        ends = {tp: (events - tp.partition + PARTITIONS - 1) // PARTITIONS for tp in tps}
        await group.commit(ends)
    finally:
        await group.stop()


async def script(bootstrap: str, names: TopicNames) -> int:
    """Read every partition to its end and produce each record again: nothing checked."""
    topic = names.delivery("erp")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await consumer.start()
    await producer.start()
    copied = 0
    try:
        for partition in range(PARTITIONS):
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, 0)
            pending, end = [], None  # the end as it was at the first fetch: the copies land after it
            while end is None or await consumer.position(tp) < end:
                batch = (await consumer.getmany(tp, timeout_ms=500)).get(tp, [])
                end = consumer.highwater(tp) if end is None else end
                for r in batch:
                    if end is not None and r.offset >= end:
                        break
                    pending.append(await producer.send(topic, r.value, key=r.key, partition=partition, headers=list(r.headers)))
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
    for way in ("script", "redeliver"):
        names = TopicNames(f"b{way}{time.monotonic_ns()}")
        await fill(broker.bootstrap, names, events, keys)
        start = time.perf_counter()
        if way == "script":
            copied = await script(broker.bootstrap, names)
        else:
            redeliverer = Redeliverer(KafkaConfig(bootstrap=broker.bootstrap, topic_prefix=names.prefix), broker.bootstrap, names)
            dry_start = time.perf_counter()
            await redeliverer.redeliver("erp", since, dry_run=True)
            found["dry_run_s"] = time.perf_counter() - dry_start
            start = time.perf_counter()
            copied = (await redeliverer.redeliver("erp", since, include_superseded=True)).sent
        seconds = time.perf_counter() - start
        assert copied == events, (way, copied)
        found[way] = {"seconds": seconds, "events_per_s": events / seconds}
    found["ratio"] = found["redeliver"]["events_per_s"] / found["script"]["events_per_s"]
    return found


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    since = datetime.now(UTC) - timedelta(seconds=1)
    async with EmbeddedBroker() as broker:
        rounds = []
        for number in range(args.rounds):
            found = await one_round(broker, args.events, args.keys, since)
            rounds.append(found)
            print(
                f"round {number + 1}: script {found['script']['events_per_s']:,.0f}/s, redeliver "
                f"{found['redeliver']['events_per_s']:,.0f}/s (dry run {found['dry_run_s']:.2f} s), ratio {found['ratio']:.2f}"
            )
    ratios = [r["ratio"] for r in rounds]
    print(f"redeliver / script: median {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")
    path = write("redelivery_cost", {"events": args.events, "keys": args.keys, "rounds": rounds})
    print(f"written to {path}")


if __name__ == "__main__":
    asyncio.run(main())
