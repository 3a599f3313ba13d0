"""The delivery loop: one subscriber's delivery topic -> its outbound adapter, commit after the answer.

Plain aiokafka with explicit commits, not faust (faust-streaming #606 can commit past an event
still in progress). Contract:

- Events of one key are delivered strictly in order: a key's later events wait while an earlier
  one is retried. Events of other keys do not wait for it: records are fetched continuously into
  one *lane* per key, and lanes run concurrently, up to ``delivery.concurrency`` calls at once.
  A key whose event keeps failing holds only its own lane (no head-of-line blocking).
- What is held is bounded: at most ``delivery.max_buffered`` records wait in lanes; at that point
  fetching pauses until some settle (backpressure; the rest waits in Kafka).
- An event is *settled* when the target accepted it (``deliver`` returned) or it is in the
  subscriber's dead-letter topic with its reason (Kafka acknowledged that produce).
- ``RetryableError`` (and anything an adapter raises that is neither retryable nor permanent, a
  bug: logged with its traceback) is retried with exponential backoff and jitter, honouring
  ``retry_after``, until ``delivery.max_attempts`` or ``delivery.max_age`` (default 24h; see
  ``bus/runtime/retry.py``), then dead-lettered. ``PermanentError``: dead-lettered at once. After a
  dead letter, the key's later events are delivered as usual.
- ``delivery.rate_limit`` paces calls; ``delivery.circuit_breaker`` stops calling a failing target
  and probes it after ``reset_after``, while its events wait (or dead-letter, if configured).
- Every ``_FLUSH_S`` the worker writes a ledger entry per partition (``bus/ledger.py``): the
  offsets settled since the last entry, and the offset it is about to commit (past every settled
  offset in a row; ``bus/runtime/settlement.py``). Then it commits. Offsets settled past a held
  event are in the ledger, so after a crash or a rebalance the next owner skips them: nothing the
  ledger recorded as delivered is delivered again.
- ``stop()`` stops fetching, lets calls in progress finish (events waiting or being retried stay
  unsettled, to be redelivered), writes the ledger, commits, and leaves the group. A rebalance
  does the same for the partitions it takes away, so a graceful hand-over delivers nothing twice.
"""

from __future__ import annotations

__all__ = ["DeliveryWorker"]

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any, TypeAlias

from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from bus.adapter_api import Outbound, OutboundConfig
from bus.codec import Codec
from bus.config.delivery import DeliveryPolicy
from bus.config.models import KafkaConfig
from bus.errors import BusError
from bus.kafka.clients import make_consumer, stop_consumer
from bus.kafka.join_watch import JoinWatch
from bus.kafka.lag import LAG
from bus.kafka.reader import until_kafka_answers
from bus.kafka.topics import TopicNames
from bus.lineage import LineageBatch
from bus.metrics import DELIVERY_LOST, SECONDS_SINCE_COMMIT
from bus.runtime.attempts import EventDelivery, Stopping
from bus.runtime.commits import Bookkeeper
from bus.runtime.gate import TargetGate
from bus.runtime.retry import RetryPolicy
from bus.runtime.settlement import PartitionBook
from bus.runtime.subscriber_state import SubscriberState
from bus.tracing import NO_TRACING, Tracing

log = logging.getLogger("bus.runtime.delivery")
Record: TypeAlias = Any  # aiokafka's ConsumerRecord (aiokafka ships no type information)
LaneKey: TypeAlias = tuple[int, bytes | None]  # (partition, key)

# Ledger + commit: soon after something settled, at most every _FLUSH_S (one ledger write and one
# commit per partition then, however many events settled). Also bounds what a kill -9 can make
# the next owner deliver again.
_FLUSH_S = 0.05


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: DeliveryWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker.hand_over(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._worker.take_over(assigned)


class _Partition:
    """An owned partition: its book, and an event that cuts its waits short when it is given up."""

    __slots__ = ("book", "closing", "lanes", "next")

    def __init__(self, book: PartitionBook) -> None:
        self.book = book
        self.closing = asyncio.Event()
        self.lanes: set[asyncio.Task[None]] = set()
        self.next = book.committed  # the offset the next fetch should start at: a later one means records were removed


class DeliveryWorker:
    def __init__(
        self,
        adapter: Outbound,  # type: ignore[type-arg]
        *,
        kafka: KafkaConfig,
        bootstrap: str,
        topics: TopicNames,
        codec: Codec,
        producer: AIOKafkaProducer,
        tracing: Tracing = NO_TRACING,
        lineage: LineageBatch | None = None,
    ) -> None:
        self.adapter = adapter
        self._tracing = tracing
        self.name = adapter.config.name
        config = adapter.config
        self.policy = config.delivery if isinstance(config, OutboundConfig) else DeliveryPolicy()
        self.retry = RetryPolicy(self.policy, subscriber=self.name)
        self._topic = topics.delivery(self.name)
        self._group = topics.delivery_group(self.name)
        self._codec = codec
        self._producer = producer
        self._kafka = kafka
        self._bootstrap = bootstrap
        self._consumer = make_consumer(kafka, bootstrap, group_id=self._group)
        self._join_watch = JoinWatch(self._consumer, self._group, kafka.join_timeout_s)
        self.health = SubscriberState(self.name)
        self.gate = TargetGate(self.name, self.policy, self.health)
        self._task: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._partitions: dict[int, _Partition] = {}
        self.lost = 0  # events removed by the topic's retention before they were read (``_pass_over``)
        self._lanes: dict[LaneKey, deque[Record]] = {}
        self._buffered = 0
        self._room = asyncio.Event()  # set while fewer than max_buffered records wait in lanes
        self._room.set()
        self._settled = asyncio.Event()  # something settled since the last flush
        self._last_progress = time.monotonic()
        self._probe: asyncio.Task[None] | None = None
        self._lag = LAG.track(self._group, self._consumer)
        self._since_commit = SECONDS_SINCE_COMMIT.labels(self._group)
        self._books = Bookkeeper(
            self.name,
            topic=self._topic,
            ledger=topics.ledger(self.name),
            dead_letters=topics.dead_letter(self.name),
            consumer=self._consumer,
            producer=producer,
            kafka=kafka,
            bootstrap=bootstrap,
            lag=self._lag,
            lineage=lineage,
        )
        self._delivery = EventDelivery(
            adapter, retry=self.retry, gate=self.gate, codec=codec, books=self._books, health=self.health, tracing=tracing
        )

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            raise BusError(f"delivery worker {self.name} already started")
        try:
            await self._consumer.start()
        except BaseException:
            await stop_consumer(self._consumer)
            raise
        self._consumer.subscribe([self._topic], listener=_Rebalance(self))
        self._task = asyncio.create_task(self._run(), name=f"deliver:{self.name}")
        self._flusher = asyncio.create_task(self._flush_every(_FLUSH_S), name=f"deliver-commit:{self.name}")
        self._probe = asyncio.create_task(
            self._books.probe_ends(lambda: [part.book for part in list(self._partitions.values())]), name=f"deliver-watermarks:{self.name}"
        )

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The fetch loop; the hub's supervisor watches it and restarts the worker if it dies."""
        return self._task

    def pause(self, by: str) -> None:
        """Stop delivering (an operator's request): no new call starts, nothing new is fetched;
        calls in progress finish. Events wait in Kafka until ``resume``."""
        self.gate.flowing.clear()
        self._consumer.pause(*self._consumer.assignment())
        self.health.pause(by)

    def resume(self) -> None:
        self.gate.flowing.set()
        self._consumer.resume(*self._consumer.assignment())
        self.health.pause(None)

    def balance(self) -> dict[str, int]:
        """The ledger balance of the partitions this worker owns (``bus reconcile`` has the whole story)."""
        return self._books.balance([part.book for part in list(self._partitions.values())])

    def status(self) -> dict[str, Any]:
        """The subscriber's state for /readyz: its health, and what waits in memory."""
        found = {**self.health.as_json(), "held_keys": len(self._lanes), "buffered": self._buffered}
        return found | {"lost_to_retention": self.lost} if self.lost else found

    async def stop(self) -> None:
        if self._task is None:
            await stop_consumer(self._consumer)  # never started: close it anyway (an unclosed consumer warns)
            return
        self._stopping.set()
        self._room.set()
        try:
            await asyncio.gather(self._task, return_exceptions=True)  # a crash was already reported by the supervisor
            await self._give_up(list(self._partitions), within=self.policy.drain_at_stop.total_seconds())
        finally:
            self._task = None
            for task in (self._flusher, self._probe):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            await self._books.stop()
            await stop_consumer(self._consumer)
            log.info("delivery worker %s stopped", self.name)

    # -- partitions come and go ------------------------------------------------------------------
    async def take_over(self, assigned: set[TopicPartition]) -> None:
        """Partitions assigned: their books, from the committed offsets and the ledger."""
        mine = sorted(tp.partition for tp in assigned if tp.topic == self._topic and tp.partition not in self._partitions)
        if not mine:
            return
        # However long Kafka takes: a partition taken without its book would never be delivered.
        books = await until_kafka_answers(f"delivery worker {self.name}: the ledger of {mine}", lambda: self._books.restore(mine))
        for partition, book in books.items():
            self._partitions[partition] = _Partition(book)
        if not self.gate.flowing.is_set():  # paused: what is assigned meanwhile waits too
            self._consumer.pause(*(TopicPartition(self._topic, p) for p in mine))
        self._update_ledger_gauges()
        log.info("delivery worker %s owns partitions %s of %s", self.name, mine, self._topic)

    async def hand_over(self, revoked: set[TopicPartition]) -> None:
        """Partitions revoked: finish the calls in progress, record and commit, then let them go."""
        await self._give_up([tp.partition for tp in revoked if tp.topic == self._topic])
        self._lag.revoked(revoked)
        self._update_ledger_gauges()

    async def _give_up(self, partitions: list[int], *, within: float | None = None) -> None:
        """Let the calls under way finish, record and commit what was settled, and forget the
        partitions. ``within`` (a stop): calls still under way after it are cut, their events left
        unsettled for the next owner (a rebalance waits for them: the process goes on)."""
        owned = [self._partitions[p] for p in partitions if p in self._partitions]
        for part in owned:
            part.closing.set()
        lanes = [lane for part in owned for lane in list(part.lanes)]
        if lanes:
            _, pending = await asyncio.wait(lanes, timeout=within)
            if pending:
                log.warning(
                    "delivery worker %s: %d call(s) to the target still under way %.0fs into the stop (delivery.drain_at_stop): "
                    "cut; their events are delivered again, with the same idempotency keys, by the next owner",
                    self.name, len(pending), within,
                )  # fmt: skip
                for lane in pending:
                    lane.cancel()
                await asyncio.wait(pending, timeout=5)
            for lane in lanes:  # a lane's failure was its own (the supervisor reports the worker's): read, so it is not logged as lost
                if lane.done() and not lane.cancelled():
                    lane.exception()
        await self._flush([part.book.partition for part in owned])
        for part in owned:
            del self._partitions[part.book.partition]
            self._books.ends.pop(part.book.partition, None)
            self.health.forget(part.book.partition)

    # -- fetching into lanes ---------------------------------------------------------------------
    async def _run(self) -> None:
        limit = self.policy.max_buffered
        while not self._stopping.is_set():
            if self._buffered >= limit:
                self._room.clear()
                await self._room.wait()  # backpressure: wait for lanes to settle something
                continue
            if self.gate.open() and self._buffered:
                await asyncio.sleep(0.2)  # the circuit is open: nothing could be delivered, so leave the rest in Kafka
                continue
            batch = await self._join_watch.getmany(timeout_ms=200, max_records=min(500, limit - self._buffered))
            for tp, records in batch.items():
                part = self._partitions.get(tp.partition)
                if part is None or part.closing.is_set():
                    if tp in self._consumer.assignment() and not self._stopping.is_set():
                        # Assigned, but its book is still loading (or it is being given up and taken
                        # back): read these again later rather than skip them.
                        self._consumer.seek(tp, records[0].offset)
                    continue
                if records[0].offset > part.next:
                    self._pass_over(part, part.next, records[0].offset)
                part.next = records[-1].offset + 1
                for record in records:
                    if not part.book.is_settled(record.offset):
                        self._enqueue(part, record)

    def _pass_over(self, part: _Partition, start: int, end: int) -> None:
        """Records ``start`` to ``end - 1`` were removed from the topic before they were read: the
        delivery topic's retention passed a subscriber that was behind (down, paused, its target
        failing) for longer. They are lost; said, counted, and passed over, so the commit goes on."""
        count = end - start
        log.warning(
            "delivery worker %s: %d event(s) at offsets %d to %d of %s/%d were removed by the topic's retention before "
            "they were delivered or dead-lettered: lost (the subscriber was behind for longer than the retention)",
            self.name, count, start, end - 1, self._topic, part.book.partition,
        )  # fmt: skip
        DELIVERY_LOST.labels(self.name).inc(count)
        self.lost += count
        part.book.pass_over(start, end)
        self._settled.set()  # the commit can move past them

    def _enqueue(self, part: _Partition, record: Record) -> None:
        key: LaneKey = (part.book.partition, record.key)
        self._buffered += 1
        lane = self._lanes.get(key)
        if lane is not None:
            lane.append(record)
            return
        lane = self._lanes[key] = deque((record,))
        task = asyncio.create_task(self._run_lane(part, key, lane), name=f"deliver-lane:{self.name}")
        part.lanes.add(task)
        task.add_done_callback(part.lanes.discard)

    async def _run_lane(self, part: _Partition, key: LaneKey, lane: deque[Record]) -> None:
        """Deliver one key's records in order; ends when the lane is empty or the partition is given up."""
        try:
            while lane and not part.closing.is_set():
                record = lane[0]
                try:
                    delivered = await self._delivery.settle(record, part.closing)
                except Stopping:
                    break
                part.book.settle(record.offset, delivered)
                self._settled.set()
                self.health.settled((part.book.partition, record.offset))
                self._last_progress = time.monotonic()
                lane.popleft()
                self._release(1)
        finally:
            if self._lanes.get(key) is lane:
                del self._lanes[key]
            self._release(len(lane))  # left unsettled (stop, rebalance): fetched again by the next owner

    def _release(self, count: int) -> None:
        if count:
            self._buffered -= count
            if self._buffered < self.policy.max_buffered:
                self._room.set()

    # -- ledger and commits ------------------------------------------------------------------------
    async def _flush_every(self, seconds: float) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):  # also wakes up to keep the gauges true when idle
                    await self._settled.wait()
            self._settled.clear()
            await self._flush(list(self._partitions))
            busy = self._buffered > 0
            self._since_commit.set(time.monotonic() - self._last_progress if busy else 0)
            if not busy:
                self._last_progress = time.monotonic()
            self._update_ledger_gauges()
            await asyncio.sleep(seconds)

    async def _flush(self, partitions: list[int]) -> None:
        await self._books.flush([part.book for p in partitions if (part := self._partitions.get(p)) is not None])

    def _update_ledger_gauges(self) -> None:
        self._books.update_gauges([part.book for part in list(self._partitions.values())])
