"""Topic names and topic bootstrap. The hub creates what it needs with explicit partition counts."""

from __future__ import annotations

__all__ = ["TopicNames", "TopicSpec", "ensure_topics"]

import contextlib
import logging
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from bus.errors import RetryableError

log = logging.getLogger("bus.kafka.topics")


@dataclass(frozen=True, slots=True)
class TopicNames:
    """Every topic name the hub uses, derived from one prefix."""

    prefix: str = "bus"

    def canonical(self, schema: str) -> str:
        return f"{self.prefix}.canonical.{schema}"

    def delivery(self, subscriber: str) -> str:
        return f"{self.prefix}.deliver.{subscriber}"

    def delivery_group(self, subscriber: str) -> str:
        return f"{self.prefix}.deliver.{subscriber}"

    def ledger(self, subscriber: str) -> str:
        return f"{self.prefix}.ledger.{subscriber}"

    def dead_letter(self, subscriber: str) -> str:
        return f"{self.prefix}.dlq.{subscriber}"

    def inbound_dead_letter(self, adapter: str) -> str:
        """Messages an inbound adapter could not turn into an event (bad JSON, schema mismatch)."""
        return f"{self.prefix}.dlq._in.{adapter}"

    def aggregate_state(self, route: str) -> str:
        return f"{self.prefix}.agg.{route}"

    def table(self, name: str) -> str:
        return f"{self.prefix}.table.{name}"

    @property
    def dead_letter_state(self) -> str:
        return f"{self.prefix}.dlq-state"

    @property
    def router_dead_letter(self) -> str:
        return f"{self.prefix}.dlq._router"

    @property
    def checkpoints(self) -> str:
        """Positions of polling sources, keyed by adapter name (compacted)."""
        return f"{self.prefix}._checkpoints"

    @property
    def schemas(self) -> str:
        return f"{self.prefix}._schemas"

    @property
    def lineage(self) -> str:
        """The event lineage index (``bus.lineage``), hash-partitioned by event id and key."""
        return f"{self.prefix}._lineage"

    @property
    def credentials(self) -> str:
        """OAuth2 connections' tokens, encrypted, keyed by connection (compacted)."""
        return f"{self.prefix}._credentials"

    @property
    def leases(self) -> str:
        """The topic whose one partition each source read by one process at a time is leased
        through (a consumer group per source, ``bus.kafka.lease``); nothing is written to it."""
        return f"{self.prefix}._leases"

    def lease_group(self, inbound: str) -> str:
        return f"{self.prefix}-lease-{inbound}"

    @property
    def control(self) -> str:
        """What operators asked of the running hub (a subscriber paused...), keyed by what it is
        about (compacted): every replica reads it, so a restarted or scaled pod obeys it too."""
        return f"{self.prefix}._control"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int = 1
    configs: dict[str, str] = field(default_factory=dict)


async def ensure_topics(admin: AIOKafkaAdminClient, specs: list[TopicSpec]) -> None:
    """Create the topics that do not exist yet; leave existing ones as they are."""
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            return
        new = [NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.configs) for s in missing]
        with contextlib.suppress(TopicAlreadyExistsError):  # another pod created it between list and create
            await admin.create_topics(new)
    except KafkaError as exc:
        raise RetryableError(f"cannot create topics on Kafka: {exc}") from exc
    log.info("created topics: %s", ", ".join(s.name for s in missing))
