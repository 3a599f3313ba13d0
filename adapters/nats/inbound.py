"""``nats`` inbound: a durable JetStream pull consumer; each message is acknowledged after Kafka's ack.

A batch is fetched, every message handed to Kafka in order, then the acknowledgements are awaited
in order and the messages acknowledged. Bad payloads go to the inbound dead-letter topic and are
acknowledged; while Kafka cannot acknowledge, messages are negatively acknowledged with a delay
and JetStream redelivers them.
"""

from __future__ import annotations

__all__ = ["NatsInbound"]

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, ClassVar

from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NotFoundError

from adapters.nats.config import NatsInboundConfig
from bus.adapter_api import Context, Health, Inbound, Intake, KafkaUnavailable, RetryableError


async def connect(url: str, what: str) -> Any:
    # With reconnects allowed without limit, nats-py also retries the *first* connection without
    # limit: bound it, so a server that is down at start is a RetryableError, not a hang.
    client = NatsClient()
    try:
        await asyncio.wait_for(
            client.connect(servers=[url], connect_timeout=5, allow_reconnect=True, max_reconnect_attempts=-1), timeout=10
        )
    except (NatsError, OSError, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await client.close()
        host = url.rsplit("@", 1)[-1]  # never log a password
        raise RetryableError(f"{what}: cannot connect to NATS at {host}: {exc!r}") from exc
    return client


class NatsInbound(Inbound[NatsInboundConfig]):
    Config: ClassVar[type[NatsInboundConfig]] = NatsInboundConfig
    summary: ClassVar[str] = "Pull JSON messages from a NATS JetStream stream (durable); ack only after Kafka acknowledged."

    def __init__(self, config: NatsInboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._intake = Intake(self.sink, config.emit, source=f"/inbound/{config.name}")
        self._connection: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        if self._connection is not None:
            return
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
        self._connection = connection
        self._stopping.clear()
        self._task = self.ctx.spawn(self._consume(subscription), name=f"nats-consume:{self.config.name}")
        self.ctx.logger.info("nats %s consuming %s from stream %s", self.config.name, self.config.subject, self.config.stream)

    async def _consume(self, subscription: Any) -> None:
        while not self._stopping.is_set():
            try:
                messages = await subscription.fetch(self.config.batch, timeout=1)
            except (NatsTimeout, TimeoutError):  # nats-py also raises asyncio's own when its deadline runs out mid-fetch
                continue
            except NatsError as exc:
                self.ctx.logger.warning("nats %s: fetch failed (%r); retrying", self.config.name, exc)
                await asyncio.sleep(1)
                continue
            acks: list[Awaitable[None] | KafkaUnavailable] = []
            for message in messages:
                origin = {"bus_origin": f"nats:{message.subject}"}
                try:
                    acks.append(await self._intake.submit(message.data, origin=origin))
                except KafkaUnavailable as exc:
                    acks.append(exc)
            for message, ack in zip(messages, acks, strict=True):
                failure = ack if isinstance(ack, KafkaUnavailable) else None
                if failure is None:
                    try:
                        await ack  # type: ignore[misc]
                    except KafkaUnavailable as exc:
                        failure = exc
                if failure is None:
                    await message.ack()
                else:
                    self.ctx.logger.warning("nats %s: %s; JetStream will redeliver", self.config.name, failure)
                    await message.nak(delay=1)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            self._stopping.set()  # the batch in hand is finished and acknowledged
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, timeout=10)
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    async def health(self) -> Health:
        ok = self._connection is not None and self._connection.is_connected
        return Health(ok, "" if ok else "not connected to NATS")
