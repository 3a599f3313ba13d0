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
import dataclasses
import logging
import time
from collections import defaultdict, deque
from datetime import datetime
from typing import Any, TypeAlias

from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from bus.adapter_api import Outbound, OutboundConfig
from bus.codec import Codec
from bus.config.delivery import DeliveryPolicy
from bus.config.models import KafkaConfig
from bus.deadletters import why_headers
from bus.errors import BusError, PermanentError, RetryableError
from bus.event import Event, now_rfc3339
from bus.kafka.clients import make_consumer
from bus.kafka.lag import LAG
from bus.kafka.reader import read_to_end
from bus.kafka.topics import TopicNames
from bus.kafka.watermarks import Watermarks
from bus.ledger import LedgerEntry
from bus.metrics import (
    CIRCUIT_OPENED,
    CIRCUIT_STATE,
    DEAD_LETTERS,
    DELIVERIES,
    DELIVERY_ATTEMPTS,
    DELIVERY_SECONDS,
    END_TO_END_SECONDS,
    LEDGER,
    RATE_LIMIT_WAIT,
    SECONDS_SINCE_COMMIT,
)
from bus.ratelimit import TokenBucket
from bus.runtime.breaker import CircuitBreaker, State
from bus.runtime.retry import RetryPolicy, seconds
from bus.runtime.settlement import Draft, PartitionBook
from bus.runtime.subscriber_state import SubscriberState
from bus.tracing import NO_TRACING, Tracing

log = logging.getLogger("bus.runtime.delivery")
Record: TypeAlias = Any  # aiokafka's ConsumerRecord (aiokafka ships no type information)
LaneKey: TypeAlias = tuple[int, bytes | None]  # (partition, key)

# Ledger + commit: soon after something settled, at most every _FLUSH_S (one ledger write and one
# commit per partition then, however many events settled). Also bounds what a kill -9 can make
# the next owner deliver again.
_FLUSH_S = 0.05


class _Stopping(Exception):
    """Raised inside a delivery when stop() or a rebalance interrupts a wait."""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: DeliveryWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker.hand_over(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._worker.take_over(assigned)


class _Partition:
    """An owned partition: its book, and an event that cuts its waits short when it is given up."""

    __slots__ = ("book", "closing", "lanes")

    def __init__(self, book: PartitionBook) -> None:
        self.book = book
        self.closing = asyncio.Event()
        self.lanes: set[asyncio.Task[None]] = set()


def _since_event(event: Event) -> float | None:
    """Seconds from the event's own time (ce_time) to now; None if the source sent a time we cannot read."""
    try:
        return max(0.0, time.time() - datetime.fromisoformat(event.time).timestamp())
    except ValueError:
        return None


def _age(event: Event, first_attempt: float) -> float:
    """Seconds since the event entered the hub (its ce_time), or since the first attempt."""
    since = _since_event(event)
    return time.monotonic() - first_attempt if since is None else since


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
    ) -> None:
        self.adapter = adapter
        self._tracing = tracing
        self.name = adapter.config.name
        config = adapter.config
        self.policy = config.delivery if isinstance(config, OutboundConfig) else DeliveryPolicy()
        self.retry = RetryPolicy(self.policy)
        self._topic = topics.delivery(self.name)
        self._dlq = topics.dead_letter(self.name)
        self._ledger = topics.ledger(self.name)
        self._group = topics.delivery_group(self.name)
        self._codec = codec
        self._producer = producer
        self._kafka = kafka
        self._bootstrap = bootstrap
        self._consumer = make_consumer(kafka, bootstrap, group_id=self._group)
        self._slots = asyncio.Semaphore(self.policy.concurrency)
        rate = self.policy.rate_limit
        self.bucket = TokenBucket(rate.rate, rate.burst) if rate else None
        breaker = self.policy.circuit_breaker
        self.breaker = (
            CircuitBreaker(
                seconds(breaker.reset_after, 30.0),
                failure_ratio=breaker.failure_ratio,
                window=breaker.window,
                min_calls=breaker.min_calls,
            )
            if breaker
            else None
        )
        self.health = SubscriberState(self.name)
        self._task: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._partitions: dict[int, _Partition] = {}
        self._lanes: dict[LaneKey, deque[Record]] = {}
        self._buffered = 0
        self._room = asyncio.Event()  # set while fewer than max_buffered records wait in lanes
        self._room.set()
        self._flush_lock = asyncio.Lock()
        self._settled = asyncio.Event()  # something settled since the last flush
        self._last_progress = time.monotonic()
        self._ends: dict[int, int] = {}  # the delivery topic's end per owned partition, probed every few seconds
        self._watermarks = Watermarks(kafka, bootstrap)
        self._probe: asyncio.Task[None] | None = None
        self._delivered = DELIVERIES.labels(self.name, "delivered")
        self._retried = DELIVERIES.labels(self.name, "retried")
        self._dead = DELIVERIES.labels(self.name, "dead_lettered")
        self._attempts = DELIVERY_ATTEMPTS.labels(self.name)
        self._latency = DELIVERY_SECONDS.labels(self.name)
        self._end_to_end = END_TO_END_SECONDS.labels(self.name)
        self._dead_letters = DEAD_LETTERS.labels(self.name)
        self._lag = LAG.track(self._group, self._consumer)
        self._since_commit = SECONDS_SINCE_COMMIT.labels(self._group)
        self._circuit_state = CIRCUIT_STATE.labels(self.name)
        self._circuit_opened = CIRCUIT_OPENED.labels(self.name)
        self._rate_wait = RATE_LIMIT_WAIT.labels(self.name)
        self._ledger_gauges = {state: LEDGER.labels(self.name, state) for state in ("entered", "delivered", "dead_lettered", "in_flight")}
        self._bug_logged: set[str] = set()  # adapter exceptions already logged with a traceback, by type

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            raise BusError(f"delivery worker {self.name} already started")
        try:
            await self._consumer.start()
        except BaseException:
            await self._consumer.stop()
            raise
        self._consumer.subscribe([self._topic], listener=_Rebalance(self))
        self._task = asyncio.create_task(self._run(), name=f"deliver:{self.name}")
        self._flusher = asyncio.create_task(self._flush_every(_FLUSH_S), name=f"deliver-commit:{self.name}")
        self._probe = asyncio.create_task(self._probe_ends(), name=f"deliver-watermarks:{self.name}")

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The fetch loop; the hub's supervisor watches it and restarts the worker if it dies."""
        return self._task

    def status(self) -> dict[str, Any]:
        """The subscriber's state for /readyz: its health, and what waits in memory."""
        return {**self.health.as_json(), "held_keys": len(self._lanes), "buffered": self._buffered}

    async def stop(self) -> None:
        if self._task is None:
            await self._consumer.stop()  # never started: close it anyway (an unclosed consumer warns)
            return
        self._stopping.set()
        self._room.set()
        try:
            await asyncio.gather(self._task, return_exceptions=True)  # a crash was already reported by the supervisor
            await self._give_up(list(self._partitions))
        finally:
            self._task = None
            for task in (self._flusher, self._probe):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            await self._watermarks.stop()
            await self._consumer.stop()
            log.info("delivery worker %s stopped", self.name)

    # -- partitions come and go ------------------------------------------------------------------
    async def take_over(self, assigned: set[TopicPartition]) -> None:
        """Partitions assigned: their books, from the committed offsets and the ledger."""
        mine = sorted(tp.partition for tp in assigned if tp.topic == self._topic and tp.partition not in self._partitions)
        if not mine:
            return
        committed = {p: (await self._consumer.committed(TopicPartition(self._topic, p))) or 0 for p in mine}
        self._lag.committed({TopicPartition(self._topic, p): committed[p] for p in mine})
        entries: dict[int, list[LedgerEntry]] = defaultdict(list)

        def apply(tp: TopicPartition, records: list[Record]) -> None:
            entries[tp.partition].extend(LedgerEntry.decode(r.value) for r in records if r.value)

        reader = make_consumer(self._kafka, self._bootstrap, group_id=None)  # type: ignore[arg-type]
        try:
            await reader.start()
            tps = [TopicPartition(self._ledger, p) for p in mine]
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            await read_to_end(reader, tps, apply)
        finally:
            await reader.stop()
        for partition in mine:
            self._partitions[partition] = _Partition(PartitionBook.restore(partition, committed[partition], entries[partition]))
        self._update_ledger_gauges()
        log.info("delivery worker %s owns partitions %s of %s", self.name, mine, self._topic)

    async def hand_over(self, revoked: set[TopicPartition]) -> None:
        """Partitions revoked: finish the calls in progress, record and commit, then let them go."""
        await self._give_up([tp.partition for tp in revoked if tp.topic == self._topic])
        self._lag.revoked(revoked)
        self._update_ledger_gauges()

    async def _give_up(self, partitions: list[int]) -> None:
        owned = [self._partitions[p] for p in partitions if p in self._partitions]
        for part in owned:
            part.closing.set()
        await asyncio.gather(*(lane for part in owned for lane in list(part.lanes)), return_exceptions=True)
        await self._flush([part.book.partition for part in owned])
        for part in owned:
            del self._partitions[part.book.partition]
            self._ends.pop(part.book.partition, None)
            self.health.forget(part.book.partition)

    # -- fetching into lanes ---------------------------------------------------------------------
    async def _run(self) -> None:
        limit = self.policy.max_buffered
        while not self._stopping.is_set():
            if self._buffered >= limit:
                self._room.clear()
                await self._room.wait()  # backpressure: wait for lanes to settle something
                continue
            if self.breaker is not None and self.breaker.wait_time_peek() > 0 and self._buffered:
                await asyncio.sleep(0.2)  # the circuit is open: nothing could be delivered, so leave the rest in Kafka
                continue
            batch = await self._consumer.getmany(timeout_ms=200, max_records=min(500, limit - self._buffered))
            for tp, records in batch.items():
                part = self._partitions.get(tp.partition)
                if part is None or part.closing.is_set():
                    if tp in self._consumer.assignment() and not self._stopping.is_set():
                        # Assigned, but its book is still loading (or it is being given up and taken
                        # back): read these again later rather than skip them.
                        self._consumer.seek(tp, records[0].offset)
                    continue
                for record in records:
                    if not part.book.is_settled(record.offset):
                        self._enqueue(part, record)

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
                    delivered = await self._settle(record, part)
                except _Stopping:
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
        """Write what was settled to the ledger, then commit what may be committed."""
        async with self._flush_lock:
            drafts: list[Draft] = []
            at = now_rfc3339()
            for partition in partitions:
                part = self._partitions.get(partition)
                if part is not None and (draft := part.book.draft(at)) is not None:
                    drafts.append(draft)
            if not drafts:
                return
            if not await self._write_ledger([d.entry for d in drafts]):
                for draft in drafts:
                    self._partitions[draft.entry.partition].book.abandon(draft)
                return  # not recorded, so not committed: the next flush tries again
            offsets = {
                TopicPartition(self._topic, d.entry.partition): OffsetAndMetadata(d.entry.upto, "")
                for d in drafts
                if d.entry.upto > self._partitions[d.entry.partition].book.committed
            }
            if await self._commit(offsets):
                for draft in drafts:
                    self._partitions[draft.entry.partition].book.confirm(draft)
                self._lag.committed(offsets)

    async def _write_ledger(self, entries: list[LedgerEntry]) -> bool:
        for attempt in range(3):
            try:
                sent = [
                    await self._producer.send(self._ledger, e.encode(), key=b"%d" % e.partition, partition=e.partition) for e in entries
                ]
                await asyncio.gather(*sent)
            except KafkaError as exc:
                log.warning("cannot write the ledger of %s (%r); retrying before the commit", self.name, exc)
                if attempt < 2:
                    await asyncio.sleep(1)
            else:
                return True
        return False

    async def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> bool:
        if not offsets:
            return True  # nothing to move: the ledger entries (settled past a held event) are what counted
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Partitions moved to another member: it skips what the ledger recorded, and delivers the rest.
            log.warning("delivery worker %s could not commit (%r); events not in the ledger will be redelivered", self.name, exc)
            return False
        return True

    # -- one event ---------------------------------------------------------------------------------
    async def _wait(self, seconds: float, part: _Partition) -> None:
        """Sleep, unless the partition is given up (stop, rebalance) first."""
        try:
            async with asyncio.timeout(seconds):
                await part.closing.wait()
        except TimeoutError:
            return
        raise _Stopping

    async def _settle(self, record: Record, part: _Partition) -> bool:
        """Deliver or dead-letter one record; True when delivered."""
        where = (record.partition, record.offset)
        while True:
            try:
                if not self._codec.knows_value(record.value):
                    await self._codec.learn_ids((record.value,))  # a newer writer version: read as this hub's version
                schema, data = self._codec.decode(record.value or b"")
                event = Event.from_kafka(schema, data, record.key, record.headers)
                break
            except RetryableError as exc:  # the registry cannot answer yet: not the event's fault
                self.health.failed(where, str(exc))
                await self._wait(1.0, part)
            except PermanentError as exc:
                await self._dead_letter(record, exc, attempts=0, part=part)
                return False
            except Exception as exc:  # noqa: BLE001 - a record that cannot be read is that record's problem alone
                await self._dead_letter(record, PermanentError(f"cannot read the record: {exc!r}"), attempts=0, part=part)
                return False
        first_attempt = time.monotonic()
        attempt = 0
        while True:
            if self.bucket is not None:
                delay = self.bucket.delay_for()
                if delay > 0:
                    self._rate_wait.inc(delay)
                    await self._wait(delay, part)
            started = time.perf_counter()
            try:
                blocked = await self._call(event, part)
            except _Stopping:
                raise
            except PermanentError as exc:
                self._succeeded_call()  # the target answered: it is up, it just refuses this event
                await self._dead_letter(record, exc, attempts=attempt + 1, part=part)
                return False
            except (RetryableError, Exception) as exc:  # noqa: BLE001 - an adapter's bug is retried like an outage, never fatal
                error = exc if isinstance(exc, RetryableError) else self._adapter_bug(exc)
                attempt += 1
                self._failed_call()
                self.health.failed(where, str(error))
                why = self.retry.give_up(attempt, _age(event, first_attempt))
                if why is not None:
                    await self._dead_letter(record, RetryableError(f"gave up after {why}: {error}"), attempts=attempt, part=part)
                    return False
                self._retried.inc()  # counted when a retry follows: the last failure of a dead-lettered event is not one
                delay = self.retry.delay(attempt, error)
                log.debug("delivery %s of %s failed (%s); retry in %.2fs", self.name, event.id, error, delay)
                await self._wait(delay, part)
                continue
            if blocked > 0:  # the circuit is open: no call was made
                if self.policy.circuit_breaker and self.policy.circuit_breaker.when_open == "dead_letter":
                    await self._dead_letter(record, RetryableError(f"circuit open for {self.name}"), attempts=attempt, part=part)
                    return False
                await self._wait(blocked, part)
                continue
            self._succeeded_call()
            self._latency.observe(time.perf_counter() - started)
            if (since := _since_event(event)) is not None:
                self._end_to_end.observe(since)
            self._delivered.inc()
            return True

    def _adapter_bug(self, exc: Exception) -> RetryableError:
        """An adapter raised neither RetryableError nor PermanentError: a bug. Logged with its
        traceback once per exception type (not per event), then retried like an outage."""
        kind = type(exc).__name__
        if kind not in self._bug_logged:
            self._bug_logged.add(kind)
            log.error("outbound %s raised %r, which is neither retryable nor permanent (a bug); retrying", self.name, exc, exc_info=exc)
        return RetryableError(f"adapter error: {exc!r}")

    async def _call(self, event: Event, part: _Partition) -> float:
        """One call to the target, unless the circuit is open: then how long to wait, and no call.

        The breaker is asked only once a slot is held, right before the call, so events queued
        for a slot when the circuit opens do not call the failing target.
        """
        async with self._slots:
            if part.closing.is_set():
                raise _Stopping  # waited for a slot past a stop or rebalance: not begun, leave it
            if self.breaker is not None:
                wait = self.breaker.wait_time()
                self._breaker_moved()
                if wait > 0:
                    return wait
            self._attempts.inc()
            if self._tracing.enabled:  # one span per attempt; the target gets its traceparent
                with self._tracing.span(
                    f"deliver {self.name}", event.traceparent, kind="client", attributes={"bus.event_id": event.id}
                ) as tp:
                    await self.adapter.deliver(dataclasses.replace(event, traceparent=tp or event.traceparent))
            else:
                await self.adapter.deliver(event)
            return 0.0

    def _failed_call(self) -> None:
        if self.breaker is not None:
            opened = self.breaker.opened
            self.breaker.failure()
            if self.breaker.opened > opened:
                self._circuit_opened.inc()
            self._breaker_moved()

    def _succeeded_call(self) -> None:
        if self.breaker is not None:
            self.breaker.success()
            self._breaker_moved()

    def _breaker_moved(self) -> None:
        """After anything that can change the breaker's state: the gauge and the subscriber's state follow it."""
        assert self.breaker is not None
        self._circuit_state.set(self.breaker.state)
        self.health.circuit(self.breaker.state != State.CLOSED)

    async def _dead_letter(self, record: Record, error: BusError, *, attempts: int, part: _Partition) -> None:
        headers = [
            *(record.headers or ()),
            *why_headers(
                str(error),
                type(error).__name__,
                attempts=str(attempts),
                subscriber=self.name,
                origin=f"{record.topic}/{record.partition}/{record.offset}",
            ),
        ]
        while True:
            try:
                await self._producer.send_and_wait(self._dlq, record.value, key=record.key, headers=headers)
                break
            except KafkaError as exc:  # not settled until Kafka has it: keep trying, never drop
                log.warning("cannot write dead letter for %s to %s (%r); retrying", self.name, self._dlq, exc)
                await self._wait(1, part)
        self._dead.inc()
        log.warning("dead-lettered %s/%d/%d for %s: %s", record.topic, record.partition, record.offset, self.name, error)

    # -- gauges ------------------------------------------------------------------------------------
    async def _probe_ends(self, every_s: float = 5.0) -> None:
        """Keep the backlog gauge true while deliveries are slow (fewer fetches then)."""
        while True:
            try:
                ends = await self._watermarks.ends({TopicPartition(self._topic, p) for p in self._partitions})
                self._ends = {tp.partition: end for tp, end in ends.items()}
                self._lag.ends(ends)
                self._update_ledger_gauges()
                dead = {TopicPartition(self._dlq, p) for p in await self._producer.partitions_for(self._dlq)}
                self._dead_letters.set(sum((await self._watermarks.ends(dead)).values()))
            except Exception as exc:  # noqa: BLE001 (a gauge: never worth stopping delivery for)
                log.debug("delivery worker %s: cannot probe the end of its topic (%r)", self.name, exc)
            await asyncio.sleep(every_s)

    def _update_ledger_gauges(self) -> None:
        entered = delivered = dead = committed = 0
        for partition, part in list(self._partitions.items()):
            highwater = self._consumer.highwater(TopicPartition(self._topic, partition))
            offset = part.book.committed
            entered += max(highwater or 0, self._ends.get(partition, 0), offset)
            committed += offset
            delivered += part.book.totals[0]
            dead += part.book.totals[1]
        self._ledger_gauges["entered"].set(entered)
        self._ledger_gauges["delivered"].set(delivered)
        self._ledger_gauges["dead_lettered"].set(dead)
        self._ledger_gauges["in_flight"].set(entered - committed)
