"""A delivery worker's book-keeping I/O: partition books restored from the committed offsets and
the ledger when partitions are assigned, flushed (ledger entry, then commit) as events settle;
dead letters written (an event so settled); the ledger and backlog gauges kept true.

What is settled and what may be committed is decided by ``bus.runtime.settlement`` (pure); this
module only reads and writes it: the ledger topic, the group's commits, the ledger gauges.
"""

from __future__ import annotations

__all__ = ["Bookkeeper"]

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError, MessageSizeTooLargeError
from aiokafka.structs import OffsetAndMetadata

from bus.config.models import KafkaConfig
from bus.deadletters import cut_to_fit, why_headers
from bus.errors import BusError
from bus.event import now_rfc3339
from bus.kafka.batches import Record
from bus.kafka.reader import replay
from bus.kafka.watermarks import Watermarks
from bus.ledger import LedgerEntry, readable_entries
from bus.lineage import LineageBatch
from bus.metrics import DEAD_LETTERS, DELIVERIES, KAFKA_ERRORS, LEDGER
from bus.runtime.settlement import Draft, PartitionBook

log = logging.getLogger("bus.runtime.delivery")


class Bookkeeper:
    def __init__(
        self,
        name: str,
        *,
        topic: str,
        ledger: str,
        dead_letters: str,
        consumer: Any,
        producer: AIOKafkaProducer,
        kafka: KafkaConfig,
        bootstrap: str,
        lag: Any,
        lineage: LineageBatch | None = None,
    ) -> None:
        self.name = name
        self._lineage = lineage  # where every event went: written with the ledger entries (bus.lineage)
        self._topic = topic
        self._ledger = ledger
        self._dlq = dead_letters
        self.ends: dict[int, int] = {}  # the delivery topic's end per owned partition, probed every few seconds
        self._watermarks = Watermarks(kafka, bootstrap)
        self._dead = DELIVERIES.labels(name, "dead_lettered")
        self._dead_letters = DEAD_LETTERS.labels(name)
        self._consumer = consumer
        self._producer = producer
        self._kafka = kafka
        self._bootstrap = bootstrap
        self._lag = lag
        self._lock = asyncio.Lock()
        self._gauges = {state: LEDGER.labels(name, state) for state in ("entered", "delivered", "dead_lettered", "in_flight")}

    async def restore(self, partitions: list[int]) -> dict[int, PartitionBook]:
        """The books of newly assigned partitions, from their committed offsets and the ledger."""
        committed = {p: (await self._consumer.committed(TopicPartition(self._topic, p))) or 0 for p in partitions}
        self._lag.committed({TopicPartition(self._topic, p): committed[p] for p in partitions})
        entries: dict[int, list[LedgerEntry]] = defaultdict(list)

        def apply(tp: TopicPartition, records: list[Any]) -> None:
            entries[tp.partition] += readable_entries(records)  # one not written by the hub: skipped, said

        await replay(self._kafka, self._bootstrap, [TopicPartition(self._ledger, p) for p in partitions], apply)
        return {p: PartitionBook.restore(p, committed[p], entries[p]) for p in partitions}

    async def flush(self, books: list[PartitionBook]) -> None:
        """Write what was settled to the ledger, then commit what may be committed."""
        async with self._lock:
            at = now_rfc3339()
            drafts: list[tuple[PartitionBook, Draft]] = [(book, d) for book in books if (d := book.draft(at)) is not None]
            if not drafts:
                return
            hops = self._lineage.take() if self._lineage is not None else []
            if not await self._write_ledger([d.entry for _, d in drafts], hops):
                for book, draft in drafts:
                    book.abandon(draft)
                if self._lineage is not None:
                    self._lineage.put_back(hops)
                return  # not recorded, so not committed: the next flush tries again
            offsets = {
                TopicPartition(self._topic, d.entry.partition): OffsetAndMetadata(d.entry.upto, "")
                for book, d in drafts
                if d.entry.upto > book.committed
            }
            if await self._commit(offsets):
                for book, draft in drafts:
                    book.confirm(draft)
                self._lag.committed(offsets)

    def settled(self, record: Any, event_id: str, *, delivered: bool, attempts: int, failures: list[tuple[str, str]] | None) -> None:
        """Note in the lineage index how ``record`` was settled (written by the next flush)."""
        if self._lineage is None:
            return
        replayed_from = None
        for name, value in record.headers or ():
            if name == "bus_replayed_from" and value is not None:
                replayed_from = value.decode(errors="replace")
        position = f"{record.topic}/{record.partition}/{record.offset}"
        self._lineage.settled(event_id, now_rfc3339(), self.name, position, delivered, attempts, failures or [], replayed_from)

    async def _write_ledger(self, entries: list[LedgerEntry], hops: list[Record]) -> bool:
        for attempt in range(3):
            try:
                sent = [
                    await self._producer.send(self._ledger, e.encode(), key=b"%d" % e.partition, partition=e.partition) for e in entries
                ]
                sent += [await self._producer.send(h.topic, h.value, partition=h.partition) for h in hops]
                await asyncio.gather(*sent)
            except KafkaError as exc:
                KAFKA_ERRORS.labels(f"deliver:{self.name}", "ledger").inc()
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
            KAFKA_ERRORS.labels(f"deliver:{self.name}", "commit").inc()
            log.warning("delivery worker %s could not commit (%r); events not in the ledger will be redelivered", self.name, exc)
            return False
        return True

    async def stop(self) -> None:
        await self._watermarks.stop()

    async def dead_letter(self, record: Any, error: BusError, *, attempts: int, wait: Callable[[float], Awaitable[None]]) -> None:
        """Keep ``record`` on the subscriber's dead-letter topic with why; returns once Kafka has it
        (``wait`` between tries: it raises when the partition is given up meanwhile)."""
        why = why_headers(
            str(error),
            type(error).__name__,
            attempts=str(attempts),
            subscriber=self.name,
            origin=f"{record.topic}/{record.partition}/{record.offset}",
        )
        key, value, headers = record.key, record.value, [*(record.headers or ()), *why]
        cut = False
        while True:
            try:
                await self._producer.send_and_wait(self._dlq, value, key=key, headers=headers)
                break
            except KafkaError as exc:  # not settled until Kafka has it: keep trying, never drop
                if isinstance(exc, MessageSizeTooLargeError) and not cut:
                    # Only a record a producer outside the hub wrote can be this large (the hub's events
                    # leave room for these headers): what Kafka takes of it is kept, marked, never replayed.
                    log.warning("a dead letter for %s is too large for Kafka; keeping what it takes of it", self.name)
                    key, value, headers = cut_to_fit(record.key, record.value, list(record.headers or ()))
                    headers += why
                    cut = True
                    continue
                KAFKA_ERRORS.labels(f"deliver:{self.name}", "dead_letter").inc()
                log.warning("cannot write dead letter for %s to %s (%r); retrying", self.name, self._dlq, exc)
                await wait(1)
        self._dead.inc()
        log.warning("dead-lettered %s/%d/%d for %s: %s", record.topic, record.partition, record.offset, self.name, error)

    async def probe_ends(self, owned: Callable[[], list[PartitionBook]], every_s: float = 5.0) -> None:
        """Keep the backlog gauges true while deliveries are slow (fewer fetches then)."""
        while True:
            try:
                books = owned()
                ends = await self._watermarks.ends({TopicPartition(self._topic, book.partition) for book in books})
                self.ends = {tp.partition: end for tp, end in ends.items()}
                self._lag.ends(ends)
                self.update_gauges(books)
                dead = {TopicPartition(self._dlq, p) for p in await self._producer.partitions_for(self._dlq)}
                self._dead_letters.set(sum((await self._watermarks.ends(dead)).values()))
            except Exception as exc:  # noqa: BLE001 (a gauge: never worth stopping delivery for)
                log.debug("delivery worker %s: cannot probe the end of its topic (%r)", self.name, exc)
            await asyncio.sleep(every_s)

    def balance(self, books: list[PartitionBook]) -> dict[str, int]:
        """The ledger balance of the owned partitions: entered, delivered, dead-lettered, in flight."""
        entered = delivered = dead = committed = 0
        for book in books:
            highwater = self._consumer.highwater(TopicPartition(self._topic, book.partition))
            entered += max(highwater or 0, self.ends.get(book.partition, 0), book.committed)
            committed += book.committed
            delivered += book.totals[0]
            dead += book.totals[1]
        return {"entered": entered, "delivered": delivered, "dead_lettered": dead, "in_flight": entered - committed}

    def update_gauges(self, books: list[PartitionBook]) -> None:
        for state, value in self.balance(books).items():
            self._gauges[state].set(value)
