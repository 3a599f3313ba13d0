"""The router's faust engine (``router.engine: faust``); the default is ``routing.worker``.

Same dispatch as the default engine (``routing.dispatch``), run as a faust agent. Faust stays
behind this one class (faust stays inside routing/). Safety settings, because
routing must never lose an event:

- agent concurrency 1 (faust-streaming #606 commits past in-flight events with concurrency > 1);
- the stream runs with acks disabled and this module acks each event itself, in order, only after
  Kafka acknowledged every produce it caused (a delivery copy or a dead letter). ``take_events``
  is not used: it acks a batch in a ``finally`` even when processing of the batch failed;
- topics are created by the hub, never declared by faust; offsets start at the earliest record,
  so events produced before the router's group first existed are routed too.

A plain faust agent tops out well below raw aiokafka on this machine (bench/router.py), which
is why it is not the default.
"""

from __future__ import annotations

__all__ = ["RouterService"]

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import Awaitable
from typing import Any

import faust
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from faust.exceptions import ProducerSendError
from faust.types import EventT, StreamT

from bus.config.models import KafkaConfig
from bus.errors import BusError
from bus.kafka.clients import MAX_RECORD_BYTES, make_consumer
from bus.kafka.topics import TopicNames
from bus.runtime.ending import cancel
from routing.dispatch import Dispatcher, Send
from routing.metrics import removed_unread
from routing.tables import TableStore

log = logging.getLogger("routing.app")
_PENDING_LIMIT = 5000  # events sent but not yet acknowledged by Kafka: bounds router memory


def _faust_credentials(kafka: KafkaConfig) -> Any:
    sec = kafka.security
    ssl_context = None
    if sec.protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        ssl_context = create_ssl_context(
            cafile=str(sec.ssl_cafile) if sec.ssl_cafile else None,
            certfile=str(sec.ssl_certfile) if sec.ssl_certfile else None,
            keyfile=str(sec.ssl_keyfile) if sec.ssl_keyfile else None,
        )
    if sec.protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=sec.sasl_username,
            password=sec.sasl_password.get_secret_value() if sec.sasl_password else None,
            mechanism=sec.sasl_mechanism or "PLAIN",
            ssl_context=ssl_context,
        )
    return faust.SSLCredentials(ssl_context) if ssl_context else None


class RouterService:
    """The faust engine (``router.engine: faust``): the same dispatch as ``routing.worker``."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        kafka: KafkaConfig,
        bootstrap: str,
        topics: TopicNames,
        tables: TableStore | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.router = dispatcher.router
        self.tables = tables
        self._datadir = tempfile.TemporaryDirectory(prefix="bus-router-")
        session_s = kafka.session_timeout_ms / 1000
        self.app = faust.App(
            f"{topics.prefix}-router",
            broker=[f"kafka://{host}" for host in bootstrap.split(",")],
            broker_credentials=_faust_credentials(kafka),
            datadir=self._datadir.name,
            web_enabled=False,
            value_serializer="raw",
            key_serializer="raw",
            topic_partitions=kafka.partitions,
            topic_allow_declare=False,
            topic_disable_leader=True,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            producer_linger=0.005,
            producer_max_request_size=MAX_RECORD_BYTES,  # the hub's limit, as its other producers (faust's is 1,000,000)
            broker_max_poll_records=2000,
            broker_session_timeout=session_s,
            broker_heartbeat_interval=max(0.3, session_s / 5),
            broker_rebalance_timeout=session_s,
            broker_commit_interval=1.0,
        )
        self._sources = dispatcher.sources
        self._outputs = {
            name: self.app.topic(name, key_type=bytes, value_type=bytes, partitions=kafka.partitions) for name in dispatcher.output_topics
        }
        self._started = False
        # The engine's health as a task the hub's supervisor watches (as it watches the default
        # engine's loop): it ends with the error when the agent or its in-order acker fails, so
        # the router is restarted and /readyz says why, instead of the agent filling its pending
        # queue and blocking for ever unseen.
        self._failure: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        # Per partition, the offset the next event should have: a later one means the topic's retention
        # removed events the router had not read (it was stopped, or behind, for longer).
        self._next: dict[tuple[str, int], int] = {}
        self._kafka, self._bootstrap, self._group = kafka, bootstrap, f"{topics.prefix}-router"
        self._reader: Any = None  # asks Kafka where the group is committed (faust does not say), started when first needed
        if self._sources:
            source = self.app.topic(*self._sources, key_type=bytes, value_type=bytes, partitions=kafka.partitions)
            self.app.agent(source, name="route", concurrency=1)(self._agent)
            self.app.on_partitions_revoked.connect(self._revoked)  # type: ignore[arg-type]  # faust's stub: no bound async methods

    @property
    def task(self) -> asyncio.Task[None] | None:
        """Ends (with the error) when the engine fails; None when there is nothing to consume."""
        return self._task

    def _fail(self, exc: BaseException) -> None:
        if self._failure is not None and not self._failure.done():
            self._failure.set_exception(exc)

    def _acker_ended(self, acker: asyncio.Task[None]) -> None:
        if not acker.cancelled() and (error := acker.exception()) is not None:
            self._fail(error)

    @staticmethod
    async def _watch(failure: asyncio.Future[None]) -> None:
        await failure

    async def start(self) -> None:
        if self._started:
            raise BusError("router already started")
        if self.tables is not None:
            await self.tables.start()
        if not self._sources:
            log.info("router: no routes, nothing to consume")
            self._started = True
            return
        self.app.finalize()
        self._failure = asyncio.get_running_loop().create_future()
        await self.app.start()
        self._task = asyncio.create_task(self._watch(self._failure), name="router")
        self._started = True
        log.info("router (faust engine) consuming %s", ", ".join(self._sources))

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        task, self._task = self._task, None
        if task is not None:
            task.cancel()  # a deliberate stop: cancelled, so the supervisor does not take it for a failure
            await asyncio.gather(task, return_exceptions=True)
        if self.tables is not None:
            await self.tables.stop()
        if self._sources:
            if self._failure is not None and self._failure.done():
                # Failed: the events it could not acknowledge never will be, and faust would wait
                # for them for ever. They were not committed: the next engine routes them again.
                self.app.conf.stream_wait_empty = False
            await self.app.stop()
            # faust leaves its producer's client open on stop; close it so nothing leaks.
            with contextlib.suppress(Exception):
                await self.app.producer.stop()
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(Exception):
                await reader.stop()
        self._datadir.cleanup()
        log.info("router stopped")

    async def _revoked(self, sender: Any, *args: Any, signal: Any = None, **_: Any) -> None:
        """faust's signal: ``args[0]`` is the set of partitions revoked."""
        for tp in args[0]:
            self._next.pop((tp.topic, tp.partition), None)

    async def _committed(self, topic: str, partition: int) -> int | None:
        """Where the router's group is committed on a partition (None: not known, nothing checked)."""
        try:
            if self._reader is None:
                self._reader = make_consumer(self._kafka, self._bootstrap, group_id=self._group)
                await self._reader.start()
            return int((await self._reader.committed(TopicPartition(topic, partition))) or 0)
        except KafkaError as exc:
            log.warning("router (faust engine): where %s/%d is committed is not known (%r); not checked", topic, partition, exc)
            return None

    def _check_gap(self, message: Any, expected: int | None) -> None:
        if expected is not None and message.offset > expected:
            removed_unread(message.topic, message.partition, expected, message.offset)
        self._next[message.topic, message.partition] = message.offset + 1

    async def _agent(self, stream: StreamT[Any]) -> None:
        manual: Any = stream.noack()  # type: ignore[attr-defined]  # faust's StreamT stub lacks noack
        pending: asyncio.Queue[tuple[EventT[Any], list[Awaitable[Any]]]] = asyncio.Queue(_PENDING_LIMIT)
        acker = asyncio.create_task(self._ack_in_order(manual, pending), name="router-acker")
        acker.add_done_callback(self._acker_ended)
        try:
            async for event in manual.events():
                await pending.put((event, await self._dispatch(event.message)))
        except Exception as exc:
            self._fail(exc)
            raise
        finally:
            # Let what was already sent be acknowledged (bounded); the rest is redelivered.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(pending.join(), timeout=5)
            await cancel(acker)

    @staticmethod
    async def _ack_in_order(stream: StreamT[Any], pending: asyncio.Queue[tuple[EventT[Any], list[Awaitable[Any]]]]) -> None:
        while True:
            event, futures = await pending.get()
            try:
                if futures:
                    await asyncio.gather(*futures)
                await stream.ack(event)
            except Exception:
                log.exception("router: a produce failed; stopping acks so the event is routed again")
                raise
            finally:
                pending.task_done()

    async def _dispatch(self, message: Any) -> list[Awaitable[Any]]:
        expected = self._next.get((message.topic, message.partition))
        if expected is None:  # the partition's first event since it was assigned: from where it is committed
            expected = await self._committed(message.topic, message.partition)
        self._check_gap(message, expected)
        origin = f"{message.topic}/{message.partition}/{message.offset}"
        futures: list[Awaitable[Any]] = []
        if not self.dispatcher.knows_value(message.value):
            await self.dispatcher.learn_ids((message.value,))
        try:
            await self._send(self.dispatcher.plan(message.key, message.value, list(message.headers or ()), origin), futures)
        except (MessageSizeTooLargeError, ProducerSendError) as exc:
            if not isinstance(exc, MessageSizeTooLargeError) and not isinstance(exc.__cause__, MessageSizeTooLargeError):
                raise
            # A producer outside the hub wrote headers too large to copy: planned again with every
            # record measured, it becomes the router's dead letter (copies already sent are sent
            # again with the same ids; deliveries are idempotent).
            log.warning("router: Kafka refused a copy of %s as too large; planning it again, measured", origin)
            self.dispatcher.exact_sizes = True
            try:
                await self._send(self.dispatcher.plan(message.key, message.value, list(message.headers or ()), origin), futures)
            finally:
                self.dispatcher.exact_sizes = False
        return futures

    async def _send(self, sends: list[Send], futures: list[Awaitable[Any]]) -> None:
        for out in sends:
            if out.throttle is not None:
                await out.throttle.take()
            futures.append(await self._outputs[out.topic].send(key=out.key, value=out.value, headers=out.headers))
