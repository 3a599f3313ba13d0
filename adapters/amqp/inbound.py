"""``amqp`` inbound: consume a RabbitMQ queue; acknowledge each message once Kafka has its event.

Messages are read in queue order by one task and handed to Kafka in that order (per-key order
holds); a second task awaits Kafka's acknowledgements in the same order and acknowledges the
messages. Up to ``prefetch`` messages are in flight. A body that cannot become an event is kept
on the inbound dead-letter topic with the reason, then acknowledged. When Kafka cannot
acknowledge, the message is returned to the queue (nack with requeue) and consumption slows
down; RabbitMQ redelivers it, possibly after later ones.
"""

from __future__ import annotations

__all__ = ["AmqpInbound"]

import asyncio
from collections.abc import Awaitable
from typing import Any, ClassVar

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aiormq.exceptions import AMQPError

from adapters.amqp.config import AmqpInboundConfig
from bus.adapter_api import Context, Health, Inbound, Intake, KafkaUnavailable, RetryableError, stop_in_order


async def connect(url: str, what: str) -> AbstractRobustConnection:
    """A robust connection (it reconnects by itself), or RetryableError naming the broker."""
    try:
        return await aio_pika.connect_robust(url, timeout=10)
    except (OSError, AMQPError, TimeoutError) as exc:
        host = url.rsplit("@", 1)[-1]  # never log the password
        raise RetryableError(f"{what}: cannot connect to AMQP broker {host}: {exc!r}") from exc


class AmqpInbound(Inbound[AmqpInboundConfig]):
    Config: ClassVar[type[AmqpInboundConfig]] = AmqpInboundConfig
    summary: ClassVar[str] = "Consume JSON messages from a RabbitMQ queue; ack only after Kafka acknowledged."

    def __init__(self, config: AmqpInboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._intake = Intake(self.sink, config.emit, source=f"/inbound/{config.name}")
        self._connection: AbstractRobustConnection | None = None
        self._pending: asyncio.Queue[tuple[AbstractIncomingMessage, Awaitable[None]]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if self._connection is not None:
            return
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
        self._connection = connection
        self._tasks = [
            self.ctx.spawn(self._consume(queue), name=f"amqp-consume:{self.config.name}"),
            self.ctx.spawn(self._acknowledge(), name=f"amqp-ack:{self.config.name}"),
        ]
        self.ctx.logger.info("amqp %s consuming queue %s", self.config.name, self.config.queue)

    async def _consume(self, queue: Any) -> None:
        async with queue.iterator() as messages:
            async for message in messages:
                origin = {"bus_origin": f"amqp:{self.config.queue}", "amqp_message_id": message.message_id or ""}
                traceparent = (message.headers or {}).get("traceparent")
                try:
                    ack = await self._intake.submit(message.body, traceparent=str(traceparent) if traceparent else None, origin=origin)
                except KafkaUnavailable as exc:
                    self.ctx.logger.warning("amqp %s: %s; message returned to the queue", self.config.name, exc)
                    await message.nack(requeue=True)
                    await asyncio.sleep(1)
                    continue
                await self._pending.put((message, ack))

    async def _acknowledge(self) -> None:
        while True:
            message, ack = await self._pending.get()
            try:
                await ack
                await message.ack()
            except KafkaUnavailable as exc:
                self.ctx.logger.warning("amqp %s: %s; message returned to the queue", self.config.name, exc)
                await message.nack(requeue=True)
            finally:
                self._pending.task_done()

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        if tasks:
            consume, acknowledge = tasks
            await stop_in_order(consume, self._pending, acknowledge)
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    async def health(self) -> Health:
        ok = self._connection is not None and not self._connection.is_closed
        return Health(ok, "" if ok else "not connected to the AMQP broker")
