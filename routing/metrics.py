"""Per-route metrics, collected at scrape time from the routes' plain counters.

Routes count in ordinary attributes (``RouteStats``) and this collector turns them into
Prometheus counters when /metrics is read: nothing on the per-event path takes a lock.
"""

from __future__ import annotations

__all__ = ["ROUTE_COLLECTOR"]

import weakref
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from routing.router import Router


class RouteCollector(Collector):
    def __init__(self) -> None:
        self._routers: weakref.WeakSet[Router] = weakref.WeakSet()

    def watch(self, router: Router) -> None:
        self._routers.add(router)

    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "bus_routed_events",
            "Router outcomes per route: matched (condition held), emitted (events sent per subscriber list), "
            "dropped (dedup, enrich, empty split), failed (dead-lettered).",
            labels=["route", "outcome"],
        )
        seconds = CounterMetricFamily("bus_route_evaluation_seconds", "Time spent evaluating each route.", labels=["route"])
        keys = GaugeMetricFamily(
            "bus_aggregate_keys",
            "Keys an aggregate route holds state for in this process (at its aggregate.max_keys, events of new keys are dead letters).",
            labels=["route"],
        )
        for router in list(self._routers):
            for route in router.routes:
                s = route.stats
                for outcome, value in (("matched", s.matched), ("emitted", s.emitted), ("dropped", s.dropped), ("failed", s.failed)):
                    events.add_metric([route.name, outcome], value)
                seconds.add_metric([route.name], s.seconds)
                if s.keys is not None:
                    keys.add_metric([route.name], s.keys)
        yield events
        yield seconds
        yield keys


ROUTE_COLLECTOR = RouteCollector()
REGISTRY.register(ROUTE_COLLECTOR)
