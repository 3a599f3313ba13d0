"""``kafka`` outbound: publish each event to a topic, JSON or Avro (Confluent wire format).

Delivered once the cluster acknowledged (acks=all). The event id, type and source travel as
``ce_*`` headers, with ``traceparent``. A value too large for the topic, or one that does not fit
the Avro schema, is dead-lettered; a cluster that does not answer is retried.
"""

from __future__ import annotations

__all__ = ["KafkaOutbound"]

import asyncio
import re
from typing import Any, ClassVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError

from adapters.kafka.avro import WireAvro
from adapters.kafka.config import KafkaOutboundConfig, read_schema_file
from bus.adapter_api import (
    Body,
    Context,
    Event,
    Health,
    Outbound,
    PermanentError,
    RetryableError,
    compile_expression,
    compile_template,
    kafka_producer,
    target_json,
)
from bus.cloudevents import prefixed_headers

_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")


class KafkaOutbound(Outbound[KafkaOutboundConfig]):
    Config: ClassVar[type[KafkaOutboundConfig]] = KafkaOutboundConfig
    summary: ClassVar[str] = "Publish each event to a Kafka topic as JSON or Confluent-wire Avro; delivered on acks=all."

    def __init__(self, config: KafkaOutboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._body = Body(config.body)
        self._topic = compile_template(config.topic)
        self._key = compile_expression(config.key) if config.key else None
        self._avro = (
            WireAvro(config.registry_url, config.registry_token.get_secret_value() if config.registry_token else None)
            if config.format == "avro" and config.registry_url
            else None
        )
        self._schema = read_schema_file(config.schema_file) if config.schema_file else None
        self._writers: dict[str, tuple[int, Any]] = {}  # topic -> (schema id, parsed schema)
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = kafka_producer(
            self.config.bootstrap,
            self.config.security,
            request_timeout_ms=int(self.config.timeout_s * 1000),
            client_id=self.config.client_id,
        )
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise RetryableError(f"kafka {self.config.name}: cannot reach {self.config.bootstrap}: {exc!r}") from exc
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
        if self._avro is not None:
            await self._avro.close()

    async def health(self) -> Health:
        return Health(self._producer is not None, "" if self._producer is not None else "not connected")

    async def _value(self, topic: str, record: dict[str, Any]) -> bytes:
        if self._avro is None:
            return target_json(record, "record").encode()
        writer = self._writers.get(topic)
        if writer is None:  # registered once per topic (idempotent at the registry)
            assert self._schema is not None
            writer = self._writers[topic] = await self._avro.writer(f"{topic}-value", self._schema)
        try:
            return WireAvro.encode(*writer, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise PermanentError(f"the value does not fit {self.config.schema_file}: {exc!r}") from exc

    async def deliver(self, event: Event) -> None:
        if self._producer is None:
            raise RetryableError(f"kafka outbound {self.config.name} is not started")
        topic = self._topic(event.data, event.meta())
        if not self._topic.constant and not _TOPIC.fullmatch(topic):  # refused by the cluster on every try
            raise PermanentError(
                f"the topic {topic[:300]!r} is not a Kafka topic name (at most 249 of a-z, A-Z, 0-9, '.', '_' and '-'): "
                "an event's value made it so"
            )
        value = await self._value(topic, self._body.render(event))
        key = self._key(event.data, event.meta()) if self._key else event.key
        headers = [(name, value.encode()) for name, value in prefixed_headers(event, "ce_").items()]  # CloudEvents Kafka binding
        try:
            async with asyncio.timeout(self.config.timeout_s):  # not wait_for: no task per event
                await self._producer.send_and_wait(topic, value, key=None if key is None else str(key).encode(), headers=headers)
        except MessageSizeTooLargeError as exc:
            raise PermanentError(f"{len(value)} bytes is more than {topic} takes: {exc!r}") from exc
        except (KafkaTimeoutError, TimeoutError) as exc:
            raise RetryableError(f"no acknowledgement from {self.config.bootstrap} for {topic} within {self.config.timeout_s:g}s") from exc
        except KafkaError as exc:
            raise RetryableError(f"publishing to {topic}: {exc!r}") from exc
