"""``amqp`` inbound: consume a RabbitMQ queue; acknowledge each message once Kafka has its event.

The consume loop, the in-order acknowledgement and the dead letters are ``bus.queue_inbound``'s.
Up to ``prefetch`` messages are in flight; one over 16 MiB is not read whole
(``adapters.amqp.bounded``). While Kafka cannot take an event, its message is held (not
acknowledged) and reading stops behind it; a requeue would count as a delivery, and a quorum
queue with a delivery limit drops a message requeued that many times.

A body sent compressed, its ``content_encoding`` ``gzip`` or ``deflate`` (Spring AMQP's
compressing post-processors, and clients that compress large payloads), is read decompressed, up
to 16 MiB: each was parked as "invalid JSON". One that does not decompress, or decompresses to
more (a compression bomb), is parked saying so, its compressed body kept. Any other
``content_encoding`` (Spring writes the charset, ``UTF-8``, there) leaves the body as it is.
"""

from __future__ import annotations

__all__ = ["AmqpInbound"]

import zlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aiormq.exceptions import AMQPError

from adapters.amqp.bounded import BoundedConnection
from adapters.amqp.config import AmqpInboundConfig
from adapters.amqp.connection import connect, exists
from bus.adapter_api import MAX_MESSAGE_BYTES, Context, KafkaUnavailable, RetryableError, Truncated
from bus.queue_inbound import QueueInbound, Unreadable


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
        # Its channels read no message over 16 MiB whole: one is parked from its start.
        connection = await connect(
            self.config.url.get_secret_value(), f"amqp {self.config.name}", connection_class=BoundedConnection, tls=self.config.tls
        )
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self.config.prefetch)
            queue: Any
            if self.config.declare:
                queue = await self._declared(connection, channel)
                had = await self._had()
                await self._unbind_dropped(connection, had or [])
                for binding in self.config.bindings:
                    if await exists(connection, "exchange", binding.exchange):
                        exchange = await channel.declare_exchange(binding.exchange, passive=True)
                    else:
                        exchange = await channel.declare_exchange(binding.exchange, binding.exchange_type, durable=True)
                    await queue.bind(exchange, binding.routing_key)
                if self.ctx.checkpoints is not None and had != self._wanted():
                    await self.ctx.checkpoints.save(self.config.name, {"bindings": self._wanted()})
            else:
                queue = await channel.get_queue(self.config.queue, ensure=True)
        except (AMQPError, KafkaUnavailable) as exc:
            await connection.close()
            raise RetryableError(f"amqp {self.config.name}: cannot use queue {self.config.queue!r}: {exc!r}") from exc
        self._connection, self._queue = connection, queue
        self.ctx.logger.info("amqp %s consuming queue %s", self.config.name, self.config.queue)

    async def _declared(self, connection: AbstractRobustConnection, channel: Any) -> Any:
        """The queue as it is when it exists (an operator's quorum queue, its TTL and dead-letter
        arguments kept), else made durable with ``queue_arguments``."""
        if await exists(connection, "queue", self.config.queue):
            return await channel.declare_queue(self.config.queue, passive=True)
        made = await channel.declare_queue(self.config.queue, durable=True, arguments=self.config.queue_arguments or None)
        name, queue, arguments = self.config.name, self.config.queue, self.config.queue_arguments
        self.ctx.logger.info("amqp %s: made queue %s (durable, arguments %s)", name, queue, arguments)
        return made

    def _wanted(self) -> list[list[str]]:
        return sorted([b.exchange, b.routing_key] for b in self.config.bindings)

    async def _had(self) -> list[list[str]] | None:
        """The bindings the hub made at its last start (kept with its position), or None if unknown."""
        if self.ctx.checkpoints is None:
            return None
        saved = await self.ctx.checkpoints.load(self.config.name)
        found = saved.get("bindings") if saved else None
        return [[str(e), str(k)] for e, k in found] if isinstance(found, list) else None

    async def _unbind_dropped(self, connection: AbstractRobustConnection, had: list[list[str]]) -> None:
        """A binding the config no longer names is taken off the queue. The broker keeps a durable
        queue's bindings: the messages of a binding taken out of the config went on arriving, and
        became events. Only bindings the hub made itself are taken off (an operator's stay)."""
        wanted = self._wanted()
        for exchange, key in had:
            if [exchange, key] in wanted:
                continue
            try:  # a channel of its own: an exchange deleted since (its bindings gone with it) closes the channel it is named on
                async with connection.channel() as channel:
                    queue = await channel.get_queue(self.config.queue, ensure=False)
                    await queue.unbind(exchange, key)
                self.ctx.logger.info(
                    "amqp %s: queue %s unbound from %s (%s): no longer in the config", self.config.name, self.config.queue, exchange, key
                )
            except AMQPError as exc:
                self.ctx.logger.info(
                    "amqp %s: queue %s not unbound from %s (%s): %r", self.config.name, self.config.queue, exchange, key, exc
                )

    async def messages(self) -> AsyncIterator[AbstractIncomingMessage]:
        async with self._queue.iterator() as messages:
            async for message in messages:
                yield message

    def payload(self, message: AbstractIncomingMessage) -> bytes:
        """The body, decompressed when it came compressed (see the module)."""
        coding = (message.content_encoding or "").strip().lower()
        if coding not in _WINDOWS or isinstance(message.body, Truncated):  # too large to read: parked for its size
            return message.body
        try:
            return _inflate(message.body, coding)
        except ValueError as exc:
            raise Unreadable(f"content_encoding {coding}: {exc}", message.body) from None

    def origin(self, message: AbstractIncomingMessage) -> Mapping[str, str]:
        return {"bus_origin": f"amqp:{self.config.queue}", "amqp_message_id": message.message_id or ""}

    def traceparent(self, message: AbstractIncomingMessage) -> str | None:
        value = (message.headers or {}).get("traceparent")
        if isinstance(value, bytes | bytearray | memoryview):  # a byte array ("x"), as some clients send strings
            try:
                value = bytes(value).decode("ascii")
            except UnicodeDecodeError:
                return None
        return value if isinstance(value, str) and value else None  # not a number's or a table's text

    async def ack(self, message: AbstractIncomingMessage) -> None:
        await message.ack()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed


# zlib's window bits for each content coding: gzip's header, or deflate's zlib wrapper or none
# (HTTP's "deflate" is the zlib wrapper, but raw deflate is sent as often).
_WINDOWS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _inflate(body: bytes, coding: str) -> bytes:
    """``body`` decompressed, at most MAX_MESSAGE_BYTES; ValueError saying why not. Never more is
    held: a few KiB of zeros decompress to gigabytes."""
    window = _WINDOWS[coding]
    for wbits in (window, -zlib.MAX_WBITS) if coding == "deflate" else (window,):
        inflater = zlib.decompressobj(wbits)
        try:
            found = inflater.decompress(body, MAX_MESSAGE_BYTES + 1)
        except zlib.error as exc:
            problem = f"the body does not decompress ({exc})"
            continue
        if len(found) > MAX_MESSAGE_BYTES or inflater.unconsumed_tail:
            raise ValueError(f"the body decompresses to more than {MAX_MESSAGE_BYTES:,} bytes, which are read at most")
        if not inflater.eof:
            raise ValueError("the body does not decompress (it ends before its compressed stream does)")
        return found
    raise ValueError(problem)
