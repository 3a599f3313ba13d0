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

from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from bus.config.models import KafkaConfig
from bus.errors import BusError
from bus.kafka.clients import make_consumer
from bus.metrics import SECONDS_SINCE_COMMIT
from routing.dispatch import Dispatcher
from routing.tables import TableStore

log = logging.getLogger("routing.worker")


class _WaitForBatch(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, lock: asyncio.Lock) -> None:
        self._lock = lock

    async def on_partitions_revoked(self, revoked: object) -> None:
        async with self._lock:  # the batch in hand is produced and committed before partitions go
            pass

    async def on_partitions_assigned(self, assigned: object) -> None:
        return None


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
        self._since_commit = SECONDS_SINCE_COMMIT.labels(group)

    @property
    def assigned(self) -> bool:
        return bool(self._consumer.assignment())

    async def start(self) -> None:
        if self._task is not None:
            raise BusError("router already started")
        if self.tables is not None:
            await self.tables.start()
        sources = self.dispatcher.sources
        if not sources:
            log.info("router: no routes, nothing to consume")
            return
        self._consumer.subscribe(sources, listener=_WaitForBatch(self._lock))
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="router")
        log.info("router consuming %s (group %s)", ", ".join(sources), self._group)

    async def stop(self) -> None:
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await task
            finally:
                await self._consumer.stop()
        if self.tables is not None:
            await self.tables.stop()
        log.info("router stopped")

    async def _run(self) -> None:
        last_commit = time.monotonic()
        while not self._stopping.is_set():
            batch = await self._consumer.getmany(timeout_ms=200, max_records=self._max_records)
            if not batch:
                last_commit = time.monotonic()
                self._since_commit.set(0)
                continue
            async with self._lock:
                self._since_commit.set(time.monotonic() - last_commit)
                try:
                    await self._route(batch)
                except KafkaError as exc:
                    # Kafka did not take every copy: route the whole batch again (same ids), never skip it.
                    log.warning("router: produce failed (%r); routing the batch again", exc)
                    for tp, records in batch.items():
                        self._consumer.seek(tp, records[0].offset)
                    await asyncio.sleep(1)
                    continue
                if await self._commit({tp: OffsetAndMetadata(records[-1].offset + 1, "") for tp, records in batch.items()}):
                    last_commit = time.monotonic()
                    self._since_commit.set(0)

    async def _route(self, batch: dict[TopicPartition, list]) -> None:  # type: ignore[type-arg]
        plan = self.dispatcher.plan
        send = self._producer.send
        futures = []
        for tp, records in batch.items():
            for record in records:
                for out in plan(record.key, record.value, list(record.headers), f"{tp.topic}/{tp.partition}/{record.offset}"):
                    if out.throttle is not None:
                        await out.throttle.take()
                    futures.append(await send(out.topic, out.value, key=out.key, headers=out.headers))
        await asyncio.gather(*futures)  # the batch is done only when Kafka has every copy

    async def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> bool:
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            log.warning("router could not commit (%r); the batch will be routed again by the partitions' next owner", exc)
            return False
        return True

    async def __aenter__(self) -> RouterWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self.stop()
