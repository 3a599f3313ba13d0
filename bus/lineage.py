"""Event lineage: where one event went, found by its id (or its key) without reading every topic.

The index is one topic, ``<prefix>._lineage``, hash-partitioned by what a lookup asks for: every
entry about event ``X`` lives on partition ``crc32(X) % partitions``. A lookup reads that one
partition (a fraction of a small topic), not the data topics from their beginning; then it
fetches the few records the entries point at by their exact position.

Writers add entries to the batch they are already producing, before they commit, so an entry is
exactly as durable as the work it describes (a crash re-routes or redelivers, and writes the
entry again: a lookup shows the repeat, which is what happened). Per event the cost is a list
built and appended; per batch one JSON record per index partition touched (bench/lineage_cost.py):

- the router (``"r"``), per event read from a canonical topic: its id, its position, and each
  copy it planned: ``route>topic`` (a subscriber's delivery topic, or the router's dead-letter
  topic). What the canonical record says itself (source, type, event time, subject) is read
  from the record at lookup, not copied here. Also an alias entry (``"k"``) under the event's
  key when it differs from the id, so an event can be found by the business value the inbound
  keyed it by (an order number, a customer id);
- each delivery worker (``"d"``), per event settled: the subscriber, the position of its copy,
  delivered or dead-lettered, how many attempts, the failed attempts' answers (the last
  ``MAX_FAILURES``), and the dead letter it was replayed from, if it was.

An index record is ``{"at": <when the batch was handled>, "hops": [entry, ...]}``; entries are
JSON arrays, not objects, to keep the index small; ``read_index`` reads them back. Dead
letters themselves are found on their own topics by id (``bus.deadletters``), not in the index.
"""

from __future__ import annotations

__all__ = [
    "MAX_FAILURES",
    "DeliveryHop",
    "Hop",
    "LineageBatch",
    "RoutedHop",
    "index_partition",
    "read_index",
]

import json
import logging
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from bus.config.models import KafkaConfig
from bus.jsontext import compact
from bus.kafka.batches import Record
from bus.kafka.clients import make_consumer, stop_consumer
from bus.kafka.reader import partitions_of, read_from_start
from bus.numbers import whole_number

log = logging.getLogger("bus.lineage")
MAX_FAILURES = 10  # failed attempts kept per settled event: the first ones and the last ones matter most


def index_partition(value: str, partitions: int) -> int:
    """The index partition that holds the entries about ``value`` (an event id, key or subject)."""
    return zlib.crc32(value.encode()) % partitions


class LineageBatch:
    """Entries noted while one batch is handled; ``records()`` turns them into one index record
    per index partition touched, to produce with the batch."""

    __slots__ = ("_by_partition", "_copy_names", "_partitions", "topic")

    def __init__(self, topic: str, partitions: int) -> None:
        self.topic = topic
        self._partitions = partitions
        self._by_partition: dict[int, list[list[Any]]] = {}
        self._copy_names: dict[tuple[str, str], str] = {}

    def note(self, under: str, entry: list[Any]) -> None:
        partition = zlib.crc32(under.encode()) % self._partitions
        found = self._by_partition.get(partition)
        if found is None:
            self._by_partition[partition] = [entry]
        else:
            found.append(entry)

    def copies(self, outs: Iterable[Any]) -> list[str]:
        """The copies the router planned (``routing.dispatch.Send``), as ``route>topic`` (a split
        element's: ``route>topic>suffix``); the strings are made once per route and topic."""
        names = self._copy_names
        found = []
        for out in outs:
            if not out.route:
                continue  # table rows, aggregator state: not copies of the event
            if out.id_suffix is not None:
                found.append(f"{out.route}>{out.topic}>{out.id_suffix}")
                continue
            name = names.get((out.route, out.topic))
            if name is None:
                name = names[(out.route, out.topic)] = f"{out.route}>{out.topic}"
            found.append(name)
        return found

    def routed(self, headers: Iterable[tuple[str, bytes | None]], key: bytes | None, origin: str, copies: list[str]) -> None:
        """The router read the event at ``origin`` (``topic/partition/offset``) and planned ``copies``.

        Only what the canonical record does not say is kept: the lookup reads the rest (source,
        type, time, subject) from the record itself."""
        event_id = origin
        for name, value in headers:
            if name == "ce_id":
                if value:
                    event_id = value.decode(errors="replace")
                break
        self.note(event_id, ["r", event_id, origin, copies])
        if key is not None:
            key_text = key.decode(errors="replace")
            if key_text != event_id:
                self.note(key_text, ["k", key_text, event_id])

    def settled(  # noqa: PLR0917 (one entry's fields)
        self,
        event_id: str,
        at: str,
        subscriber: str,
        position: str,
        delivered: bool,
        attempts: int,
        failures: list[tuple[str, str]],
        replayed_from: str | None,
    ) -> None:
        """A delivery worker settled the copy at ``position``."""
        kept = failures if len(failures) <= MAX_FAILURES else [*failures[: MAX_FAILURES // 2], *failures[-MAX_FAILURES // 2 :]]
        self.note(
            event_id,
            ["d", event_id, at, subscriber, position, "delivered" if delivered else "dead_lettered", attempts, kept, replayed_from],
        )

    def __bool__(self) -> bool:
        return bool(self._by_partition)

    def take(self, at: str = "") -> list[Record]:
        """The index records of what was noted (and forget it); ``at``: when the router's entries
        were made (theirs have no time of their own: one per batch)."""
        noted, self._by_partition = self._by_partition, {}
        return [Record(self.topic, None, compact({"at": at, "hops": entries}).encode(), [], p) for p, entries in noted.items()]

    def put_back(self, records: Iterable[Record]) -> None:
        """Records that could not be written: noted again, for the next ``take``."""
        for record in records:
            assert record.partition is not None and record.value is not None
            self._by_partition.setdefault(record.partition, [])[:0] = json.loads(record.value)["hops"]


@dataclass
class RoutedHop:
    event_id: str
    at: str  # when the router read it
    position: str  # topic/partition/offset of the canonical record
    copies: list[tuple[str, str, str | None]]  # (route, topic, a split element's id suffix)

    @property
    def elements(self) -> list[str]:
        """Id suffixes of split elements: their copies have ids ``<id>/<suffix>``."""
        return [suffix for _, _, suffix in self.copies if suffix is not None]


@dataclass
class DeliveryHop:
    event_id: str
    at: str
    subscriber: str
    position: str  # topic/partition/offset of the subscriber's copy
    outcome: str  # delivered, dead_lettered
    attempts: int
    failures: list[tuple[str, str]]  # (when, the answer or error) per failed attempt kept
    replayed_from: str | None


Hop = RoutedHop | DeliveryHop


@dataclass
class IndexHits:
    """What the index holds about one value: the hops of the event with that id, and the ids of
    events whose key or subject it is."""

    hops: list[Hop] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)


def _copy(text: str) -> tuple[str, str, str | None]:
    route, topic, *suffix = _text(text).split(">", 2)
    return route, topic, suffix[0] if suffix else None


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{type(value).__name__} where text belongs")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"{type(value).__name__} where a list belongs")
    return value


def read_position(text: str) -> tuple[str, int, int] | None:
    """``topic/partition/offset`` as its parts; None for anything else (a sign, a number past
    Kafka's, a missing part: an index entry no hub wrote)."""
    topic, _, rest = text.rpartition("/")
    topic, _, partition_text = topic.rpartition("/")
    partition, offset = whole_number(partition_text, 2**31 - 1), whole_number(rest)
    if not topic or partition is None or offset is None:
        return None
    return topic, partition, offset


def _position(value: Any) -> str:
    if read_position(_text(value)) is None:
        raise ValueError(f"{value[:80]!r} is no topic/partition/offset")
    return str(value)


def _parse(entry: list[Any], at: str) -> Hop | str | None:
    """One index entry; TypeError or ValueError for one no hub wrote (every field is checked here,
    for a lookup hands them on: an unhashable subscriber, a position that is none, a count that is
    text were each a 500 from GET /events/{id})."""
    kind = entry[0] if entry else None
    if kind == "r" and len(entry) >= 4:
        return RoutedHop(_text(entry[1]), at, _position(entry[2]), [_copy(c) for c in _list(entry[3])])
    if kind == "d" and len(entry) >= 9:
        event_id, at, subscriber, outcome = (_text(v) for v in (entry[1], entry[2], entry[3], entry[5]))
        attempts, replayed_from = entry[6], entry[8]
        if type(attempts) is not int or attempts < 0:
            raise TypeError(f"attempts {attempts!r} is no count")
        failures = [(_text(f[0]), _text(f[1])) for f in map(_list, _list(entry[7]))]
        replayed = None if replayed_from is None else _text(replayed_from)
        return DeliveryHop(event_id, at, subscriber, _position(entry[4]), outcome, attempts, failures, replayed)
    if kind == "k" and len(entry) >= 3:
        return _text(entry[2])
    return None  # a newer hub's entry kind: skipped, not an error


async def read_index(
    kafka: KafkaConfig, bootstrap: str, topic: str, values: Iterable[str], *, timeout_s: float = 60.0
) -> dict[str, IndexHits] | None:
    """Every entry about each of ``values``, oldest first, read from their index partitions only
    (one pass); None when the index topic does not exist (lineage off, or a broker that started afresh)."""
    wanted = {v: IndexHits() for v in values}
    consumer = make_consumer(kafka, bootstrap, group_id=None)

    def apply(_tp: TopicPartition, records: list[Any]) -> None:
        for record in records:
            try:
                value = json.loads(record.value)
                at, entries = str(value["at"]), value["hops"]
            except (TypeError, ValueError, KeyError, RecursionError):
                continue  # not an index record: nothing to learn from it
            if not isinstance(entries, list):
                continue  # the same ("hops": 5 broke the lookup)
            for entry in entries:
                if not isinstance(entry, list) or len(entry) < 2 or not isinstance(entry[1], str):
                    continue
                if (hits := wanted.get(entry[1])) is None:
                    continue
                try:
                    parsed = _parse(entry, at)
                except (TypeError, ValueError, IndexError):  # an entry no hub wrote: a 500 for the lookup
                    continue
                if isinstance(parsed, str):
                    if parsed not in hits.aliases:
                        hits.aliases.append(parsed)
                elif parsed is not None:
                    hits.hops.append(parsed)

    try:
        await consumer.start()
        partitions = await partitions_of(consumer, topic)
        if not partitions:
            return None
        tps = sorted({TopicPartition(topic, index_partition(v, len(partitions))) for v in wanted})
        await read_from_start(consumer, tps, apply, timeout_s=timeout_s)
    finally:
        await stop_consumer(consumer)
    return wanted


async def fetch_at(kafka: KafkaConfig, bootstrap: str, positions: Iterable[str], *, timeout_s: float = 3.0) -> dict[str, Any]:
    """The records at ``topic/partition/offset`` positions, by position (missing ones left out:
    gone with the topic's retention, or never there)."""
    wanted: dict[TopicPartition, set[int]] = {}
    for position in positions:
        if (parts := read_position(position)) is None:
            continue  # not a place a record can be
        topic, partition, offset = parts
        wanted.setdefault(TopicPartition(topic, partition), set()).add(offset)
    found: dict[str, Any] = {}
    if not wanted:
        return found
    consumer = make_consumer(kafka, bootstrap, group_id=None)
    try:
        await consumer.start()
        for tp, offsets in wanted.items():
            consumer.assign([tp])
            for offset in sorted(offsets):
                consumer.seek(tp, offset)
                try:
                    batch = await consumer.getmany(tp, timeout_ms=int(timeout_s * 1000), max_records=1)
                except Exception as exc:  # noqa: BLE001 (out of range, no such topic: the record is not there)
                    log.debug("lineage: no record at %s/%d/%d (%r)", tp.topic, tp.partition, offset, exc)
                    continue
                for record in batch.get(tp, []):
                    if record.offset == offset:
                        found[f"{tp.topic}/{tp.partition}/{offset}"] = record
    finally:
        await stop_consumer(consumer)
    return found
