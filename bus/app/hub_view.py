"""What the management API (``ops.api``) reads of a running hub: its topology with each part's
live state, one subscriber in detail, and the checks of ``bus validate`` for a posted config.

Built from the hub's parts (``HubParts``), read at request time: nothing here runs per event.
"""

from __future__ import annotations

__all__ = ["HubParts", "HubView"]

import asyncio
import json
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from prometheus_client import REGISTRY

from bus.adapter_api import AdapterRegistry
from bus.apidocs import asyncapi_document, openapi_document
from bus.app import positions as saved_positions
from bus.app.backfill import Backfill, Backfiller
from bus.app.copy_jobs import CopyJobs
from bus.app.leased_inbound import LeasedInbound
from bus.app.source_pauses import PAUSE_INBOUND, SourcePauses
from bus.codec import Codec
from bus.config.loader import LoadedConfig, load_config
from bus.deadletters import DeadLetter, DeadLetters, Filter
from bus.errors import ConfigError, ConfigIssue
from bus.kafka.topics import TopicNames
from bus.ledger import Reconciler
from bus.lineage import DeliveryHop, IndexHits, RoutedHop, fetch_at, read_index
from bus.logs import REDACTOR
from bus.migrate.journal import RunInfo, state_folder
from bus.redelivery import Redeliverer, Redelivery
from bus.runtime.control import write_control
from bus.runtime.delivery import DeliveryWorker
from ops.api.models import (
    BackfillDone,
    BackfillRequest,
    ConfigIssueOut,
    DeadLetterAction,
    DeadLetterDone,
    DeadLetterPage,
    DeadLetterSummary,
    EventLineage,
    EventSearch,
    FailedBackfill,
    InboundNode,
    InboundPauseState,
    LedgerBalance,
    LineageAttempt,
    LineageCopy,
    LineageDelivery,
    LineageEntered,
    LineageWhere,
    MigrationRun,
    MigrationRuns,
    PauseState,
    PositionChanged,
    PositionState,
    ReconcileBalance,
    RedeliveryDone,
    RedeliveryRequest,
    RouteNode,
    SubscriberDetail,
    SubscriberNode,
    SupersededEvent,
    SupersededLetter,
    Topology,
    UnsendableLetter,
    ValidationReport,
)
from routing.tables import TableStore
from schemas.catalog import SchemaCatalog

_ACTION_CHUNK = 1000  # dead letters replayed or purged at a time


class HubParts(Protocol):
    """The attributes of ``bus.app.hub.Hub`` read here (read only: hence properties)."""

    @property
    def role(self) -> str: ...
    @property
    def loaded(self) -> LoadedConfig: ...
    @property
    def topics(self) -> TopicNames: ...
    @property
    def inbound(self) -> Sequence[Any]: ...
    @property
    def outbound(self) -> Sequence[Any]: ...
    @property
    def workers(self) -> Sequence[DeliveryWorker]: ...
    @property
    def router(self) -> Any: ...
    @property
    def starting(self) -> Mapping[str, str]: ...
    @property
    def producer(self) -> Any: ...
    @property
    def paused(self) -> Mapping[str, str]: ...
    @property
    def source_pauses(self) -> SourcePauses: ...
    @property
    def pause_notes(self) -> Mapping[str, tuple[str, str]]: ...
    @property
    def bootstrap(self) -> str: ...
    @property
    def codec(self) -> Codec: ...
    @property
    def router_tables(self) -> TableStore | None: ...
    @property
    def copy_jobs(self) -> CopyJobs: ...


class Rates:
    """Per-second rates of the topology's counters, between now and the newest earlier sample
    that is at least ``window_s`` old (or the oldest one): sampled when the topology is asked
    for, so nothing runs between calls. Null until there are two samples."""

    def __init__(self, window_s: float = 10.0) -> None:
        self._window_s = window_s
        self._samples: deque[tuple[float, dict[str, float]]] = deque()

    def __call__(self, counters: dict[str, float], now: float | None = None) -> dict[str, float]:
        now = time.monotonic() if now is None else now
        samples = self._samples
        while len(samples) > 1 and now - samples[1][0] >= self._window_s:
            samples.popleft()  # the next one is old enough to measure from
        rates: dict[str, float] = {}
        if samples and (seconds := now - samples[0][0]) > 0:
            then = samples[0][1]
            rates = {name: round(max(0.0, value - then[name]) / seconds, 3) for name, value in counters.items() if name in then}
        samples.append((now, counters))
        return rates


def _issue(issue: ConfigIssue) -> ConfigIssueOut:
    return ConfigIssueOut(file=issue.file, line=issue.line, field=issue.field, message=issue.message)


class HubView:
    def __init__(self, hub: HubParts, registry: AdapterRegistry, catalog: SchemaCatalog) -> None:
        self._hub = hub
        self._registry = registry
        self._catalog = catalog
        self._rates = Rates()

    def webhooks_openapi(self, server: str) -> dict[str, Any]:
        loaded = self._hub.loaded
        return openapi_document(loaded, loaded.files[0].parent if loaded.files else Path.cwd(), server or None)

    def asyncapi(self) -> dict[str, Any]:
        return asyncapi_document(self._hub.loaded, {s.name: json.loads(s.text) for s in self._catalog})

    def _runs(self, role: str) -> bool:
        return self._hub.role in ("all", role)

    async def _inbound(self) -> list[InboundNode]:
        hub = self._hub
        running = {a.config.name: a for a in hub.inbound}
        nodes = []
        for config in hub.loaded.inbound:
            emit = getattr(config, "emit", None)
            schema = getattr(emit, "schema_", None)
            adapter = running.get(config.name)
            state, detail = "running", ""
            paused_by = hub.source_pauses.paused_by(config.name) if adapter is not None else None
            reason, paused_at = hub.pause_notes.get(f"{PAUSE_INBOUND}{config.name}", ("", None)) if paused_by else ("", None)
            if paused_by is not None:
                why = f" ({reason})" if reason else ""
                state, detail = "paused", f"paused by {paused_by}{why}: its source is not read until resumed"
            elif f"inbound {config.name}" in hub.starting:
                state, detail = "starting", hub.starting[f"inbound {config.name}"]
            elif adapter is not None and not (health := await adapter.health()).ok:
                state, detail = "unhealthy", health.detail
            elif isinstance(adapter, LeasedInbound) and adapter.standing_by:
                state, detail = "standby", health.detail
            nodes.append(
                InboundNode(
                    name=config.name,
                    type=config.type,
                    state=state,
                    detail=detail,
                    paused_by=paused_by,
                    paused_reason=reason or None,
                    paused_at=paused_at,
                    schema=schema,
                    topic=hub.topics.canonical(schema) if schema else None,
                    progress=adapter.progress() if adapter is not None else {},
                    attention=adapter.attention() if adapter is not None else "",
                )
            )
        return nodes

    def _routes(self) -> list[RouteNode]:
        hub = self._hub
        stats = {r.name: r.stats for r in hub.router.router.routes} if hub.router is not None else {}
        nodes = []
        for route in hub.loaded.hub.routes:
            s = stats.get(route.name)
            nodes.append(
                RouteNode(
                    name=route.name,
                    **{"from": route.from_},
                    topic=hub.topics.canonical(route.from_),
                    to=list(route.to),
                    output_schema=route.output_schema,
                    matched=s.matched if s else 0,
                    emitted=s.emitted if s else 0,
                    dropped=s.dropped if s else 0,
                    failed=s.failed if s else 0,
                )
            )
        return nodes

    async def _subscriber(self, config: Any) -> SubscriberDetail:
        hub = self._hub
        name = config.name
        routes = [r.name for r in hub.loaded.hub.routes if name in r.to]
        base: dict[str, Any] = {"name": name, "type": config.type, "topic": hub.topics.delivery(name), "routes": routes}
        if not self._runs("outbound"):
            return SubscriberDetail(**base, state="not_running_here")
        worker = next((w for w in hub.workers if w.name == name), None)
        adapter = next((a for a in hub.outbound if a.config.name == name), None)
        progress = adapter.progress() if adapter is not None else {}
        if f"outbound {name}" in hub.starting:
            return SubscriberDetail(**base, state="starting", last_error=hub.starting[f"outbound {name}"], progress=progress)
        if worker is None:
            return SubscriberDetail(**base, state="unhealthy", last_error="its delivery worker is not running", progress=progress)
        status = worker.status()
        state = status["state"]
        reason, paused_at = hub.pause_notes.get(f"pause/{name}", ("", None)) if state == "paused" else ("", None)
        if adapter is not None and state == "healthy" and not (health := await adapter.health()).ok:
            state, status["last_error"] = "unhealthy", health.detail
        return SubscriberDetail(
            **base,
            state=state,
            since=status.get("since"),
            failing_events=status.get("failing_events", 0),
            held_keys=status.get("held_keys", 0),
            buffered=status.get("buffered", 0),
            last_error=status.get("last_error") or "",
            paused_by=status.get("paused_by"),
            paused_reason=reason or None,
            paused_at=paused_at,
            ledger=LedgerBalance(**worker.balance()),
            progress=progress,
        )

    async def topology(self) -> Topology:
        subscribers = [
            SubscriberNode(**s.model_dump(exclude={"progress", "copying"}))
            for c in self._hub.loaded.outbound
            for s in [await self._subscriber(c)]
        ]
        inbound, routes = await self._inbound(), self._routes()
        counters: dict[str, float] = {}
        for node in inbound:
            counters[f"in/{node.name}"] = (
                REGISTRY.get_sample_value("bus_inbound_events_total", {"adapter": node.name, "outcome": "accepted"}) or 0.0
            )
        for route in routes:
            counters[f"matched/{route.name}"], counters[f"emitted/{route.name}"] = route.matched, route.emitted
        for sub in subscribers:
            if sub.ledger is not None:
                counters[f"entered/{sub.name}"], counters[f"delivered/{sub.name}"] = sub.ledger.entered, sub.ledger.delivered
        rates = self._rates(counters)
        for node in inbound:
            node.rate = rates.get(f"in/{node.name}")
        for route in routes:
            route.rate_in, route.rate_out = rates.get(f"matched/{route.name}"), rates.get(f"emitted/{route.name}")
        for sub in subscribers:
            sub.rate_in, sub.rate_out = rates.get(f"entered/{sub.name}"), rates.get(f"delivered/{sub.name}")
        return Topology(role=self._hub.role, inbound=inbound, routes=routes, subscribers=subscribers)

    async def set_paused(self, name: str, paused: bool, by: str, reason: str = "") -> PauseState | None:
        """Ask every replica to pause (or resume) subscriber ``name``: a control record, obeyed
        within a fetch by each process that delivers to it (``bus.runtime.control``)."""
        if not any(c.name == name for c in self._hub.loaded.outbound):
            return None
        await self._ask(f"pause/{name}", {"paused": paused, "by": by, "reason": reason})
        return PauseState(subscriber=name, paused=paused, by=by, reason=reason)

    async def set_inbound_paused(self, name: str, paused: bool, by: str, reason: str = "") -> InboundPauseState | None:
        """Ask every process of the inbound role to pause (or resume) inbound adapter ``name``
        (bus.app.source_pauses)."""
        if not any(c.name == name for c in self._hub.loaded.inbound):
            return None
        await self._ask(f"{PAUSE_INBOUND}{name}", {"paused": paused, "by": by, "reason": reason})
        return InboundPauseState(inbound=name, paused=paused, by=by, reason=reason)

    async def positions(self) -> list[PositionState]:
        """Where each polling source reads from, as `bus positions list` says (bus.app.positions)."""
        return [
            PositionState.model_validate(row.as_json())
            for row in await saved_positions.view(self._hub.loaded, self._registry, self._hub.bootstrap)
        ]

    async def change_position(self, name: str, action: Literal["reset", "adopt"], *, force: bool = False) -> PositionChanged | None:
        """Forget (``reset``) or keep (``adopt``) inbound ``name``'s position, as `bus positions`
        does: refused (positions.Refused) unless it is paused, and, where this process reads it,
        until this process has stopped reading it. None: no such inbound."""
        if not any(c.name == name for c in self._hub.loaded.inbound):
            return None
        here = self._runs("inbound") and any(a.config.name == name for a in self._hub.inbound)
        if here and self._hub.source_pauses.paused_by(name) is None:
            raise saved_positions.Refused(
                f"inbound {name} is being read by this process: pause it first (POST /inbound/{name}/pause) and wait "
                "until the topology shows it paused"
            )
        loaded, bootstrap = self._hub.loaded, self._hub.bootstrap
        if action == "reset":
            before = await saved_positions.reset(loaded, self._registry, bootstrap, name)
        else:
            before = await saved_positions.adopt(loaded, self._registry, bootstrap, name, force=force)
        changed, said = saved_positions.outcome(action, before)
        return PositionChanged(
            inbound=name, action=action, changed=changed, said=said, before=PositionState.model_validate(before.as_json())
        )

    async def _ask(self, key: str, value: dict[str, Any]) -> None:
        """Record what an operator asked on the control topic (every process obeys it)."""
        producer = self._hub.producer
        if producer is None:
            raise RuntimeError("the hub has no producer yet: try again once it is ready")
        await write_control(producer, self._hub.topics.control, key, value)

    async def subscriber(self, name: str) -> SubscriberDetail | None:
        config = next((c for c in self._hub.loaded.outbound if c.name == name), None)
        if config is None:
            return None
        detail = await self._subscriber(config)
        detail.copying = self._hub.copy_jobs.under_way(name)
        return detail

    def _dead_letter_names(self) -> list[str]:
        loaded = self._hub.loaded
        return [*(c.name for c in loaded.outbound), "_router", *(f"_in.{c.name}" for c in loaded.inbound)]

    async def dead_letters(self, where: DeadLetterAction, *, offset: int, limit: int) -> DeadLetterPage:
        """Dead letters matching ``where`` (open ones, or all with ``where.all``), a page of them,
        oldest first, with how many match in all and per subscriber. The topics are read as they
        stream, keeping at most twice ``offset + limit`` letters (without their messages): they
        can hold every event of a target that was down for a day."""
        wanted, total = offset + limit, 0
        counts: dict[str, int] = {}
        kept: list[tuple[tuple[str, str, int, int], DeadLetter]] = []
        async for batch in self._scan(where, include_handled=where.all):
            total += len(batch)
            for letter in batch:
                counts[letter.subscriber] = counts.get(letter.subscriber, 0) + 1
                letter.value = None  # a summary does not show it
                kept.append((_oldest_first(letter), letter))
            if len(kept) > 2 * wanted:
                kept.sort(key=lambda pair: pair[0])
                del kept[wanted:]
        kept.sort(key=lambda pair: pair[0])  # oldest first, in an order that does not change between calls: pages do not overlap
        page = [DeadLetterSummary(**letter.summary()) for _, letter in kept[offset:wanted]]
        return DeadLetterPage(total=total, offset=offset, limit=limit, items=page, counts=counts)

    async def dead_letter_action(self, action: Literal["replay", "purge"], where: DeadLetterAction) -> DeadLetterDone:
        """Replay or purge what ``where`` selects, as `bus dlq replay|purge` does."""
        if not (where.subscriber or where.ids or where.since or where.until or where.error_class or where.all):
            raise ValueError(f"say which dead letters to {action} (subscriber, ids, since, until, error_class), or all: true")
        if action == "replay" and ((where.subscriber or "").startswith("_in.")):
            raise ValueError("inbound dead letters hold the source's raw message: fix it at the source and send it again")
        store, matched, done, chunk = self._store(), 0, 0, []

        async def handle(letters: list[DeadLetter]) -> int:
            if action == "purge":
                return await store.purge(letters)
            return await store.replay(letters, include_superseded=where.include_superseded)

        # As the topics stream, a chunk at a time: a replay of a day's dead letters does not hold them all.
        async for batch in self._scan(where, include_handled=False):
            letters = [x for x in batch if action == "purge" or not x.subscriber.startswith("_in.")]
            matched += len(letters)
            if where.dry_run:
                continue
            chunk += letters
            if len(chunk) >= _ACTION_CHUNK:
                done += await handle(chunk)
                chunk = []
        if chunk:
            done += await handle(chunk)
        superseded = [
            SupersededLetter(event_id=letter.event_id, position=f"{letter.partition}/{letter.offset}", after=newer)
            for letter, newer in store.superseded[:100]
        ]
        unsendable = [
            UnsendableLetter(event_id=letter.event_id, position=f"{letter.partition}/{letter.offset}", reason=why)
            for letter, why in store.unsendable[:100]
        ]
        return DeadLetterDone(
            action=action, matched=matched, done=done, dry_run=where.dry_run, superseded=superseded, unsendable=unsendable
        )

    async def redeliver(self, name: str, asked: RedeliveryRequest) -> RedeliveryDone | None:
        """Send subscriber ``name`` again what it was delivered in the window ``asked`` gives, as
        `bus redeliver` does (bus.redelivery). None: no such subscriber."""
        if not any(c.name == name for c in self._hub.loaded.outbound):
            return None
        since = datetime.fromisoformat(asked.since)
        until = datetime.fromisoformat(asked.until) if asked.until else None
        kafka = self._hub.loaded.hub.kafka
        async with self._job(name, "redelivery", dry=asked.dry_run) as progress:
            redeliverer = Redeliverer(kafka, self._hub.bootstrap, TopicNames(kafka.topic_prefix), progress=progress)
            done = await redeliverer.redeliver(
                name, since, until, dry_run=asked.dry_run, include_superseded=asked.include_superseded, keys=asked.keys
            )
        return redelivery_out(done, paused=name in self._hub.paused)

    async def backfill(self, name: str, asked: BackfillRequest) -> BackfillDone | None:
        """Give subscriber ``name`` the events its routes give it from the canonical topics' records
        of the window ``asked`` gives, as `bus backfill` does (bus.app.backfill). None: no such subscriber."""
        if not any(c.name == name for c in self._hub.loaded.outbound):
            return None
        since = datetime.fromisoformat(asked.since)
        until = datetime.fromisoformat(asked.until) if asked.until else None
        hub = self._hub.loaded.hub
        kafka, live = hub.kafka, self._hub.router_tables
        # The lookup tables as the router sees them now: this process's own when it routes, else read once.
        store = live or TableStore(hub.tables, kafka=kafka, bootstrap=self._hub.bootstrap, topics=TopicNames(kafka.topic_prefix))
        try:
            async with self._job(name, "backfill", dry=asked.dry_run) as progress:
                if live is None:
                    await store.start()
                backfiller = Backfiller(
                    kafka, self._hub.bootstrap, TopicNames(kafka.topic_prefix), routes=hub.routes, router=hub.router,
                    codec=self._hub.codec, tables=store.tables, table_configs=hub.tables, progress=progress,
                )  # fmt: skip
                done = await backfiller.backfill(
                    name, since, until, dry_run=asked.dry_run, include_superseded=asked.include_superseded, keys=asked.keys
                )
        finally:
            if live is None:
                await store.stop()
        return backfill_out(done, paused=name in self._hub.paused)

    def _job(self, subscriber: str, what: str, *, dry: bool) -> AbstractAsyncContextManager[Callable[[str], None]]:
        """A redelivery's or backfill's progress callback, holding the subscriber while it writes."""
        return nullcontext(self._hub.copy_jobs.looking(subscriber, what)) if dry else self._hub.copy_jobs.writing(subscriber, what)

    def _store(self) -> DeadLetters:
        kafka = self._hub.loaded.hub.kafka
        return DeadLetters(kafka, self._hub.bootstrap, TopicNames(kafka.topic_prefix))

    async def _find(self, where: DeadLetterAction, *, include_handled: bool) -> list[Any]:
        """Every letter ``where`` selects, in memory: for selections by id (an event's letters)."""
        found = [letter async for batch in self._scan(where, include_handled=include_handled) for letter in batch]
        # Oldest first, in an order that does not change between calls.
        return sorted(found, key=_oldest_first)

    def _scan(self, where: DeadLetterAction, *, include_handled: bool) -> AsyncIterator[list[DeadLetter]]:
        names = self._dead_letter_names()
        if where.subscriber is not None and where.subscriber not in names:
            raise LookupError(f"no dead letters are kept for {where.subscriber!r} (known: {', '.join(names)})")
        rule = Filter(
            since=datetime.fromisoformat(where.since) if where.since else None,
            until=datetime.fromisoformat(where.until) if where.until else None,
            error_class=where.error_class,
            ids=set(where.ids),
            include_handled=include_handled,
        )
        return self._store().scan([where.subscriber] if where.subscriber else names, rule)

    async def reconcile(self, subscriber: str | None, window_s: int) -> list[ReconcileBalance]:
        names = [c.name for c in self._hub.loaded.outbound]
        if subscriber is not None and subscriber not in names:
            raise LookupError(f"no subscriber named {subscriber!r} (subscribers: {', '.join(names) or 'none'})")
        kafka = self._hub.loaded.hub.kafka
        reconciler = Reconciler(kafka, self._hub.bootstrap, TopicNames(kafka.topic_prefix))
        found = []
        for name in [subscriber] if subscriber else names:
            balance = await reconciler.balance(name, window_s=window_s)
            found.append(ReconcileBalance(**balance.as_json()))
        return found

    def validate(self, text: str) -> ValidationReport:
        """``bus validate`` on ``text``: its schemas are the hub's own; ``${VAR}`` reads the hub's
        environment (values never appear in the report)."""
        with tempfile.TemporaryDirectory(prefix="bus-validate-") as folder:
            path = Path(folder) / "bus.yaml"
            path.write_text(text)
            try:
                loaded = load_config(path, self._registry, known_schemas=lambda _: self._catalog.parsed())
            except ConfigError as exc:
                return ValidationReport(valid=False, errors=[_issue(i) for i in exc.issues], warnings=[])
        return ValidationReport(valid=True, errors=[], warnings=[_issue(i) for i in loaded.warnings])

    def running_config(self) -> dict[str, Any]:
        """The config this hub runs, secrets masked (``SecretStr`` fields, and every value read
        from the environment or a file)."""
        loaded = self._hub.loaded
        found: dict[str, Any] = loaded.hub.model_dump(mode="json", by_alias=True)
        found["inbound"] = [c.model_dump(mode="json", by_alias=True) for c in loaded.inbound]
        found["outbound"] = [c.model_dump(mode="json", by_alias=True) for c in loaded.outbound]
        masked: dict[str, Any] = REDACTOR.redact_tree(found)
        return masked

    # -- migrations (bus.migrate) -----------------------------------------------------------------
    def _migration_state(self) -> Path:
        files = self._hub.loaded.files
        return state_folder(files[0] if files else Path.cwd())

    def _journal_runs(self) -> tuple[Path, list[RunInfo]]:
        from bus.migrate.journal import Journal

        folder = self._migration_state()
        if not (folder / "journal.sqlite").exists():
            return folder, []
        journal = Journal(folder)
        try:
            return folder, journal.runs()
        finally:
            journal.close()

    async def migrations(self) -> MigrationRuns:
        folder, runs = await asyncio.to_thread(self._journal_runs)
        return MigrationRuns(
            state_folder=str(folder),
            runs=[
                MigrationRun(
                    id=r.id,
                    migration=r.migration,
                    status=r.status,
                    started=datetime.fromtimestamp(r.started, UTC).isoformat(timespec="seconds"),
                    finished=None if r.finished is None else datetime.fromtimestamp(r.finished, UTC).isoformat(timespec="seconds"),
                    ran_by=r.user,
                    rows_read=r.position,
                    counts=r.counts,
                    report=f"/api/v1/migrations/{r.id}/report" if r.reports.get("html") else None,
                )
                for r in runs
            ],
        )

    async def migration_report(self, run_id: str) -> str | None:
        _, runs = await asyncio.to_thread(self._journal_runs)
        run = next((r for r in runs if r.id == run_id), None)  # only a run the journal names: never a path from the request
        if run is None or not run.reports.get("html"):
            return None
        try:
            return await asyncio.to_thread(Path(run.reports["html"]).read_text, encoding="utf-8")
        except OSError:
            return None

    # -- lineage (bus.lineage) ---------------------------------------------------------------------
    async def _index(self, values: list[str]) -> dict[str, IndexHits] | None:
        kafka = self._hub.loaded.hub.kafka
        if not self._hub.loaded.hub.lineage.enabled:
            return None
        return await read_index(kafka, self._hub.bootstrap, self._hub.topics.lineage, values)

    async def search_events(self, value: str) -> EventSearch:
        """Event ids by ``value``: the id itself when the index or a dead-letter topic knows it,
        then the events whose key or subject it is."""
        found = await self._index([value])
        hits = (found or {}).get(value, IndexHits())
        ids = [value] if hits.hops or await self._find(DeadLetterAction(ids=[value], all=True), include_handled=True) else []
        ids += [i for i in hits.aliases if i != value]
        return EventSearch(value=value, ids=ids, lineage_enabled=found is not None)

    async def event(self, event_id: str) -> EventLineage | None:
        """Where one event went: its index entries (and its split elements'), the records they
        point at, and its dead letters."""
        found = await self._index([event_id]) or {}
        hops = found.get(event_id, IndexHits()).hops
        routed = [h for h in hops if isinstance(h, RoutedHop)]
        elements = sorted({f"{event_id}/{e}" for h in routed for e in h.elements})[:50]
        if elements:  # a split event's elements are settled under ids of their own
            more = await self._index(elements) or {}
            hops = hops + [h for e in elements for h in more.get(e, IndexHits()).hops]
        deliveries = sorted((h for h in hops if isinstance(h, DeliveryHop)), key=lambda h: h.at)
        letters = await self._find(DeadLetterAction(ids=[event_id, *elements], all=True), include_handled=True)
        if not hops and not letters:
            return None
        records = await fetch_at(
            self._hub.loaded.hub.kafka, self._hub.bootstrap, [*(h.position for h in routed[-1:]), *(d.position for d in deliveries)]
        )
        entered = None
        if routed:
            canonical = records.get(routed[-1].position)
            header = {k: v.decode(errors="replace") for k, v in (canonical.headers or ()) if v is not None} if canonical else {}
            entered = LineageEntered(
                at=routed[0].at,
                source=header.get("ce_source", ""),
                type=header.get("ce_type", ""),
                time=header.get("ce_time", ""),
                key=canonical.key.decode(errors="replace") if canonical is not None and canonical.key is not None else None,
                subject=header.get("ce_subject"),
                position=routed[0].position,
                data=await self._decode(canonical),
            )
        copies = self._copies(routed[-1]) if routed else []
        return EventLineage(
            id=event_id,
            entered=entered,
            routed=copies,
            deliveries=[
                LineageDelivery(
                    event_id=d.event_id,
                    subscriber=d.subscriber,
                    at=d.at,
                    outcome="delivered" if d.outcome == "delivered" else "dead_lettered",
                    attempts=d.attempts,
                    failures=[LineageAttempt(at=at, answer=answer) for at, answer in d.failures],
                    position=d.position,
                    replayed_from=d.replayed_from,
                    data=await self._decode(records.get(d.position)),
                )
                for d in deliveries
            ],
            dead_letters=[DeadLetterSummary(**letter.summary()) for letter in letters],
            now=self._where_now(copies, deliveries, letters),
        )

    def _copies(self, hop: RoutedHop) -> list[LineageCopy]:
        subscriber_of = {self._hub.topics.delivery(c.name): c.name for c in self._hub.loaded.outbound}
        subscriber_of[self._hub.topics.router_dead_letter] = "_router"
        return [LineageCopy(route=route, to=subscriber_of.get(topic, topic), element=suffix) for route, topic, suffix in hop.copies]

    @staticmethod
    def _where_now(copies: list[LineageCopy], deliveries: list[DeliveryHop], letters: list[Any]) -> list[LineageWhere]:
        """Per subscriber: the last settlement, unless a dead letter was replayed or purged since."""
        where: dict[str, LineageWhere] = {}
        for letter in letters:
            if letter.subscriber == "_router" or letter.subscriber.startswith("_in."):
                detail = f"{letter.header('bus_error_class')}: {letter.header('bus_error')}"
                where[letter.subscriber] = LineageWhere(subscriber=letter.subscriber, state="refused", detail=detail)
        for copy in copies:
            if copy.to != "_router":
                where.setdefault(copy.to, LineageWhere(subscriber=copy.to, state="in_flight", detail="routed; not settled yet"))
        for hop in deliveries:  # oldest first: the last one stands
            state: Literal["delivered", "dead_lettered"] = "delivered" if hop.outcome == "delivered" else "dead_lettered"
            detail = f"after {hop.attempts} attempt(s)" + (f": {hop.failures[-1][1]}" if hop.failures and state != "delivered" else "")
            where[hop.subscriber] = LineageWhere(subscriber=hop.subscriber, state=state, detail=detail)
        for letter in letters:
            now = where.get(letter.subscriber)
            if now is not None and now.state == "dead_lettered" and letter.status in ("replayed", "purged"):
                detail = "sent back to be delivered again; not settled yet" if letter.status == "replayed" else "purged by an operator"
                where[letter.subscriber] = LineageWhere(subscriber=letter.subscriber, state=letter.status, detail=detail)
        return list(where.values())

    async def _decode(self, record: Any) -> dict[str, object] | None:
        """A record's event as data, secrets masked; None when it is gone or cannot be read."""
        if record is None or record.value is None:
            return None
        codec = self._hub.codec
        try:
            if not codec.knows_value(record.value):
                await codec.learn_ids((record.value,))
            _schema, data = codec.decode(record.value)
        except Exception:  # noqa: BLE001 (shown as unknown: the lineage is still worth answering)
            return None
        redacted: dict[str, object] = REDACTOR.redact_tree(data)
        return redacted


def _oldest_first(letter: DeadLetter) -> tuple[str, str, int, int]:
    """Dead letters oldest first, in an order that does not change between calls (pages do not overlap)."""
    return (letter.failed_at or "", letter.subscriber, letter.partition, letter.offset)


def backfill_out(done: Backfill, *, paused: bool = False) -> BackfillDone:
    """A backfill's outcome as the management API and `bus backfill --json` give it."""
    return BackfillDone(
        subscriber=done.subscriber,
        since=done.since.isoformat(),
        until=done.until.isoformat() if done.until else None,
        keys=done.keys,
        dry_run=done.dry_run,
        routes=done.routes,
        left_out_routes=done.left_out_routes,
        read=done.read,
        not_routed=done.not_routed,
        matched=done.matched,
        to_send=done.to_send,
        sent=done.sent,
        already_delivered=done.already_delivered,
        superseded=done.superseded,
        superseded_events=[SupersededEvent(event_id=s.event_id, position=s.position, after=s.after) for s in done.superseded_samples],
        failed=done.failed,
        failed_events=[
            FailedBackfill(event_id=f.event_id, position=f.position, route=f.route, reason=f.reason) for f in done.failed_samples
        ],
        kept_in_order=done.kept_in_order,
        oldest_kept=done.oldest_kept.isoformat() if done.oldest_kept else None,
        paused=paused,
    )


def redelivery_out(done: Redelivery, *, paused: bool = False) -> RedeliveryDone:
    """A redelivery's outcome as the management API and `bus redeliver --json` give it."""
    return RedeliveryDone(
        subscriber=done.subscriber,
        since=done.since.isoformat(),
        until=done.until.isoformat() if done.until else None,
        keys=done.keys,
        dry_run=done.dry_run,
        matched=done.matched,
        to_send=done.to_send,
        sent=done.sent,
        dead_lettered=done.dead_lettered,
        superseded=done.superseded,
        superseded_events=[SupersededEvent(event_id=s.event_id, position=s.position, after=s.after) for s in done.superseded_samples],
        earlier_copies=done.earlier_copies,
        kept_in_order=done.kept_in_order,
        not_settled=done.not_settled,
        oldest_kept=done.oldest_kept.isoformat() if done.oldest_kept else None,
        paused=paused,
    )
