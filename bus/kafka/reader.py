"""Read partitions to their end: state topics (registry, tables, aggregates, ledger) and audits.

"The end" is the high watermark reported by fetch responses: the embedded broker's ListOffsets
answers too low (docs/embedded-broker.md), so ``end_offsets()`` cannot be trusted. One loop here, used by
every reader, so that workaround lives in one place.
"""

from __future__ import annotations

__all__ = [
    "batches_from_start",
    "read_from_start",
    "read_topic",
    "read_topics",
    "replay",
    "replay_and_keep",
    "stream_topics",
    "until_kafka_answers",
]

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from bus.config.models import KafkaConfig
from bus.errors import RetryableError
from bus.kafka.clients import make_consumer, stop_consumer

Record = Any  # aiokafka's ConsumerRecord (aiokafka ships no type information)
T = TypeVar("T")
log = logging.getLogger("bus.kafka.reader")


async def read_from_start(
    consumer: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    apply: Callable[[TopicPartition, list[Record]], None],
    *,
    timeout_s: float = 120.0,
) -> None:
    """Assign ``partitions`` to ``consumer`` (started, in no group) and fetch them from their start
    to their end, batch by batch; the consumer stays at the end.

    The end is the high watermark of the fetch answers, as above. ListOffsets is asked only
    whether a partition holds anything at all: the embedded broker's too-low latest offset is the
    last produce batch's base offset + 1, still above the start whenever a record is there. An
    empty partition is then done without a fetch, which on a quiet topic is answered only when its
    ``fetch_max_wait_ms`` ends (the control topic's reader waits 500 ms: every start waited for it).
    Both offsets are asked for before the partitions are assigned: a consumer with a fetch in
    flight has its other requests answered after that fetch."""
    async for tp, records in batches_from_start(consumer, partitions, timeout_s=timeout_s):
        apply(tp, records)


async def batches_from_start(
    consumer: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    *,
    timeout_s: float = 120.0,
    after: dict[TopicPartition, int] | None = None,
) -> AsyncGenerator[tuple[TopicPartition, list[Record]], None]:
    """``read_from_start`` as the batches come, for a reader that keeps only what it needs of
    each (a topic of any size read in bounded memory). ``after``: a partition's offset to read
    after instead of its start (records at it or before are not read, where there are still any).
    ``timeout_s``: how long the read may go without a record before it is given up."""
    beginnings = await consumer.beginning_offsets(partitions)
    starts = {tp: max(beginnings[tp], after[tp] + 1) if after and tp in after else beginnings[tp] for tp in partitions}
    latest = await consumer.end_offsets(partitions)
    consumer.assign(partitions)  # the fetcher starts with the next turn of the loop: positions first
    for tp in partitions:
        consumer.seek(tp, starts[tp])
    # Against the partition's own start, not ``after``: the embedded broker's latest offset can be
    # below records that are there (above), so only an empty partition is known to hold nothing.
    pending = {tp for tp in partitions if latest[tp] > beginnings[tp]}
    deadline = time.monotonic() + timeout_s
    while pending:
        batches = await consumer.getmany(*pending, timeout_ms=200)
        if batches:  # the bound is on a read that stalls, not on one that is long (a day of a topic)
            deadline = time.monotonic() + timeout_s
        for tp, records in batches.items():
            yield tp, records
        for tp in list(pending):
            highwater = consumer.highwater(tp)
            if highwater is not None and await consumer.position(tp) >= highwater:
                pending.discard(tp)
        if pending and time.monotonic() > deadline:
            names = ", ".join(sorted(f"{tp.topic}/{tp.partition}" for tp in pending))
            raise RetryableError(f"could not read {names} to the end: nothing came for {timeout_s:.0f}s")


async def replay_and_keep(
    kafka: KafkaConfig,
    bootstrap: str,
    partitions: list[TopicPartition],
    apply: Callable[[TopicPartition, list[Record]], None],
    *,
    timeout_s: float = 120.0,
    fetch_max_wait_ms: int | None = None,
) -> AIOKafkaConsumer:
    """Replay ``partitions`` from their start to their end into ``apply``, with a reader in no
    group, and return that reader still open (to follow the partitions on). ``fetch_max_wait_ms``:
    for a reader that follows a quiet topic, how long each of its fetches may wait for data
    (aiokafka keeps one fetch in flight all the time, and each costs CPU when it returns empty)."""
    overrides = {} if fetch_max_wait_ms is None else {"fetch_max_wait_ms": fetch_max_wait_ms}
    consumer = make_consumer(kafka, bootstrap, group_id=None, **overrides)
    try:
        await consumer.start()
        if partitions:
            await read_from_start(consumer, partitions, apply, timeout_s=timeout_s)
    except BaseException:
        await stop_consumer(consumer)
        raise
    return consumer


async def replay(
    kafka: KafkaConfig,
    bootstrap: str,
    partitions: list[TopicPartition],
    apply: Callable[[TopicPartition, list[Record]], None],
    *,
    timeout_s: float = 120.0,
) -> None:
    """Replay ``partitions`` from their start to their end into ``apply``: state topics (the
    ledger, tables, aggregator state, the registry) rebuilt in memory."""
    if partitions:
        consumer = await replay_and_keep(kafka, bootstrap, partitions, apply, timeout_s=timeout_s)
        await stop_consumer(consumer)


async def until_kafka_answers(what: str, attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt()`` until Kafka answers it, logged at WARNING each time it cannot (backing off to
    5 s). For state that must be read before work can go on (a partition's ledger or aggregator
    state on assignment): giving up would leave the partition owned and never worked on."""
    delay = 0.5
    while True:
        try:
            return await attempt()
        except (KafkaError, RetryableError, OSError) as exc:
            log.warning("%s: Kafka does not answer yet (%r); trying again in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer._client.force_metadata_update()  # aiokafka has no public way to wait for one topic's metadata
        partitions = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(partitions)]


async def read_topic(kafka: KafkaConfig, bootstrap: str, topic: str, *, timeout_s: float = 120.0) -> list[Record]:
    """Every record of ``topic`` from the start, partition by partition in offset order (no group)."""
    return (await read_topics(kafka, bootstrap, [topic], timeout_s=timeout_s))[topic]


async def stream_topics(
    kafka: KafkaConfig, bootstrap: str, topics: Iterable[str], *, timeout_s: float = 120.0
) -> AsyncIterator[tuple[TopicPartition, list[Record]]]:
    """Every record of each of ``topics`` from the start, with one reader, batch by batch (in
    offset order within each partition; the partitions interleaved); a missing topic: nothing."""
    consumer = make_consumer(kafka, bootstrap, group_id=None)
    try:
        await consumer.start()
        tps = [tp for topic in dict.fromkeys(topics) for tp in await partitions_of(consumer, topic)]
        if tps:
            async for batch in batches_from_start(consumer, tps, timeout_s=timeout_s):
                yield batch
    finally:
        await stop_consumer(consumer)


async def read_topics(kafka: KafkaConfig, bootstrap: str, topics: Iterable[str], *, timeout_s: float = 120.0) -> dict[str, list[Record]]:
    """Every record of each of ``topics`` from the start, with one reader: a reader's start and
    stop cost more than reading a small topic (22 dead-letter topics read one by one took 13 s on
    the embedded broker). Per topic, in offset order within each partition; a missing topic: []."""
    found: dict[str, list[Record]] = {topic: [] for topic in topics}
    consumer = make_consumer(kafka, bootstrap, group_id=None)
    try:
        await consumer.start()
        tps = [tp for topic in found for tp in await partitions_of(consumer, topic)]
        if not tps:
            return found
        by_tp: dict[TopicPartition, list[Record]] = {tp: [] for tp in tps}
        await read_from_start(consumer, tps, lambda tp, batch: by_tp[tp].extend(batch), timeout_s=timeout_s)
        for tp in sorted(by_tp, key=lambda tp: (tp.topic, tp.partition)):
            found[tp.topic].extend(by_tp[tp])
        return found
    finally:
        await stop_consumer(consumer)
