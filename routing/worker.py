"""The router's default engine: batches on plain aiokafka, commit after every produce is acknowledged.

Contract, per batch (``getmany``, up to ``max_records``):

1. every record is planned (``Dispatcher.plan``: decode, route, transform) in partition order and
   its sends are handed to the producer in that order, so per-key order holds end to end;
2. all produce futures of the batch are awaited (acks=all);
3. only then are the batch's offsets committed.

A crash between 1 and 3 re-routes the batch on restart: duplicates with the same event ids,
never a gap. A rebalance waits for the batch in hand (``on_partitions_revoked`` takes the same
lock), so partitions move only between batches and a revocation does not cause duplicates.

Why not a faust agent: on this machine a plain faust agent that only forwards bytes peaks at
about 0.16 of raw aiokafka passthrough (its consumer runs in a thread and every message goes
through its stream machinery), while the router's target is 0.6 (issue 8). ``router.engine:
faust`` keeps the faust engine (``routing.app``) available.
"""

from __future__ import annotations

__all__ = ["RouterWorker"]

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError, MessageSizeTooLargeError
from aiokafka.structs import OffsetAndMetadata

from bus.config.models import KafkaConfig
from bus.errors import BusError
from bus.event import now_rfc3339
from bus.kafka.batches import BatchSender, Record
from bus.kafka.clients import make_consumer, stop_consumer
from bus.kafka.join_watch import JoinWatch
from bus.kafka.lag import LAG
from bus.kafka.reader import replay, until_kafka_answers
from bus.lineage import LineageBatch
from bus.metrics import KAFKA_ERRORS, SECONDS_SINCE_COMMIT
from bus.tracing import Tracing
from routing.dispatch import Dispatcher, Send
from routing.metrics import removed_unread
from routing.tables import TableStore

log = logging.getLogger("routing.worker")


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: RouterWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._worker._lock:  # the batch in hand is produced and committed before partitions go
            self._worker.forget_state(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._worker._lock:  # aggregator state is loaded before the first record is routed
            await self._worker.load_state(assigned)


class _Stopping(Exception):
    """The router is being stopped while a throttled copy waits for its token: the batch is left
    uncommitted (the partitions' next owner routes it again, with the same ids)."""


class RouterWorker:
    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        kafka: KafkaConfig,
        bootstrap: str,
        group: str,
        producer: AIOKafkaProducer,
        tables: TableStore | None = None,
        max_records: int = 2000,
        lineage: LineageBatch | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.router = dispatcher.router
        self.tables = tables
        self._kafka = kafka
        self._bootstrap = bootstrap
        self._group = group
        self._producer = producer
        self._max_records = max_records
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._consumer = make_consumer(kafka, bootstrap, group_id=group, max_poll_records=max_records)
        self._next: dict[TopicPartition, int] = {}  # per partition, the offset the next batch should start at
        self._since_commit = SECONDS_SINCE_COMMIT.labels(group)
        self._lag = LAG.track(group, self._consumer)
        self._batches = BatchSender(producer)
        self._join_watch = JoinWatch(self._consumer, group, kafka.join_timeout_s)
        self._lineage = lineage  # where every event went, written with the batch (bus.lineage)
        # One check per event when tracing is off: None, not a disabled Tracing.
        self._tracing = tracing if tracing is not None and tracing.enabled else None

    async def start(self) -> None:
        if self._task is not None:
            raise BusError("router already started")
        if self.tables is not None:
            await self.tables.start()
        sources = self.dispatcher.sources
        if not sources:
            log.info("router: no routes, nothing to consume")
            return
        # Subscribe after start, not before: aiokafka's start() waits for the group join when a
        # subscription is already set (about 2 s on the embedded broker), and the hub's start, and
        # so its readiness, waited for it. Events wait in Kafka meanwhile; the first getmany joins.
        await self._consumer.start()
        self._consumer.subscribe(sources, listener=_Rebalance(self))
        self._task = asyncio.create_task(self._run(), name="router")
        log.info("router consuming %s (group %s)", ", ".join(sources), self._group)

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The routing loop; the hub watches it and exits if it ends on its own."""
        return self._task

    async def stop(self) -> None:
        self._stopping.set()
        task, self._task = self._task, None
        try:
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)  # a crash was already reported by the hub
        finally:
            await stop_consumer(self._consumer)  # also when it never started (no routes): an unclosed consumer warns
        if self.tables is not None:
            await self.tables.stop()
        log.info("router stopped")

    def forget_state(self, revoked: set[TopicPartition]) -> None:
        self._lag.revoked(revoked)
        for tp in revoked:
            self._next.pop(tp, None)
        for state_topic, aggregator in self.dispatcher.state_topics.items():
            source = self.dispatcher.state_sources[state_topic]
            aggregator.drop_partitions({tp.partition for tp in revoked if tp.topic == source})

    async def load_state(self, assigned: set[TopicPartition]) -> None:
        """Read the aggregator state of the newly assigned partitions from their changelogs; note
        where each is committed (a first record after it means records were removed unread)."""
        for tp in assigned:
            with contextlib.suppress(KafkaError):  # not known: nothing is checked for that partition
                self._next[tp] = (await self._consumer.committed(tp)) or 0
        wanted = [
            TopicPartition(state_topic, tp.partition)
            for state_topic, source in self.dispatcher.state_sources.items()
            for tp in assigned
            if tp.topic == source
        ]
        if not wanted:
            return

        def apply(tp: TopicPartition, records: list[Any]) -> None:
            aggregator = self.dispatcher.state_topics[tp.topic]
            for record in records:
                aggregator.load(record.key.decode(errors="replace") if record.key else "", record.value, tp.partition)

        # Retried until Kafka answers: aggregating without the state read back would count anew.
        await until_kafka_answers("router: aggregator state", lambda: replay(self._kafka, self._bootstrap, wanted, apply))
        log.info("router: aggregator state loaded for %d partition(s)", len(wanted))

    async def _run(self) -> None:
        with contextlib.suppress(_Stopping):
            await self._loop()

    async def _loop(self) -> None:
        last_commit = time.monotonic()
        while not self._stopping.is_set():
            batch = await self._join_watch.getmany(timeout_ms=200, max_records=self._max_records)  # bounded, a join too
            if self.dispatcher.aggregators:
                await self._tick()
            if not batch:
                last_commit = time.monotonic()
                self._since_commit.set(0)
                continue
            async with self._lock:
                self._since_commit.set(time.monotonic() - last_commit)
                self._check_gaps(batch)
                try:
                    await self._route(batch)
                except KafkaError as exc:
                    # Kafka did not take every copy: route the whole batch again (same ids), never skip it.
                    KAFKA_ERRORS.labels("router", "produce").inc()
                    if isinstance(exc, MessageSizeTooLargeError) and not self.dispatcher.exact_sizes:
                        # Routed again with every record measured: the one too large becomes a dead letter.
                        self.dispatcher.exact_sizes = True
                        log.warning("router: Kafka refused a copy as too large; routing the batch again, measuring every record")
                        for tp, records in batch.items():
                            self._consumer.seek(tp, records[0].offset)
                        continue
                    log.warning("router: produce failed (%r); routing the batch again", exc)
                    for tp, records in batch.items():
                        self._consumer.seek(tp, records[0].offset)
                    await asyncio.sleep(1)
                    continue
                self.dispatcher.exact_sizes = False
                if await self._commit({tp: OffsetAndMetadata(records[-1].offset + 1, "") for tp, records in batch.items()}):
                    last_commit = time.monotonic()
                    self._since_commit.set(0)

    def _check_gaps(self, batch: dict[TopicPartition, list[Any]]) -> None:
        """A batch that starts after the offset expected: the topic's retention removed records the
        router had not read (it was stopped, or behind, for longer). Said and counted; they cannot
        be routed."""
        for tp, records in batch.items():
            expected = self._next.get(tp)
            if expected is not None and records[0].offset > expected:
                removed_unread(tp.topic, tp.partition, expected, records[0].offset)
            self._next[tp] = records[-1].offset + 1

    async def _tick(self) -> None:
        """Emit time windows that have ended, with their keys' new state, before going on."""
        async with self._lock:
            sends = self.dispatcher.tick(time.time())
            while sends and not self._stopping.is_set():
                try:
                    await asyncio.gather(*[await self._send(out) for out in sends])
                except KafkaError as exc:  # emissions are idempotent (fixed ids): try again
                    KAFKA_ERRORS.labels("router", "produce").inc()
                    log.warning("router: could not emit closed windows (%r); retrying", exc)
                    await asyncio.sleep(1)
                else:
                    return

    async def _send(self, out: Send) -> asyncio.Future[object]:
        if out.throttle is not None and (delay := out.throttle.delay_for()) > 0:
            # The token is waited for, or a stop: a throttled route's batch (a copy a second, for
            # a batch of 500 events) held the stop, and the process's shutdown, for its whole time.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
                raise _Stopping
        future: asyncio.Future[object] = await self._producer.send(
            out.topic, out.value, key=out.key, headers=out.headers, partition=out.partition
        )
        return future

    async def _route(self, batch: dict[TopicPartition, list]) -> None:  # type: ignore[type-arg]
        plan = self.dispatcher.plan
        # One produce batch per partition, not a send() per copy, in the order planned: per-key order holds.
        out_records: list[Record] = []
        append = out_records.append
        futures: list[Any] = []
        await self.dispatcher.learn_ids(record.value for records in batch.values() for record in records)
        lineage = self._lineage
        if lineage:
            lineage.take()  # noted by a batch that failed before it was produced: that batch is routed again
        at = now_rfc3339() if lineage is not None else ""
        tracing = self._tracing
        for tp, records in batch.items():
            for record in records:
                origin = f"{tp.topic}/{tp.partition}/{record.offset}"
                if tracing is None:
                    outs = plan(record.key, record.value, list(record.headers), origin, partition=tp.partition, offset=record.offset)
                else:
                    outs = self._traced_plan(tracing, tp, record, origin)
                if lineage is not None:
                    lineage.routed(record.headers, record.key, origin, lineage.copies(outs))
                for out in outs:
                    if out.throttle is None:
                        append(Record(out.topic, out.key, out.value, out.headers, out.partition))
                        continue
                    # A throttled copy leaves when its token comes, not with the batch: what was
                    # planned before it goes first (order), then it alone.
                    if out_records:
                        futures += await self._batches.send_all(out_records)
                        out_records.clear()
                    futures.append(await self._send(out))
        if lineage is not None:
            # With the batch, before the commit: an entry is as durable as the routing it records.
            out_records += lineage.take(at)
        futures += await self._batches.send_all(out_records)
        await asyncio.gather(*futures)  # done only when Kafka has every copy

    def _traced_plan(self, tracing: Tracing, tp: TopicPartition, record: Any, origin: str) -> list[Send]:
        """The event's routing as a span (OpenTelemetry messaging conventions), child of the event's
        traceparent; every copy carries the span's traceparent on, so deliveries are its children."""
        headers = list(record.headers)
        parent = next((v.decode() for n, v in headers if n == "traceparent" and v), None)
        attributes = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "route",
            "messaging.destination.name": tp.topic,
            "messaging.destination.partition.id": str(tp.partition),
            "messaging.kafka.offset": str(record.offset),
            "messaging.consumer.group.name": self._group,
        }
        with tracing.span(f"route {tp.topic}", parent, kind="consumer", attributes=attributes) as child:
            if child:
                headers = [(n, child.encode()) if n == "traceparent" else (n, v) for n, v in headers]
            return self.dispatcher.plan(record.key, record.value, headers, origin, partition=tp.partition, offset=record.offset)

    async def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> bool:
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            KAFKA_ERRORS.labels("router", "commit").inc()
            log.warning("router could not commit (%r); the batch will be routed again by the partitions' next owner", exc)
            return False
        self._lag.committed(offsets)
        if self.dispatcher.aggregators:
            for tp, position in offsets.items():
                self.dispatcher.committed(tp.topic, tp.partition, position.offset)
        return True

    async def __aenter__(self) -> RouterWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self.stop()
