"""The delivery loop: one subscriber's delivery topic -> its outbound adapter, commit after the answer.

Plain aiokafka with explicit commits, not faust (faust-streaming #606 can commit past an event
still in progress). Contract:

- Records of one partition are settled strictly in order, so per-key order holds; partitions
  of a batch are settled concurrently.
- A record is *settled* when the target accepted it (``deliver`` returned) or it is in the
  subscriber's dead-letter topic with its reason (Kafka acknowledged that produce).
- Only settled records are committed. A ``RetryableError`` is retried with exponential backoff
  and jitter, honouring ``retry_after``, for as long as it takes: events wait in Kafka, not in
  memory. (Attempt and age limits, circuit breakers and rate limits are issue 4.)
- ``stop()`` stops fetching, lets the event in progress finish (an event still being retried is
  abandoned uncommitted, to be redelivered), commits what was settled, and leaves the group.
"""

from __future__ import annotations

__all__ = ["DeliveryWorker", "RetryPolicy"]

import asyncio
import logging
import random
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from bus.adapter_api import Outbound
from bus.codec import Codec
from bus.config.models import KafkaConfig
from bus.errors import BusError, PermanentError, RetryableError
from bus.event import Event, now_rfc3339
from bus.kafka.clients import make_consumer
from bus.kafka.topics import TopicNames
from bus.metrics import DELIVERIES, DELIVERY_SECONDS, SECONDS_SINCE_COMMIT

log = logging.getLogger("bus.runtime.delivery")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_backoff: float = 0.2
    max_backoff: float = 30.0
    multiplier: float = 2.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        backoff = random.uniform(backoff / 2, backoff)  # noqa: S311 - jitter, not security
        return max(backoff, min(retry_after or 0.0, self.max_backoff))


class _Stopping(Exception):
    """Raised inside a partition task when stop() interrupts a retry."""


class DeliveryWorker:
    def __init__(
        self,
        adapter: Outbound,  # type: ignore[type-arg]
        *,
        kafka: KafkaConfig,
        bootstrap: str,
        topics: TopicNames,
        codec: Codec,
        producer: AIOKafkaProducer,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.adapter = adapter
        self.name = adapter.config.name
        self._topic = topics.delivery(self.name)
        self._dlq = topics.dead_letter(self.name)
        self._group = f"{topics.prefix}.deliver.{self.name}"
        self._codec = codec
        self._producer = producer
        self._policy = policy or RetryPolicy()
        self._consumer = make_consumer(kafka, bootstrap, self._topic, group_id=self._group)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._last_commit = time.monotonic()
        self._delivered = DELIVERIES.labels(self.name, "delivered")
        self._retried = DELIVERIES.labels(self.name, "retried")
        self._dead = DELIVERIES.labels(self.name, "dead_lettered")
        self._latency = DELIVERY_SECONDS.labels(self.name)
        self._since_commit = SECONDS_SINCE_COMMIT.labels(self._group)
        self.assigned = False

    async def start(self) -> None:
        if self._task is not None:
            raise BusError(f"delivery worker {self.name} already started")
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name=f"deliver:{self.name}")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stopping.set()
        try:
            await self._task
        finally:
            self._task = None
            await self._consumer.stop()
            log.info("delivery worker %s stopped", self.name)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            batch = await self._consumer.getmany(timeout_ms=200, max_records=500)
            self.assigned = bool(self._consumer.assignment())
            if not batch:
                self._last_commit = time.monotonic()
                self._since_commit.set(0)
                continue
            self._since_commit.set(time.monotonic() - self._last_commit)
            results = await asyncio.gather(*(self._settle_partition(records) for records in batch.values()))
            offsets = {tp: OffsetAndMetadata(offset + 1, "") for tp, offset in zip(batch, results, strict=True) if offset is not None}
            for tp, offset in zip(batch, results, strict=True):
                if offset is None or offset < batch[tp][-1].offset:
                    # Stopped mid-partition: rewind so this worker never skips the rest if it goes on.
                    self._consumer.seek(tp, (offset + 1) if offset is not None else batch[tp][0].offset)
            await self._commit(offsets)

    async def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Partitions moved to another member: it will deliver these again (at-least-once).
            log.warning("delivery worker %s could not commit (%r); events will be redelivered", self.name, exc)
            return
        self._last_commit = time.monotonic()
        self._since_commit.set(0)

    async def _settle_partition(self, records: list[ConsumerRecord[bytes, bytes]]) -> int | None:
        """Settle records in order; return the offset of the last settled one."""
        last: int | None = None
        for record in records:
            if self._stopping.is_set():
                break  # graceful stop: finish the event in hand, leave the rest for the next owner
            try:
                await self._settle(record)
            except _Stopping:
                break
            last = record.offset
        return last

    async def _settle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            schema, data = self._codec.decode(record.value or b"")
        except PermanentError as exc:
            await self._dead_letter(record, exc, attempts=0)
            return
        event = Event.from_kafka(schema, data, record.key, record.headers)
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                await self.adapter.deliver(event)
            except RetryableError as exc:
                self._retried.inc()
                if self._stopping.is_set():
                    raise _Stopping from exc
                delay = self._policy.delay(attempt, exc.retry_after)
                log.debug("delivery %s of %s failed (%s); retry in %.2fs", self.name, event.id, exc, delay)
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                except TimeoutError:
                    continue
                raise _Stopping from exc
            except PermanentError as exc:
                await self._dead_letter(record, exc, attempts=attempt)
                return
            self._latency.observe(time.perf_counter() - started)
            self._delivered.inc()
            return

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], error: BusError, *, attempts: int) -> None:
        headers = [
            *(record.headers or ()),
            ("bus_error", str(error).encode()),
            ("bus_error_class", type(error).__name__.encode()),
            ("bus_attempts", str(attempts).encode()),
            ("bus_failed_at", now_rfc3339().encode()),
            ("bus_subscriber", self.name.encode()),
            ("bus_origin", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ]
        while True:
            try:
                await self._producer.send_and_wait(self._dlq, record.value, key=record.key, headers=headers)
                break
            except KafkaError as exc:  # not settled until Kafka has it: keep trying, never drop
                log.warning("cannot write dead letter for %s to %s (%r); retrying", self.name, self._dlq, exc)
                if self._stopping.is_set():
                    raise _Stopping from exc
                await asyncio.sleep(1)
        self._dead.inc()
        log.warning("dead-lettered %s/%d/%d for %s: %s", record.topic, record.partition, record.offset, self.name, error)
