"""``nats`` inbound: a durable JetStream pull consumer; each message is acknowledged after Kafka's ack.

Batches of ``batch`` messages are fetched; the consume loop and the in-order acknowledgement
are ``bus.queue_inbound``'s, with at most ``batch`` messages in flight. Bad payloads go to the
inbound dead-letter topic and are acknowledged; while Kafka cannot acknowledge, messages are
negatively acknowledged with a delay and JetStream redelivers them.
"""

from __future__ import annotations

__all__ = ["NatsInbound"]

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NotFoundError

from adapters.nats.config import NatsInboundConfig
from adapters.nats.connection import connect
from bus.adapter_api import Context, RetryableError
from bus.queue_inbound import QueueInbound


class NatsInbound(QueueInbound[NatsInboundConfig]):
    Config: ClassVar[type[NatsInboundConfig]] = NatsInboundConfig
    summary: ClassVar[str] = "Pull JSON messages from a NATS JetStream stream (durable); ack only after Kafka acknowledged."
    family: ClassVar[str] = "nats"

    def __init__(self, config: NatsInboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._connection: Any = None
        self._subscription: Any = None
        self._attention = ""

    def max_in_flight(self) -> int:
        return self.config.batch

    async def open(self) -> None:
        connection = await connect(self.config.url.get_secret_value(), f"nats {self.config.name}")
        try:
            js = connection.jetstream()
            try:
                await js.stream_info(self.config.stream)
            except NotFoundError:
                if not self.config.declare:
                    raise
                await js.add_stream(name=self.config.stream, subjects=[self.config.subject])
            subscription = await js.pull_subscribe(
                self.config.subject, durable=self.config.durable or f"bus-{self.config.name}", stream=self.config.stream
            )
        except NatsError as exc:
            await connection.close()
            raise RetryableError(f"nats {self.config.name}: cannot consume {self.config.stream}/{self.config.subject}: {exc!r}") from exc
        self._connection, self._subscription = connection, subscription
        self.ctx.logger.info("nats %s consuming %s from stream %s", self.config.name, self.config.subject, self.config.stream)
        await self._check_max_deliver(subscription)

    async def _check_max_deliver(self, subscription: Any) -> None:
        """A durable consumer made by someone else may give a message up after ``max_deliver``
        deliveries. While Kafka cannot take events the hub gives each message back, once a
        second, and each time counts: after that many the stream stops delivering it, and it is
        lost, unsaid. Said at WARNING and in the console's attention (the hub does not change a
        consumer it did not make)."""
        try:
            info = await subscription.consumer_info()
        except NatsError as exc:
            self.ctx.logger.warning("nats %s: could not read its consumer's settings: %r", self.config.name, exc)
            return
        limit = getattr(info.config, "max_deliver", None)
        if limit is not None and limit > 0:
            self._attention = (
                f"consumer {info.name} of stream {info.stream_name} gives a message up after {limit} deliveries: while Kafka "
                f"cannot take events the hub gives messages back once a second, so an outage of about {limit} s loses them; "
                "set max_deliver to -1 on the consumer"
            )
            self.ctx.logger.warning("nats %s: %s", self.config.name, self._attention)
        else:
            self._attention = ""

    def attention(self) -> str:
        return self._attention

    async def messages(self) -> AsyncIterator[Any]:
        while True:
            try:
                batch = await self._subscription.fetch(self.config.batch, timeout=1)
            except (NatsTimeout, TimeoutError):  # nats-py also raises asyncio's own when its deadline runs out mid-fetch
                continue
            except NatsError as exc:
                self.ctx.logger.warning("nats %s: fetch failed (%r); retrying", self.config.name, exc)
                await asyncio.sleep(1)
                continue
            for message in batch:
                yield message

    def payload(self, message: Any) -> bytes:
        return bytes(message.data)

    def origin(self, message: Any) -> Mapping[str, str]:
        return {"bus_origin": f"nats:{message.subject}"}

    def traceparent(self, message: Any) -> str | None:
        """The sender's W3C trace context, from the message's NATS headers."""
        return (message.headers or {}).get("traceparent") or None

    async def ack(self, message: Any) -> None:
        await message.ack()

    async def give_back(self, message: Any) -> None:
        await message.nak(delay=1)

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    def connected(self) -> bool:
        return self._connection is not None and bool(self._connection.is_connected)
