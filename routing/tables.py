"""Lookup tables for the enricher: each is a compacted topic, read in full by every router process.

Every router process keeps the whole table in memory (a "global" table), so an event can be
enriched whatever partition it came from. Rows come from config (``rows:``, written at start)
and, with ``from:``, from a canonical schema's events (the router writes the latest event per
key). A background task follows the topic, so updates reach every process.

Readers take the last value per key themselves: the embedded broker does not compact
(docs/embedded-broker.md), and that is also correct on Kafka. A faust GlobalTable was the other option;
reading the topic directly keeps the state where operators can see it and leaves no faust
recovery path (faust #217, duplicated recovery code) between a row and its use.
"""

from __future__ import annotations

__all__ = ["TableStore", "encode_row"]

import asyncio
import json
import logging
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from bus.config.models import KafkaConfig
from bus.config.routes import TableConfig
from bus.kafka.clients import stop_consumer
from bus.kafka.reader import replay_and_keep
from bus.kafka.topics import TopicNames
from bus.runtime.ending import cancel

log = logging.getLogger("routing.tables")


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot store {type(value).__name__} in a table row")


def encode_row(value: Any) -> bytes:
    return json.dumps(value, default=_json_default, separators=(",", ":")).encode()


class TableStore:
    """All tables of a router process: ``store.tables[name][key] -> row``."""

    def __init__(self, configs: list[TableConfig], *, kafka: KafkaConfig, bootstrap: str, topics: TopicNames) -> None:
        self.configs = configs
        self.tables: dict[str, dict[str, Any]] = {c.name: {} for c in configs}
        self._kafka = kafka
        self._bootstrap = bootstrap
        self._names = topics
        self._by_topic = {topics.table(c.name): c.name for c in configs}
        self._task: asyncio.Task[None] | None = None

    async def seed(self, producer: AIOKafkaProducer) -> None:
        """Write the rows given in config (acks=all) before anything reads the tables."""
        for config in self.configs:
            for key, row in config.rows.items():
                await producer.send_and_wait(self._names.table(config.name), encode_row(row), key=key.encode())

    async def start(self) -> None:
        if not self.configs or self._task is not None:
            return
        tps = [TopicPartition(topic, p) for topic in self._by_topic for p in range(self._kafka.partitions)]
        consumer = await replay_and_keep(self._kafka, self._bootstrap, tps, self._apply_records)
        log.info("tables loaded: %s", ", ".join(f"{n}={len(rows)}" for n, rows in self.tables.items()))
        self._task = asyncio.create_task(self._follow(consumer), name="tables-follow")

    def _apply_records(self, tp: TopicPartition, records: list[Any]) -> None:
        table = self.tables[self._by_topic[tp.topic]]
        for record in records:
            key = record.key.decode(errors="replace") if record.key is not None else ""
            if record.value is None:
                table.pop(key, None)  # tombstone
                continue
            try:
                row = json.loads(record.value)  # any JSON value is a row (a mapping table's rows are text)
            except (ValueError, RecursionError) as exc:
                # Not a row the hub wrote (a hand-made record, another producer): skipped, said. Raised,
                # it stopped the router at every start, or the table's updates for good.
                log.warning("table record %s/%d/%d is not JSON (%.200s); skipped", tp.topic, tp.partition, record.offset, exc)
                continue
            table[key] = row

    async def _follow(self, consumer: Any) -> None:
        try:
            while True:
                try:
                    for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                        self._apply_records(tp, records)
                except KafkaError as exc:
                    log.warning("tables: cannot follow updates (%r); retrying", exc)
                    await asyncio.sleep(1)
        finally:
            await stop_consumer(consumer)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel(task)
