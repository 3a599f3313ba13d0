"""Where polling sources keep their position: a compacted Kafka topic keyed by adapter name.

Keeping it in Kafka (not a local file) means any pod can take over a source, and the position
lives beside the events it describes. A source saves only after Kafka acknowledged every event
up to that position, so a restart resumes there: events after the last save are read again
(at least once), none are skipped.
"""

from __future__ import annotations

__all__ = ["KafkaCheckpoints"]

import asyncio
import json
import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from bus.config.models import KafkaConfig
from bus.errors import KafkaUnavailable
from bus.kafka.reader import read_topic

log = logging.getLogger("bus.checkpoints")


class KafkaCheckpoints:
    def __init__(self, producer: AIOKafkaProducer, kafka: KafkaConfig, bootstrap: str, topic: str) -> None:
        self._producer = producer
        self._kafka = kafka
        self._bootstrap = bootstrap
        self.topic = topic

    async def load(self, name: str) -> dict[str, Any] | None:
        """The last position saved under ``name``, or None if it never saved one."""
        key = name.encode()
        latest: dict[str, Any] | None = None
        for record in await read_topic(self._kafka, self._bootstrap, self.topic):
            if record.key != key:
                continue
            if record.value is None:
                latest = None
                continue
            try:
                position = json.loads(record.value)
            except (ValueError, RecursionError) as exc:
                position = exc
            if not isinstance(position, dict):
                # Not a position the adapter saved (by hand, another program): the one before it is
                # used (read again from there, events keep their ids), and said. Raised, the adapter
                # never started.
                log.warning(
                    "checkpoint of %s at %s/%d/%d cannot be read (%.200s); the one before it is used",
                    name,
                    record.topic,
                    record.partition,
                    record.offset,
                    position,
                )
                continue
            latest = position
        return latest

    async def save(self, name: str, position: dict[str, Any]) -> None:
        """Store ``position``; returns once Kafka acknowledged it. Raises KafkaUnavailable."""
        value = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
        try:
            await asyncio.wait_for(
                self._producer.send_and_wait(self.topic, value, key=name.encode()), timeout=self._kafka.produce_timeout_s
            )
        except (KafkaError, TimeoutError) as exc:
            raise KafkaUnavailable(f"checkpoint of {name} not stored: {exc!r}") from exc
