"""The base of inbound adapters over a queue-like source (AMQP, MQTT, NATS JetStream, Redis Streams): one consume
loop, one in-order acknowledgement, one way to stop.

A subclass says how to reach its source (``open``, ``close``, ``connected``), how to read it
(``messages``, ``payload``, ``origin``, ``traceparent``) and how to answer it (``ack``, and
``keep_alive`` for a message held while Kafka cannot take its event). The base does the rest, the same for every
family:

- Messages are handed to Kafka in arrival order by one task (per-key order holds), and a second
  task awaits Kafka's acknowledgements in that same order and acknowledges each message at the
  source only then: nothing is acknowledged that Kafka does not have.
- A message that cannot become an event (not JSON, nested too deep, a failed mapping, a schema
  mismatch) is parked on the adapter's inbound dead-letter topic with the reason by ``Intake``,
  then acknowledged: one poison message never stops the queue. So is one the family refuses
  (``refused``), one whose body cannot be read (``payload`` raises ``Unreadable``), and an empty
  one where the family's config says what to do with those (``empty``): park it, saying what it
  is (``empty_means``), or pass over it, counted as skipped.
- While Kafka cannot take an event, the message is held and tried again every second, and
  reading stops behind it (``keep_alive`` tells the source it is still being worked on: a
  JetStream consumer redelivers a message not acknowledged within its ack wait). It used to be
  given back (AMQP nack with requeue, JetStream nak), but each give-back counts as a delivery,
  and a source with a delivery limit (a RabbitMQ quorum queue's ``x-delivery-limit``, 20 by
  default from RabbitMQ 4; a JetStream consumer's ``max_deliver``) dropped the message after that
  many seconds of a Kafka outage, unsaid.
- ``stop`` stops reading, lets the acknowledgements of what Kafka already has finish (bounded),
  then closes the connection; the source redelivers the rest.
- At most ``max_in_flight()`` messages wait for Kafka's acknowledgement at once.
"""

from __future__ import annotations

__all__ = ["QueueInbound", "Unreadable"]

import asyncio
from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any, ClassVar, Literal, TypeVar

from bus.adapter_api import AdapterConfig, Context, Health, Inbound
from bus.errors import KafkaUnavailable
from bus.intake import Intake, stop_in_order

C = TypeVar("C", bound=AdapterConfig)
Message = Any  # the source library's message object


async def _nothing() -> None:
    return None


class Unreadable(Exception):
    """Raised by ``payload`` for a body that cannot be read (a compressed body that does not
    decompress): the message is parked with this reason, ``raw`` (its bytes as they came) kept."""

    def __init__(self, reason: str, raw: bytes) -> None:
        super().__init__(reason)
        self.raw = raw


class QueueInbound(Inbound[C]):
    family: ClassVar[str] = "queue"  # in log lines and task names: "amqp", "mqtt", "nats", "redis"

    def __init__(self, config: C, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._intake = Intake(self.sink, config.emit, source=f"/inbound/{config.name}")  # type: ignore[attr-defined]
        self._pending: asyncio.Queue[tuple[Message, Awaitable[None]]] = asyncio.Queue(self.max_in_flight())
        self._flowing = asyncio.Event()  # cleared while an event Kafka did not acknowledge is sent again
        self._flowing.set()
        self._tasks: list[asyncio.Task[None]] = []
        self.empty_skipped = 0  # empty messages passed over (``empty`` says skip)

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

    def refused(self, message: Message) -> str | None:
        """Why the message cannot be read at all (a Redis entry without the configured field), or
        None. A refused message is parked with the reason, its ``payload`` kept, then acknowledged."""
        return None

    def empty(self) -> Literal["dead_letter", "skip"] | None:
        """What the config says to do with a message with no payload (an MQTT retained message
        cleared, a key-value delete marker), or None where it says nothing: the body goes to the
        intake like any other (and is parked as not JSON)."""
        return None

    def empty_means(self, message: Message) -> str:
        """What an empty message is, for the reason it is parked with."""
        return "an empty message"

    def progress(self) -> dict[str, int | str]:
        return {"empty_skipped": self.empty_skipped} if self.empty_skipped else {}

    @abstractmethod
    async def ack(self, message: Message) -> None: ...

    async def keep_alive(self, message: Message) -> None:
        """The message is held while Kafka cannot take its event: keep the source from redelivering it."""

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
            await self._flowing.wait()  # an event Kafka did not acknowledge is being sent again: none goes past it
            await self._pending.put((message, await self._submit(message)))

    async def _submit(self, message: Message) -> Awaitable[None]:
        """The message handed to Kafka: its acknowledgement to await. While Kafka cannot take it,
        held and tried again every second."""
        held = 0
        while True:
            try:
                ack = await self._hand_over(message)
            except KafkaUnavailable as exc:
                if held == 0:
                    self.ctx.logger.warning(
                        "%s %s: %s; holding the message and trying again every second", self.family, self.config.name, exc
                    )
                held += 1
                await self.keep_alive(message)
                await asyncio.sleep(1)
            else:
                if held:
                    self.ctx.logger.warning("%s %s: Kafka takes events again after %d s", self.family, self.config.name, held)
                return ack

    async def _hand_over(self, message: Message) -> Awaitable[None]:
        """The message to Kafka, or to the dead letters with its reason, or passed over (see the module)."""
        origin = self.origin(message)
        reason = self.refused(message)
        if reason is not None:
            return await self._intake.park(self.payload(message), reason, origin)
        try:
            payload = self.payload(message)
        except Unreadable as exc:
            return await self._intake.park(exc.raw, str(exc), origin)
        if not payload and (empty := self.empty()) is not None:
            if empty == "skip":
                self.empty_skipped += 1
                self.sink.refused("skipped")
                return _nothing()
            return await self._intake.park(
                payload, f"{self.empty_means(message)}: nothing to map. Set empty: skip to pass over them", origin
            )
        return await self._intake.submit(payload, traceparent=self.traceparent(message), origin=origin)

    async def _acknowledge(self) -> None:
        while True:
            message, ack = await self._pending.get()
            try:
                await self._settle(message, ack)
            finally:
                self._pending.task_done()
                if self._pending.empty():
                    self._flowing.set()

    async def _settle(self, message: Message, ack: Awaitable[None]) -> None:
        """Acknowledge the message at the source once Kafka acknowledged its event. An event Kafka
        did not acknowledge is sent again, in its turn, until it is (reading stops meanwhile, so
        per-key order holds); the message is held all the while, never given back to the source."""
        again = 0
        while True:
            try:
                await ack  # a message the broker refused as too large is parked by the intake
            except KafkaUnavailable as exc:
                self._flowing.clear()
                if again == 0:
                    self.ctx.logger.warning(
                        "%s %s: %s; holding the message and sending it again every second", self.family, self.config.name, exc
                    )
                again += 1
                await self.keep_alive(message)
                await asyncio.sleep(1)
                ack = await self._submit(message)
            else:
                try:
                    await self.ack(message)
                except Exception as exc:  # noqa: BLE001 - the channel it came on closed (RabbitMQ's consumer_timeout after a long hold, a reconnect)
                    self.ctx.logger.warning(
                        "%s %s: Kafka has the event but the source could not be told (%r); it delivers the message "
                        "again (map emit.id from the message, so that a target can drop the repeat)", self.family, self.config.name, exc,
                    )  # fmt: skip
                return

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        died = any(task.done() for task in tasks)  # the supervisor said so already, and restarts the adapter
        try:
            if tasks:
                consume, acknowledge = tasks
                await stop_in_order(consume, self._pending, acknowledge)
        except Exception:
            # A task's failure surfaces here again: raised now, the restart it called for failed
            # (said at WARNING, two seconds more) and the connection was left open.
            if not died:
                raise
        finally:
            await self.close()

    async def health(self) -> Health:
        ok = self.connected()
        return Health(ok, "" if ok else f"not connected to the {self.family} source")
