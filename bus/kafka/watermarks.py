"""The current end of partitions, for lag and backlog gauges, even while their consumer is busy.

A consumer's ``highwater()`` only moves when it fetches, and a delivery worker stuck on a slow
target does not fetch: its view of the backlog freezes. This probe is a separate group-less
consumer that seeks to the end and fetches once. It seeks with ListOffsets, which the embedded
broker answers too low (shared/TANSU.md), so it trusts only the high watermark of the fetch that
follows: at most one produce batch is read and dropped per partition and probe.
"""

from __future__ import annotations

__all__ = ["Watermarks"]

from aiokafka import TopicPartition

from bus.config.models import KafkaConfig
from bus.kafka.clients import make_consumer


class Watermarks:
    def __init__(self, kafka: KafkaConfig, bootstrap: str) -> None:
        self._consumer = make_consumer(
            kafka,
            bootstrap,
            group_id=None,  # type: ignore[arg-type]
            max_partition_fetch_bytes=64 * 1024,
            fetch_max_bytes=1024 * 1024,
            fetch_max_wait_ms=100,  # an empty fetch at the true end answers quickly, with the watermark
        )
        self._started = False

    async def ends(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        """The end offset of each partition, where a fetch could tell within half a second."""
        if not partitions:
            return {}
        if not self._started:
            await self._consumer.start()
            self._started = True
        if set(self._consumer.assignment()) != partitions:
            self._consumer.assign(list(partitions))
        await self._consumer.seek_to_end(*partitions)
        await self._consumer.getmany(*partitions, timeout_ms=500)
        return {tp: end for tp in partitions if (end := self._consumer.highwater(tp)) is not None}

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._consumer.stop()
