"""Dead letters: read, filter, replay and purge them (``bus dlq``).

Every dead-letter topic (``<prefix>.dlq.<subscriber>``, and ``<prefix>.dlq._router`` for events the
router could not route) holds the original record (value, key, headers) plus why it failed:
``bus_error``, ``bus_error_class``, ``bus_attempts``, ``bus_failed_at``, ``bus_origin``.

- replay sends the original record back to where it failed (its ``bus_origin`` topic): a
  subscriber's delivery topic, or for router dead letters the canonical topic, so a fixed route
  routes it again. The same event id travels with it, so a target that already has it can tell.
- purge marks letters as handled without sending them.

Kafka cannot delete single records, so what was replayed or purged is kept as a mark on a
compacted topic (``<prefix>.dlq-state``), keyed by the letter's position. ``list`` shows each
letter's status; replay and purge skip letters already handled unless asked to redo them.
"""

from __future__ import annotations

__all__ = [
    "AGGREGATE_HEADER",
    "CUT_MARKS",
    "HEADERS_DROPPED",
    "KEPT_OF_TOO_LARGE",
    "KEY_TRUNCATED_FROM",
    "MAX_REASON_CHARS",
    "TRUNCATED_FROM",
    "DeadLetter",
    "DeadLetters",
    "Filter",
    "cut_to_fit",
    "truncated",
    "why_headers",
]

import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import TopicPartition

from bus.config.models import KafkaConfig
from bus.event import now_rfc3339
from bus.kafka.clients import make_admin, make_consumer, make_producer, outside_bootstrap, stop_consumer
from bus.kafka.headers import header_text
from bus.kafka.reader import batches_from_start, stream_topics
from bus.kafka.topics import TopicNames, TopicSpec, ensure_topics
from bus.logs import REDACTOR
from bus.moments import in_utc, moment_of
from bus.numbers import whole_number

# The longest reason a dead letter keeps: an error can quote a whole value (a mapping's, a target's),
# and an event of 960 KiB with its value quoted again would be more than Kafka takes.
MAX_REASON_CHARS = 8192


def why_headers(reason: str, error_class: str, **fields: str) -> list[tuple[str, bytes]]:
    """The headers that say why a record is a dead letter, for every dead-letter topic (inbound,
    router, subscriber): the reason (secrets masked: it is kept for as long as the letter is),
    its class, when, and ``bus_<field>`` for each of ``fields`` (origin, subscriber, attempts...)."""
    if len(reason) > MAX_REASON_CHARS:  # a reason can quote the value: the letter must still fit in Kafka
        reason = f"{reason[:MAX_REASON_CHARS]}... ({len(reason) - MAX_REASON_CHARS:,} more characters cut)"
    return [
        # backslashreplace: a reason quoting text that cannot be UTF-8 (a lone surrogate) is still kept
        ("bus_error", REDACTOR.redact(reason).encode("utf-8", "backslashreplace")),
        ("bus_error_class", error_class.encode()),
        ("bus_failed_at", now_rfc3339().encode()),
        *((f"bus_{name}", value.encode("utf-8", "backslashreplace")) for name, value in fields.items()),
    ]


# What a dead letter keeps of a message too large for Kafka: its start, its size and its digest.
KEPT_OF_TOO_LARGE = 64 * 1024
# The headers that mark a letter of which a part was cut: it cannot be replayed (its source
# still has it whole).
TRUNCATED_FROM = "bus_truncated_from_bytes"  # the value's size before it was cut
KEY_TRUNCATED_FROM = "bus_key_truncated_from_bytes"
HEADERS_DROPPED = "bus_headers_dropped"  # how many headers were left off
CUT_MARKS = (TRUNCATED_FROM, KEY_TRUNCATED_FROM, HEADERS_DROPPED)

log = logging.getLogger("bus.deadletters")


def truncated(payload: bytes) -> tuple[bytes, list[tuple[str, bytes]]]:
    """What a dead letter keeps of ``payload`` when the whole is too large for Kafka: its first
    ``KEPT_OF_TOO_LARGE`` bytes, and headers giving its size and its SHA-256."""
    return payload[:KEPT_OF_TOO_LARGE], [
        (TRUNCATED_FROM, str(len(payload)).encode()),
        ("bus_payload_sha256", hashlib.sha256(payload).hexdigest().encode()),
    ]


def cut_to_fit(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """A record too large for Kafka, cut to what a dead letter can hold: each part larger than
    ``KEPT_OF_TOO_LARGE`` cut (the headers left off), and marked (``CUT_MARKS``) so that it is
    never replayed."""
    marks: list[tuple[str, bytes]] = []
    if value is not None and len(value) > KEPT_OF_TOO_LARGE:
        value, marks = truncated(value)
    if sum(len(k) + len(v or b"") for k, v in headers) > KEPT_OF_TOO_LARGE:
        headers, marks = [], [*marks, (HEADERS_DROPPED, str(len(headers)).encode())]
    if key is not None and len(key) > KEPT_OF_TOO_LARGE:
        key, marks = key[:KEPT_OF_TOO_LARGE], [*marks, (KEY_TRUNCATED_FROM, str(len(key)).encode())]
    return key, value, [*headers, *marks]


# On a router dead letter of an aggregate's result its route's transform refused: the route. The
# letter's value is the result (JSON); replayed to the route's canonical topic, the router shapes
# it again with the route as it is then.
AGGREGATE_HEADER = "bus_aggregate"
# What Kafka takes as a topic name: a letter whose origin is not one names nowhere to replay to.
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")

_ERROR_HEADERS = {"bus_error", "bus_error_class", "bus_attempts", "bus_failed_at", "bus_subscriber", "bus_origin", "bus_replayed_from"}


_SUMMARY = {"subscriber", "position", "event_id", "type", "key", "failed_at", "error_class", "attempts", "route", "error", "status"}


@dataclass
class DeadLetter:
    subscriber: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    status: str = "new"  # new, replayed, purged

    def header(self, name: str) -> str:
        return header_text(self.headers, name)

    @property
    def cut(self) -> bool:
        """Only a part of the message was kept (it was too large for Kafka): it cannot be replayed."""
        return any(k in CUT_MARKS for k, _ in self.headers)

    @property
    def position(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def event_id(self) -> str:
        return self.header("ce_id")

    @property
    def origin(self) -> tuple[str, int, int] | None:
        """Where it failed from (``bus_origin``: topic, partition, offset), if the letter says."""
        topic, _, offset = self.header("bus_origin").rpartition("/")
        topic, _, partition = topic.rpartition("/")
        number, position = whole_number(partition), whole_number(offset)
        if not topic or number is None or position is None:
            return None
        return topic, number, position

    @property
    def failed_at(self) -> str:
        return self.header("bus_failed_at")

    def summary(self) -> dict[str, Any]:
        return {
            "subscriber": self.subscriber,
            "position": f"{self.partition}/{self.offset}",
            "event_id": self.event_id,
            "type": self.header("ce_type"),
            "key": self.key.decode(errors="replace") if self.key is not None else None,
            "failed_at": self.failed_at,
            "error_class": self.header("bus_error_class"),
            "attempts": self.header("bus_attempts"),
            "route": self.header("bus_route"),
            "error": self.header("bus_error"),
            "status": self.status,
            # Whatever else the letter says about where it came from (a file's line, an origin topic):
            # list --json shows all that show does, but the payload.
            **{
                name: v.decode(errors="replace")
                for k, v in self.headers
                if not k.startswith("ce_") and k not in ("traceparent", "content-type") and (name := k.removeprefix("bus_")) not in _SUMMARY
            },
        }


@dataclass
class Filter:
    """Which dead letters an action is about. A time without a zone is UTC (the hub's records
    are); with a window asked, a letter whose failure time cannot be told is in none."""

    since: datetime | None = None
    until: datetime | None = None
    error_class: str | None = None
    ids: set[str] = field(default_factory=set)
    include_handled: bool = False

    def __post_init__(self) -> None:
        # Naive against aware raised TypeError at the first letter: a listing or a purge that broke.
        self.since = in_utc(self.since) if self.since is not None else None
        self.until = in_utc(self.until) if self.until is not None else None

    def __call__(self, letter: DeadLetter) -> bool:
        if self.ids and letter.event_id not in self.ids and f"{letter.partition}/{letter.offset}" not in self.ids:
            return False
        if self.error_class and letter.header("bus_error_class") != self.error_class:
            return False
        if self.since or self.until:
            at = moment_of(letter.failed_at)  # written by the hub, or by anything that can produce to the topic
            if at is None or (self.since and at < self.since) or (self.until and at >= self.until):
                return False
        return self.include_handled or letter.status == "new"


class DeadLetters:
    """Operations on the dead-letter topics of one hub (one topic prefix)."""

    def __init__(self, kafka: KafkaConfig, bootstrap: str, topics: TopicNames) -> None:
        self._kafka = kafka
        self._bootstrap = outside_bootstrap(bootstrap)
        self._names = topics
        # Letters a replay left out because a later event of their key came after them: (letter, that event's id).
        self.superseded: list[tuple[DeadLetter, str]] = []
        # Letters a replay cannot send at all, and why (kept cut; no topic to send them to).
        self.unsendable: list[tuple[DeadLetter, str]] = []
        # Per origin partition: where it was read from, and per key its latest live event (offset, id)
        # and the latest of another id before that (see _index).
        self._latest: dict[TopicPartition, tuple[int, dict[bytes, tuple[tuple[int, str], tuple[int, str] | None]]]] = {}
        self._dead_ids: dict[str, set[str]] = {}  # subscriber -> the event ids of its dead letters

    def topic_of(self, subscriber: str) -> str:
        if subscriber.startswith("_in."):  # messages an inbound adapter could not turn into events
            return self._names.inbound_dead_letter(subscriber.removeprefix("_in."))
        return self._names.router_dead_letter if subscriber == "_router" else self._names.dead_letter(subscriber)

    async def find(self, subscriber: str, where: Filter | None = None) -> list[DeadLetter]:
        return await self.find_all([subscriber], where)

    async def find_all(self, subscribers: list[str], where: Filter | None = None) -> list[DeadLetter]:
        """The letters of every one of ``subscribers`` (in that order) that ``where`` selects, each
        topic in partition and offset order: all of them in memory, for a selection known to be
        small (by ids) or a command that prints them all. ``scan`` reads any number."""
        found: dict[str, list[DeadLetter]] = {name: [] for name in subscribers}
        async for batch in self.scan(subscribers, where):
            for letter in batch:
                found[letter.subscriber].append(letter)
        return [letter for name in subscribers for letter in sorted(found[name], key=lambda x: (x.partition, x.offset))]

    async def scan(self, subscribers: list[str], where: Filter | None = None) -> AsyncIterator[list[DeadLetter]]:
        """The letters ``where`` selects, batch by batch as the topics are read: the dead-letter
        topics of a target down for a day hold every event it missed, and reading them whole (the
        console asked every 10 s) took the hub's memory with them. The marks are read first (one
        small record per letter handled)."""
        marks: dict[str, str] = {}
        async for _, records in stream_topics(self._kafka, self._bootstrap, [self._names.dead_letter_state]):
            for record in records:
                if record.key is None:
                    continue
                try:
                    marks[record.key.decode()] = str(json.loads(record.value)["status"]) if record.value else "new"
                except (ValueError, KeyError, TypeError, RecursionError) as exc:  # not a mark `bus dlq` wrote: skipped, said
                    at = f"{record.topic}/{record.partition}/{record.offset}"
                    log.warning("dead-letter mark %s cannot be read (%r); skipped", at, exc)
        names = {self.topic_of(name): name for name in subscribers}
        async for tp, records in stream_topics(self._kafka, self._bootstrap, names):
            name, batch = names[tp.topic], []
            for r in records:
                letter = DeadLetter(name, tp.topic, r.partition, r.offset, r.key, r.value, list(r.headers or ()))
                letter.status = marks.get(letter.position, "new")
                if where is None or where(letter):
                    batch.append(letter)
            if batch:
                yield batch

    async def replay(self, letters: list[DeadLetter], *, include_superseded: bool = False) -> int:
        """Send each letter back to where it failed, then mark it replayed. Returns how many: a
        letter of which only a part was kept (``CUT_MARKS``) is not replayed, and said. Nor,
        unless ``include_superseded``, is a letter a later event of its key came after on the
        topic it failed from (``superseded``): replayed now, it would reach the target after that
        event and put older data over newer (an upsert by key, a CRM record). Kept in
        ``self.superseded`` for the caller to say, and replayable with ``include_superseded``."""
        unsendable = [(letter, why) for letter in letters if (why := self._unsendable(letter))]
        if unsendable:
            self.unsendable += unsendable
            log.warning(
                "not replaying %d dead letter(s): %s", len(unsendable),
                "; ".join(f"{letter.event_id or letter.position}: {why}" for letter, why in unsendable[:10]),
            )  # fmt: skip
            letters = [letter for letter in letters if not self._unsendable(letter)]
        if not include_superseded and letters:
            later = await self._later_of_their_keys(letters)
            if later:
                self.superseded += [(letter, later[letter.position]) for letter in letters if letter.position in later]
                log.warning(
                    "not replaying %d dead letter(s) that a later event of the same key came after (replayed, they would "
                    "put older data over newer): %s", len(later),
                    ", ".join(f"{letter.event_id} (after it: {newer})" for letter, newer in self.superseded[-len(later):][:10]),
                )  # fmt: skip
                letters = [letter for letter in letters if letter.position not in later]
        if not letters:
            return 0
        await self._ensure_state_topic()
        producer = make_producer(self._kafka, self._bootstrap)
        await producer.start()
        try:
            futures = []
            for letter in letters:
                origin = self._destination(letter)
                headers = [(k, v) for k, v in letter.headers if k not in _ERROR_HEADERS and k != "bus_route"]
                headers.append(("bus_replayed_from", letter.position.encode()))
                futures.append(await producer.send(origin, letter.value, key=letter.key, headers=headers))
            for future in futures:
                await future
            await self._mark(producer, letters, "replayed")
        finally:
            await producer.stop()
        return len(letters)

    def _destination(self, letter: DeadLetter) -> str:
        """The topic a letter goes back to: the one it failed from."""
        return letter.origin[0] if letter.origin else letter.header("bus_origin") or self._names.delivery(letter.subscriber)

    def _unsendable(self, letter: DeadLetter) -> str:
        """Why ``letter`` cannot be replayed at all, or ''."""
        if letter.cut:  # only its start was kept: sending that back would route a broken event
            return "only a part of it was kept (a message too large for Kafka): send it again from its source"
        if not _TOPIC_NAME.fullmatch(self._destination(letter)):
            # An aggregate's result dead-lettered before it said its topic ("aggregate <id>"): sent
            # there, Kafka would refuse the topic with the letters before it already sent and unmarked.
            return f"it names no topic to go back to (origin {letter.header('bus_origin')!r}): purge it"
        return ""

    async def _later_of_their_keys(self, letters: list[DeadLetter]) -> dict[str, str]:
        """Letter position -> the id of a later event of its key that reached the topic it failed
        from (the subscriber's delivery topic; the canonical topic for the router's) and is not a
        dead letter itself (one that never got through put nothing newer at the target; one that
        was replayed counts, by its copy)."""
        origins: list[tuple[DeadLetter, TopicPartition, int]] = []
        for letter in letters:
            where = letter.origin
            if letter.key is not None and where is not None:  # no key: no order to keep
                origins.append((letter, TopicPartition(where[0], where[1]), where[2]))
        first: dict[TopicPartition, tuple[int, str]] = {}
        for letter, tp, offset in origins:
            # Read each origin partition from its earliest letter on: again, from further back, when
            # a later chunk holds a letter from before where it was read (a DLQ partition can hold
            # letters of one origin partition in another order than another DLQ partition does).
            read_from = self._latest[tp][0] if tp in self._latest else None
            if (read_from is None or offset < read_from) and (tp not in first or offset < first[tp][0]):
                first[tp] = (offset, letter.subscriber)
        for tp, (offset, subscriber) in first.items():
            await self._index(tp, offset, subscriber)
        found: dict[str, str] = {}
        for letter, tp, offset in origins:
            _, latest = self._latest[tp]
            assert letter.key is not None
            kept = latest.get(letter.key)
            if kept is None:
                continue
            (newest, newest_id), other = kept
            if newest_id == letter.event_id:  # its own copy, replayed before: the one before it, if any
                if other is None:
                    continue
                newest, newest_id = other
            if newest > offset:
                found[letter.position] = newest_id
        return found

    async def _index(self, tp: TopicPartition, start: int, subscriber: str) -> None:
        """Read ``tp`` once, from ``start`` on, keeping per key its latest event that is not a dead
        letter of ``subscriber`` (and the latest of another id before it): a replay of a day's dead
        letters, 1,000 at a time, reads each partition once, not once per thousand (again only for
        a letter from before ``start``). Memory: one entry per key, and the subscriber's dead
        letters' ids."""
        if subscriber not in self._dead_ids:
            ids: set[str] = set()
            async for _, records in stream_topics(self._kafka, self._bootstrap, [self.topic_of(subscriber)]):
                ids.update(v.decode(errors="replace") for r in records for k, v in r.headers or () if k == "ce_id" and v is not None)
            self._dead_ids[subscriber] = ids
        dead = self._dead_ids[subscriber]
        latest: dict[bytes, tuple[tuple[int, str], tuple[int, str] | None]] = {}
        consumer = make_consumer(self._kafka, self._bootstrap, group_id=None)
        try:
            await consumer.start()
            async for _, records in batches_from_start(consumer, [tp], after={tp: start - 1}):
                for record in records:
                    if record.key is None:
                        continue
                    headers = dict(record.headers or ())
                    ident = (headers.get("ce_id") or b"").decode(errors="replace")
                    if ident in dead and "bus_replayed_from" not in headers:
                        continue  # it failed too: nothing newer reached the target from it
                    this = (record.offset, ident or f"{tp.topic}/{tp.partition}/{record.offset}")
                    before = latest.get(record.key)
                    if before is None:
                        latest[record.key] = (this, None)
                    else:
                        latest[record.key] = (this, before[1] if before[0][1] == this[1] else before[0])
        finally:
            await stop_consumer(consumer)
        self._latest[tp] = (start, latest)

    async def purge(self, letters: list[DeadLetter]) -> int:
        await self._ensure_state_topic()
        producer = make_producer(self._kafka, self._bootstrap)
        await producer.start()
        try:
            await self._mark(producer, letters, "purged")
        finally:
            await producer.stop()
        return len(letters)

    async def _mark(self, producer: Any, letters: list[DeadLetter], status: str) -> None:
        futures = []
        for letter in letters:
            value = json.dumps({"status": status, "at": now_rfc3339(), "event_id": letter.event_id}).encode()
            futures.append(await producer.send(self._names.dead_letter_state, value, key=letter.position.encode()))
        for future in futures:
            await future
        for letter in letters:
            letter.status = status

    async def _ensure_state_topic(self) -> None:
        admin = make_admin(self._kafka, self._bootstrap)
        try:
            await admin.start()
            await ensure_topics(
                admin, [TopicSpec(self._names.dead_letter_state, 1, self._kafka.replication_factor, {"cleanup.policy": "compact"})]
            )
        finally:
            await admin.close()
