"""Backfill: give a subscriber the events routed before it could receive them (``bus backfill``).

A system that joins the hub (a new CRM, a warehouse, a second ERP) receives what is routed from
then on; the customers, orders and payments that came through before are still on the canonical
topics (``<prefix>.canonical.<Schema>``) for as long as Kafka keeps them. A backfill runs the
records of a window of time on those topics through the routes that deliver to the subscriber
(the routes as they are now: conditions, transforms, lookups in today's tables) and writes what
they give it to the end of its delivery topic, marked ``bus_replayed_from`` with the canonical
record's position.
The running hub delivers them like any event: retries, circuit breaker, dead letters, the ledger
and lineage. Nothing else sees them: no other subscriber, no table, no aggregate.

What is left out:

- events the subscriber already has: the same event id on its delivery topic (a window that
  reaches into the time it was subscribed, a second backfill of the same window);
- events of a key whose later event the subscriber was delivered (``superseded``): written after
  it, they would put older data over newer; asked for (``include_superseded``), they are sent;
- records the router has not routed yet (at or after its committed offset): it will;
- routes that aggregate (their windows and counts cannot be made again from a part of history).

A route that fails on a record (a transform error) is counted with its reason, as a live route's
dead letter would say it; nothing is written for it. Each key's events are written in the order
of the canonical partition, and a live event of a written key that reached the delivery topic
ahead of a written one is written again behind it (bus.redelivery.keep_order), so each key's
newest event is the last one delivered.

Memory: the event ids on the subscriber's delivery topic since the window's start, one entry per
key of the window, the offsets of the records to write, and the events to write as the first read
planned them up to 64 MB (past that, the records are read and routed again to be written).
"""

from __future__ import annotations

__all__ = ["Backfill", "Backfiller", "FailedCopy", "routes_to"]

import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bus.codec import Codec
from bus.config.models import KafkaConfig
from bus.config.routes import RouteConfig, RouterConfig, TableConfig
from bus.kafka.clients import make_consumer, make_producer, outside_bootstrap, stop_consumer
from bus.kafka.headers import header_bytes, header_text
from bus.kafka.reader import Record, partitions_of
from bus.kafka.topics import TopicNames
from bus.moments import epoch_ms_moment
from bus.redelivery import REPLAYED_FROM, SupersededCopy, checked_window, kafka_time_ms, keep_order, records, window_starts
from routing.dispatch import Dispatcher, Send
from routing.router import Router

log = logging.getLogger("bus.backfill")
_SAMPLES = 100  # superseded and failed events named in the outcome; the rest are counted
_SEND_CHUNK = 1000  # copies in flight at once
_FETCH_WAIT_MS = 50  # reads end at the partition's end: nothing waits for records to come
# The copies the first read planned are kept for the writes up to this many bytes in all (routing
# every record a second time was half of a backfill's time); past it, the records are read again.
_HOLD_BYTES = 64 * 1024 * 1024


@dataclass
class FailedCopy:
    event_id: str
    position: str  # topic/partition/offset of the canonical record
    route: str
    reason: str


@dataclass
class Backfill:
    """What a backfill found and did (or, dry, would do)."""

    subscriber: str
    since: datetime
    until: datetime | None
    dry_run: bool
    routes: list[str]  # the routes the window's records went through
    keys: list[str] = field(default_factory=list)  # only these keys' records; empty: every key
    left_out_routes: dict[str, str] = field(default_factory=dict)  # route -> why it is not backfilled
    read: int = 0  # canonical records of the window (of the keys asked) the router has routed
    not_routed: int = 0  # records of the window the router has not routed yet: it will
    matched: int = 0  # events the routes give the subscriber for those records
    already_delivered: int = 0  # left out: the same event id is on the subscriber's delivery topic
    superseded: int = 0  # left out: the subscriber was delivered a later event of the same key
    superseded_samples: list[SupersededCopy] = field(default_factory=list)
    failed: int = 0  # a route failed on the record (nothing written for it)
    failed_samples: list[FailedCopy] = field(default_factory=list)
    sent: int = 0  # events written to the delivery topic (0 on a dry run)
    kept_in_order: int = 0  # live events of a written key that came ahead of its copy, written again behind it
    oldest_kept: datetime | None = None  # set when Kafka no longer holds the start of the window on a canonical topic

    @property
    def to_send(self) -> int:
        return self.matched - self.already_delivered - self.superseded


@dataclass
class _Delivered:
    """The subscriber's delivery topic as the backfill found it: the event ids it holds since the
    window's start, and where each partition's read ended (what reaches it later is live)."""

    ids: set[bytes] = field(default_factory=set)
    split_of: set[bytes] = field(default_factory=set)  # the ids split elements were made from ("evt/0" -> "evt")
    read_to: dict[int, int] = field(default_factory=dict)

    def has(self, event_id: bytes) -> bool:
        return event_id in self.ids or event_id in self.split_of


@dataclass
class _Run:
    """One backfill's question and what it has found so far."""

    routes: set[str]  # the subscriber's routes it goes through
    sources: list[str]  # their canonical topics
    delivery: str  # the subscriber's delivery topic
    since_ms: int
    until_ms: int | None
    keys: set[bytes] | None  # None: every key
    include_superseded: bool
    outcome: Backfill
    delivered: _Delivered = field(default_factory=_Delivered)
    held: dict[TopicPartition, dict[int, list[Send]]] = field(default_factory=dict)  # the planned copies kept, by partition and offset
    held_bytes: int = 0


def routes_to(routes: list[RouteConfig], subscriber: str) -> tuple[list[RouteConfig], dict[str, str]]:
    """The routes a backfill of ``subscriber`` goes through, and those it leaves out, with why."""
    wanted: list[RouteConfig] = []
    left_out: dict[str, str] = {}
    for route in routes:
        if subscriber not in route.to:
            continue
        if route.aggregate is not None:
            left_out[route.name] = "it aggregates events over a window or a count, which a part of history cannot make again"
        else:
            wanted.append(route)
    return wanted, left_out


class Backfiller:
    """Backfills on one hub (its routes, schemas and tables as they are now)."""

    def __init__(
        self,
        kafka: KafkaConfig,
        bootstrap: str,
        topics: TopicNames,
        *,
        routes: list[RouteConfig],
        router: RouterConfig,
        codec: Codec,
        tables: dict[str, dict[str, Any]],
        table_configs: list[TableConfig],
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self._kafka = kafka
        self._bootstrap = outside_bootstrap(bootstrap)
        self._names = topics
        self._routes = routes
        self._codec = codec
        # Every route, so that a first-match router decides as the live one does; only the copies
        # of the subscriber's routes are kept. Its counts stay out of the hub's routing metrics.
        self._dispatcher = Dispatcher(
            Router(routes, router, tables=tables), codec=codec, topics=topics, tables=table_configs, metrics=False
        )
        self._progress = progress or (lambda _: None)

    async def backfill(
        self,
        subscriber: str,
        since: datetime,
        until: datetime | None = None,
        *,
        dry_run: bool = False,
        include_superseded: bool = False,
        keys: Collection[str] = (),
    ) -> Backfill:
        since, until = checked_window(since, until)
        wanted, left_out = routes_to(self._routes, subscriber)
        if not wanted:
            why = "; ".join(f"{name}: {reason}" for name, reason in left_out.items())
            raise ValueError(f"no route delivers to {subscriber!r} that a backfill can go through" + (f" ({why})" if why else ""))
        names = {r.name for r in wanted}
        outcome = Backfill(subscriber, since, until, dry_run, sorted(names), keys=sorted(keys), left_out_routes=left_out)
        run = _Run(
            names, sorted({self._names.canonical(r.from_) for r in wanted}), self._names.delivery(subscriber),
            kafka_time_ms(since), kafka_time_ms(until) if until is not None else None,
            {k.encode() for k in keys} or None, include_superseded, outcome,
        )  # fmt: skip
        sources = run.sources
        # The router's position first, then the delivery topic: whatever the router routed below
        # that position was written to the delivery topic before it is read, so its ids are there.
        routed_to = await self._router_position(sources)
        chosen: dict[TopicPartition, dict[int, set[bytes]]] = {}  # canonical partition -> offset -> the event ids to write
        consumer = make_consumer(self._kafka, self._bootstrap, group_id=None, fetch_max_wait_ms=_FETCH_WAIT_MS)
        try:
            await consumer.start()
            # Every topic's partitions and the window's first offsets before any is read: a consumer
            # that has partitions assigned learns the metadata of those topics only.
            partitions = {topic: await partitions_of(consumer, topic) for topic in [run.delivery, *sources]}
            if not partitions[run.delivery]:
                raise LookupError(f"the subscriber has no delivery topic {run.delivery!r}: is it in the running hub's config?")
            every = [tp for found in partitions.values() for tp in found]
            ends = await consumer.end_offsets(partitions[run.delivery])
            starts = await window_starts(consumer, every, run.since_ms)
            run.delivered = await self._delivered(consumer, partitions[run.delivery], starts, ends)
            for topic in sources:
                for tp in partitions[topic]:
                    start, beginning = starts[tp]
                    if start is not None:
                        chosen[tp] = await self._choose(consumer, tp, (start, beginning, routed_to.get(tp, 0)), run)
        finally:
            await stop_consumer(consumer)
        if outcome.dry_run or not any(chosen.values()):
            return outcome
        producer = make_producer(self._kafka, self._bootstrap)
        await producer.start()
        try:
            copies: dict[int, dict[int, bytes | None]] = {}  # delivery partition -> offset -> key
            for tp, offsets in chosen.items():
                if offsets:
                    await self._write(producer, tp, offsets, run, copies)
            delivered = run.delivered
            for partition, written in copies.items():
                outcome.kept_in_order += await keep_order(
                    self._kafka, self._bootstrap, producer, TopicPartition(run.delivery, partition),
                    start=delivered.read_to.get(partition, 0), copies=written,
                    leave=lambda record: delivered.has(header_bytes(record.headers, "ce_id") or b""),
                )  # fmt: skip
        finally:
            await producer.stop()
        log.warning(
            "backfilled %d event(s) to %s from %s since %s%s (left out: %d already delivered, %d superseded, %d failed)",
            outcome.sent, outcome.subscriber, ", ".join(sources), outcome.since.isoformat(),
            f" until {outcome.until.isoformat()}" if outcome.until else "",
            outcome.already_delivered, outcome.superseded, outcome.failed,
        )  # fmt: skip
        return outcome

    async def _router_position(self, sources: list[str]) -> dict[TopicPartition, int]:
        """The router's committed offsets on the canonical topics: what lies below was routed."""
        group = make_consumer(self._kafka, self._bootstrap, group_id=f"{self._names.prefix}-router")
        try:
            await group.start()
            found: dict[TopicPartition, int] = {}
            for topic in sources:
                for tp in await partitions_of(group, topic):
                    found[tp] = (await group.committed(tp)) or 0
            return found
        finally:
            await stop_consumer(group)

    async def _delivered(
        self,
        consumer: AIOKafkaConsumer,
        partitions: list[TopicPartition],
        starts: dict[TopicPartition, tuple[int | None, int]],
        ends: dict[TopicPartition, int],
    ) -> _Delivered:
        """The event ids on the delivery topic from the window's start on (a record reaches it
        after its canonical original, so nothing older can be one of the window's events)."""
        found = _Delivered()
        for tp in partitions:
            found.read_to[tp.partition] = ends[tp]
            start = starts[tp][0]
            if start is None:
                continue
            async for record in records(consumer, tp, start):
                found.read_to[tp.partition] = record.offset + 1
                event_id = header_bytes(record.headers, "ce_id")
                if event_id:
                    found.ids.add(event_id)
                    if b"/" in event_id:
                        found.split_of.add(event_id.rpartition(b"/")[0])
        return found

    def _plan(self, record: Record) -> list[Any]:
        position = f"{record.topic}/{record.partition}/{record.offset}"
        return self._dispatcher.plan(record.key, record.value, list(record.headers or ()), position,
                                     partition=record.partition, offset=record.offset)  # fmt: skip

    async def _choose(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, where: tuple[int, int, int], run: _Run
    ) -> dict[int, set[bytes]]:
        """The first read of a canonical partition: which events of the window to write. Keeps
        offsets, keys and ids only."""
        start, beginning, routed_to = where  # the window's first offset, the first one kept, the router's position
        since_ms, until_ms, keys, outcome, delivered = run.since_ms, run.until_ms, run.keys, run.outcome, run.delivered
        candidates: list[tuple[int, bytes | None, bytes]] = []  # (offset, key, the copy's event id)
        newest: dict[bytes, tuple[int, str]] = {}  # key -> its latest record the subscriber was delivered
        held: dict[int, list[Send]] | None = None if run.outcome.dry_run else {}  # what the writes will send, while it fits
        first_seen: Record | None = None
        read = 0
        async for record in records(consumer, tp, start):
            first_seen = first_seen or record
            read += 1
            event_id = header_bytes(record.headers, "ce_id") or b""
            if record.key is not None and event_id and delivered.has(event_id):
                newest[record.key] = (record.offset, event_id.decode(errors="replace"))
            if record.timestamp < since_ms or (until_ms is not None and record.timestamp >= until_ms):
                continue
            if keys is not None and record.key not in keys:
                continue
            if record.offset >= routed_to:
                outcome.not_routed += 1
                continue
            outcome.read += 1
            if not self._codec.knows_value(record.value):
                await self._dispatcher.learn_ids([record.value])
            for send in self._plan(record):
                # "_router": a record no route can read (not Avro the hub knows, too large), as the live router said
                if send.route not in run.routes and send.route != "_router":
                    continue
                if send.topic == run.delivery:
                    outcome.matched += 1
                    copy_id = header_bytes(send.headers, "ce_id") or b""
                    if copy_id and copy_id in delivered.ids:
                        outcome.already_delivered += 1
                        continue
                    candidates.append((record.offset, record.key, copy_id))
                    if held is not None:
                        run.held_bytes += len(send.value or b"") + len(send.key or b"") + sum(len(v or b"") + 32 for _, v in send.headers)
                        if run.held_bytes > _HOLD_BYTES:
                            held = None  # this partition's records are read again to be written
                        else:
                            held.setdefault(record.offset, []).append(send)
                elif send.topic == self._names.router_dead_letter:
                    outcome.failed += 1
                    reason = header_text(send.headers, "bus_error")
                    log.warning("backfill to %s: route %s failed on %s/%d/%d: %s", outcome.subscriber, send.route, tp.topic,
                                tp.partition, record.offset, reason)  # fmt: skip
                    if len(outcome.failed_samples) < _SAMPLES:
                        outcome.failed_samples.append(
                            FailedCopy(event_id.decode(errors="replace"), f"{tp.topic}/{tp.partition}/{record.offset}", send.route, reason)
                        )
        self._progress(f"{tp.topic}/{tp.partition}: read {read:,} record(s) from offset {start}, {len(candidates):,} event(s) to write")
        # Retention removed the window's start (the record's time is its producer's: maybe no time).
        if (
            first_seen is not None
            and start == beginning > 0
            and first_seen.timestamp > since_ms
            and (kept := epoch_ms_moment(first_seen.timestamp)) is not None
        ):
            outcome.oldest_kept = kept if outcome.oldest_kept is None else min(outcome.oldest_kept, kept)
        chosen: dict[int, set[bytes]] = {}
        for offset, key, copy_id in candidates:
            later = newest.get(key) if key is not None and not run.include_superseded else None
            if later is not None and later[0] > offset:
                outcome.superseded += 1
                if len(outcome.superseded_samples) < _SAMPLES:
                    outcome.superseded_samples.append(
                        SupersededCopy(copy_id.decode(errors="replace"), f"{tp.topic}/{tp.partition}/{offset}", later[1])
                    )
                continue
            chosen.setdefault(offset, set()).add(copy_id)
        if held is not None:
            run.held[tp] = held
        return chosen

    async def _write(
        self,
        producer: AIOKafkaProducer,
        tp: TopicPartition,
        chosen: dict[int, set[bytes]],
        run: _Run,
        copies: dict[int, dict[int, bytes | None]],
    ) -> None:
        """Write the chosen records' copies for the subscriber, in the partition's order: as the
        first read planned them when they were kept, else read and routed again."""
        pending: list[tuple[bytes | None, Awaitable[Any]]] = []

        async def write(record_offset: int, sends: list[Send]) -> None:
            nonlocal pending
            ids = chosen[record_offset]
            origin = f"{tp.topic}/{tp.partition}/{record_offset}".encode()
            for send in sends:
                if send.topic != run.delivery or send.route not in run.routes or (header_bytes(send.headers, "ce_id") or b"") not in ids:
                    continue
                headers = [*((k, v) for k, v in send.headers if k != REPLAYED_FROM), (REPLAYED_FROM, origin)]
                pending.append((send.key, await producer.send(run.delivery, send.value, key=send.key, headers=headers)))
            if len(pending) >= _SEND_CHUNK:
                await _settle(pending, copies, run.outcome)
                pending = []
                if run.outcome.sent % (10 * _SEND_CHUNK) < _SEND_CHUNK:
                    self._progress(f"{run.outcome.sent:,} of {run.outcome.to_send:,} written")

        held = run.held.pop(tp, None)
        if held is not None:  # planned by the first read: written as they are
            for offset in sorted(chosen):
                await write(offset, held[offset])
            await _settle(pending, copies, run.outcome)
            return
        offsets = sorted(chosen)
        consumer = make_consumer(self._kafka, self._bootstrap, group_id=None, fetch_max_wait_ms=_FETCH_WAIT_MS)
        try:
            await consumer.start()
            async for record in records(consumer, tp, offsets[0], last=offsets[-1]):
                if record.offset not in chosen:
                    continue
                if not self._codec.knows_value(record.value):
                    await self._dispatcher.learn_ids([record.value])
                await write(record.offset, self._plan(record))
            await _settle(pending, copies, run.outcome)
        finally:
            await stop_consumer(consumer)


async def _settle(
    pending: list[tuple[bytes | None, Awaitable[Any]]], copies: dict[int, dict[int, bytes | None]], outcome: Backfill
) -> None:
    """Wait for the copies sent: where each one landed (delivery partition and offset) and its key."""
    for key, future in pending:
        metadata = await future
        copies.setdefault(metadata.partition, {})[metadata.offset] = key
        outcome.sent += 1
