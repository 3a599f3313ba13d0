"""``amqp`` inbound: consume a RabbitMQ queue; acknowledge each message once Kafka has its event.

The consume loop, the in-order acknowledgement and the dead letters are ``bus.queue_inbound``'s.
Up to ``prefetch`` messages are in flight. While Kafka cannot take an event, its message is held
(not acknowledged) and reading stops behind it; a requeue would count as a delivery, and a
quorum queue with a delivery limit drops a message requeued that many times.
"""

from __future__ import annotations

__all__ = ["AmqpInbound"]

from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aiormq.exceptions import AMQPError

from adapters.amqp.config import AmqpInboundConfig
from adapters.amqp.connection import connect
from bus.adapter_api import Context, RetryableError
from bus.queue_inbound import QueueInbound


class AmqpInbound(QueueInbound[AmqpInboundConfig]):
    Config: ClassVar[type[AmqpInboundConfig]] = AmqpInboundConfig
    summary: ClassVar[str] = "Consume JSON messages from a RabbitMQ queue; ack only after Kafka acknowledged."
    family: ClassVar[str] = "amqp"

    def __init__(self, config: AmqpInboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._connection: AbstractRobustConnection | None = None
        self._queue: Any = None

    def max_in_flight(self) -> int:
        return self.config.prefetch

    async def open(self) -> None:
        connection = await connect(self.config.url.get_secret_value(), f"amqp {self.config.name}")
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self.config.prefetch)
            queue: Any
            if self.config.declare:
                queue = await channel.declare_queue(self.config.queue, durable=True)
                for binding in self.config.bindings:
                    exchange = await channel.declare_exchange(binding.exchange, binding.exchange_type, durable=True)
                    await queue.bind(exchange, binding.routing_key)
            else:
                queue = await channel.get_queue(self.config.queue, ensure=True)
        except AMQPError as exc:
            await connection.close()
            raise RetryableError(f"amqp {self.config.name}: cannot use queue {self.config.queue!r}: {exc!r}") from exc
        self._connection, self._queue = connection, queue
        self.ctx.logger.info("amqp %s consuming queue %s", self.config.name, self.config.queue)

    async def messages(self) -> AsyncIterator[AbstractIncomingMessage]:
        async with self._queue.iterator() as messages:
            async for message in messages:
                yield message

    def payload(self, message: AbstractIncomingMessage) -> bytes:
        return message.body

    def origin(self, message: AbstractIncomingMessage) -> Mapping[str, str]:
        return {"bus_origin": f"amqp:{self.config.queue}", "amqp_message_id": message.message_id or ""}

    def traceparent(self, message: AbstractIncomingMessage) -> str | None:
        value = (message.headers or {}).get("traceparent")
        return str(value) if value else None

    async def ack(self, message: AbstractIncomingMessage) -> None:
        await message.ack()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed
