"""The event sink inbound adapters publish to: validate, encode, produce, wait for Kafka's ack."""

from __future__ import annotations

__all__ = ["KafkaSink"]

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from typing import Any, Literal

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from bus.codec import Codec
from bus.deadletters import KEPT_OF_TOO_LARGE, truncated, why_headers
from bus.errors import EventTooLarge, KafkaUnavailable, brief
from bus.event import Event
from bus.kafka.clients import MAX_EVENT_BYTES, MEASURE_ABOVE
from bus.kafka.topics import TopicNames
from bus.logs import RepeatedWarning
from bus.metrics import INBOUND_EVENTS, KAFKA_ERRORS, PRODUCE_SECONDS
from bus.runtime.deadlines import Deadlines

log = logging.getLogger("bus.publisher")


class KafkaSink:
    """One per inbound adapter (for its metrics labels); all share one producer.

    ``publish`` returns only after Kafka acknowledged the event (acks=all). It raises
    EventRejected before anything is produced when the event does not fit its schema or is
    larger than the hub takes (``EventTooLarge``, above ``MAX_EVENT_BYTES``; so does a broker
    whose own limit is lower), and KafkaUnavailable when no acknowledgement came within
    ``timeout`` seconds. In that case the
    event may still reach Kafka later: the source retries, and the duplicate keeps its id when
    the adapter takes the id from the source (``emit.id``).
    """

    def __init__(self, producer: AIOKafkaProducer, codec: Codec, topics: TopicNames, *, adapter: str, timeout: float) -> None:
        self._producer = producer
        self._codec = codec
        self._topics = topics
        self._adapter = adapter
        self._timeout = timeout
        self._deadlines = Deadlines(timeout)
        self._accepted = INBOUND_EVENTS.labels(adapter, "accepted")
        self._refused = {outcome: INBOUND_EVENTS.labels(adapter, outcome) for outcome in ("rejected", "unauthorized", "skipped")}
        self._unavailable = INBOUND_EVENTS.labels(adapter, "unavailable")
        self._parked = INBOUND_EVENTS.labels(adapter, "dead_lettered")
        self._parked_said = RepeatedWarning(log)
        self._latency = PRODUCE_SECONDS.labels(adapter)
        self._kafka_errors = KAFKA_ERRORS.labels(f"inbound:{adapter}", "produce")

    async def publish(self, event: Event) -> None:
        # submit() then its acknowledgement, under one deadline rather than one each, and a
        # deadline swept with every other publish's rather than an asyncio timer per event: a
        # webhook publishes one event per request (bus/runtime/deadlines.py).
        value = self._encoded(event)
        started = time.perf_counter()
        try:
            with self._deadlines():
                delivery = await self._send(event, value)
                await asyncio.shield(delivery)  # shield: a timeout must not cancel aiokafka's own future for the batch
        except MessageSizeTooLargeError as exc:
            raise _too_large(str(exc)) from exc
        except (TimeoutError, KafkaError) as exc:
            raise self._unavailable_error(event.id, exc) from exc
        self._count_accepted(started)

    def _encoded(self, event: Event) -> bytes:
        self._codec.validate(event.schema, event.data)  # EventRejected, before anything is sent
        value = self._codec.encode(event.schema, event.data)
        if len(value) + (0 if event.key is None else 4 * len(event.key)) > MEASURE_ABOVE:
            key = None if event.key is None else event.key.encode()
            size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, event.headers())
            if size > MAX_EVENT_BYTES:
                # Refused, not "unavailable": a sender told to retry would retry for ever, and a
                # queue would hand the same message back again and again.
                raise _too_large(f"the event is {size:,} bytes as a Kafka record (its Avro value {len(value):,})")
        return value

    def _send(self, event: Event, value: bytes) -> Any:  # aiokafka's send(): a coroutine giving the delivery future
        return self._producer.send(
            self._topics.canonical(event.schema), value, key=event.key.encode() if event.key is not None else None, headers=event.headers()
        )

    def check(self, event: Event) -> None:
        self._encoded(event)  # its schema and its size: a batch is refused whole before any of it is sent

    async def submit(self, event: Event) -> Awaitable[None]:
        """Hand the event to the producer, in call order, and return its acknowledgement to await.

        For sources that keep many messages in flight (queues): submitting in arrival order keeps
        per-key order, and each message is acknowledged to its source once its own ack resolved.
        Raises EventRejected at once; the returned awaitable raises KafkaUnavailable.
        """
        # A refusal is counted where it is settled: "rejected" by a source that answers its
        # sender (refused), "dead_lettered" by one that keeps it on the inbound DLQ (reject).
        value = self._encoded(event)
        started = time.perf_counter()
        try:
            # asyncio.timeout, not wait_for: wait_for wraps the call in a task of its own, which cost
            # more than the rest of publishing (two per event; bench/RESULTS.md, 2026-12-03).
            async with asyncio.timeout(self._timeout):
                delivery = await self._send(event, value)
        except MessageSizeTooLargeError as exc:
            raise _too_large(str(exc)) from exc
        except (TimeoutError, KafkaError) as exc:
            raise self._unavailable_error(event.id, exc) from exc
        return self._acknowledged(event.id, delivery, started)

    async def _acknowledged(self, event_id: str, delivery: Awaitable[Any], started: float) -> None:
        try:
            # shield: a timeout here must not cancel aiokafka's own future for the batch.
            async with asyncio.timeout(max(0.001, self._timeout - (time.perf_counter() - started))):
                await asyncio.shield(delivery)
        except MessageSizeTooLargeError as exc:  # the broker's own limit is lower than the hub's
            raise _too_large(str(exc)) from exc
        except (TimeoutError, KafkaError) as exc:
            raise self._unavailable_error(event_id, exc) from exc
        self._count_accepted(started)

    def _count_accepted(self, started: float) -> None:
        self._latency.observe(time.perf_counter() - started)
        self._accepted.inc()

    def _unavailable_error(self, event_id: str, exc: Exception) -> KafkaUnavailable:
        """Counted (unavailable, and a Kafka error of this inbound) and said: the sender retries."""
        self._unavailable.inc()
        self._kafka_errors.inc()
        return KafkaUnavailable(f"Kafka did not acknowledge event {event_id} within {self._timeout:g}s: {exc!r}", retry_after=5)

    def refused(self, outcome: Literal["rejected", "unauthorized", "skipped"]) -> None:
        self._refused[outcome].inc()

    async def reject(self, payload: bytes, reason: str, *, headers: Mapping[str, str] | None = None) -> None:
        """Keep a message that could not become an event, with why, on the adapter's inbound
        dead-letter topic, so the source can be acknowledged without losing it."""
        record_headers = [
            *((k, v.encode()) for k, v in (headers or {}).items()),
            *why_headers(reason, "EventRejected", adapter=self._adapter),
        ]
        topic = self._topics.inbound_dead_letter(self._adapter)
        try:
            try:
                await self._park(topic, payload, record_headers)
            except MessageSizeTooLargeError:
                # Larger than Kafka takes: its start, its size and its digest are kept with the
                # reason (it cannot be replayed; the source or the sender still has it whole).
                log.warning(
                    "%s: a message of %d bytes is too large to keep on the inbound dead letters; keeping its first %d bytes",
                    self._adapter, len(payload), KEPT_OF_TOO_LARGE,
                )  # fmt: skip
                start, marks = truncated(payload)
                await self._park(topic, start, [*record_headers, *marks])
        except (TimeoutError, KafkaError) as exc:
            self._unavailable.inc()
            raise KafkaUnavailable(f"Kafka did not take a rejected message within {self._timeout:g}s: {exc!r}", retry_after=5) from exc
        self._parked.inc()
        self._parked_said.warn(f"inbound {self._adapter}: a message was parked on its dead letters ({topic}): {brief(reason, 500)}")

    async def _park(self, topic: str, payload: bytes, headers: list[tuple[str, bytes]]) -> None:
        async with asyncio.timeout(self._timeout):
            delivery = await self._producer.send(topic, payload, headers=headers)
        async with asyncio.timeout(self._timeout):
            await asyncio.shield(delivery)


def _too_large(detail: str) -> EventTooLarge:
    return EventTooLarge(f"{detail}; the hub takes events of at most {MAX_EVENT_BYTES:,} bytes (map fewer or smaller fields)")
