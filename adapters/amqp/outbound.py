"""``amqp`` outbound: publish each event as a persistent JSON message, with publisher confirms.

Delivered = the broker confirmed the message (it is routed and stored). Unroutable (no queue
bound for the routing key) = permanent (dead letter: fix the binding, then ``bus dlq replay``),
and so is a message over the broker's ``max_message_size``: RabbitMQ answers it by closing the
channel, which took every other event's publish down with it for seconds, on every try of that
one event, for a day. The limit is learnt from the first such answer, and a larger message is
refused from then on before it is sent.
Retried: a connection loss, no confirm in ``timeout_s``, and a nack: RabbitMQ nacks a message a
queue at its length limit refuses (``x-overflow: reject-publish``) or that a queue failed to
store, and takes it once there is room. The event id is the AMQP ``message_id`` (and ``ce_id``
header), so a consumer can drop repeats.
"""

from __future__ import annotations

__all__ = ["AmqpOutbound"]

import asyncio
import re
from typing import Any, ClassVar

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractRobustConnection
from aiormq.exceptions import AMQPError, ChannelInvalidStateError, ChannelPreconditionFailed, DeliveryError, PublishError

from adapters.amqp.config import AmqpOutboundConfig
from adapters.amqp.connection import connect, exists
from bus.adapter_api import Body, Context, Event, Health, Outbound, PermanentError, RetryableError, compile_template, target_json
from bus.cloudevents import prefixed_headers


class AmqpOutbound(Outbound[AmqpOutboundConfig]):
    Config: ClassVar[type[AmqpOutboundConfig]] = AmqpOutboundConfig
    summary: ClassVar[str] = "Publish each event as a persistent JSON message to a RabbitMQ exchange, confirmed."

    def __init__(self, config: AmqpOutboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._body = Body(config.body)
        self._routing_key = compile_template(config.routing_key)
        self._connection: AbstractRobustConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._largest: int | None = None  # the broker's max_message_size, once it refused a message for it

    async def start(self) -> None:
        if self._connection is not None:
            return
        connection = await connect(self.config.url.get_secret_value(), f"amqp {self.config.name}", tls=self.config.tls)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            if self.config.declare_queue and not await exists(connection, "queue", self.config.declare_queue):
                await channel.declare_queue(self.config.declare_queue, durable=True, arguments=self.config.queue_arguments or None)
            if self.config.exchange:
                self._exchange = await channel.get_exchange(self.config.exchange, ensure=True)
            else:
                self._exchange = channel.default_exchange
        except AMQPError as exc:
            await connection.close()
            raise RetryableError(f"amqp {self.config.name}: cannot use exchange {self.config.exchange!r}: {exc!r}") from exc
        self._connection = connection

    async def stop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    async def health(self) -> Health:
        ok = self._connection is not None and not self._connection.is_closed
        return Health(ok, "" if ok else "not connected to the AMQP broker")

    def message(self, event: Event) -> aio_pika.Message:
        headers: dict[str, Any] = prefixed_headers(event, "ce-")  # the CloudEvents RabbitMQ binding, binary mode
        return aio_pika.Message(
            target_json(self._body.render(event), "message").encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event.id,
            type=event.type,
            headers=headers,
        )

    async def deliver(self, event: Event) -> None:
        if self._exchange is None:
            raise RetryableError(f"amqp outbound {self.config.name} is not started")
        routing_key = self._routing_key(event.data, event.meta())
        if len(routing_key.encode()) > 255:  # AMQP's limit: the broker closes the channel, on every try
            raise PermanentError(f"the routing key is {len(routing_key.encode())} bytes, over AMQP's 255: {routing_key[:80]!r}...")
        where = f"exchange {self.config.exchange or '(default)'!r} with routing key {routing_key!r}"
        message = self.message(event)
        if self._largest is not None and len(message.body) > self._largest:
            raise PermanentError(self._too_large(len(message.body), where))
        try:
            async with asyncio.timeout(self.config.timeout_s):  # not wait_for: no task per event
                await self._exchange.publish(message, routing_key=routing_key)
        except ChannelPreconditionFailed as exc:
            if (limit := _MAX_SIZE.search(str(exc))) is None:
                raise RetryableError(f"AMQP publish to {where} failed: {exc!r}") from exc
            self._largest = int(limit.group(1))
            raise PermanentError(self._too_large(len(message.body), where)) from exc
        except PublishError as exc:
            raise PermanentError(f"unroutable: no queue bound to {where} ({exc!r})") from exc
        except DeliveryError as exc:  # a nack: busy, not wrong (dead-lettered, every event was lost while a queue was briefly full)
            raise RetryableError(
                f"the broker did not take the message for {where}: it nacked it (a queue at its length limit with "
                f"x-overflow reject-publish, or a queue that failed to store it) ({exc!r})"
            ) from exc
        except TimeoutError as exc:
            raise RetryableError(f"no confirm from the AMQP broker within {self.config.timeout_s:g}s for {where}") from exc
        except (AMQPError, ChannelInvalidStateError, ConnectionError) as exc:
            raise RetryableError(f"AMQP publish to {where} failed: {exc!r}") from exc

    def _too_large(self, size: int, where: str) -> str:
        return f"the message is {size:,} bytes, over the {self._largest:,} the broker takes (its max_message_size), for {where}"


# RabbitMQ's answer to a message over its max_message_size (it closes the channel with it).
_MAX_SIZE = re.compile(r"larger than configured max size (\d+)")
