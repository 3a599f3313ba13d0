"""``nats`` inbound: a durable JetStream pull consumer; each message is acknowledged after Kafka's ack.

Batches of ``batch`` messages are fetched; the consume loop and the in-order acknowledgement
are ``bus.queue_inbound``'s, with at most ``batch`` messages in flight. Bad payloads go to the
inbound dead-letter topic and are acknowledged; while Kafka cannot take an event, its message is
held and marked in progress (its ack wait starts again, and no redelivery is counted).
"""

from __future__ import annotations

__all__ = ["NatsInbound"]

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import DeliverPolicy
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
            durable = self.config.durable or f"bus-{self.config.name}"
            try:
                info = await js.consumer_info(self.config.stream, durable)
            except NotFoundError:  # none yet: pull_subscribe makes it with the config's subject
                info = None
            if info is not None:
                self._check_acks(info, durable)
                await self._follow_subject(js, info, durable)
            subscription = await js.pull_subscribe(self.config.subject, durable=durable, stream=self.config.stream)
        except NatsError as exc:
            await connection.close()
            raise RetryableError(f"nats {self.config.name}: cannot consume {self.config.stream}/{self.config.subject}: {exc!r}") from exc
        except RetryableError:
            await connection.close()
            raise
        self._connection, self._subscription = connection, subscription
        self.ctx.logger.info("nats %s consuming %s from stream %s", self.config.name, self.config.subject, self.config.stream)

    def _check_acks(self, info: Any, durable: str) -> None:
        """A durable consumer made elsewhere (an operator's, ``declare: false``) that takes no
        acknowledgements counts a message as delivered once it is sent: one in flight when the hub
        stops, or held while Kafka cannot take it, is gone, and the promise of an acknowledgement
        after Kafka's is empty. Refused, saying why (``/readyz``, tried again every interval)."""
        policy = getattr(info.config.ack_policy, "value", info.config.ack_policy)
        if policy == "none":
            raise RetryableError(
                f"nats {self.config.name}: durable consumer {durable} of stream {self.config.stream} takes no acknowledgements "
                "(ack_policy none): a message would count as delivered once sent, and one in flight when the hub stops would be "
                "lost; make it with ack_policy explicit, or delete it and the hub makes its own"
            )

    async def _follow_subject(self, js: Any, info: Any, durable: str) -> None:
        """A durable consumer made for another subject is made again for the config's, from where
        it was. JetStream binds to an existing durable consumer whatever its filter: with
        `subject` changed in the config, the messages of the old subject went on arriving (and
        became events) and those of the new one never did. The new consumer starts after the old
        one's acknowledged floor: nothing acknowledged comes again, nothing after it is passed over
        (this server version cannot change a consumer's filter in place)."""
        old = info.config.filter_subjects or ([info.config.filter_subject] if info.config.filter_subject else [])
        if old == [self.config.subject]:
            return
        start = (info.ack_floor.stream_seq if info.ack_floor is not None else 0) + 1
        config = info.config.evolve(
            filter_subject=self.config.subject, filter_subjects=None, deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start, opt_start_time=None,
        )  # fmt: skip
        await js.delete_consumer(self.config.stream, durable)
        await js.add_consumer(self.config.stream, config=config)
        self.ctx.logger.warning(
            "nats %s: durable consumer %s of stream %s read %s; made again for %s (the config's subject), from stream "
            "sequence %d on, after what it acknowledged", self.config.name, durable, self.config.stream,
            ", ".join(old) or "the whole stream", self.config.subject, start,
        )  # fmt: skip

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

    async def keep_alive(self, message: Any) -> None:
        with contextlib.suppress(NatsError):  # "+WPI": the ack wait starts again, no redelivery counted
            await message.in_progress()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    def connected(self) -> bool:
        return self._connection is not None and bool(self._connection.is_connected)
