"""How long a lineage lookup takes as the index grows: the index topic filled with the entries
the router and two subscribers' delivery workers write for N events (written by the same code,
``bus.lineage.LineageBatch``, in batches of 500), then ``read_index`` for an id and for a key,
timed; against reading the whole index (what a lookup without hash partitioning would do).

    .venv/bin/python bench/lineage_lookup.py [--events 20000 100000] [--partitions 16]

On the embedded broker. Writes bench/results/lineage_lookup-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write
from bus.config.models import KafkaConfig
from bus.kafka.broker import EmbeddedBroker
from bus.kafka.clients import make_admin, make_producer
from bus.kafka.reader import read_topic
from bus.kafka.topics import TopicSpec, ensure_topics
from bus.lineage import LineageBatch, read_index


class _Copy:
    __slots__ = ("id_suffix", "route", "topic")

    def __init__(self, route: str, topic: str) -> None:
        self.route, self.topic, self.id_suffix = route, topic, None


async def fill(kafka: KafkaConfig, bootstrap: str, topic: str, partitions: int, events: int) -> int:
    producer = make_producer(kafka, bootstrap)
    await producer.start()
    batch = LineageBatch(topic, partitions)
    copies = [_Copy("all", "bench.deliver.erp"), _Copy("all", "bench.deliver.crm")]
    size = 0
    try:
        for start in range(0, events, 500):
            for i in range(start, min(start + 500, events)):
                event_id = f"evt-{i:08d}"
                batch.routed(
                    [("ce_id", event_id.encode())], f"cust-{i % 5000}".encode(), f"bench.canonical.Payment/0/{i}", batch.copies(copies)
                )
                for subscriber in ("erp", "crm"):
                    batch.settled(event_id, "2026-12-03T00:00:00.000Z", subscriber, f"bench.deliver.{subscriber}/0/{i}", True, 1, [], None)
            records = batch.take("2026-12-03T00:00:00.000Z")
            size += sum(len(r.value or b"") for r in records)
            await asyncio.gather(*[await producer.send(r.topic, r.value, partition=r.partition) for r in records])
    finally:
        await producer.stop()
    return size


async def timed(what: object) -> float:
    started = time.perf_counter()
    await what  # type: ignore[misc]
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--partitions", type=int, default=16)
    args = parser.parse_args()
    rows = []
    async with EmbeddedBroker() as broker:
        kafka = KafkaConfig(bootstrap=broker.bootstrap)
        for n, events in enumerate(args.events):
            topic = f"bench{n}._lineage"
            admin = make_admin(kafka, broker.bootstrap)
            await admin.start()
            await ensure_topics(admin, [TopicSpec(topic, args.partitions)])
            await admin.close()
            size = await fill(kafka, broker.bootstrap, topic, args.partitions, events)
            by_id = await timed(read_index(kafka, broker.bootstrap, topic, [f"evt-{events // 2:08d}"]))
            by_key = await timed(read_index(kafka, broker.bootstrap, topic, ["cust-42"]))
            whole = await timed(read_topic(kafka, broker.bootstrap, topic))
            row = {"events": events, "index_bytes": size, "lookup_by_id_s": by_id, "lookup_by_key_s": by_key, "read_whole_index_s": whole}
            rows.append(row)
            print(
                f"{events:>8} events, index {size / 1e6:.1f} MB: lookup by id {by_id * 1000:.0f} ms, by key {by_key * 1000:.0f} ms; "
                f"reading the whole index {whole * 1000:.0f} ms"
            )
    write("lineage_lookup", {"partitions": args.partitions, "rows": rows})


if __name__ == "__main__":
    asyncio.run(main())
