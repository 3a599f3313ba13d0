"""Per-route metrics, collected at scrape time from the routes' plain counters.

Routes count in ordinary attributes (``RouteStats``) and this collector turns them into
Prometheus counters when /metrics is read: nothing on the per-event path takes a lock.
"""

from __future__ import annotations

__all__ = ["ROUTE_COLLECTOR", "removed_unread"]

import logging
import weakref
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bus.metrics import ROUTER_LOST
from routing.router import Router

log = logging.getLogger("routing.metrics")


def removed_unread(topic: str, partition: int, expected: int, first: int) -> None:
    """Either engine, when a partition's next event is at ``first`` though ``expected`` was due:
    the topic's retention removed events the router had not read (it was stopped, or behind, for
    longer). Said and counted (``bus_router_lost_total``); they cannot be routed."""
    log.warning(
        "router: %d event(s) at offsets %d to %d of %s/%d were removed by the topic's retention before they were routed: "
        "lost (the router was stopped or behind for longer than the retention)",
        first - expected, expected, first - 1, topic, partition,
    )  # fmt: skip
    ROUTER_LOST.labels(topic).inc(first - expected)


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
