"""Replaying a topic from its start (bus.kafka.reader): every record up to the end, in order per
partition, whether it came one at a time or in one produce batch; the kept reader follows on from
there; and an empty topic is done without waiting out a fetch (the embedded broker answers a fetch
with no records only when its fetch_max_wait_ms ends)."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from bus.config.models import KafkaConfig
from bus.kafka.clients import make_admin, make_producer
from bus.kafka.reader import read_topics, replay_and_keep
from bus.kafka.topics import TopicSpec, ensure_topics
from tests.support.hub import unique_prefix

# Far longer than a replay may take: one that waited out an empty fetch would time out.
QUIET_WAIT_MS = 30_000


async def test_a_replay_reads_to_the_end_without_waiting_on_quiet_partitions_and_follows_on(bootstrap: str) -> None:
    kafka = KafkaConfig(bootstrap=bootstrap)
    topic, empty = f"{unique_prefix()}.state", f"{unique_prefix()}.empty"
    admin = make_admin(kafka, bootstrap)
    await admin.start()
    try:
        await ensure_topics(admin, [TopicSpec(topic, 3, 1), TopicSpec(empty, 1, 1)])
    finally:
        await admin.close()
    producer = make_producer(kafka, bootstrap)
    await producer.start()
    try:
        # Partition 0 gets its records one produce at a time, partition 1 in one batch (the embedded
        # broker's latest offset is then far too low: the end must come from the fetches), and
        # partition 2 stays empty.
        # More records in that batch than a reader takes per getmany (500): a reader that trusted
        # the latest offset would stop inside it.
        for i in range(0, 30, 2):
            await producer.send_and_wait(topic, f"v{i}".encode(), partition=0)
        await asyncio.gather(*[await producer.send(topic, f"w{i}".encode(), partition=1) for i in range(600)])
        seen: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
        partitions = [TopicPartition(topic, p) for p in range(3)]

        def apply(tp: TopicPartition, records: list) -> None:  # type: ignore[type-arg]
            seen[tp.partition].extend(r.value for r in records)

        reader = await replay_and_keep(kafka, bootstrap, partitions, apply, fetch_max_wait_ms=100)
        try:
            assert seen == {0: [f"v{i}".encode() for i in range(0, 30, 2)], 1: [f"w{i}".encode() for i in range(600)], 2: []}
            # The reader stays at the ends and follows: a record written now is the next it reads.
            await producer.send_and_wait(topic, b"later", partition=2)
            async with asyncio.timeout(10):
                batch: dict = {}  # type: ignore[type-arg]
                while not batch:
                    batch = await reader.getmany(timeout_ms=1000)
            assert {tp.partition: [r.value for r in records] for tp, records in batch.items()} == {2: [b"later"]}
        finally:
            await reader.stop()

        # A topic with nothing in it: done at once, although a fetch there would wait 30 s.
        async with asyncio.timeout(10):
            quiet = await replay_and_keep(kafka, bootstrap, [TopicPartition(empty, 0)], apply, fetch_max_wait_ms=QUIET_WAIT_MS)
        await quiet.stop()
        found = await read_topics(kafka, bootstrap, [topic, empty, f"{topic}.missing"])
        assert [r.value for r in found[topic]] == [*seen[0], *seen[1], b"later"]  # partition by partition
        assert found[empty] == [] and found[f"{topic}.missing"] == []
    finally:
        await producer.stop()
