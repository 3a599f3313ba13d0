"""The delivery ledger: where every event went, kept in Kafka, and the audit behind ``bus reconcile``.

Each subscriber has ``<prefix>.ledger.<subscriber>``, partitioned like its delivery topic. After a
delivery batch, and *before* committing it, the delivery worker writes one entry per partition:
which offsets were delivered and which were dead-lettered, the offset it is about to commit
(``upto``) and the partition's running totals up to that offset. So for every committed offset
the ledger says how the event there was settled; an event redelivered after a crash appears twice.

The audit (``reconcile``) trusts nothing the worker says about itself: it reads the subscriber's
committed offsets first, then the delivery topic (what came in: ids and event times), the ledger,
and the dead-letter topic, and puts every event id in exactly one state:

- delivered: some copy of it was delivered;
- in flight: not yet delivered, and a copy sits at or after the committed offset (waiting, being
  retried, or replayed from the dead letters);
- dead-lettered: its copies were dead-lettered, and the dead-letter topic holds the letter;
- unaccounted: none of these: below the committed offset with no ledger entry, or a dead letter
  the ledger promises but the topic lacks. Anything here means an event was lost.

Some states of Kafka leave nothing to prove a balance with, and the audit says so instead of
calling an empty subscriber balanced (``unprovable``): the subscriber's delivery or ledger topic
does not exist (a broker that started afresh, as the embedded one does after a restart, or a
wrong topic prefix), or a partition has a committed offset and no ledger entries at all (the
ledger is younger than the consumer group, or lost). A commit the ledger has entries around but
never recorded is not that: it is events committed past without being settled, unaccounted.

entered = delivered + dead-lettered + in flight + unaccounted; the subscriber balances when
nothing is unaccounted. Delivered ids are also summed per window of event time (when the event
entered the hub) into a checksum a target can compute from its own ids (``window_checksum``).
"""

from __future__ import annotations

__all__ = ["Balance", "LedgerEntry", "Reconciler", "Window", "offset_ranges", "window_checksum"]

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from bus.config.models import KafkaConfig
from bus.kafka.clients import make_admin, make_consumer, outside_bootstrap
from bus.kafka.reader import partitions_of, stream_topics
from bus.kafka.topics import TopicNames


def offset_ranges(offsets: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted offsets as inclusive ranges: [3, 4, 5, 9] -> [(3, 5), (9, 9)]. A batch is mostly one range."""
    ranges: list[tuple[int, int]] = []
    for offset in sorted(offsets):
        if ranges and offset == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], offset)
        else:
            ranges.append((offset, offset))
    return ranges


def _expand(ranges: Iterable[Iterable[int]]) -> Iterable[int]:
    for first, last in ranges:
        yield from range(first, last + 1)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    partition: int
    upto: int  # the offset committed right after this entry: every offset below it is settled
    delivered: list[tuple[int, int]]  # offset ranges, inclusive
    dead_lettered: list[tuple[int, int]]
    delivered_total: int  # offsets below ``upto`` delivered, since the partition began
    dead_lettered_total: int
    at: str

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, value: bytes) -> LedgerEntry:
        data = json.loads(value)
        data["delivered"] = [tuple(r) for r in data["delivered"]]
        data["dead_lettered"] = [tuple(r) for r in data["dead_lettered"]]
        return cls(**data)


def totals_at(entries: Iterable[LedgerEntry], committed: int) -> tuple[int, int]:
    """The running totals of one partition at its committed offset.

    The latest entry whose ``upto`` is at or below the committed offset: an entry written for a
    commit that then failed (a crash, a rebalance) has ``upto`` beyond it and is overtaken by the
    entries of whoever settles those offsets again.
    """
    found = (0, 0)
    for entry in entries:
        if entry.upto <= committed:
            found = (entry.delivered_total, entry.dead_lettered_total)
    return found


def window_checksum(ids: Iterable[str]) -> str:
    """Order-free, duplicate-free checksum of a set of event ids: a target computes the same from its own.

    sha256 over the distinct ids, sorted, each followed by a newline; the first 16 hex digits.
    """
    digest = hashlib.sha256()
    for event_id in sorted(set(ids)):
        digest.update(event_id.encode() + b"\n")
    return digest.hexdigest()[:16]


def window_start(event_time: str, window_s: int) -> str:
    try:
        seconds = datetime.fromisoformat(event_time.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return "unknown"
    return datetime.fromtimestamp(seconds - seconds % window_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Window:
    start: str  # UTC, RFC 3339; "unknown" for events without a readable time
    delivered: int
    checksum: str
    target: int | None = None  # ids the target reported in this window, when compared
    target_checksum: str | None = None

    @property
    def agrees(self) -> bool:
        return self.target_checksum is None or self.target_checksum == self.checksum


@dataclass
class Balance:
    subscriber: str
    entered: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    in_flight: int = 0
    unaccounted: list[str] = field(default_factory=list)
    copies: int = 0  # records on the delivery topic: more than ``entered`` after replays or repeated intake
    redelivered: int = 0  # offsets delivered more than once (a crash between delivery and commit)
    ledger_totals: tuple[int, int] = (0, 0)  # (delivered, dead-lettered) offsets below the committed ones, by the ledger
    settled_offsets: tuple[int, int] = (0, 0)  # the same, counted from the ledger's offsets
    windows: list[Window] = field(default_factory=list)
    missing_at_target: list[str] = field(default_factory=list)
    unknown_to_hub: list[str] = field(default_factory=list)
    compared_with_target: bool = False
    unprovable: list[str] = field(default_factory=list)  # why the ledger cannot prove a balance here

    @property
    def balanced(self) -> bool:
        return not self.unaccounted and not self.unprovable

    @property
    def ok(self) -> bool:
        return self.balanced and not self.missing_at_target and all(w.agrees for w in self.windows)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["balanced"] = self.balanced
        data["ok"] = self.ok
        return data


def _header(record: Any, name: str) -> str:
    for key, value in record.headers or ():
        if key == name and value is not None:
            return str(value.decode(errors="replace"))
    return ""


class Reconciler:
    """Audit one hub's subscribers against Kafka (``bus reconcile``)."""

    def __init__(self, kafka: KafkaConfig, bootstrap: str, topics: TopicNames) -> None:
        self._kafka = kafka
        self._bootstrap = outside_bootstrap(bootstrap)
        self._names = topics

    async def committed(self, subscriber: str) -> dict[int, int]:
        """The delivery group's committed offset per partition (0 where nothing was committed)."""
        topic = self._names.delivery(subscriber)
        consumer = make_consumer(self._kafka, self._bootstrap, group_id=self._names.delivery_group(subscriber))
        try:
            await consumer.start()
            return {tp.partition: (await consumer.committed(tp)) or 0 for tp in await partitions_of(consumer, topic)}
        finally:
            await consumer.stop()

    async def missing_topics(self, subscriber: str) -> list[str]:
        """The subscriber's topics the cluster does not have (asked without creating them: a
        read of a missing topic would create it empty on brokers that auto-create)."""
        admin = make_admin(self._kafka, self._bootstrap)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
        finally:
            await admin.close()
        return [t for t in (self._names.delivery(subscriber), self._names.ledger(subscriber)) if t not in existing]

    async def balance(self, subscriber: str, *, window_s: int = 3600, target_ids: set[str] | None = None) -> Balance:
        if missing := await self.missing_topics(subscriber):
            names = ", ".join(missing)
            why = f"{names} do not exist: a broker that started afresh (the embedded one keeps nothing), or a wrong topic prefix"
            return Balance(subscriber, unprovable=[why])
        # Committed offsets first: every ledger entry they rely on was written before them.
        committed = await self.committed(subscriber)
        delivery, ledger, dead = self._names.delivery(subscriber), self._names.ledger(subscriber), self._names.dead_letter(subscriber)
        # One reader for the three, as they stream; of each delivery record only its id, time and
        # position are kept: the topic holds every event of the retention, their messages unread here.
        incoming: list[_Copy] = []
        entries: list[LedgerEntry] = []
        letters: set[str] = set()
        async for tp, records in stream_topics(self._kafka, self._bootstrap, [delivery, ledger, dead]):
            if tp.topic == delivery:
                incoming += [_Copy(r.partition, r.offset, _kept_headers(r)) for r in records]
            elif tp.topic == ledger:
                entries += [LedgerEntry.decode(r.value) for r in records]
            else:
                letters.update(_header(r, "bus_origin") for r in records)
        incoming.sort(key=lambda copy: (copy.partition, copy.offset))
        return audit(subscriber, committed, incoming, entries, letters, self._names.delivery(subscriber), window_s, target_ids)


@dataclass(frozen=True, slots=True)
class _Copy:
    """What an audit reads of a delivery record."""

    partition: int
    offset: int
    headers: tuple[tuple[str, bytes], ...]


def _kept_headers(record: Any) -> tuple[tuple[str, bytes], ...]:
    return tuple((k, v) for k, v in record.headers or () if k in ("ce_id", "ce_time") and v is not None)


def audit(  # noqa: PLR0917 (the inputs of one audit, read by Reconciler.balance)
    subscriber: str,
    committed: dict[int, int],
    incoming: list[Any],
    entries: list[LedgerEntry],
    letters: set[str],
    topic: str,
    window_s: int,
    target_ids: set[str] | None,
) -> Balance:
    """Put every event id that entered the subscriber in one state (see the module docstring)."""
    delivered_at: dict[tuple[int, int], int] = defaultdict(int)
    dead_at: set[tuple[int, int]] = set()
    by_partition: dict[int, list[LedgerEntry]] = defaultdict(list)
    for entry in entries:
        by_partition[entry.partition].append(entry)
        for offset in _expand(entry.delivered):
            delivered_at[entry.partition, offset] += 1
        dead_at.update((entry.partition, offset) for offset in _expand(entry.dead_lettered))

    states: dict[str, str] = {}
    event_time: dict[str, str] = {}
    rank = {"unaccounted": 0, "dead_lettered": 1, "in_flight": 2, "delivered": 3}
    for record in incoming:
        event_id = _header(record, "ce_id") or f"{record.partition}/{record.offset}"
        event_time.setdefault(event_id, _header(record, "ce_time"))
        position = (record.partition, record.offset)
        if position in delivered_at:
            state = "delivered"
        elif record.offset >= committed.get(record.partition, 0):
            state = "in_flight"
        elif position in dead_at and f"{topic}/{record.partition}/{record.offset}" in letters:
            state = "dead_lettered"
        else:
            state = "unaccounted"
        if rank[state] > rank.get(states.get(event_id, ""), -1):
            states[event_id] = state

    balance = Balance(subscriber, entered=len(states), copies=len(incoming))
    balance.delivered = sum(1 for s in states.values() if s == "delivered")
    balance.dead_lettered = sum(1 for s in states.values() if s == "dead_lettered")
    balance.in_flight = sum(1 for s in states.values() if s == "in_flight")
    balance.unaccounted = sorted(i for i, s in states.items() if s == "unaccounted")
    balance.redelivered = sum(1 for n in delivered_at.values() if n > 1)
    below = {(p, o) for (p, o) in delivered_at if o < committed.get(p, 0)}
    balance.settled_offsets = (len(below), sum(1 for p, o in dead_at if o < committed.get(p, 0) and (p, o) not in below))
    for partition, offset in sorted(committed.items()):
        # No entry at all behind a commit: nothing to judge by (a commit the ledger has entries
        # around but never recorded is different: that is events committed past, unaccounted).
        if offset > 0 and not by_partition[partition]:
            balance.unprovable.append(
                f"partition {partition}: offsets below the committed {offset} have no ledger entries (the ledger is younger than "
                "the consumer group, or was lost): they cannot be accounted for"
            )
    totals = [totals_at(by_partition[p], c) for p, c in committed.items()]
    balance.ledger_totals = (sum(t[0] for t in totals), sum(t[1] for t in totals))

    delivered_ids = [i for i, s in states.items() if s == "delivered"]
    windows: dict[str, list[str]] = defaultdict(list)
    for event_id in delivered_ids:
        windows[window_start(event_time[event_id], window_s)].append(event_id)
    if target_ids is not None:
        balance.compared_with_target = True
        balance.missing_at_target = sorted(set(delivered_ids) - target_ids)
        balance.unknown_to_hub = sorted(target_ids - set(states))
        at_target: dict[str, list[str]] = defaultdict(list)
        for event_id in target_ids & set(states):
            at_target[window_start(event_time[event_id], window_s)].append(event_id)
    for start in sorted(windows):
        window = Window(start, len(windows[start]), window_checksum(windows[start]))
        if target_ids is not None:
            window.target = len(at_target.get(start, []))
            window.target_checksum = window_checksum(at_target.get(start, []))
        balance.windows.append(window)
    return balance


def render(balance: Balance, *, show_ids: int = 20) -> str:
    """The human report of one subscriber."""
    b = balance
    if b.unprovable:
        return "\n".join([f"subscriber {b.subscriber}: CANNOT PROVE a balance", *(f"  {why}" for why in b.unprovable)])
    verdict = "balanced" if b.balanced else f"NOT BALANCED: {len(b.unaccounted)} event(s) unaccounted for"
    lines = [
        f"subscriber {b.subscriber}: {verdict}",
        f"  entered {b.entered}   delivered {b.delivered}   dead-lettered {b.dead_lettered}   "
        f"in flight {b.in_flight}   unaccounted {len(b.unaccounted)}",
        f"  copies on the delivery topic {b.copies}; offsets delivered more than once {b.redelivered}",
    ]
    agree = "agree with" if b.ledger_totals == b.settled_offsets else "DIFFER from"
    lines.append(
        f"  ledger running totals (delivered {b.ledger_totals[0]}, dead-lettered {b.ledger_totals[1]}) "
        f"{agree} its entries (delivered {b.settled_offsets[0]}, dead-lettered {b.settled_offsets[1]})"
    )
    if b.unaccounted:
        lines.append("  unaccounted ids: " + ", ".join(b.unaccounted[:show_ids]) + (" ..." if len(b.unaccounted) > show_ids else ""))
    if b.windows:
        lines.append("  delivered ids per window of event time:")
        for w in b.windows:
            target = "" if w.target_checksum is None else f"   target {w.target} {w.target_checksum} {'ok' if w.agrees else 'DIFFERS'}"
            lines.append(f"    {w.start}  {w.delivered:>8}  {w.checksum}{target}")
    if b.compared_with_target:
        lines.append(f"  target: {len(b.missing_at_target)} delivered id(s) missing there, {len(b.unknown_to_hub)} id(s) the hub never saw")
        if b.missing_at_target:
            lines.append("  missing at the target: " + ", ".join(b.missing_at_target[:show_ids]))
    return "\n".join(lines)
