"""Producing in batches per partition: keys land where aiokafka's own partitioner (murmur2, as the
Java client) puts them, from the batch sender and from the hub's producer alike; order per
partition is the order given, and a batch that fills up rolls over into the next without losing
or reordering a record."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bus.config.models import KafkaConfig
from bus.kafka.batches import BatchSender, Record
from bus.kafka.clients import make_admin, make_producer
from bus.kafka.topics import TopicSpec, ensure_topics
from tests.support.hub import unique_prefix


async def read_all(bootstrap: str, topic: str, partitions: int, count: int) -> dict[int, list[tuple[bytes | None, bytes | None]]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found: dict[int, list[tuple[bytes | None, bytes | None]]] = {p: [] for p in range(partitions)}
        while sum(len(v) for v in found.values()) < count:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                found[tp.partition].extend((r.key, r.value) for r in records)
        return found
    finally:
        await consumer.stop()


async def test_keys_land_where_the_default_partitioner_puts_them_in_order(bootstrap: str) -> None:
    prefix = unique_prefix()
    ours, sent, theirs = f"{prefix}.ours", f"{prefix}.sent", f"{prefix}.theirs"
    kafka = KafkaConfig(bootstrap=bootstrap)
    admin = make_admin(kafka, bootstrap)
    await admin.start()
    try:
        await ensure_topics(admin, [TopicSpec(ours, 5, 1), TopicSpec(sent, 5, 1), TopicSpec(theirs, 5, 1)])
    finally:
        await admin.close()
    # A small max batch size: 300 records need many batches per partition.
    producer = make_producer(kafka, bootstrap, max_batch_size=512)
    await producer.start()
    try:
        records = [Record(ours, f"key-{i % 37}".encode(), f"{i}".encode(), [("n", str(i).encode())]) for i in range(300)]
        records.append(Record(ours, b"pinned", b"to-3", [], partition=3))
        futures = await BatchSender(producer).send_all(records)
        assert len(futures) > 5  # rolled over into several batches
        for future in futures:
            await future
        for i in range(300):  # the hub's producer on its own (bus.kafka.partitioner)
            await producer.send_and_wait(sent, f"{i}".encode(), key=f"key-{i % 37}".encode())
    finally:
        await producer.stop()
    plain = AIOKafkaProducer(bootstrap_servers=bootstrap)  # aiokafka's default partitioner: the reference
    await plain.start()
    try:
        for i in range(300):
            await plain.send_and_wait(theirs, f"{i}".encode(), key=f"key-{i % 37}".encode())
    finally:
        await plain.stop()
    mine = await read_all(bootstrap, ours, 5, 301)
    by_send = await read_all(bootstrap, sent, 5, 300)
    reference = await read_all(bootstrap, theirs, 5, 300)
    assert (b"pinned", b"to-3") in mine[3]
    for partition in range(5):
        keyed = [r for r in mine[partition] if r[0] != b"pinned"]
        assert keyed == reference[partition]  # same partition per key, and the same order within it
        assert by_send[partition] == reference[partition]
    assert sum(len(v) for v in reference.values()) == 300
