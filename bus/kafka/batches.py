"""Produce many records at once: one aiokafka ``BatchBuilder`` per partition and one future per
batch, instead of a ``send()`` and a future per record.

The router produces several copies of every event it reads; per record, ``send()`` costs more
than routing does (a metadata wait, the partitioner, a future, a log call). Here the partition is
chosen the way aiokafka's default partitioner chooses it (murmur2 of the key, as the Java client
does, so keys land where any other producer would put them), remembered per key, and records
of one partition are appended in the order given: per-key order holds. A batch that fills up is
sent and a new one started. A record larger than the producers' limit raises
``MessageSizeTooLargeError`` before anything is sent, as ``send()`` would (aiokafka does not
check a batch, and a broker with a larger limit, like the embedded one, would take it). The
caller awaits the returned futures (every copy acknowledged) before it commits, exactly as with
``send()``.
"""

from __future__ import annotations

__all__ = ["BatchSender", "Record"]

import random
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from bus.kafka.clients import MAX_RECORD_BYTES
from bus.kafka.partitioner import partition_of

_KEY_CACHE_LIMIT = 100_000  # distinct keys remembered; cleared when full (murmur2 is only recomputed)
_PARTITIONS_TTL_S = 60.0  # partition counts are looked up again after this (partitions can be added)


class Record(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    partition: int | None = None  # None: by key (or any partition when there is no key)


class BatchSender:
    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._partitions: dict[str, list[int]] = {}
        self._by_key: dict[tuple[str, bytes], int] = {}
        self._loaded = time.monotonic()

    async def _all_partitions(self, topic: str) -> list[int]:
        found = self._partitions.get(topic)
        if found is None:
            found = self._partitions[topic] = sorted(await self._producer.partitions_for(topic))
        return found

    async def _partition(self, topic: str, key: bytes | None) -> int:
        if key is None:
            return random.choice(await self._all_partitions(topic))  # noqa: S311 (spreading load, not security)
        cached = self._by_key.get((topic, key))
        if cached is None:
            partitions = await self._all_partitions(topic)
            if len(self._by_key) >= _KEY_CACHE_LIMIT:
                self._by_key.clear()
            cached = self._by_key[(topic, key)] = partition_of(key, partitions)
        return cached

    async def send_all(self, records: Iterable[Record]) -> list[Any]:
        """Queue every record; returns the futures (one per batch) that resolve once Kafka acked."""
        producer = self._producer
        if time.monotonic() - self._loaded > _PARTITIONS_TTL_S:
            self.forget_partitions()
        open_batches: dict[tuple[str, int], Any] = {}
        # Batches are handed to the producer once every record is in one: a record too large is
        # found before any of these was sent, so routing them again duplicates nothing.
        ready: list[tuple[Any, str, int]] = []
        for topic, key, value, headers, chosen in records:
            partition = chosen if chosen is not None else await self._partition(topic, key)
            where = (topic, partition)
            batch = open_batches.get(where)
            if batch is None:
                batch = open_batches[where] = producer.create_batch()
            appended = batch.append(timestamp=None, key=key, value=value, headers=headers)
            if appended is None:
                ready.append((batch, topic, partition))  # full: sent in its turn, start another
                batch = open_batches[where] = producer.create_batch()
                appended = batch.append(timestamp=None, key=key, value=value, headers=headers)
                if appended is None:
                    raise ValueError(f"a record for {topic} is larger than a whole batch (max_batch_size)")
            if appended.size > MAX_RECORD_BYTES:
                raise MessageSizeTooLargeError(f"a record for {topic} is {appended.size:,} bytes; producers take {MAX_RECORD_BYTES:,}")
        ready += [(batch, topic, partition) for (topic, partition), batch in open_batches.items()]
        return [await producer.send_batch(batch, topic, partition=partition) for batch, topic, partition in ready]

    def forget_partitions(self) -> None:
        """After a metadata change (partitions added): look the partition counts up again."""
        self._partitions.clear()
        self._by_key.clear()
        self._loaded = time.monotonic()
