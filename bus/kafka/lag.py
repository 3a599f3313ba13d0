"""Consumer lag per group, topic and partition, computed when /metrics is read.

Lag is the partition's end (the high watermark the consumer last fetched, or a probe's newer
answer) minus the group's committed offset. The workers commit explicitly, so they tell the
tracker what they committed; nothing is asked of Kafka at scrape time and nothing is done per
event. A partition appears once its first commit is known and disappears when it is revoked, so
the label set is bounded by the partitions this process owns.
"""

from __future__ import annotations

__all__ = ["LAG", "ConsumerLag"]

import weakref
from collections.abc import Iterable, Iterator, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class ConsumerLag:
    """One consumer's committed offsets, as its worker reports them."""

    def __init__(self, group: str, consumer: AIOKafkaConsumer) -> None:
        self.group = group
        self._consumer = consumer
        self._committed: dict[TopicPartition, int] = {}
        self._ends: dict[TopicPartition, int] = {}

    def committed(self, offsets: Mapping[TopicPartition, object]) -> None:
        """After a successful commit: ``offsets`` maps partitions to ints or OffsetAndMetadata."""
        for tp, meta in offsets.items():
            self._committed[tp] = int(getattr(meta, "offset", meta))  # type: ignore[call-overload]

    def ends(self, ends: Mapping[TopicPartition, int]) -> None:
        """Ends learned by a probe (a busy consumer does not fetch, so its watermark freezes)."""
        self._ends.update(ends)

    def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._committed.pop(tp, None)
            self._ends.pop(tp, None)

    def lags(self) -> Iterator[tuple[TopicPartition, int]]:
        for tp, committed in list(self._committed.items()):
            end = max(self._consumer.highwater(tp) or 0, self._ends.get(tp, 0))
            if end:
                yield tp, max(0, end - committed)


class _LagCollector(Collector):
    def __init__(self) -> None:
        self._consumers: weakref.WeakSet[ConsumerLag] = weakref.WeakSet()

    def track(self, group: str, consumer: AIOKafkaConsumer) -> ConsumerLag:
        tracked = ConsumerLag(group, consumer)
        self._consumers.add(tracked)
        return tracked

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "bus_consumer_lag",
            "Records on a partition after the group's committed offset (partitions this process owns).",
            labels=["group", "topic", "partition"],
        )
        for tracked in list(self._consumers):
            for tp, lag in tracked.lags():
                family.add_metric([tracked.group, tp.topic, str(tp.partition)], lag)
        yield family


LAG = _LagCollector()
REGISTRY.register(LAG)
