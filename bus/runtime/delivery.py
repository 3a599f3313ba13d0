"""The delivery loop: one subscriber's delivery topic -> its outbound adapter, commit after the answer.

Plain aiokafka with explicit commits, not faust (faust-streaming #606 can commit past an event
still in progress). Contract:

- Events of one key are delivered strictly in order: a key's later events wait while an earlier
  one is retried. Events of different keys go concurrently, up to ``delivery.concurrency``.
- An event is *settled* when the target accepted it (``deliver`` returned) or it is in the
  subscriber's dead-letter topic with its reason (Kafka acknowledged that produce).
- Only settled events are committed: per partition, the offset after the longest settled prefix.
- ``RetryableError``: retried with exponential backoff and jitter, honouring ``retry_after``,
  until ``delivery.max_attempts`` or ``delivery.max_age`` (then dead-lettered) or forever.
  ``PermanentError``: dead-lettered at once. Events wait in Kafka, not in memory.
- ``delivery.rate_limit`` paces calls; ``delivery.circuit_breaker`` stops calling a failing target
  and probes it after ``reset_after``, while its events wait (or dead-letter, if configured).
- Before each commit the worker writes the batch's outcome to the subscriber's ledger
  (``bus/ledger.py``): which offsets were delivered and which dead-lettered, and running totals.
- ``stop()`` stops fetching, lets calls in progress finish (an event still being retried is left
  unsettled, to be redelivered), writes the ledger, commits what was settled, and leaves the group.
  A rebalance does the same for the batch in hand before partitions move, so a graceful hand-over
  to another process delivers nothing twice.
"""

from __future__ import annotations

__all__ = ["DeliveryWorker"]

import asyncio
import dataclasses
import logging
import random
import time
from collections import defaultdict
from datetime import datetime
from typing import Any, TypeAlias

from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from bus.adapter_api import Outbound, OutboundConfig
from bus.codec import Codec
from bus.config.delivery import DeliveryPolicy
from bus.config.models import KafkaConfig
from bus.errors import BusError, PermanentError, RetryableError
from bus.event import Event, now_rfc3339
from bus.expr.functions import parse_duration
from bus.kafka.clients import make_consumer
from bus.kafka.lag import LAG
from bus.kafka.reader import read_to_end
from bus.kafka.topics import TopicNames
from bus.kafka.watermarks import Watermarks
from bus.ledger import LedgerEntry, offset_ranges, totals_at
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
from bus.runtime.breaker import CircuitBreaker
from bus.tracing import NO_TRACING, Tracing

log = logging.getLogger("bus.runtime.delivery")
Record: TypeAlias = Any  # aiokafka's ConsumerRecord (aiokafka ships no type information)


class _Stopping(Exception):
    """Raised inside a delivery when stop() interrupts a wait."""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: DeliveryWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker.hand_over(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._worker.take_over(assigned)


class _Begun:
    """The highest offset of a partition's batch whose call to the target has begun."""

    __slots__ = ("offset",)

    def __init__(self) -> None:
        self.offset = -1


def _seconds(text: str | None) -> float | None:
    return None if text is None else parse_duration(text).total_seconds()  # type: ignore[union-attr]


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
        self._backoff_initial = _seconds(self.policy.backoff_initial) or 0.2
        self._backoff_max = _seconds(self.policy.backoff_max) or 30.0
        self._max_age = _seconds(self.policy.max_age)
        rate = self.policy.rate_limit
        self.bucket = TokenBucket(rate.rate, rate.burst) if rate else None
        breaker = self.policy.circuit_breaker
        self.breaker = (
            CircuitBreaker(
                _seconds(breaker.reset_after) or 30.0,
                failure_ratio=breaker.failure_ratio,
                window=breaker.window,
                min_calls=breaker.min_calls,
            )
            if breaker
            else None
        )
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        # Set by stop() and by a rebalance: the batch in hand ends early (calls in progress finish,
        # waits are cut short) and commits what was settled.
        self._interrupt = asyncio.Event()
        self._batch = asyncio.Lock()
        # Per owned partition: (delivered, dead-lettered) offsets below the last commit, from the ledger.
        self._totals: dict[int, tuple[int, int]] = {}
        self._committed: dict[int, int] = {}
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
        self._probe = asyncio.create_task(self._probe_ends(), name=f"deliver-watermarks:{self.name}")

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The delivery loop; the hub watches it and exits if it ends on its own."""
        return self._task

    async def stop(self) -> None:
        if self._task is None:
            await self._consumer.stop()  # never started: close it anyway (an unclosed consumer warns)
            return
        self._stopping.set()
        self._interrupt.set()
        try:
            # A loop that already died was reported by the hub's watch; do not raise it again here.
            await asyncio.gather(self._task, return_exceptions=True)
        finally:
            self._task = None
            if self._probe is not None:
                self._probe.cancel()
                await asyncio.gather(self._probe, return_exceptions=True)
                await self._watermarks.stop()
            await self._consumer.stop()
            log.info("delivery worker %s stopped", self.name)

    async def take_over(self, assigned: set[TopicPartition]) -> None:
        """Partitions assigned: load their ledger totals at the committed offsets."""
        # Held while loading: records fetched meanwhile wait for the totals instead of finding none.
        async with self._batch:
            await self._load_totals(assigned)

    async def _load_totals(self, assigned: set[TopicPartition]) -> None:
        mine = sorted(tp.partition for tp in assigned if tp.topic == self._topic)
        if not mine:
            return
        for partition in mine:
            self._committed[partition] = (await self._consumer.committed(TopicPartition(self._topic, partition))) or 0
        self._lag.committed({TopicPartition(self._topic, p): self._committed[p] for p in mine})
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
            self._totals[partition] = totals_at(entries[partition], self._committed[partition])
        self._update_ledger_gauges()
        log.info("delivery worker %s owns partitions %s of %s", self.name, mine, self._topic)

    async def hand_over(self, revoked: set[TopicPartition]) -> None:
        """Partitions revoked: end the batch in hand early, commit it, then let them go."""
        self._interrupt.set()
        async with self._batch:
            for tp in revoked:
                self._totals.pop(tp.partition, None)
                self._committed.pop(tp.partition, None)
                self._ends.pop(tp.partition, None)
        self._lag.revoked(revoked)
        if not self._stopping.is_set():
            self._interrupt.clear()
        self._update_ledger_gauges()

    async def _probe_ends(self, every_s: float = 5.0) -> None:
        """Keep the backlog gauge true while a batch is stuck on a slow target (no fetches then)."""
        while True:
            try:
                ends = await self._watermarks.ends({TopicPartition(self._topic, p) for p in self._totals})
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
        for partition, (d, x) in list(self._totals.items()):
            highwater = self._consumer.highwater(TopicPartition(self._topic, partition))
            offset = self._committed.get(partition, 0)
            entered += max(highwater or 0, self._ends.get(partition, 0), offset)
            committed += offset
            delivered += d
            dead += x
        self._ledger_gauges["entered"].set(entered)
        self._ledger_gauges["delivered"].set(delivered)
        self._ledger_gauges["dead_lettered"].set(dead)
        self._ledger_gauges["in_flight"].set(entered - committed)

    async def _run(self) -> None:
        last_commit = time.monotonic()
        while not self._stopping.is_set():
            batch = await self._consumer.getmany(timeout_ms=200, max_records=500)
            if not batch:
                last_commit = time.monotonic()
                self._since_commit.set(0)
                self._update_ledger_gauges()
                continue
            async with self._batch:
                self._since_commit.set(time.monotonic() - last_commit)
                if await self._settle_batch(batch):
                    last_commit = time.monotonic()
                    self._since_commit.set(0)
            self._update_ledger_gauges()

    async def _settle_batch(self, batch: dict[TopicPartition, list[Record]]) -> bool:
        """Settle a batch, write its ledger entries, then commit. True when something was committed."""
        # Records fetched before a rebalance took their partition away: the next owner (perhaps
        # this worker again, from the committed offset) fetches them anew. (take_over holds the
        # batch lock while it loads, so records of a partition just assigned are never dropped.)
        batch = {tp: records for tp, records in batch.items() if tp.partition in self._totals}
        if not batch:
            return False
        settled = await asyncio.gather(*(self._settle_partition(records) for records in batch.values()))
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        entries: list[LedgerEntry] = []
        totals: dict[int, tuple[int, int]] = {}
        for (tp, records), (last, delivered, dead) in zip(batch.items(), settled, strict=True):
            upto = records[0].offset if last is None else last + 1
            if last is None or last < records[-1].offset:
                # Stopped mid-partition: rewind so this worker never skips the rest if it goes on.
                self._consumer.seek(tp, upto)
            if not delivered and not dead:
                continue
            base_delivered, base_dead = self._totals.get(tp.partition, (0, 0))
            totals[tp.partition] = (
                base_delivered + sum(1 for o in delivered if o < upto),
                base_dead + sum(1 for o in dead if o < upto),
            )
            # Offsets delivered past a gap are recorded too: they reached the target, and will again.
            entries.append(
                LedgerEntry(tp.partition, upto, offset_ranges(delivered), offset_ranges(dead), *totals[tp.partition], now_rfc3339())
            )
            if last is not None:
                offsets[tp] = OffsetAndMetadata(upto, "")
        if not entries or not await self._write_ledger(entries):
            return False  # not recorded, so not committed: these events will be delivered again
        self._totals.update(totals)
        if await self._commit(offsets):
            self._committed.update({tp.partition: meta.offset for tp, meta in offsets.items()})
            self._lag.committed(offsets)
            return True
        return False

    async def _write_ledger(self, entries: list[LedgerEntry]) -> bool:
        while True:
            try:
                sent = [
                    await self._producer.send(self._ledger, e.encode(), key=b"%d" % e.partition, partition=e.partition) for e in entries
                ]
                await asyncio.gather(*sent)
            except KafkaError as exc:
                log.warning("cannot write the ledger of %s (%r); retrying before the commit", self.name, exc)
                try:
                    await self._wait(1)
                except _Stopping:
                    return False
            else:
                return True

    async def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> bool:
        if not offsets:
            return False
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Partitions moved to another member: it will deliver these again (at-least-once).
            log.warning("delivery worker %s could not commit (%r); events will be redelivered", self.name, exc)
            return False
        return True

    async def _settle_partition(self, records: list[Record]) -> tuple[int | None, list[int], list[int]]:
        """Settle records, one lane per key. Returns the last offset of the settled prefix, and the
        offsets delivered and dead-lettered."""
        lanes: dict[bytes | None, list[Record]] = defaultdict(list)
        for record in records:
            lanes[record.key].append(record)
        delivered: list[int] = []
        dead: list[int] = []
        # The highest offset whose call has begun. When interrupted, records below it are still
        # settled, so the settled prefix has no gap: nothing already delivered is delivered again
        # by the next owner. Records beyond it are left for the next owner.
        begun = _Begun()

        async def lane(queue: list[Record]) -> None:
            for record in queue:
                if self._interrupt.is_set() and record.offset > begun.offset:
                    return  # stop or rebalance: leave the rest for the next owner
                try:
                    outcome = await self._settle(record, begun)
                except _Stopping:
                    return
                (delivered if outcome == "delivered" else dead).append(record.offset)

        await asyncio.gather(*(lane(queue) for queue in lanes.values()))
        done = set(delivered) | set(dead)
        last: int | None = None
        for record in records:
            if record.offset not in done:
                break
            last = record.offset
        return last, delivered, dead

    async def _wait(self, seconds: float) -> None:
        """Sleep, unless stop() comes first."""
        try:
            await asyncio.wait_for(self._interrupt.wait(), timeout=seconds)
        except TimeoutError:
            return
        raise _Stopping

    async def _settle(self, record: Record, begun: _Begun) -> str:
        """Deliver or dead-letter one record; returns "delivered" or "dead_lettered"."""
        try:
            if not self._codec.knows_value(record.value):
                await self._codec.learn_ids((record.value,))  # a newer writer version: read as this hub's version
            schema, data = self._codec.decode(record.value or b"")
        except PermanentError as exc:
            await self._dead_letter(record, exc, attempts=0)
            return "dead_lettered"
        event = Event.from_kafka(schema, data, record.key, record.headers)
        first_attempt = time.monotonic()
        attempt = 0
        while True:
            if self.bucket is not None:
                delay = self.bucket.delay_for()
                if delay > 0:
                    self._rate_wait.inc(delay)
                    await self._wait(delay)
            started = time.perf_counter()
            try:
                blocked = await self._call(event, record.offset, begun)
            except RetryableError as exc:
                attempt += 1
                self._failed_call()
                self._retried.inc()
                exhausted = self.policy.max_attempts is not None and attempt >= self.policy.max_attempts
                too_old = self._max_age is not None and _age(event, first_attempt) >= self._max_age
                if exhausted or too_old:
                    why = f"{attempt} attempt(s)" if exhausted else f"older than {self.policy.max_age}"
                    await self._dead_letter(record, RetryableError(f"gave up after {why}: {exc}"), attempts=attempt)
                    return "dead_lettered"
                backoff = min(self._backoff_max, self._backoff_initial * 2 ** (attempt - 1))
                delay = max(random.uniform(backoff / 2, backoff), min(exc.retry_after or 0.0, self._backoff_max))  # noqa: S311
                log.debug("delivery %s of %s failed (%s); retry in %.2fs", self.name, event.id, exc, delay)
                await self._wait(delay)
                continue
            except PermanentError as exc:
                self._succeeded_call()  # the target answered: it is up, it just refuses this event
                await self._dead_letter(record, exc, attempts=attempt + 1)
                return "dead_lettered"
            if blocked > 0:  # the circuit is open: no call was made
                if self.policy.circuit_breaker and self.policy.circuit_breaker.when_open == "dead_letter":
                    await self._dead_letter(record, RetryableError(f"circuit open for {self.name}"), attempts=attempt)
                    return "dead_lettered"
                await self._wait(blocked)
                continue
            self._succeeded_call()
            self._latency.observe(time.perf_counter() - started)
            if (since := _since_event(event)) is not None:
                self._end_to_end.observe(since)
            self._delivered.inc()
            return "delivered"

    async def _call(self, event: Event, offset: int, begun: _Begun) -> float:
        """One call to the target, unless the circuit is open: then how long to wait, and no call.

        The breaker is asked only once a slot is held, right before the call, so events queued
        for a slot when the circuit opens do not call the failing target.
        """
        async with self._slots:
            if self._interrupt.is_set() and offset > begun.offset:
                raise _Stopping  # waited for a slot past an interrupt: not begun, leave it
            begun.offset = max(begun.offset, offset)
            if self.breaker is not None:
                wait = self.breaker.wait_time()
                self._circuit_state.set(self.breaker.state)
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
            self._circuit_state.set(self.breaker.state)
            if self.breaker.opened > opened:
                self._circuit_opened.inc()
                log.warning("circuit opened for %s: the target keeps failing; probing again later", self.name)

    def _succeeded_call(self) -> None:
        if self.breaker is not None:
            was_open = self.breaker.state != 0
            self.breaker.success()
            self._circuit_state.set(self.breaker.state)
            if was_open:
                log.info("circuit closed for %s: the target answers again", self.name)

    async def _dead_letter(self, record: Record, error: BusError, *, attempts: int) -> None:
        headers = [
            *(record.headers or ()),
            ("bus_error", str(error).encode()),
            ("bus_error_class", type(error).__name__.encode()),
            ("bus_attempts", str(attempts).encode()),
            ("bus_failed_at", now_rfc3339().encode()),
            ("bus_subscriber", self.name.encode()),
            ("bus_origin", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ]
        while True:
            try:
                await self._producer.send_and_wait(self._dlq, record.value, key=record.key, headers=headers)
                break
            except KafkaError as exc:  # not settled until Kafka has it: keep trying, never drop
                log.warning("cannot write dead letter for %s to %s (%r); retrying", self.name, self._dlq, exc)
                await self._wait(1)
        self._dead.inc()
        log.warning("dead-lettered %s/%d/%d for %s: %s", record.topic, record.partition, record.offset, self.name, error)
