"""The current end of partitions, for lag and backlog gauges, even while their consumer is busy.

A consumer's ``highwater()`` only moves when it fetches, and a delivery worker stuck on a slow
target does not fetch: its view of the backlog freezes. This probe is a separate group-less
consumer that seeks to the end and fetches once. It seeks with ListOffsets, which the embedded
broker answers too low (docs/embedded-broker.md), so it trusts only the high watermark of the fetch that
follows: at most one produce batch is read and dropped per partition and probe.
"""

from __future__ import annotations

__all__ = ["Watermarks"]

from aiokafka import AIOKafkaConsumer, TopicPartition

from bus.config.models import KafkaConfig
from bus.kafka.clients import make_consumer, stop_consumer


class Watermarks:
    def __init__(self, kafka: KafkaConfig, bootstrap: str) -> None:
        self._kafka = kafka
        self._bootstrap = bootstrap
        self._consumer: AIOKafkaConsumer | None = None  # made on first use: an unstarted consumer warns when collected

    async def ends(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        """The end offset of each partition, where a fetch could tell within half a second."""
        if not partitions:
            return {}
        if self._consumer is None:
            consumer = make_consumer(
                self._kafka,
                self._bootstrap,
                group_id=None,
                max_partition_fetch_bytes=64 * 1024,
                fetch_max_bytes=1024 * 1024,
                fetch_max_wait_ms=100,  # an empty fetch at the true end answers quickly, with the watermark
            )
            try:
                await consumer.start()
            except BaseException:
                await stop_consumer(consumer)
                raise
            self._consumer = consumer
        if set(self._consumer.assignment()) != partitions:
            self._consumer.assign(list(partitions))
        await self._consumer.seek_to_end(*partitions)
        await self._consumer.getmany(*partitions, timeout_ms=500)
        return {tp: end for tp in partitions if (end := self._consumer.highwater(tp)) is not None}

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await stop_consumer(consumer)
