"""Start-up steps of the hub that need no hub object: the topics a config needs, created; the
canonical schemas registered; a start-up step retried while its dependency comes up; the
installed version."""

from __future__ import annotations

__all__ = ["BackgroundStarts", "create_topics", "register_schemas", "registry_client", "retrying", "topic_specs", "version"]

import asyncio
import importlib.metadata
import logging
from typing import Any

from aiokafka.errors import KafkaError

from bus.adapter_api import Adapter
from bus.codec import Codec
from bus.config.loader import LoadedConfig
from bus.config.models import KafkaConfig, SchemaRegistryConfig
from bus.errors import BusError, RetryableError
from bus.kafka.clients import make_admin
from bus.kafka.registry_client import RegistryClient
from bus.kafka.topics import TopicNames, TopicSpec, ensure_topics
from schemas.catalog import SchemaCatalog

log = logging.getLogger("bus.app.hub")


async def retrying(what: str, attempt_fn: Any, *, attempts: int = 30, delay: float = 1.0) -> Any:
    """Call ``attempt_fn`` until it stops raising RetryableError (dependencies starting up)."""
    for attempt in range(1, attempts + 1):
        try:
            return await attempt_fn()
        except (RetryableError, KafkaError) as exc:
            if attempt == attempts:
                raise BusError(f"{what} failed after {attempts} attempts: {exc}") from exc
            log.warning("%s: %s; retrying in %.0fs", what, exc, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def version() -> str:
    try:
        return importlib.metadata.version("integration-bus")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def used_schemas(loaded: LoadedConfig) -> list[str]:
    """Canonical schemas something produces or reads: they get a topic each."""
    hub = loaded.hub
    names = {r.from_ for r in hub.routes} | {t.from_ for t in hub.tables if t.from_}
    names.update(c.emit.schema_ for c in loaded.inbound if hasattr(c, "emit"))
    return sorted(names)


def topic_specs(loaded: LoadedConfig, topics: TopicNames) -> list[TopicSpec]:
    """Every topic the config needs, with its partitions and cleanup policy."""
    hub = loaded.hub
    n, rf = hub.kafka.partitions, hub.kafka.replication_factor
    specs = [TopicSpec(topics.schemas, 1, rf, {"cleanup.policy": "compact"})]
    specs.append(TopicSpec(topics.checkpoints, 1, rf, {"cleanup.policy": "compact"}))
    specs.append(TopicSpec(topics.control, 1, rf, {"cleanup.policy": "compact"}))
    if hub.connections:
        specs.append(TopicSpec(topics.credentials, 1, rf, {"cleanup.policy": "compact"}))
    if hub.lineage.enabled:
        retention = str(int(hub.lineage.retention_hours * 3_600_000))
        specs.append(TopicSpec(topics.lineage, hub.lineage.partitions, rf, {"retention.ms": retention}))
    specs += [TopicSpec(topics.canonical(s), n, rf) for s in used_schemas(loaded)]
    for config in loaded.outbound:
        # The ledger follows its delivery topic's partitions: an entry describes offsets of the same partition.
        specs += [TopicSpec(topics.delivery(config.name), n, rf), TopicSpec(topics.dead_letter(config.name), n, rf)]
        specs.append(TopicSpec(topics.ledger(config.name), n, rf))
    specs.append(TopicSpec(topics.router_dead_letter, n, rf))
    specs += [TopicSpec(topics.inbound_dead_letter(c.name), n, rf) for c in loaded.inbound]
    if loaded.inbound:
        specs.append(TopicSpec(topics.leases, 1, rf))  # only its groups' membership counts: nothing is written to it
    specs += [TopicSpec(topics.table(t.name), n, rf, {"cleanup.policy": "compact"}) for t in hub.tables]
    # Aggregator state follows its source partitions, so it has the same partition count.
    specs += [TopicSpec(topics.aggregate_state(r.name), n, rf, {"cleanup.policy": "compact"}) for r in hub.routes if r.aggregate]
    return specs


async def create_topics(kafka: KafkaConfig, bootstrap: str, specs: list[TopicSpec]) -> None:
    admin = make_admin(kafka, bootstrap)
    try:
        await admin.start()
        await ensure_topics(admin, specs)
    finally:
        await admin.close()


def registry_client(config: SchemaRegistryConfig, *, ops_port: int, own_token: str) -> RegistryClient:
    """A client of the schema registry: the embedded one on this hub's ops port (with the hub's
    own write token), or the configured one."""
    if config.url == "embedded":
        return RegistryClient(f"http://127.0.0.1:{ops_port}/registry", token=own_token)
    password = config.password
    return RegistryClient(config.url, username=config.username, password=password.get_secret_value() if password else None)


async def register_schemas(catalog: SchemaCatalog, codec: Codec, client: RegistryClient) -> None:
    """Register every canonical schema (or find it registered) and teach the codec its id."""
    for name in catalog.names():
        schema = catalog.get(name)
        schema_id = await client.register_own(schema.subject, schema.text)
        codec.add(name, schema_id, schema.parsed)


class BackgroundStarts:
    """Adapters whose system could not be reached at start, tried again in the background instead
    of holding up the hub: one system down must not stop the others. Until one starts, ``why``
    says why (/readyz reports it not ready with that reason) and the log says so; an outbound
    adapter's events wait in Kafka meanwhile (its deliveries are retried)."""

    def __init__(self) -> None:
        self.why: dict[str, str] = {}  # "inbound NAME" -> why it has not started yet
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, adapter: Adapter[Any], what: str) -> None:
        try:
            await adapter.start()
        except RetryableError as exc:
            self.why[what] = str(exc)
            log.warning("%s cannot start yet: %s; the rest of the hub runs, and it is tried again in the background", what, exc)
            self._tasks.append(asyncio.create_task(self._keep_starting(adapter, what), name=f"start:{what}"))

    async def _keep_starting(self, adapter: Adapter[Any], what: str) -> None:
        delay = 1.0
        while True:
            await asyncio.sleep(delay)
            try:
                await adapter.start()
            except RetryableError as exc:
                self.why[what] = str(exc)
                log.warning("%s still cannot start: %s; next try in %.0fs", what, exc, min(delay * 2, 10.0))
                delay = min(delay * 2, 10.0)
                continue
            except Exception:  # a bug or a config the system refuses: say so, keep the hub up
                log.exception("%s failed to start", what)
                self.why[what] = "failed to start (see the log)"
                return
            self.why.pop(what, None)
            log.info("%s started", what)
            return

    async def forget(self, what: str) -> None:
        """Stop trying to start ``what`` (a source whose lease this process lost)."""
        mine = [task for task in self._tasks if task.get_name() == f"start:{what}"]
        self._tasks = [task for task in self._tasks if task not in mine]
        for task in mine:
            task.cancel()
        await asyncio.gather(*mine, return_exceptions=True)
        self.why.pop(what, None)

    async def cancel(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.why.clear()
