"""``kafka`` inbound: bridge a foreign topic (JSON, or Avro in the Confluent wire format) into
canonical events.

A batch is read, each value decoded and handed to the hub's Kafka in order, and the offsets are
committed only once every event of the batch was acknowledged (or its value parked on the inbound
dead-letter topic with the reason and the topic/partition/offset it came from). While the hub's
Kafka or the schema registry cannot answer, the batch is read again from its first offset.
"""

from __future__ import annotations

__all__ = ["KafkaInbound"]

import asyncio
from collections.abc import Awaitable
from typing import Any, ClassVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from adapters.kafka.avro import WireAvro
from adapters.kafka.config import KafkaInboundConfig
from bus.adapter_api import (
    Context,
    Health,
    Inbound,
    Intake,
    KafkaUnavailable,
    PermanentError,
    RetryableError,
    finish_task,
    kafka_consumer,
    parse_json,
    stop_kafka_consumer,
)


class KafkaInbound(Inbound[KafkaInboundConfig]):
    Config: ClassVar[type[KafkaInboundConfig]] = KafkaInboundConfig
    summary: ClassVar[str] = "Bridge a Kafka topic (JSON or Confluent-wire Avro) into canonical events; commit after the hub's ack."

    def __init__(self, config: KafkaInboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._intake = Intake(self.sink, config.emit, source=f"/inbound/{config.name}")
        self._avro = (
            WireAvro(config.registry_url, config.registry_token.get_secret_value() if config.registry_token else None)
            if config.format == "avro" and config.registry_url
            else None
        )
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._problem = ""
        self.bridged = 0  # values taken (published or parked) since start
        self._next: dict[TopicPartition, int] = {}  # per partition: the offset the next batch should start at
        self.lost = 0  # records the foreign topic's retention removed before they were read
        self.tombstones = 0  # records with no value passed over (tombstones: skip)
        self._lost_said = ""

    async def start(self) -> None:
        if self._consumer is not None:
            return
        c = self.config
        consumer = kafka_consumer(
            c.bootstrap,
            c.security,
            *self.config.topics,
            group_id=self.config.group or f"bus-bridge-{self.config.name}",
            session_timeout_ms=c.session_timeout_ms,
            auto_offset_reset=c.start,
            isolation_level=c.isolation,  # what a producer aborted was never data: it is not bridged
            client_id=c.client_id,
        )
        try:
            await consumer.start()
        except KafkaError as exc:
            await stop_kafka_consumer(consumer)
            raise RetryableError(f"kafka {self.config.name}: cannot reach {self.config.bootstrap}: {exc!r}") from exc
        except BaseException:  # a start cancelled while it joins (a hub stopping): its consumer is closed, not left open
            await stop_kafka_consumer(consumer)
            raise
        self._consumer = consumer
        self._stopping.clear()
        self._task = self.ctx.spawn(self._consume(), name=f"kafka-bridge:{self.config.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            self._stopping.set()  # the batch in flight is finished and committed
            await finish_task(task, within=10)
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await stop_kafka_consumer(consumer)
        if self._avro is not None:
            await self._avro.close()

    def progress(self) -> dict[str, int | str]:
        return {
            "bridged": self.bridged,
            **({"lost_to_retention": self.lost} if self.lost else {}),
            **({"tombstones_skipped": self.tombstones} if self.tombstones else {}),
        }

    def attention(self) -> str:
        return self._lost_said

    async def _gap(self, tp: TopicPartition, first: int) -> None:
        """A batch that starts after where this partition was left. A gap inside a topic is normal
        (compaction, transaction markers), so it is judged by the group's committed offset and the
        partition's first offset: records below the first offset that were never committed are
        records the topic's retention removed before the hub read them (the hub down, or behind,
        for longer than the retention; the consumer then goes on from the first record left)."""
        assert self._consumer is not None
        expected = self._next.get(tp)
        if expected is not None and first <= expected:
            return
        self._next[tp] = first  # judged once: a batch read again after a retry starts here too
        committed = await self._consumer.committed(tp)
        if committed is None or committed >= first:
            return  # a new group (it starts where `start` says), or another replica moved it on
        beginning = (await self._consumer.beginning_offsets([tp]))[tp]
        if beginning <= committed:
            return
        lost = min(beginning, first) - committed
        self.lost += lost
        self._lost_said = (
            f"{self.lost} record(s) of {', '.join(self.config.topics)} were removed by the topic's retention before the hub "
            f"read them (last: {tp.topic}/{tp.partition} offsets {committed} to {min(beginning, first) - 1}): lost"
        )
        self.ctx.logger.warning(
            "kafka %s: %d record(s) of %s/%d at offsets %d to %d were removed by the topic's retention before the hub read "
            "them: lost; it goes on from offset %d (raise the topic's retention, or keep the hub within it)",
            self.config.name, lost, tp.topic, tp.partition, committed, min(beginning, first) - 1, first,
        )  # fmt: skip

    async def health(self) -> Health:
        if self._consumer is None:
            return Health(False, "not started")
        return Health(not self._problem, self._problem)

    async def _consume(self) -> None:
        assert self._consumer is not None
        while not self._stopping.is_set():
            try:
                batch = await self._consumer.getmany(timeout_ms=500, max_records=500)
            except KafkaError as exc:
                self._problem = f"reading {', '.join(self.config.topics)}: {exc!r}"
                await asyncio.sleep(1.0)
                continue
            if not batch:
                continue
            try:
                await self._bridge(batch)
                self._problem = ""
            except RetryableError as exc:
                self._problem = str(exc)
                self.ctx.logger.warning("kafka %s: %s; reading the batch again", self.config.name, exc)
                for tp, records in batch.items():
                    self._consumer.seek(tp, records[0].offset)
                await asyncio.sleep(1.0)

    async def _bridge(self, batch: dict[TopicPartition, list[Any]]) -> None:
        assert self._consumer is not None
        acks: list[Awaitable[None]] = []
        skipped = 0  # tombstones passed over in this batch: counted once it is committed (a batch read again counts once)
        for tp, records in batch.items():
            try:
                await self._gap(tp, records[0].offset)
            except KafkaError as exc:  # the check cannot be made now: the records still flow, and it is said
                self.ctx.logger.warning(
                    "kafka %s: could not check %s/%d for records removed unread: %r", self.config.name, tp.topic, tp.partition, exc
                )
        for records in batch.values():
            for record in records:
                origin = {"kafka_topic": record.topic, "kafka_partition": str(record.partition), "kafka_offset": str(record.offset)}
                if record.value is None:  # a tombstone: nothing to decode (it was parked as "not JSON")
                    if self.config.tombstones == "skip":
                        skipped += 1
                    else:
                        await self._park_tombstone(record, origin)
                    continue
                raw = record.value
                try:
                    document = await self._decode(raw)
                except RetryableError:
                    raise
                except PermanentError as exc:
                    await self.sink.reject(raw, str(exc), headers=origin)
                    continue
                except Exception as exc:  # noqa: BLE001 - one value's failure stays that value's (poison isolation)
                    await self.sink.reject(raw, f"value could not be decoded: {type(exc).__name__}: {exc}", headers=origin)
                    continue
                event_id = f"{record.topic}:{record.partition}:{record.offset}"
                # The producer's W3C trace context, when it set one as a record header (the Kafka convention).
                traceparent = next((v.decode(errors="replace") for n, v in record.headers or () if n == "traceparent" and v), None)
                try:
                    acks.append(
                        await self._intake.submit_document(document, raw=raw, event_id=event_id, traceparent=traceparent, origin=origin)
                    )
                except KafkaUnavailable as exc:
                    raise RetryableError(f"the hub's Kafka did not take the events: {exc}") from exc
        for ack in acks:
            try:
                await ack
            except KafkaUnavailable as exc:
                raise RetryableError(f"the hub's Kafka did not acknowledge the events: {exc}") from exc
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:  # the events are on Kafka: a re-read repeats them with the same ids
            raise RetryableError(f"committing offsets: {exc!r}") from exc
        self.bridged += sum(len(records) for records in batch.values()) - skipped
        self.tombstones += skipped
        for _ in range(skipped):
            self.sink.refused("skipped")
        self._next.update(offsets)

    async def _park_tombstone(self, record: Any, origin: dict[str, str]) -> None:
        key = record.key.decode(errors="replace")[:200] if record.key is not None else None
        await self.sink.reject(
            b"",
            f"a tombstone (a record with no value, key {key!r}): a key deleted on a compacted topic; nothing to map. "
            "Set tombstones: skip to pass over them",
            headers=origin,
        )

    async def _decode(self, raw: bytes) -> Any:
        if self._avro is not None:
            return await self._avro.decode(raw)  # RetryableError (registry down) propagates: the batch is read again
        header = ""
        if raw[:1] == b"\x00" and len(raw) > 5:
            # Confluent's JSON Schema serializer writes its wire format: a zero byte and the schema's
            # id, then the JSON. No JSON document starts with a zero byte, so the header is dropped
            # (every such value was parked as "not JSON"); the document is checked by the mapping.
            header = f" after a Confluent wire-format header (schema id {int.from_bytes(raw[1:5], 'big')}: Avro needs format: avro)"
            raw = raw[5:]
        try:
            return parse_json(raw)
        except ValueError as exc:
            raise PermanentError(f"value is not JSON{header}: {exc}") from exc
