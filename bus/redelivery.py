"""Redelivery: send a subscriber again what it was delivered since a time (``bus redeliver``).

A target restored from last night's backup, a CRM whose import was rolled back, a warehouse table
truncated by mistake: the events are still on the subscriber's delivery topic
(``<prefix>.deliver.<subscriber>``) for as long as Kafka keeps them. A redelivery copies the ones
the subscriber was delivered in a window of time to the end of that topic, each to the partition
it came from (so a key's copies keep their order) and marked ``bus_replayed_from`` with where the
original is. The running hub delivers the copies like any event: retries, circuit breaker, dead
letters, the ledger and lineage, every replica, no restart and no offset moved behind its back.

Which records are copied:

- the window is of the time each record reached the delivery topic (its Kafka timestamp), from
  ``since`` up to ``until`` (default: now), optionally only the events of some keys (``keys``: a
  customer's, an order's), and only records the subscriber has settled (below its consumer
  group's committed offset): those at or after it are still on their way anyway;
- not one the subscriber dead-lettered: the dead-letter workflow owns it (``bus dlq``), replayed
  or purged there; a replayed letter's copy is a record of its own, and is copied if it is in the
  window;
- not a copy made by an earlier redelivery whose original is copied too (twice would be twice);
- not one that a later event of the same key came after on the partition (delivered or still to
  come), unless asked (``include_superseded``): copied to the end, it would reach the target after
  that event and put older data over newer, as a dead letter replayed late would. A live event of a
  copied key that reaches the partition while the copies are written, ahead of a copy, is copied
  again behind it for the same reason, so each key's newest event stays the last one delivered.

The start of the window is found with Kafka's offsets-for-times lookup and checked against the
record before it; every record read is checked against the window again (timestamps are the
producers' clocks, not always in offset order). Memory: a few numbers per record of the window and
one entry per key after it, never the records themselves (read twice instead).
"""

from __future__ import annotations

__all__ = ["Redeliverer", "Redelivery", "SupersededCopy", "checked_window", "kafka_time_ms", "keep_order", "records", "window_starts"]

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bus.config.models import KafkaConfig
from bus.deadletters import DeadLetters
from bus.kafka.clients import make_consumer, make_producer, outside_bootstrap, stop_consumer
from bus.kafka.headers import header_text
from bus.kafka.reader import Record, batches_from_start, partitions_of
from bus.kafka.topics import TopicNames
from bus.moments import epoch_ms_moment, in_utc
from bus.numbers import whole_number

log = logging.getLogger("bus.redelivery")
REPLAYED_FROM = "bus_replayed_from"
_SAMPLES = 100  # superseded events named in the outcome; the rest are counted
_SEND_CHUNK = 1000  # copies in flight at once
_ORDER_ROUNDS = 5  # rounds of copying again live events that overtook a copy
# A read here ends at the partition's end, where a fetch waits this long for more: short, since
# nothing waits for records to come (the embedded broker holds every fetch that long, data or not).
_FETCH_WAIT_MS = 50


@dataclass
class SupersededCopy:
    event_id: str
    position: str  # partition/offset on the delivery topic
    after: str  # the id of the later event of its key


@dataclass
class Redelivery:
    """What a redelivery found and did (or, dry, would do)."""

    subscriber: str
    since: datetime
    until: datetime | None
    dry_run: bool
    keys: list[str] = field(default_factory=list)  # only these keys' events; empty: every key
    matched: int = 0  # records of the window the subscriber has settled
    sent: int = 0  # copies written (0 on a dry run)
    dead_lettered: int = 0  # left to the dead-letter workflow
    earlier_copies: int = 0  # copies of an earlier redelivery whose original is copied too
    superseded: int = 0  # left out: a later event of the same key came after
    superseded_samples: list[SupersededCopy] = field(default_factory=list)
    kept_in_order: int = 0  # live events copied again behind a copy of their key
    not_settled: int = 0  # records of the window still on their way to the subscriber (not copied)
    oldest_kept: datetime | None = None  # set when Kafka no longer holds the start of the window

    @property
    def to_send(self) -> int:
        return self.matched - self.dead_lettered - self.earlier_copies - self.superseded


@dataclass(frozen=True)
class _Window:
    since_ms: int
    until_ms: int | None
    keys: set[bytes] | None  # None: every key

    def holds(self, record: Record) -> bool:
        return (
            record.timestamp >= self.since_ms
            and (self.until_ms is None or record.timestamp < self.until_ms)
            and (self.keys is None or record.key in self.keys)
        )


@dataclass
class _Partition:
    """One partition's window, from the first read (offsets and keys only)."""

    tp: TopicPartition
    committed: int
    start: int | None  # the first offset that can be in the window (None: none can)
    beginning: int  # the first offset Kafka still keeps
    chosen: list[int] = field(default_factory=list)  # offsets to copy, ascending
    keys: dict[int, bytes] = field(default_factory=dict)  # chosen offset -> its key (keyed records only)
    read_to: int = 0  # the first offset the first read did not see


def kafka_time_ms(moment: datetime) -> int:
    """``moment`` as a Kafka timestamp: a time before 1970 is its start (Kafka has none earlier, and
    the client refuses to look one up)."""
    return max(0, int(moment.timestamp() * 1000))


class Redeliverer:
    """Redeliveries on one hub's delivery topics (one topic prefix)."""

    def __init__(self, kafka: KafkaConfig, bootstrap: str, topics: TopicNames, *, progress: Callable[[str], None] | None = None) -> None:
        self._kafka = kafka
        self._bootstrap = outside_bootstrap(bootstrap)
        self._names = topics
        self._progress = progress or (lambda _: None)  # a line per partition read and per 10,000 copies (a terminal's)

    async def redeliver(
        self,
        subscriber: str,
        since: datetime,
        until: datetime | None = None,
        *,
        dry_run: bool = False,
        include_superseded: bool = False,
        keys: Collection[str] = (),
    ) -> Redelivery:
        since, until = checked_window(since, until)
        outcome = Redelivery(subscriber, since, until, dry_run, keys=sorted(keys))
        topic = self._names.delivery(subscriber)
        consumer = make_consumer(self._kafka, self._bootstrap, group_id=None, fetch_max_wait_ms=_FETCH_WAIT_MS)
        try:
            await consumer.start()
            partitions = await partitions_of(consumer, topic)
            if not partitions:
                raise LookupError(f"subscriber {subscriber!r} has no delivery topic {topic!r}: nothing was ever routed to it")
            committed = await self._committed(subscriber, partitions)
            window = _Window(kafka_time_ms(since), kafka_time_ms(until) if until is not None else None, {k.encode() for k in keys} or None)
            starts = await window_starts(consumer, partitions, window.since_ms)
            parts = [_Partition(tp, committed[tp], *starts[tp]) for tp in partitions]
            dead = await self._dead_offsets(subscriber, parts)
            for part in parts:
                await self._choose(consumer, part, window, dead, outcome, include_superseded=include_superseded)
        finally:
            await stop_consumer(consumer)
        if dry_run or not any(part.chosen for part in parts):
            return outcome
        producer = make_producer(self._kafka, self._bootstrap)
        await producer.start()
        try:
            for part in parts:
                copies = await self._copy(producer, part, outcome)
                if not include_superseded and part.keys:
                    await self._keep_order(producer, part, copies, dead.get(part.tp.partition, set()), outcome)
        finally:
            await producer.stop()
        log.warning(
            "redelivered %d event(s) to %s delivered since %s%s (left out: %d dead-lettered, %d superseded, %d earlier copies)",
            outcome.sent, subscriber, since.isoformat(), f" until {until.isoformat()}" if until else "",
            outcome.dead_lettered, outcome.superseded, outcome.earlier_copies,
        )  # fmt: skip
        return outcome

    async def _committed(self, subscriber: str, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The subscriber's committed offsets: what lies below is settled (delivered or dead-lettered)."""
        group = make_consumer(self._kafka, self._bootstrap, group_id=self._names.delivery_group(subscriber))
        try:
            await group.start()
            return {tp: (await group.committed(tp)) or 0 for tp in partitions}
        finally:
            await stop_consumer(group)

    async def _dead_offsets(self, subscriber: str, parts: list[_Partition]) -> dict[int, set[int]]:
        """Per partition, the offsets the subscriber dead-lettered (whatever became of the letter
        since), from where the partition is read on: a target down for a day left a letter per
        event, and only those the reads can meet are kept."""
        topic = self._names.delivery(subscriber)
        read_from = {part.tp.partition: part.start for part in parts if part.start is not None}
        offsets: dict[int, set[int]] = {partition: set() for partition in read_from}
        async for batch in DeadLetters(self._kafka, self._bootstrap, self._names).scan([subscriber]):
            for letter in batch:
                origin = letter.origin
                if origin is not None and origin[0] == topic and origin[1] in read_from and origin[2] >= read_from[origin[1]]:
                    offsets[origin[1]].add(origin[2])
        return offsets

    async def _choose(
        self,
        consumer: AIOKafkaConsumer,
        part: _Partition,
        window: _Window,
        dead_lettered: dict[int, set[int]],
        outcome: Redelivery,
        *,
        include_superseded: bool,
    ) -> None:
        """The first read of a partition: which records of the window to copy. Keeps offsets,
        keys and ids only."""
        tp, topic = part.tp, part.tp.topic
        dead = dead_lettered.get(tp.partition, set())
        start, beginning = part.start, part.beginning
        if start is None:
            return
        candidates: list[tuple[int, bytes | None, str]] = []  # (offset, key, event id)
        chosen_offsets: set[int] = set()
        newest: dict[bytes, tuple[int, str]] = {}  # key -> its latest record outside the window that reached the target or will
        first_seen: Record | None = None
        async for record in records(consumer, tp, start):
            first_seen = first_seen or record
            part.read_to = record.offset + 1
            in_window = window.holds(record)
            event_id = header_text(record.headers, "ce_id")
            if in_window and record.offset >= part.committed:
                outcome.not_settled += 1
            if in_window and record.offset < part.committed:
                outcome.matched += 1
                if record.offset in dead:
                    outcome.dead_lettered += 1
                    continue
                original = header_text(record.headers, REPLAYED_FROM)
                was_topic, _, was = original.rpartition("/")
                if was_topic == f"{topic}/{tp.partition}" and whole_number(was) in chosen_offsets:
                    outcome.earlier_copies += 1
                    continue
                candidates.append((record.offset, record.key, event_id))
                chosen_offsets.add(record.offset)
            elif record.key is not None and record.offset not in dead:
                newest[record.key] = (record.offset, event_id)
        self._progress(f"{topic}/{tp.partition}: read from offset {start} to {part.read_to}, {len(candidates):,} event(s) of the window")
        # Records before it were dropped by the topic's retention: that part of the window is gone
        # (the record's time is its producer's: maybe no time).
        if (
            first_seen is not None
            and start == beginning > 0
            and first_seen.timestamp > window.since_ms
            and (kept := epoch_ms_moment(first_seen.timestamp)) is not None
        ):
            outcome.oldest_kept = kept if outcome.oldest_kept is None else min(outcome.oldest_kept, kept)
        for offset, key, event_id in candidates:
            later = newest.get(key) if key is not None and not include_superseded else None
            if later is not None and later[0] > offset:
                outcome.superseded += 1
                if len(outcome.superseded_samples) < _SAMPLES:
                    outcome.superseded_samples.append(SupersededCopy(event_id, f"{tp.partition}/{offset}", later[1]))
                continue
            part.chosen.append(offset)
            if key is not None:
                part.keys[offset] = key

    async def _copy(self, producer: AIOKafkaProducer, part: _Partition, outcome: Redelivery) -> dict[int, bytes | None]:
        """The second read: copy the chosen records to the end of their partition. Returns each
        copy's offset and key."""
        if not part.chosen:
            return {}
        tp, wanted = part.tp, set(part.chosen)
        copies: dict[int, bytes | None] = {}
        consumer = make_consumer(self._kafka, self._bootstrap, group_id=None, fetch_max_wait_ms=_FETCH_WAIT_MS)
        try:
            await consumer.start()
            pending: list[tuple[bytes | None, Awaitable[Any]]] = []
            async for record in records(consumer, tp, part.chosen[0], last=part.chosen[-1]):
                if record.offset not in wanted:
                    continue
                pending.append((record.key, await producer.send(tp.topic, record.value, key=record.key, partition=tp.partition,
                                                                headers=_copy_headers(record))))  # fmt: skip
                if len(pending) >= _SEND_CHUNK:
                    copies.update(await _settle(pending))
                    outcome.sent += len(pending)
                    pending = []
                    if outcome.sent % (10 * _SEND_CHUNK) == 0:
                        self._progress(f"{outcome.sent:,} of {outcome.to_send:,} sent again")
            copies.update(await _settle(pending))
            outcome.sent += len(pending)
        finally:
            await stop_consumer(consumer)
        return copies

    async def _keep_order(
        self, producer: AIOKafkaProducer, part: _Partition, copies: dict[int, bytes | None], dead: set[int], outcome: Redelivery
    ) -> None:
        """Live events of a copied key that reached the partition after the first read and ahead
        of a copy of that key: copied again behind it, so the key's newest event is delivered last."""
        outcome.kept_in_order += await keep_order(
            self._kafka, self._bootstrap, producer, part.tp, start=part.read_to, copies=copies, leave=lambda record: record.offset in dead
        )


async def keep_order(
    kafka: KafkaConfig,
    bootstrap: str,
    producer: AIOKafkaProducer,
    tp: TopicPartition,
    *,
    start: int,
    copies: dict[int, bytes | None],
    leave: Callable[[Record], bool],
) -> int:
    """After copies (offset -> key) were written to the end of ``tp``: the live events of a copied
    key found from ``start`` on and ahead of that key's last copy are copied again behind it, so
    each key's newest event is the last one delivered; ``leave`` names records not to copy (a
    dead letter's original, a record the caller saw before it wrote). Returns how many were
    copied again."""
    last_copy: dict[bytes, int] = {}
    for offset, key in copies.items():
        if key is not None:
            last_copy[key] = max(offset, last_copy.get(key, -1))
    ours, again_total = set(copies), 0
    for _ in range(_ORDER_ROUNDS):
        if not last_copy:
            return again_total
        end = max(last_copy.values())
        overtaken: list[Record] = []
        consumer = make_consumer(kafka, bootstrap, group_id=None, fetch_max_wait_ms=_FETCH_WAIT_MS)
        try:
            await consumer.start()
            async for record in records(consumer, tp, start, last=end):
                if record.offset in ours or record.key is None or leave(record):
                    continue
                if last_copy.get(record.key, -1) > record.offset:
                    overtaken.append(record)
        finally:
            await stop_consumer(consumer)
        if not overtaken:
            return again_total
        pending = [(r.key, await producer.send(tp.topic, r.value, key=r.key, partition=tp.partition,
                                               headers=_copy_headers(r))) for r in overtaken]  # fmt: skip
        again = await _settle(pending)
        again_total += len(again)
        ours |= set(again)
        start = end + 1
        last_copy = {key: offset for offset, key in again.items() if key is not None}
    log.warning("copies to %s: live events of copied keys kept overtaking the copies; the order of the last ones is not checked", tp.topic)
    return again_total


async def window_starts(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], since_ms: int
) -> dict[TopicPartition, tuple[int | None, int]]:
    """Per partition, the first offset that can be in the window (None: no record is as late
    as ``since``) and the first offset still kept. Kafka's answer to "the first record at or
    after ``since``", checked by the record before it; where that answer cannot be trusted (no
    timestamp given back, as the embedded broker answers for a time after its last record, or
    the record before it in the window too), the partition's start: every record is checked
    against the window anyway. The offsets are asked for all partitions at once and before any
    is assigned: a consumer with a fetch in flight has its other requests answered after that
    fetch (a whole fetch wait each on the embedded broker)."""
    beginnings = await consumer.beginning_offsets(partitions)
    ends = await consumer.end_offsets(partitions)
    # Empty: the embedded broker's latest offset can be too low, never below a record that is there.
    kept = [tp for tp in partitions if ends[tp] > beginnings[tp]]
    found = await consumer.offsets_for_times({tp: since_ms for tp in kept}) if kept else {}
    starts: dict[TopicPartition, tuple[int | None, int]] = {tp: (None, beginnings[tp]) for tp in partitions}
    for tp in kept:
        answer, beginning = found.get(tp), beginnings[tp]
        if answer is None:
            continue
        if answer.timestamp < 0 or answer.offset <= beginning:
            starts[tp] = (beginning, beginning)
            continue
        before = await _one(consumer, tp, answer.offset - 1)
        trusted = before is not None and before.timestamp < since_ms
        starts[tp] = (int(answer.offset) if trusted else beginning, beginning)
    return starts


def checked_window(since: datetime, until: datetime | None) -> tuple[datetime, datetime | None]:
    """A window of time as asked (a time without a zone is UTC); ValueError for one that cannot hold anything."""
    since, until = in_utc(since), in_utc(until) if until is not None else None
    if since > datetime.now(UTC):
        raise ValueError(f"since ({since.isoformat()}) is in the future: nothing was delivered after it yet")
    if until is not None and until <= since:
        raise ValueError(f"until ({until.isoformat()}) must be after since ({since.isoformat()})")
    return since, until


def _copy_headers(record: Record) -> list[tuple[str, bytes]]:
    position = f"{record.topic}/{record.partition}/{record.offset}".encode()
    return [*((k, v) for k, v in record.headers or () if k != REPLAYED_FROM), (REPLAYED_FROM, position)]


async def _settle(pending: list[tuple[bytes | None, Awaitable[Any]]]) -> dict[int, bytes | None]:
    """Wait for the copies sent: each one's offset (where it landed) and key."""
    done: dict[int, bytes | None] = {}
    for key, future in pending:
        metadata = await future
        done[metadata.offset] = key
    return done


async def _one(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> Record | None:
    async with aclosing(records(consumer, tp, offset, last=offset)) as found:  # closed here, not by the collector
        async for record in found:
            return record
    return None


async def records(consumer: AIOKafkaConsumer, tp: TopicPartition, first: int, *, last: int | None = None) -> AsyncGenerator[Record, None]:
    """The records of ``tp`` from ``first`` up to ``last`` (default: the end), through the
    reader every state topic uses (bus.kafka.reader: its end is the fetch answers' high
    watermark), closed here when ``last`` is passed."""
    async with aclosing(batches_from_start(consumer, [tp], after={tp: first - 1})) as batches:
        async for _, records in batches:
            for record in records:
                if last is not None and record.offset > last:
                    return
                yield record
