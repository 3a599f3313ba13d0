"""Content-based routing as plain functions of an event: no faust, no Kafka here.

Compiled once at start-up from ``routes:``; ``bus test``, ``bus routes explain`` and the unit
tests use it without a broker, and the faust app (``routing.app``) calls the same code.

A route's pipeline, in order: ``when`` (filter) -> ``dedup`` (idempotent receiver) ->
``enrich`` (lookups) -> ``split`` (one event per element) -> ``transform`` -> ``to`` (recipient
list). ``throttle`` is applied by the app, which owns time. In ``router.mode: first`` only the
first route whose condition holds (in file order) handles an event; in ``all`` (the default)
every such route does.
"""

from __future__ import annotations

__all__ = ["CompiledRoute", "Decision", "Emitted", "RouteOutcome", "RouteStats", "Router", "Tables"]

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bus.config.routes import RouteConfig, RouterConfig
from bus.errors import ExpressionError, PermanentError
from bus.expr import Conditions, compile_conditions, compile_expression
from bus.ttl import TtlMap
from routing.transform import Transform

Tables = Mapping[str, Mapping[str, Any]]


@dataclass(slots=True)
class Emitted:
    """One event a route sends to each of its subscribers."""

    schema: str
    data: dict[str, Any] | None  # None: the incoming event, unchanged (its bytes are forwarded)
    key: str | None = None  # None: keep the incoming key
    id_suffix: str | None = None  # split elements get "<incoming id>/<index>", stable across redelivery


@dataclass(slots=True)
class RouteStats:
    """Plain counters, read by the Prometheus collector at scrape time (no locks on the hot path)."""

    matched: int = 0
    emitted: int = 0
    dropped: int = 0
    failed: int = 0
    seconds: float = 0.0
    keys: int | None = None  # an aggregate route's keys held in this process


Status = Literal["emitted", "dropped", "failed", "aggregated"]


@dataclass(slots=True)
class RouteOutcome:
    route: CompiledRoute
    status: Status
    outputs: list[Emitted] = field(default_factory=list)
    reason: str = ""
    error: PermanentError | None = None
    # "aggregated": what the route's aggregator folds in, as (scope, meta) pairs: the event, or
    # each element of its split (all of one event's elements are folded as one step).
    folds: list[tuple[dict[str, Any], Mapping[str, Any]]] | None = None


@dataclass(slots=True)
class Decision:
    outcomes: list[RouteOutcome] = field(default_factory=list)

    @property
    def matched(self) -> list[str]:
        """Routes that took the event (emitted or deliberately dropped it)."""
        return [o.route.name for o in self.outcomes if o.status != "failed"]

    @property
    def failed(self) -> list[tuple[str, PermanentError]]:
        return [(o.route.name, o.error) for o in self.outcomes if o.error is not None]

    def deliveries(self) -> list[tuple[RouteOutcome, Emitted, tuple[str, ...]]]:
        """Each emitted event with the subscribers that receive it, in route order.

        An unchanged event reaches a subscriber once, however many routes chose it; transformed
        events are each route's own and always go to all of that route's subscribers.
        """
        out: list[tuple[RouteOutcome, Emitted, tuple[str, ...]]] = []
        unchanged_to: set[str] = set()
        for outcome in self.outcomes:
            if outcome.status != "emitted":
                continue
            for emitted in outcome.outputs:
                targets = outcome.route.targets
                if emitted.data is None:
                    targets = tuple(t for t in targets if t not in unchanged_to)
                    unchanged_to.update(targets)
                if targets:
                    out.append((outcome, emitted, targets))
        return out

    @property
    def targets(self) -> list[tuple[str, str]]:
        """(route, subscriber) pairs that receive something, in order."""
        return [(o.route.name, t) for o, _, targets in self.deliveries() for t in targets]


class CompiledRoute:
    def __init__(self, config: RouteConfig, tables: Tables) -> None:
        self.config = config
        self.name = config.name
        self.schema = config.from_
        self.targets = tuple(config.to)
        self.stats = RouteStats()
        self._tables = tables
        self._when = compile_expression(config.when) if config.when else None
        self._dedup_by = compile_expression(config.dedup.by) if config.dedup else None
        ttl = config.dedup.ttl if config.dedup else None
        self._seen: TtlMap[None] | None = TtlMap(ttl.total_seconds()) if ttl is not None else None
        self._enrich = [(e, compile_expression(e.key)) for e in config.enrich]
        self._split = compile_expression(config.split.items) if config.split else None
        self._split_as = config.split.as_ if config.split else ""
        self._transform = Transform(config.transform, default_schema=config.from_) if config.transform else None
        # The fast path: a plain filter forwards the incoming bytes without re-encoding.
        self.forwards_unchanged = not (self._enrich or self._split or self._transform)
        # A plain filter's outcome is always the same: made once (outcomes are never changed).
        self._unchanged = RouteOutcome(self, "emitted", [Emitted(self.schema, None)]) if self.forwards_unchanged else None

    def matched(self, data: Mapping[str, Any], meta: Mapping[str, Any]) -> RouteOutcome:
        """What the route does with an event whose condition held (tested by the caller)."""
        self.stats.matched += 1
        try:
            outcome = self._after_match(data, meta)
        except ExpressionError as exc:
            outcome = RouteOutcome(self, "failed", reason=str(exc), error=exc)
        return self._counted(outcome)

    def condition_failed(self, exc: Exception) -> RouteOutcome:
        """The condition raised: the event fails this route (dead letter with the reason)."""
        if isinstance(exc, ExpressionError):
            error = exc
        else:  # raised inside the generated conditions: name the expression, as Compiled does
            assert self._when is not None
            error = self._when.failure(exc)
        return self._counted(RouteOutcome(self, "failed", reason=str(error), error=error))

    def _counted(self, outcome: RouteOutcome) -> RouteOutcome:
        stats = self.stats
        if outcome.status == "emitted":
            stats.emitted += len(outcome.outputs)
        elif outcome.status == "dropped":
            stats.dropped += 1
        elif outcome.status == "failed":
            stats.failed += 1
        return outcome

    def _after_match(self, data: Mapping[str, Any], meta: Mapping[str, Any]) -> RouteOutcome:
        if self._dedup_by is not None and self._seen is not None:
            identity = self._dedup_by(data, meta)
            if not self._seen.add(str(identity)):
                return RouteOutcome(self, "dropped", reason=f"duplicate of {identity} (dedup)")
        if self._unchanged is not None:
            return self._unchanged
        scope: dict[str, Any] = dict(data)
        dropped = self._enrich_into(scope, meta)
        if dropped is not None:
            return dropped
        if self._split is None:
            if self.config.aggregate is not None:
                return RouteOutcome(self, "aggregated", folds=[(scope, meta)])
            return RouteOutcome(self, "emitted", [self._emit(scope, meta, None)])
        items = self._split(scope, meta)
        if items is None:
            items = []
        if not isinstance(items, list):
            raise ExpressionError(
                f"split: {self.config.split.items if self.config.split else ''!r} gave {type(items).__name__}, not a list"
            )
        # $index: the element's position (from 0), for the transform and its key (line numbers, "2 of 5").
        elements: list[tuple[dict[str, Any], Mapping[str, Any]]] = [
            ({**scope, self._split_as: item}, {**meta, "index": i}) for i, item in enumerate(items)
        ]
        if self.config.aggregate is not None and elements:
            return RouteOutcome(self, "aggregated", folds=elements)
        outputs = [self._emit(element, element_meta, str(i)) for i, (element, element_meta) in enumerate(elements)]
        if not outputs:
            return RouteOutcome(self, "dropped", reason="split produced no elements")
        return RouteOutcome(self, "emitted", outputs)

    def _enrich_into(self, scope: dict[str, Any], meta: Mapping[str, Any]) -> RouteOutcome | None:
        """Add looked-up rows to ``scope``; an outcome only when a missing row drops or fails the event."""
        for spec, key_expr in self._enrich:
            key = key_expr(scope, meta)
            row = self._tables.get(spec.table, {}).get(str(key)) if key is not None else None
            if row is None:
                if spec.on_missing == "drop":
                    return RouteOutcome(self, "dropped", reason=f"no row for {key!r} in table {spec.table}")
                if spec.on_missing == "fail":
                    error = PermanentError(f"route {self.name}: no row for {key!r} in table {spec.table}")
                    return RouteOutcome(self, "failed", reason=str(error), error=error)
            scope[spec.into] = row
        return None

    def emit_aggregate(self, record: dict[str, Any], meta: Mapping[str, Any]) -> Emitted:
        """Shape an aggregator's result with the route's transform (required with aggregate)."""
        return self._emit(record, meta, None)

    def _emit(self, scope: dict[str, Any], meta: Mapping[str, Any], id_suffix: str | None) -> Emitted:
        if self._transform is None:
            return Emitted(self.schema, scope, None, id_suffix)
        return Emitted(self._transform.schema, self._transform.apply(scope, meta), self._transform.key(scope, meta), id_suffix)


class Router:
    def __init__(self, routes: list[RouteConfig], config: RouterConfig | None = None, tables: Tables | None = None) -> None:
        self.mode = (config or RouterConfig()).mode
        self.tables: Tables = tables if tables is not None else {}
        self.routes = [CompiledRoute(route, self.tables) for route in routes]
        self._by_schema: dict[str, list[CompiledRoute]] = {}
        self._decisions = 0
        for route in self.routes:
            self._by_schema.setdefault(route.schema, []).append(route)
        # Each schema's conditions as one generated function (bus.expr.compiler): most routes do
        # not match most events, and that test is then the whole cost of the route.
        first_only = self.mode == "first"
        self._conditions: dict[str, Conditions] = {
            schema: compile_conditions([r.config.when for r in compiled], first_only=first_only)
            for schema, compiled in self._by_schema.items()
        }

    @property
    def schemas(self) -> list[str]:
        """Schemas that at least one route reads: the canonical topics the router consumes."""
        return sorted(self._by_schema)

    def subscribers(self) -> list[str]:
        return sorted({t for route in self.routes for t in route.targets})

    def decide(self, schema: str, data: Mapping[str, Any], meta: Mapping[str, Any]) -> Decision:
        decision = Decision()
        conditions = self._conditions.get(schema)
        if conditions is None:
            return decision
        if type(data) is not dict:
            data = dict(data)  # the generated conditions read fields with dict.get
        routes = self._by_schema[schema]
        # Route timings are sampled, one decision in 16 (scaled up): two clock reads per route and
        # event would cost more than most conditions do. The conditions' time is shared equally.
        timed = not self._decisions & 15
        self._decisions += 1
        started = time.perf_counter() if timed else 0.0
        held_list = conditions(data, meta)  # a dict, made so above
        if timed:
            share = (time.perf_counter() - started) * 16 / len(routes)
            for route in routes:
                route.stats.seconds += share
        for held in held_list:
            if isinstance(held, int):
                route = routes[held]
                if timed:
                    started = time.perf_counter()
                    decision.outcomes.append(route.matched(data, meta))
                    route.stats.seconds += (time.perf_counter() - started) * 16
                else:
                    decision.outcomes.append(route.matched(data, meta))
            else:
                index, exc = held
                decision.outcomes.append(routes[index].condition_failed(exc))
        return decision
