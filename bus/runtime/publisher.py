"""The event sink inbound adapters publish to: validate, encode, produce, wait for Kafka's ack."""

from __future__ import annotations

__all__ = ["KafkaSink"]

import asyncio
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from bus.codec import Codec
from bus.errors import EventRejected, KafkaUnavailable
from bus.event import Event
from bus.kafka.topics import TopicNames
from bus.metrics import INBOUND_EVENTS, PRODUCE_SECONDS


class KafkaSink:
    """One per inbound adapter (for its metrics labels); all share one producer.

    ``publish`` returns only after Kafka acknowledged the event (acks=all). It raises
    EventRejected before anything is produced when the event does not fit its schema, and
    KafkaUnavailable when no acknowledgement came within ``timeout`` seconds. In that case the
    event may still reach Kafka later: the source retries, and the duplicate keeps its id when
    the adapter takes the id from the source (``emit.id``).
    """

    def __init__(self, producer: AIOKafkaProducer, codec: Codec, topics: TopicNames, *, adapter: str, timeout: float) -> None:
        self._producer = producer
        self._codec = codec
        self._topics = topics
        self._adapter = adapter
        self._timeout = timeout
        self._accepted = INBOUND_EVENTS.labels(adapter, "accepted")
        self._rejected = INBOUND_EVENTS.labels(adapter, "rejected")
        self._unavailable = INBOUND_EVENTS.labels(adapter, "unavailable")
        self._latency = PRODUCE_SECONDS.labels(adapter)

    async def publish(self, event: Event) -> None:
        try:
            self._codec.validate(event.schema, event.data)
            value = self._codec.encode(event.schema, event.data)
        except EventRejected:
            self._rejected.inc()
            raise
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                delivery = await self._producer.send(
                    self._topics.canonical(event.schema),
                    value,
                    key=event.key.encode() if event.key is not None else None,
                    headers=event.headers(),
                )
                # shield: a timeout here must not cancel aiokafka's own future for the batch.
                await asyncio.shield(delivery)
        except (TimeoutError, KafkaError) as exc:
            self._unavailable.inc()
            raise KafkaUnavailable(f"Kafka did not acknowledge event {event.id} within {self._timeout:g}s: {exc!r}", retry_after=5) from exc
        self._latency.observe(time.perf_counter() - started)
        self._accepted.inc()
