"""What operators ask of the running hub, kept in Kafka: a compacted control topic (one
partition), one record per thing asked about, the latest one winning. Today: a subscriber
paused (``pause/<subscriber>``: ``{"paused": true, "by": "<token name>", "at": "<time>"}``), an
inbound adapter paused (``pause-inbound/<inbound>``, the same value; bus.app.source_pauses), and
a redelivery's or backfill's claim on its subscriber (``copy/<subscriber>/<id>``, bus.app.copy_claims).

Every process reads the whole topic when it starts and follows it after, so the desired state
reaches every replica within a fetch (well under a second here, a few at most), and a pod that
restarts or is added obeys it too. The API writes a record and returns; the replicas act on it.
"""

from __future__ import annotations

__all__ = ["ControlWatcher", "write_control"]

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition

from bus.config.models import KafkaConfig
from bus.event import now_rfc3339
from bus.kafka.clients import stop_consumer
from bus.kafka.reader import replay_and_keep

log = logging.getLogger("bus.runtime.control")
Apply = Callable[[str, dict[str, Any] | None, int], None]  # key, value (None: a tombstone), offset

# The control topic is quiet: an operator writes to it a few times a day. With the hub's usual
# fetch wait (25 ms on the embedded broker) its reader made 40 empty fetches a second, each a
# request, an answer and a loop turn in every process of the hub. A fetch ends early when a record
# arrives (a record written mid-wait was read within 0.1 s on the embedded broker), so a pause
# still reaches every replica well under a second.
_FOLLOW_WAIT_MS = 500


async def write_control(producer: AIOKafkaProducer, topic: str, key: str, value: dict[str, Any]) -> None:
    """Record what was asked (returns once Kafka has it)."""
    record = {**value, "at": now_rfc3339()}
    await producer.send_and_wait(topic, json.dumps(record).encode(), key=key.encode(), partition=0)


class ControlWatcher:
    def __init__(self, kafka: KafkaConfig, bootstrap: str, topic: str, apply: Apply) -> None:
        self._kafka = kafka
        self._bootstrap = bootstrap
        self._topic = topic
        self._apply = apply
        self.task: asyncio.Task[None] | None = None
        self._consumer: Any = None

    def _records(self, _tp: TopicPartition, records: list[Any]) -> None:
        for record in records:
            key = (record.key or b"").decode(errors="replace")
            try:
                value = json.loads(record.value) if record.value is not None else None
            except (ValueError, RecursionError):
                log.warning("control record %s is not JSON: ignored", key)
                continue
            self._apply(key, value if isinstance(value, dict) else None, record.offset)

    async def start(self) -> None:
        """Apply everything asked so far, then follow what is asked next."""
        self._consumer = await replay_and_keep(
            self._kafka, self._bootstrap, [TopicPartition(self._topic, 0)], self._records, fetch_max_wait_ms=_FOLLOW_WAIT_MS
        )
        self.task = asyncio.create_task(self._follow(), name="control")

    async def _follow(self) -> None:
        failing = False
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=500)
            except Exception as exc:  # noqa: BLE001 - Kafka away for a while: keep following, say so once
                if not failing:
                    log.warning("cannot read the control topic %s (%r); operators' requests wait until it answers", self._topic, exc)
                failing = True
                await asyncio.sleep(1)
                continue
            if failing:
                log.warning("the control topic %s answers again", self._topic)
                failing = False
            for tp, records in batch.items():
                self._records(tp, records)

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await stop_consumer(consumer)
