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

__all__ = ["Audit", "Balance", "LedgerEntry", "Reconciler", "Window", "offset_ranges", "readable_entries", "window_checksum"]

import asyncio
import hashlib
import json
import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from bus.config.models import KafkaConfig
from bus.kafka.clients import make_admin, make_consumer, outside_bootstrap, stop_consumer
from bus.kafka.headers import header_text
from bus.kafka.reader import partitions_of, stream_topics
from bus.kafka.topics import TopicNames
from bus.moments import moment_of

log = logging.getLogger("bus.ledger")


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


def readable_entries(records: Iterable[Any]) -> list[LedgerEntry]:
    """The ledger entries among a partition's records; one the hub did not write (by hand, another
    program) is skipped and said: raised, it ended every reconcile of the subscriber, or kept a
    delivery worker from taking up the partition. Without it, events it settled past the commit
    may be delivered again (same ids)."""
    found = []
    for record in records:
        if not record.value:
            continue  # a tombstone: compaction's, nothing to read
        try:
            found.append(LedgerEntry.decode(record.value))
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            log.warning("ledger record %s/%d/%d cannot be read (%r); skipped", record.topic, record.partition, record.offset, exc)
    return found


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
    moment = moment_of(event_time)
    if moment is None:
        return "unknown"
    seconds = moment.timestamp()
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
            await stop_consumer(consumer)

    async def missing_topics(self, subscriber: str) -> list[str]:
        """The subscriber's topics the cluster does not have (asked without creating them: a
        read of a missing topic would create it empty on brokers that auto-create)."""
        admin = make_admin(self._kafka, self._bootstrap)
        try:
            await admin.start()
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
        # One reader for the three, as they stream into the audit's store on disk (in a thread: the
        # hub answering GET /reconcile serves on meanwhile); of each delivery record only its id,
        # time and position are kept: the topic holds every event of the retention.
        audit = Audit(subscriber, committed, delivery, window_s)
        try:
            async for tp, records in stream_topics(self._kafka, self._bootstrap, [delivery, ledger, dead]):
                if tp.topic == delivery:
                    await asyncio.to_thread(audit.add_copies, records)
                elif tp.topic == ledger:
                    await asyncio.to_thread(audit.add_entries, readable_entries(records))
                else:
                    await asyncio.to_thread(audit.add_letters, [header_text(r.headers, "bus_origin") for r in records])
            return await asyncio.to_thread(audit.balance, target_ids)
        finally:
            audit.close()


class Audit:
    """One subscriber's audit, fed as its topics stream in and kept on disk: SQLite's private
    temporary database (deleted when closed), so memory stays that of its page cache. A delivery
    topic holds every event of its retention (millions), and the audit needs each one's state
    and time: held in dictionaries, a week of a busy subscriber took the hub's memory at a click
    of GET /reconcile.

    The states (see the module docstring) are decided in SQL once everything is in; the windows'
    checksums are taken as the delivered ids come out in id order (``window_checksum`` of each).
    """

    def __init__(self, subscriber: str, committed: dict[int, int], topic: str, window_s: int) -> None:
        self._subscriber, self._committed, self._window_s = subscriber, committed, window_s
        self._db = sqlite3.connect("", check_same_thread=False)  # "": private, on disk, gone when closed
        self._db.executescript(
            """
            PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA temp_store = FILE;
            CREATE TABLE copies (part INTEGER, pos INTEGER, event_id TEXT, time TEXT, PRIMARY KEY (part, pos)) WITHOUT ROWID;
            CREATE TABLE delivered (part INTEGER, pos INTEGER, n INTEGER, PRIMARY KEY (part, pos)) WITHOUT ROWID;
            CREATE TABLE dead (part INTEGER, pos INTEGER, PRIMARY KEY (part, pos)) WITHOUT ROWID;
            CREATE TABLE letters (origin TEXT PRIMARY KEY) WITHOUT ROWID;
            CREATE TABLE committed (part INTEGER PRIMARY KEY, pos INTEGER);
            CREATE TABLE topic (name TEXT);
            CREATE TABLE target (event_id TEXT PRIMARY KEY) WITHOUT ROWID;
            CREATE TABLE states (event_id TEXT PRIMARY KEY, time TEXT, rank INTEGER) WITHOUT ROWID;
            """
        )
        self._db.executemany("INSERT INTO committed VALUES (?, ?)", committed.items())
        self._db.execute("INSERT INTO topic VALUES (?)", (topic,))
        self._totals = dict.fromkeys(committed, (0, 0))  # each partition's running totals at its commit (``totals_at``)
        self._with_entries: set[int] = set()
        self._copies = 0

    def close(self) -> None:
        self._db.close()

    def add_copies(self, records: Iterable[Any]) -> None:
        """Delivery records (aiokafka's, or anything with partition, offset and headers)."""
        rows = [
            (r.partition, r.offset, header_text(r.headers, "ce_id") or f"{r.partition}/{r.offset}", header_text(r.headers, "ce_time"))
            for r in records
        ]
        self._db.executemany("INSERT OR IGNORE INTO copies VALUES (?, ?, ?, ?)", rows)  # a position is read once
        self._copies += len(rows)

    def add_entries(self, entries: Iterable[LedgerEntry]) -> None:
        """Ledger entries, in each partition's order."""
        delivered: list[tuple[int, int]] = []
        dead: list[tuple[int, int]] = []
        for entry in entries:
            p = entry.partition
            self._with_entries.add(p)
            if p in self._committed and entry.upto <= self._committed[p]:
                self._totals[p] = (entry.delivered_total, entry.dead_lettered_total)
            delivered += [(p, offset) for offset in _expand(entry.delivered)]
            dead += [(p, offset) for offset in _expand(entry.dead_lettered)]
        # An offset delivered twice (a crash between delivery and commit) is counted: ``redelivered``.
        self._db.executemany("INSERT INTO delivered VALUES (?, ?, 1) ON CONFLICT DO UPDATE SET n = n + 1", delivered)
        self._db.executemany("INSERT OR IGNORE INTO dead VALUES (?, ?)", dead)

    def add_letters(self, origins: Iterable[str]) -> None:
        """The ``bus_origin`` of each dead letter: ``<delivery topic>/<partition>/<offset>``."""
        self._db.executemany("INSERT OR IGNORE INTO letters VALUES (?)", [(o,) for o in origins])

    def balance(self, target_ids: set[str] | None = None) -> Balance:
        db = self._db
        db.executescript(
            """
            -- each id's state is its best copy's (3 delivered, 2 in flight, 1 dead-lettered, 0 unaccounted);
            -- its time, its first copy's (the lowest position: the key sorts by partition, then offset)
            INSERT INTO states
              SELECT event_id, substr(MIN(printf('%010d%020d', c.part, c.pos) || COALESCE(c.time, '')), 31),
                MAX(CASE WHEN d.n IS NOT NULL THEN 3
                         WHEN c.pos >= COALESCE(k.pos, 0) THEN 2
                         WHEN x.part IS NOT NULL
                           AND (SELECT name FROM topic) || '/' || c.part || '/' || c.pos IN (SELECT origin FROM letters) THEN 1
                         ELSE 0 END)
              FROM copies c
              LEFT JOIN delivered d ON d.part = c.part AND d.pos = c.pos
              LEFT JOIN committed k ON k.part = c.part
              LEFT JOIN dead x ON x.part = c.part AND x.pos = c.pos
              GROUP BY event_id;
            DELETE FROM copies;  -- its pages are reused by what follows (the target's ids)
            """
        )
        counts = dict(db.execute("SELECT rank, COUNT(*) FROM states GROUP BY rank").fetchall())
        balance = Balance(self._subscriber, entered=sum(counts.values()), copies=self._copies)
        balance.delivered, balance.dead_lettered, balance.in_flight = counts.get(3, 0), counts.get(1, 0), counts.get(2, 0)
        balance.unaccounted = [i for (i,) in db.execute("SELECT event_id FROM states WHERE rank = 0 ORDER BY event_id")]
        balance.redelivered = db.execute("SELECT COUNT(*) FROM delivered WHERE n > 1").fetchone()[0]
        below = db.execute("SELECT COUNT(*) FROM delivered d JOIN committed k ON k.part = d.part WHERE d.pos < k.pos").fetchone()[0]
        dead_below = db.execute(
            "SELECT COUNT(*) FROM dead x JOIN committed k ON k.part = x.part WHERE x.pos < k.pos "
            "AND NOT EXISTS (SELECT 1 FROM delivered d WHERE d.part = x.part AND d.pos = x.pos)"
        ).fetchone()[0]
        balance.settled_offsets = (below, dead_below)
        for partition, offset in sorted(self._committed.items()):
            # No entry at all behind a commit: nothing to judge by (a commit the ledger has entries
            # around but never recorded is different: that is events committed past, unaccounted).
            if offset > 0 and partition not in self._with_entries:
                balance.unprovable.append(
                    f"partition {partition}: offsets below the committed {offset} have no ledger entries (the ledger is younger than "
                    "the consumer group, or was lost): they cannot be accounted for"
                )
        balance.ledger_totals = (sum(t[0] for t in self._totals.values()), sum(t[1] for t in self._totals.values()))

        windows = self._windows(db.execute("SELECT event_id, time FROM states WHERE rank = 3 ORDER BY event_id"))
        at_target: dict[str, tuple[int, str]] = {}
        if target_ids is not None:
            db.executemany("INSERT OR IGNORE INTO target VALUES (?)", [(i,) for i in target_ids])
            balance.compared_with_target = True
            missing = "SELECT event_id FROM states WHERE rank = 3 AND event_id NOT IN (SELECT event_id FROM target) ORDER BY event_id"
            balance.missing_at_target = [i for (i,) in db.execute(missing)]
            unknown = "SELECT event_id FROM target WHERE event_id NOT IN (SELECT event_id FROM states) ORDER BY event_id"
            balance.unknown_to_hub = [i for (i,) in db.execute(unknown)]
            both = "SELECT s.event_id, s.time FROM states s JOIN target t ON t.event_id = s.event_id ORDER BY s.event_id"
            at_target = self._windows(db.execute(both))
        for start in sorted(windows):
            count, checksum = windows[start]
            window = Window(start, count, checksum)
            if target_ids is not None:
                window.target, window.target_checksum = at_target.get(start, (0, window_checksum([])))
            balance.windows.append(window)
        return balance

    def _windows(self, rows: Iterable[tuple[str, str]]) -> dict[str, tuple[int, str]]:
        """(count, ``window_checksum``) per window of event time, of ids that come in id order."""
        found: dict[str, tuple[int, Any]] = {}
        for event_id, time in rows:
            start = window_start(time, self._window_s)
            count, digest = found.get(start) or (0, hashlib.sha256())
            digest.update(event_id.encode() + b"\n")
            found[start] = (count + 1, digest)
        return {start: (count, digest.hexdigest()[:16]) for start, (count, digest) in found.items()}


def audit(  # noqa: PLR0917 (the inputs of one audit, as Reconciler.balance reads them)
    subscriber: str,
    committed: dict[int, int],
    incoming: Iterable[Any],
    entries: Iterable[LedgerEntry],
    letters: Iterable[str],
    topic: str,
    window_s: int,
    target_ids: set[str] | None,
) -> Balance:
    """Put every event id that entered the subscriber in one state (see the module docstring)."""
    found = Audit(subscriber, committed, topic, window_s)
    try:
        found.add_copies(incoming)
        found.add_entries(entries)
        found.add_letters(letters)
        return found.balance(target_ids)
    finally:
        found.close()


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
