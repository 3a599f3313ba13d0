"""The hub's lifecycle: start what a role needs in dependency order, stop it in reverse.

Part of the composition root (``bus.app``): the one place in ``bus/`` that wires in ``schemas/``,
``routing/`` and ``ops/``. Everything else in ``bus/`` imports none of them, and no adapter by name.

Start order: embedded broker -> topics -> ops server (+ embedded registry) -> schemas registered
-> producer -> outbound (adapters, delivery workers) -> router -> inbound (adapters, webhook
server). Stop runs the reverse, so intake stops first and in-flight work drains downstream:
webhooks answer 503 to new requests while accepted ones finish, the router acks what Kafka has,
delivery workers commit what targets accepted.
"""

from __future__ import annotations

__all__ = ["ROLES", "Hub", "Role"]

import asyncio
import functools
import logging
import secrets
import signal
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiokafka import AIOKafkaProducer

from bus.adapter_api import Adapter, AdapterRegistry, Context, Inbound, Outbound
from bus.app.adapter_metrics import PROGRESS
from bus.app.copy_jobs import ClaimsAt, CopyJobs
from bus.app.hub_view import HubView
from bus.app.leased_inbound import LeasedInbound
from bus.app.setup import BackgroundStarts, create_topics, register_schemas, registry_client, retrying, topic_specs, version
from bus.app.source_pauses import PAUSE_INBOUND, SourcePauses
from bus.app.stranded import report_stranded
from bus.codec import Codec
from bus.config.loader import LoadedConfig
from bus.credentials.connections import Connections
from bus.credentials.store import CredentialStore
from bus.errors import BusError
from bus.kafka.broker import EmbeddedBroker
from bus.kafka.clients import make_producer
from bus.kafka.registry_client import RegistryClient
from bus.kafka.topics import TopicNames
from bus.lineage import LineageBatch
from bus.logs import REDACTOR, secrets_in
from bus.metrics import BUILD
from bus.runtime.checkpoints import KafkaCheckpoints, SourceCheckpoints
from bus.runtime.collector import tune_after_start
from bus.runtime.control import ControlWatcher
from bus.runtime.delivery import DeliveryWorker
from bus.runtime.loop_lag import LoopLag
from bus.runtime.publisher import KafkaSink
from bus.runtime.supervisor import Supervisor
from bus.runtime.web import WebServer
from bus.tracing import NO_TRACING, Tracing
from ops.api.app import PREFIX as API_PREFIX
from ops.api.app import api_app
from ops.server import OpsServer, Token
from routing.app import RouterService
from routing.dispatch import Dispatcher
from routing.router import Router
from routing.tables import TableStore
from routing.worker import RouterWorker
from schemas.catalog import SchemaCatalog
from schemas.embedded_registry import EmbeddedRegistry

log = logging.getLogger("bus.app.hub")
# How long a start waits for the lease groups of sources read by one process to say where each is
# read, beyond a session timeout (a member that died without leaving holds a group that long).
_LEASE_ANSWER_S = 15.0
_STRANDED_LOOK_AT_STOP_S = 5.0  # how long a stop waits for the look for stranded work to end
Role = Literal["all", "inbound", "router", "outbound"]
ROLES: tuple[Role, ...] = ("all", "inbound", "router", "outbound")


class Hub:
    """Run the hub (or one role of it). ``async with Hub(...)`` starts and stops it."""

    def __init__(self, loaded: LoadedConfig, adapters: AdapterRegistry, catalog: SchemaCatalog, *, role: Role = "all") -> None:
        if role not in ROLES:
            raise BusError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
        self.config = loaded.hub
        self.loaded = loaded
        # Masked in every log line, dead letter and answer this process writes (bus/logs.py).
        REDACTOR.remember([*loaded.secrets, *secrets_in([loaded.hub, loaded.inbound, loaded.outbound])])
        self.role = role
        self._adapter_types = adapters
        self._catalog = catalog
        self.topics = TopicNames(self.config.kafka.topic_prefix)
        self.codec = Codec()
        self.broker: EmbeddedBroker | None = None
        self.bootstrap = self.config.kafka.bootstrap
        ops = self.config.ops
        tokens = [Token(t.name, t.token.get_secret_value(), t.scope) for t in ops.tokens]
        # The hub registers its own schemas through the registry's API like any client: with a
        # write token of its own, made anew each start and never shown.
        self._own_token = secrets.token_urlsafe(32)
        tokens.append(Token("the hub itself", self._own_token, "write"))
        self.ops = OpsServer(
            ops.host, ops.port, self.readiness, problems=self.problems, detail=self.detail, tokens=tokens, idle_timeout_s=ops.idle_timeout_s
        )
        self.copy_jobs = CopyJobs(self._claims_at)  # the redeliveries and backfills under way
        self.ops.mount(API_PREFIX, api_app(HubView(self, adapters, catalog)))  # the management API
        self.web: WebServer | None = None
        self._registry: EmbeddedRegistry | None = None
        self._producer: AIOKafkaProducer | None = None
        self.inbound: list[Inbound[Any]] = []
        self.outbound: list[Outbound[Any]] = []
        PROGRESS.track(self)  # bus_adapter_progress, read from the adapters at scrape time
        self._starts = BackgroundStarts()
        self.starting = self._starts.why  # "inbound NAME" -> why it has not started yet
        self._lookup: RegistryClient | None = None  # fetches writer schemas of ids first seen in a value
        self.workers: list[DeliveryWorker] = []
        self.paused: dict[str, str] = {}  # subscriber -> who paused it (the control topic's word)
        self.pause_notes: dict[str, tuple[str, str]] = {}  # a pause's control key -> (why, when), as the operator asked
        self.stranded: dict[str, dict[str, int]] = {}  # a subscriber no longer configured -> the work its topics hold
        self._stranded_task: asyncio.Task[None] | None = None
        self._loop_lag = LoopLag()
        self._control: ControlWatcher | None = None
        self.router: RouterWorker | RouterService | None = None
        self._schemas_ready = False
        self._started = False
        self.tracing = NO_TRACING
        self.supervisor = Supervisor()
        self.source_pauses = SourcePauses(self._starts, self.supervisor)  # inbound adapters paused by an operator
        self._router_tables: TableStore | None = None
        self.connections: Connections | None = None  # OAuth2 connections (connections:), with their refreshers

    @property
    def router_tables(self) -> TableStore | None:
        """The lookup tables this process routes with (None where it does not route)."""
        return self._router_tables

    def _runs(self, role: Role) -> bool:
        return self.role in ("all", role)

    # -- start -------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            raise BusError("hub already started")
        self._started = True
        BUILD.info({"version": version(), "role": self.role})
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "hub ready (role %s): kafka %s, ops http://127.0.0.1:%d%s",
            self.role,
            self.bootstrap,
            self.ops.port,
            f", webhooks http://127.0.0.1:{self.web.port}" if self.web else "",
        )

    async def _start(self) -> None:
        kafka = self.config.kafka
        self._loop_lag.start()  # first: a start held up (a blocking call, a CPU limit) is seen too
        self.tracing = Tracing(self.config.tracing)
        if kafka.bootstrap == "embedded":
            self.broker = EmbeddedBroker(kafka.embedded_port or None)
            await self.broker.start()
            self.bootstrap = self.broker.bootstrap
        await retrying("creating topics", lambda: create_topics(kafka, self.bootstrap, topic_specs(self.loaded, self.topics)))
        if self.config.schema_registry.url == "embedded":
            self._registry = EmbeddedRegistry(kafka, self.bootstrap, self.topics.schemas)
            await retrying("starting the embedded schema registry", self._registry.start)
            self.ops.mount("/registry", self._registry.app())
        await self.ops.start()
        await retrying("registering schemas", self._register_schemas)
        self._producer = make_producer(kafka, self.bootstrap)
        await retrying("connecting the producer", self._producer.start)
        if self.config.connections and self.config.credentials is not None:
            store = CredentialStore(self.config.credentials, self._producer, kafka, self.bootstrap, self.topics.credentials)
            self.connections = Connections(self.config.connections, store)
            await retrying("reading the connections' tokens", self.connections.load)
            self.connections.run(lambda component, coro: self.supervisor.spawn(component, coro, name=component))

        if self._runs("outbound") or self._runs("inbound"):
            self._control = ControlWatcher(kafka, self.bootstrap, self.topics.control, self._on_control)
            await self._control.start()  # what operators asked (paused subscribers and sources) holds here too
            self.supervisor.watch("control", None)
            if self._control.task is not None:
                self.supervisor.adopt("control", self._control.task)
        if self._runs("outbound"):
            for config in self.loaded.outbound:
                adapter = self._build(config)
                assert isinstance(adapter, Outbound)
                await self._starts.start(adapter, f"outbound {config.name}")
                self.outbound.append(adapter)
            # All at once: each worker's consumer start waits on the broker (about 30 ms here), and
            # a hub with hundreds of subscribers would otherwise wait for them one by one.
            started = await asyncio.gather(*(self._start_worker(adapter) for adapter in self.outbound), return_exceptions=True)
            self.workers += [worker for worker in started if isinstance(worker, DeliveryWorker)]  # stopped by stop() if one failed
            if failed := next((error for error in started if isinstance(error, BaseException)), None):
                raise failed
        if self._runs("outbound") or self._runs("inbound"):
            # Work left on the topics of a subscriber, or an inbound adapter, taken out of the config: looked for once, in the background.
            subscribers = {c.name for c in self.loaded.outbound} if self._runs("outbound") else None
            inbound = {c.name for c in self.loaded.inbound} if self._runs("inbound") else None
            self._stranded_task = asyncio.create_task(self._look_for_stranded(subscribers, inbound), name="stranded")
        if self._runs("router"):
            producer = self._producer
            tables = self._router_tables = TableStore(self.config.tables, kafka=kafka, bootstrap=self.bootstrap, topics=self.topics)
            await retrying("writing table rows", lambda: tables.seed(producer))
            self.router = await self._start_router()
        if self._runs("inbound"):
            http = self.config.http
            self.web = WebServer(http.host, http.port, idle_timeout_s=http.idle_timeout_s, max_connections=http.max_connections)
            for config in self.loaded.inbound:
                sink = KafkaSink(self._producer, self.codec, self.topics, adapter=config.name, timeout=kafka.produce_timeout_s)
                adapter = self._build(config, sink=sink)
                assert isinstance(adapter, Inbound)
                if adapter.one_reader:
                    adapter = self._leased(adapter)
                await self.source_pauses.start(adapter)  # not started if an operator paused it
                self.inbound.append(adapter)
            # The lease groups form side by side (on Kafka, a new group waits 3 s for more members).
            within = _LEASE_ANSWER_S + kafka.session_timeout_ms / 1000
            await asyncio.gather(*(a.decided(within) for a in self.inbound if isinstance(a, LeasedInbound)))
            await self.web.start()

    def _leased(self, adapter: Inbound[Any]) -> LeasedInbound:
        """A source one process reads at a time: run where its lease is held, stand by elsewhere."""
        leased = LeasedInbound(
            adapter,
            kafka=self.config.kafka,
            bootstrap=self.bootstrap,
            topic=self.topics.leases,
            group=self.topics.lease_group(adapter.config.name),
            starts=self._starts,
            supervisor=self.supervisor,
            leases=self.config.leases,
        )
        self.supervisor.watch(f"inbound:{adapter.config.name}", leased.restart)  # its task died: restarted only if it runs here
        return leased

    async def _start_worker(self, adapter: Outbound[Any]) -> DeliveryWorker:
        assert self._producer is not None
        worker = DeliveryWorker(
            adapter,
            kafka=self.config.kafka,
            bootstrap=self.bootstrap,
            topics=self.topics,
            codec=self.codec,
            producer=self._producer,
            tracing=self.tracing,
            lineage=await self._lineage(),
        )
        await worker.start()
        if (asked := self.paused.get(worker.name)) is not None:
            worker.pause(asked)  # a restarted worker of a paused subscriber stays paused
        component = f"deliver:{adapter.config.name}"
        self.supervisor.watch(component, functools.partial(self._restart_worker, worker))
        if worker.task is not None:
            self.supervisor.adopt(component, worker.task)
        return worker

    async def _lineage(self) -> LineageBatch | None:
        """A writer of the lineage index, or None with lineage off (one per writer: each fills its own batches)."""
        producer = self._producer
        if not self.config.lineage.enabled or producer is None:
            return None
        topic = self.topics.lineage
        # The topic's own count, which may predate a change of ``lineage.partitions``: lookups use it too.
        partitions = await retrying("reading the lineage topic", lambda: producer.partitions_for(topic))
        return LineageBatch(topic, len(partitions))

    @property
    def producer(self) -> AIOKafkaProducer | None:
        return self._producer

    async def _look_for_stranded(self, subscribers: set[str] | None, inbound: set[str] | None) -> None:
        try:
            found = await report_stranded(self.config.kafka, self.bootstrap, self.topics, subscribers, inbound)
        except Exception as exc:  # noqa: BLE001 - a look that failed must not touch the hub; it is said
            log.warning("could not look for subscribers taken out of the config that left work behind: %r", exc)
            return
        self.stranded = {s.subscriber: {"undelivered": s.undelivered, "dead_letters": s.dead_letters} for s in found if s.holds_work}

    def _claims_at(self) -> ClaimsAt | None:
        """Where copy jobs claim their subscriber: the control topic, once this process has reached Kafka."""
        return ClaimsAt(self.config.kafka, self.bootstrap, self.topics.control) if self._producer is not None else None

    def _on_control(self, key: str, value: dict[str, Any] | None, offset: int) -> None:
        """A control record (bus.runtime.control): pause or resume a subscriber or a source of this
        process, or a copy job's claim on a subscriber (bus.app.copy_claims)."""
        self.copy_jobs.seen(key, value, offset)
        if value and value.get("paused"):  # what the topology shows with the pause (read by every process: any may serve the API)
            self.pause_notes[key] = (str(value.get("reason") or "")[:500], str(value.get("at") or ""))
        else:
            self.pause_notes.pop(key, None)
        if key.startswith(PAUSE_INBOUND):
            if self._runs("inbound"):
                self.source_pauses.record(key.removeprefix(PAUSE_INBOUND), value)
            return
        name = key.removeprefix("pause/")
        if not key.startswith("pause/"):
            return
        by = str(value.get("by") or "someone") if value and value.get("paused") else None
        if by is None:
            self.paused.pop(name, None)
        else:
            self.paused[name] = by
        for worker in self.workers:
            if worker.name == name:
                worker.pause(by) if by is not None else worker.resume()

    async def _restart_worker(self, old: DeliveryWorker) -> None:
        """A delivery loop died: a new worker for the same adapter (it resumes from the committed offsets)."""
        await old.stop()
        new = await self._start_worker(old.adapter)
        self.workers = [new if w is old else w for w in self.workers]

    async def _start_router(self) -> RouterWorker | RouterService:
        kafka, tables = self.config.kafka, self._router_tables
        assert self._producer is not None and tables is not None
        router = Router(self.config.routes, self.config.router, tables=tables.tables)
        dispatcher = Dispatcher(router, codec=self.codec, topics=self.topics, tables=self.config.tables)
        service: RouterWorker | RouterService
        if self.config.router.engine == "faust":
            service = RouterService(dispatcher, kafka=kafka, bootstrap=self.bootstrap, topics=self.topics, tables=tables)
        else:
            group = f"{self.topics.prefix}-router"
            service = RouterWorker(
                dispatcher,
                kafka=kafka,
                bootstrap=self.bootstrap,
                group=group,
                producer=self._producer,
                tables=tables,
                lineage=await self._lineage(),
                tracing=self.tracing,
            )
        await service.start()
        if service.task is not None:  # either engine: its loop, or the faust engine's health
            self.supervisor.watch("router", self._restart_router)
            self.supervisor.adopt("router", service.task)
        return service

    async def _restart_router(self) -> None:
        if self.router is not None:
            await self.router.stop()
        self.router = await self._start_router()

    async def _restart_adapter(self, adapter: Adapter[Any]) -> None:
        """An adapter's background task died: stop it (releasing what it holds), start it again."""
        await adapter.stop()
        await adapter.start()

    def _build(self, config: Any, sink: KafkaSink | None = None) -> Adapter[Any]:
        cls = self._adapter_types.get(config.type, "inbound" if sink is not None else "outbound")
        if cls is None:  # the loader already refused unknown types; this guards programmatic use
            raise BusError(f"no adapter type {config.type!r}")
        logger = logging.getLogger(f"adapters.{config.type}.{config.name}")
        checkpoints = None
        if sink is not None and self._producer is not None:
            store = KafkaCheckpoints(self._producer, self.config.kafka, self.bootstrap, self.topics.checkpoints)
            source = cls.position_of(config) if issubclass(cls, Inbound) else None
            configured = frozenset(c.name for c in self.loaded.inbound)  # a position of a name gone from it may be a rename's
            checkpoints = SourceCheckpoints(store, source, logger, configured=configured)
        component = f"{'inbound' if sink is not None else 'outbound'}:{config.name}"
        ctx = Context(
            name=config.name,
            logger=logger,
            sink=sink,
            web=self.web,
            checkpoints=checkpoints,
            credentials=self.connections,
            tracing=self.tracing,
            spawn=functools.partial(self.supervisor.spawn, component),
        )
        adapter = cls(config, ctx)
        self.supervisor.watch(component, functools.partial(self._restart_adapter, adapter))
        return adapter

    async def _register_schemas(self) -> None:
        client = registry_client(self.config.schema_registry, ops_port=self.ops.port, own_token=self._own_token)
        try:
            await register_schemas(self._catalog, self.codec, client)
        finally:
            await client.close()
        # Values written with other versions (a producer that evolved) are learned on first sight.
        if self._lookup is None:
            self._lookup = registry_client(self.config.schema_registry, ops_port=self.ops.port, own_token=self._own_token)
            self.codec.fetch_writer = self._lookup.schema_by_id
        self._schemas_ready = True
        log.info(
            "schemas registered at %s: %s",
            self._lookup.base_url,
            ", ".join(f"{n}={self.codec.schema_id(n)}" for n in self._catalog.names()),
        )

    # -- state -------------------------------------------------------------------------------
    async def readiness(self) -> dict[str, bool]:
        """Named checks for /readyz; ready when every one holds. Adapters report their own health."""
        checks = {
            "kafka": self._producer is not None and bool(self._producer.client.cluster.brokers()),
            "schemas": self._schemas_ready,
        }
        if self._runs("outbound"):
            checks["outbound"] = len(self.workers) == len(self.loaded.outbound) and all(
                w.task is not None and not w.task.done() for w in self.workers
            )
            for outbound in self.outbound:
                name = outbound.config.name
                checks[f"outbound:{name}"] = f"outbound {name}" not in self.starting and (await outbound.health()).ok
        if self._runs("router"):
            checks["router"] = self.router is not None and (self.router.task is None or not self.router.task.done())
        if self._runs("inbound"):
            checks["inbound"] = self.web is not None and self.web.port != 0 and len(self.inbound) == len(self.loaded.inbound)
            for inbound in self.inbound:
                name = inbound.config.name
                paused = self.source_pauses.paused_by(name) is not None  # deliberately not read: the pod stays ready
                checks[f"inbound:{name}"] = paused or (f"inbound {name}" not in self.starting and (await inbound.health()).ok)
        for component, (ready, _) in self.supervisor.status().items():
            checks[component] = checks.get(component, True) and ready
        return checks

    def detail(self) -> dict[str, object]:
        """Shown in /readyz whether ready or not: components restarted, subscribers' delivery states."""
        found: dict[str, object] = {"kafka": {"bootstrap": self.bootstrap}}  # for `bus dlq --hub`, `bus reconcile --hub`
        if restarted := self.supervisor.detail():
            found["components"] = restarted
        if self.workers:
            found["subscribers"] = {w.name: w.status() for w in self.workers}
        if self.stranded:
            found["stranded"] = self.stranded  # bus.app.stranded: said at WARNING at start
        if self.connections is not None:
            found["connections"] = self.connections.status()
        done = {f"{a.direction}:{a.config.name}": p for a in (*self.inbound, *self.outbound) if (p := a.progress())}
        if done:
            found["adapters"] = done
        return found

    async def problems(self) -> dict[str, str]:
        """Why each adapter that is not ready is not: it has not started yet, or its own health."""
        found: dict[str, str] = {}
        for direction, adapters in (("inbound", self.inbound), ("outbound", self.outbound)):
            for adapter in adapters:
                what = f"{direction} {adapter.config.name}"
                if direction == "inbound" and self.source_pauses.paused_by(adapter.config.name) is not None:
                    continue
                if what in self.starting:
                    found[f"{direction}:{adapter.config.name}"] = f"not started: {self.starting[what]}"
                    continue
                health = await adapter.health()
                if not health.ok:
                    found[f"{direction}:{adapter.config.name}"] = health.detail or "not healthy"
        for component, (ready, why) in self.supervisor.status().items():
            if not ready:
                found[component] = why
        return found

    # -- stop --------------------------------------------------------------------------------
    async def stop(self) -> None:
        """Stop intake, drain, commit, release. Safe to call more than once, and after a failed start.

        Every step runs even if an earlier one failed (a component that died, a client that raises
        on close): the embedded broker in particular is always stopped. The first failure is
        logged with its traceback and the others after it still run."""
        await self.supervisor.close()  # what ends from here on is being stopped, not failing
        await self._loop_lag.stop()
        await self.source_pauses.close()
        if (looking := self._stranded_task) is not None:
            self._stranded_task = None
            # Let it end (milliseconds here; seconds on a large cluster): cut off while its Kafka client
            # was connecting, that client's first connection is left open (aiokafka closes it only on errors).
            await asyncio.wait({looking}, timeout=_STRANDED_LOOK_AT_STOP_S)
            looking.cancel()
            await asyncio.gather(looking, return_exceptions=True)
        await self._starts.cancel()
        # Inbound adapters stop side by side too: each may wait up to 10 s for a poll that has
        # handed records to Kafka to save its position, and in turn five such waits outlasted the
        # pod's grace period, which ended in a kill before the drain below.
        steps: list[tuple[str, Any]] = [("inbound adapters", _together([(f"inbound {a.config.name}", a.stop) for a in self.inbound]))]
        if self.web is not None:
            steps.append(("webhook server", self.web.stop))
        if self.router is not None:
            steps.append(("router", self.router.stop))
        if self._control is not None:
            steps.append(("control watcher", self._control.stop))
        # Delivery workers drain and commit side by side, then the adapters close side by side:
        # a stop takes the slowest subscriber's drain, not the sum of all of them (which could
        # outlast the grace period Kubernetes gives before it kills the pod).
        steps.append(("delivery workers", _together([(f"delivery worker {w.name}", w.stop) for w in self.workers])))
        steps.append(("outbound adapters", _together([(f"outbound {a.config.name}", a.stop) for a in self.outbound])))
        if self.connections is not None:
            steps.append(("connections", self.connections.close))
        if self._producer is not None:
            steps.append(("producer", self._producer.stop))
        if self._lookup is not None:
            self.codec.fetch_writer = None
            steps.append(("registry client", self._lookup.close))
        if self._registry is not None:
            steps.append(("embedded registry", self._registry.stop))
        steps += [("ops server", self.ops.stop), ("tracing", self.tracing.shutdown)]
        if self.broker is not None:
            steps.append(("embedded broker", self.broker.stop))
        await _in_turn(steps)
        self.web = self.router = self._producer = self._lookup = self._registry = self.broker = self._control = None
        self.inbound, self.outbound, self.workers = [], [], []
        self.tracing = NO_TRACING
        self._started = False

    async def __aenter__(self) -> Hub:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run_until_signalled(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop gracefully.

        A background loop that ends on its own is restarted by the supervisor (and reported in the
        log, ``bus_component_restarts_total`` and ``/readyz``), so the hub serves on in the meantime.
        """
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            tune_after_start()  # the process is the hub's alone: what start-up made stays for good
            await stop.wait()
            log.info("signal received: stopping intake, draining in-flight events")
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.stop()
        log.info("hub stopped cleanly")


async def _in_turn(steps: list[tuple[str, Callable[[], Awaitable[object]]]]) -> None:
    """The stop's steps one after another; each failure is logged with its traceback, and the
    steps after it still run."""
    for what, step in steps:
        try:
            await step()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the stop itself is being cancelled
            # A client's own (aiokafka's fetcher, cancelled in its back-off while Kafka is away): it
            # ended the stop there, and the embedded broker and the rest were never stopped.
            log.warning("stopping %s raised a CancelledError of its own; going on with the rest", what)
        except Exception:
            log.exception("stopping %s failed; going on with the rest", what)


def _together(steps: list[tuple[str, Callable[[], Awaitable[object]]]]) -> Callable[[], Awaitable[None]]:
    """One stop step that runs ``steps`` side by side; each failure is logged on its own with its
    traceback, and none keeps the others from finishing."""

    async def run() -> None:
        results = await asyncio.gather(*(step() for _, step in steps), return_exceptions=True)
        for (what, _), result in zip(steps, results, strict=True):
            if isinstance(result, Exception):
                log.error("stopping %s failed; going on with the rest", what, exc_info=result)
            elif isinstance(result, BaseException):
                raise result

    return run
