"""The base of inbound adapters over a queue-like source (AMQP, MQTT, NATS JetStream): one consume
loop, one in-order acknowledgement, one way to stop.

A subclass says how to reach its source (``open``, ``close``, ``connected``), how to read it
(``messages``, ``payload``, ``origin``, ``traceparent``) and how to answer it (``ack``, and
``give_back`` for a message Kafka did not take). The base does the rest, the same for every
family:

- Messages are handed to Kafka in arrival order by one task (per-key order holds), and a second
  task awaits Kafka's acknowledgements in that same order and acknowledges each message at the
  source only then: nothing is acknowledged that Kafka does not have.
- A message that cannot become an event (not JSON, nested too deep, a failed mapping, a schema
  mismatch) is parked on the adapter's inbound dead-letter topic with the reason by ``Intake``,
  then acknowledged: one poison message never stops the queue.
- While Kafka cannot take an event, a source that can take a message back (``returns_messages``:
  AMQP nack with requeue, JetStream nak) gets it back and consumption slows down; one that
  cannot (MQTT has no negative acknowledgement) holds the message and tries again.
- ``stop`` stops reading, lets the acknowledgements of what Kafka already has finish (bounded),
  then closes the connection; the source redelivers the rest.
- At most ``max_in_flight()`` messages wait for Kafka's acknowledgement at once.
"""

from __future__ import annotations

__all__ = ["QueueInbound"]

import asyncio
from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any, ClassVar, TypeVar

from bus.adapter_api import AdapterConfig, Context, Health, Inbound
from bus.errors import KafkaUnavailable
from bus.intake import Intake, stop_in_order

C = TypeVar("C", bound=AdapterConfig)
Message = Any  # the source library's message object


class QueueInbound(Inbound[C]):
    family: ClassVar[str] = "queue"  # in log lines and task names: "amqp", "mqtt", "nats"
    returns_messages: ClassVar[bool] = True  # the source can take a message back for redelivery

    def __init__(self, config: C, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._intake = Intake(self.sink, config.emit, source=f"/inbound/{config.name}")  # type: ignore[attr-defined]
        self._pending: asyncio.Queue[tuple[Message, Awaitable[None]]] = asyncio.Queue(self.max_in_flight())
        self._tasks: list[asyncio.Task[None]] = []

    # -- what a family provides -----------------------------------------------------------------
    def max_in_flight(self) -> int:
        """Messages waiting for Kafka's acknowledgement at once, at most."""
        return 1000

    @abstractmethod
    async def open(self) -> None:
        """Connect and subscribe; RetryableError naming the source when it cannot be reached."""

    @abstractmethod
    async def close(self) -> None:
        """Release the connection (called by ``stop``, after the last acknowledgement)."""

    @abstractmethod
    def connected(self) -> bool: ...

    @abstractmethod
    def messages(self) -> AsyncIterator[Message]:
        """The source's messages, in arrival order, for as long as the adapter runs."""

    @abstractmethod
    def payload(self, message: Message) -> bytes: ...

    @abstractmethod
    def origin(self, message: Message) -> Mapping[str, str]:
        """Where the message came from, kept with its dead letter (``bus_origin`` ...)."""

    def traceparent(self, message: Message) -> str | None:
        return None

    @abstractmethod
    async def ack(self, message: Message) -> None: ...

    async def give_back(self, message: Message) -> None:
        """Kafka did not take the message's event: have the source deliver it again."""

    # -- the same for every family ------------------------------------------------------------------
    async def start(self) -> None:
        if self._tasks:
            return
        await self.open()
        name = self.config.name
        self._tasks = [
            self.ctx.spawn(self._consume(), name=f"{self.family}-consume:{name}"),
            self.ctx.spawn(self._acknowledge(), name=f"{self.family}-ack:{name}"),
        ]

    async def _consume(self) -> None:
        async for message in self.messages():
            ack = await self._submit(message)
            if ack is not None:
                await self._pending.put((message, ack))

    async def _submit(self, message: Message) -> Awaitable[None] | None:
        while True:
            try:
                return await self._intake.submit(self.payload(message), traceparent=self.traceparent(message), origin=self.origin(message))
            except KafkaUnavailable as exc:
                if self.returns_messages:
                    self.ctx.logger.warning("%s %s: %s; message given back to the source", self.family, self.config.name, exc)
                    await self.give_back(message)
                    await asyncio.sleep(1)
                    return None
                self.ctx.logger.warning("%s %s: %s; holding the message and retrying", self.family, self.config.name, exc)
                await asyncio.sleep(1)

    async def _acknowledge(self) -> None:
        while True:
            message, ack = await self._pending.get()
            try:
                try:
                    await ack  # a message the broker refused as too large is parked by the intake
                except KafkaUnavailable as exc:
                    self.ctx.logger.warning("%s %s: %s; not acknowledged, the source delivers it again", self.family, self.config.name, exc)
                    await self.give_back(message)
                else:
                    await self.ack(message)
            finally:
                self._pending.task_done()

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        if tasks:
            consume, acknowledge = tasks
            await stop_in_order(consume, self._pending, acknowledge)
        await self.close()

    async def health(self) -> Health:
        ok = self.connected()
        return Health(ok, "" if ok else f"not connected to the {self.family} source")
