"""Content-based routing, as a pure function of an event: which subscribers receive it.

Compiled once at start-up from the ``routes:`` config; no faust or Kafka here, so ``bus test``
and unit tests can use it without a broker.
"""

from __future__ import annotations

__all__ = ["CompiledRoute", "Decision", "Router"]

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bus.config.models import RouteConfig
from bus.errors import ExpressionError
from bus.expr import Compiled, compile_expression


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    name: str
    schema: str
    condition: Compiled | None
    targets: tuple[str, ...]


@dataclass(slots=True)
class Decision:
    """The outcome for one event: subscribers to send to (each once), and routes that failed."""

    targets: list[tuple[str, str]] = field(default_factory=list)  # (route, subscriber)
    matched: list[str] = field(default_factory=list)
    failed: list[tuple[str, ExpressionError]] = field(default_factory=list)


class Router:
    def __init__(self, routes: list[RouteConfig]) -> None:
        self._by_schema: dict[str, list[CompiledRoute]] = {}
        for route in routes:
            compiled = CompiledRoute(
                route.name,
                route.from_,
                compile_expression(route.when) if route.when else None,
                tuple(route.to),
            )
            self._by_schema.setdefault(route.from_, []).append(compiled)

    @property
    def schemas(self) -> list[str]:
        """Schemas that at least one route reads: the canonical topics the router consumes."""
        return sorted(self._by_schema)

    def subscribers(self) -> list[str]:
        return sorted({t for routes in self._by_schema.values() for r in routes for t in r.targets})

    def decide(self, schema: str, data: Mapping[str, Any], meta: Mapping[str, Any]) -> Decision:
        """All-match routing: every route whose condition holds sends to its subscribers.

        A subscriber named by two matching routes receives the event once (the first route's).
        """
        decision = Decision()
        seen: set[str] = set()
        for route in self._by_schema.get(schema, ()):
            try:
                if route.condition is not None and not route.condition(data, meta):
                    continue
            except ExpressionError as exc:
                decision.failed.append((route.name, exc))
                continue
            decision.matched.append(route.name)
            for target in route.targets:
                if target not in seen:
                    seen.add(target)
                    decision.targets.append((route.name, target))
        return decision
