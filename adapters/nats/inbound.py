"""``nats`` inbound: a durable JetStream pull consumer; each message is acknowledged after Kafka's ack.

Batches of ``batch`` messages are fetched; the consume loop and the in-order acknowledgement
are ``bus.queue_inbound``'s, with at most ``batch`` messages in flight. Bad payloads go to the
inbound dead-letter topic and are acknowledged; while Kafka cannot take an event, its message is
held and marked in progress (its ack wait starts again, and no redelivery is counted).

A durable consumer deleted while the hub reads it (by an operator, or with its stream) left the
fetches timing out for good, the adapter connected and healthy, nothing read: while no message
comes, whether the consumer is still there is asked every ``CHECK_IDLE_S``. Gone, the consume
task fails saying so (the hub restarts the adapter and reports it), and the consumer is made
again from after the last message the hub acknowledged, or from the stream's start when the
stream itself was made again.

Where the hub is in the stream (the last sequence acknowledged, and which stream) is also saved
with the hub's positions in Kafka, at most every ``SAVE_EVERY_S`` and at a stop: a durable
consumer deleted while the hub was down, or an adapter renamed (its durable consumer is named
after it), is made again from there at the next start. It was made from the stream's start, and
every message the stream still held became an event again.
"""

from __future__ import annotations

__all__ = ["NatsInbound"]

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar, Literal

from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from adapters.nats.config import NatsInboundConfig
from adapters.nats.connection import connect
from bus.adapter_api import Context, KafkaUnavailable, RetryableError
from bus.queue_inbound import QueueInbound

CHECK_IDLE_S = 10.0  # while nothing comes, how often the durable consumer's presence is checked
SAVE_EVERY_S = 1.0  # how often, at most, where the hub is in the stream is saved in Kafka while messages come


class NatsInbound(QueueInbound[NatsInboundConfig]):
    Config: ClassVar[type[NatsInboundConfig]] = NatsInboundConfig
    summary: ClassVar[str] = "Pull JSON messages from a NATS JetStream stream (durable); ack only after Kafka acknowledged."
    family: ClassVar[str] = "nats"

    def __init__(self, config: NatsInboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._connection: Any = None
        self._subscription: Any = None
        # Where the hub is in the stream, kept across restarts of the adapter (not of the hub): a
        # consumer deleted meanwhile is made again from after the last message acknowledged.
        self._stream_made: Any = None  # the stream's creation time: another value is another stream
        self._acknowledged = 0  # the stream sequence of the last message acknowledged
        self._saved = (0, 0.0)  # the sequence last saved in Kafka, and when (monotonic)
        self._save_failing = False  # said once when saving stops working, and once when it works again

    @classmethod
    def position_of(cls, config: NatsInboundConfig) -> dict[str, Any] | None:
        return {"stream": config.stream, "subject": config.subject}

    def max_in_flight(self) -> int:
        return self.config.batch

    async def open(self) -> None:
        connection = await connect(
            self.config.url.get_secret_value(),
            f"nats {self.config.name}",
            self.config.tls,
            credentials=self.config.credentials,
            nkey_seed=self.config.nkey_seed,
        )
        try:
            js = connection.jetstream()
            try:
                stream = await js.stream_info(self.config.stream)
            except NotFoundError:
                if not self.config.declare:
                    raise
                stream = await js.add_stream(name=self.config.stream, subjects=[self.config.subject])
            durable = self._durable()
            try:
                info = await js.consumer_info(self.config.stream, durable)
            except NotFoundError:  # none yet: pull_subscribe makes it with the config's subject
                info = None
            if info is not None:
                self._check_acks(info, durable)
                await self._follow_subject(js, info, durable)
            else:
                if self._stream_made is None:
                    await self._load_position(stream)
                await self._resume_lost(js, stream, durable)
            self._stream_made = stream.created
            subscription = await js.pull_subscribe(self.config.subject, durable=durable, stream=self.config.stream)
        except NatsError as exc:
            await connection.close()
            raise RetryableError(f"nats {self.config.name}: cannot consume {self.config.stream}/{self.config.subject}: {exc!r}") from exc
        except RetryableError:
            await connection.close()
            raise
        self._connection, self._subscription = connection, subscription
        self.ctx.logger.info("nats %s consuming %s from stream %s", self.config.name, self.config.subject, self.config.stream)

    def _durable(self) -> str:
        return self.config.durable or f"bus-{self.config.name}"

    async def _load_position(self, stream: Any) -> None:
        """No durable consumer at this process's first start: where the hub was in this stream, as
        saved in Kafka (by this adapter, or by its former name), if it is this very stream."""
        checkpoints = self.ctx.checkpoints
        saved = await checkpoints.load(self.config.name) if checkpoints is not None else None
        if not saved:
            return
        sequence = saved.get("sequence")
        if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 0:
            self.ctx.logger.warning(
                "nats %s: the position saved for it in Kafka cannot be read (%.200r): its durable consumer reads "
                "stream %s from its start", self.config.name, saved, self.config.stream,
            )  # fmt: skip
            return
        if saved.get("stream_made") != str(stream.created):
            self.ctx.logger.warning(
                "nats %s: stream %s was made again since the hub last read it: its durable consumer reads it from its start",
                self.config.name, self.config.stream,
            )  # fmt: skip
            return
        self._stream_made, self._acknowledged = stream.created, saved["sequence"]
        self._saved = (saved["sequence"], time.monotonic())

    async def _save_position(self) -> None:
        checkpoints = self.ctx.checkpoints
        if checkpoints is None or self._stream_made is None or self._acknowledged == self._saved[0]:
            return
        self._saved = (self._acknowledged, time.monotonic())
        try:
            await checkpoints.save(self.config.name, {"sequence": self._acknowledged, "stream_made": str(self._stream_made)})
        except KafkaUnavailable as exc:  # a fallback only (the durable consumer keeps the place): tried again at the next save
            if not self._save_failing:
                self._save_failing = True
                self.ctx.logger.warning(
                    "nats %s: its position in stream %s cannot be saved in Kafka (%s): reading goes on, the durable "
                    "consumer keeps the place; tried again at each save", self.config.name, self.config.stream, exc,
                )  # fmt: skip
            return
        if self._save_failing:
            self._save_failing = False
            self.ctx.logger.info("nats %s: its position is saved in Kafka again (stream sequence %d)", self.config.name, self._acknowledged)

    async def _resume_lost(self, js: Any, stream: Any, durable: str) -> None:
        """The durable consumer is gone though this adapter read through it before: made again
        from after the last message acknowledged, if the stream is the one it read (pull_subscribe
        would make it from the stream's start, and every message read before would come again)."""
        if self._stream_made is None:
            return  # never read here: pull_subscribe makes it, from the start
        if stream.created != self._stream_made or stream.state.last_seq < self._acknowledged:  # (a server that gives no time)
            self._acknowledged = 0
            self.ctx.logger.warning(
                "nats %s: stream %s was made again since it was last read; durable consumer %s reads it from its start",
                self.config.name, self.config.stream, durable,
            )  # fmt: skip
            return
        start = self._acknowledged + 1
        config = ConsumerConfig(
            durable_name=durable, filter_subject=self.config.subject, ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start,
        )  # fmt: skip
        await js.add_consumer(self.config.stream, config=config)
        self.ctx.logger.warning(
            "nats %s: durable consumer %s of stream %s was gone; made again from stream sequence %d, after the last "
            "message the hub acknowledged", self.config.name, durable, self.config.stream, start,
        )  # fmt: skip

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
        checked = time.monotonic()
        while True:
            try:
                batch = await self._subscription.fetch(self.config.batch, timeout=1)
            except (NatsTimeout, TimeoutError):  # nats-py also raises asyncio's own when its deadline runs out mid-fetch
                if time.monotonic() - checked >= CHECK_IDLE_S:
                    await self._check_consumer()
                    checked = time.monotonic()
                continue
            except NatsError as exc:
                self.ctx.logger.warning("nats %s: fetch failed (%r); retrying", self.config.name, exc)
                await asyncio.sleep(1)
                continue
            checked = time.monotonic()
            for message in batch:
                yield message

    async def _check_consumer(self) -> None:
        """Quiet for a while: is the durable consumer still there? A fetch from one deleted times out like one from an empty stream."""
        durable = self._durable()
        try:
            await self._connection.jetstream().consumer_info(self.config.stream, durable)
        except NotFoundError as exc:
            raise RetryableError(
                f"nats {self.config.name}: durable consumer {durable} of stream {self.config.stream} is gone "
                f"({exc.description or exc!r}): deleted by someone, or with its stream; nothing could be read through it"
            ) from exc
        except (NatsError, TimeoutError):
            pass  # the server did not answer: the fetches say so if it lasts

    def empty(self) -> Literal["dead_letter", "skip"]:
        return self.config.empty

    def empty_means(self, message: Any) -> str:
        operation = (message.headers or {}).get("KV-Operation")
        return f"a key-value bucket's {operation} marker for {message.subject}" if operation else "an empty message"

    def payload(self, message: Any) -> bytes:
        return bytes(message.data)

    def origin(self, message: Any) -> Mapping[str, str]:
        return {"bus_origin": f"nats:{message.subject}"}

    def traceparent(self, message: Any) -> str | None:
        """The sender's W3C trace context, from the message's NATS headers."""
        return (message.headers or {}).get("traceparent") or None

    async def ack(self, message: Any) -> None:
        await message.ack()
        self._acknowledged = max(self._acknowledged, message.metadata.sequence.stream)
        if time.monotonic() - self._saved[1] >= SAVE_EVERY_S:
            await self._save_position()

    async def keep_alive(self, message: Any) -> None:
        with contextlib.suppress(NatsError):  # "+WPI": the ack wait starts again, no redelivery counted
            await message.in_progress()

    async def close(self) -> None:
        await self._save_position()
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    def connected(self) -> bool:
        return self._connection is not None and bool(self._connection.is_connected)
