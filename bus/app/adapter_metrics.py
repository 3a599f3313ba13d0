"""``bus_adapter_progress``: each adapter's own counts (``Adapter.progress()``), read when /metrics is.

An adapter reports what it has done and found in ``progress()`` (rows published, files written,
stray rows a poll cannot reach); the same numbers are shown in /readyz's detail and the management API.
This collector turns the numeric ones into a gauge, so nothing is done per event and an adapter
needs no metrics of its own.
"""

from __future__ import annotations

__all__ = ["PROGRESS", "AdapterProgress"]

import weakref
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bus.adapter_api import Adapter


class HasAdapters(Protocol):
    @property
    def inbound(self) -> Sequence[Adapter[Any]]: ...
    @property
    def outbound(self) -> Sequence[Adapter[Any]]: ...


class AdapterProgress(Collector):
    def __init__(self) -> None:
        self._hubs: weakref.WeakSet[Any] = weakref.WeakSet()

    def track(self, hub: HasAdapters) -> None:
        """Report the hub's adapters for as long as it lives."""
        self._hubs.add(hub)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "bus_adapter_progress",
            "An adapter's own counts, as in /readyz's detail (rows published, stray rows found, files written...).",
            labels=["direction", "adapter", "measure"],
        )
        seen: set[tuple[str, str, str]] = set()  # two hubs in one process (tests) must not give a sample twice
        for hub in list(self._hubs):
            for adapter in (*hub.inbound, *hub.outbound):
                for measure, value in adapter.progress().items():
                    labels = (adapter.direction, adapter.config.name, measure)
                    if isinstance(value, int) and not isinstance(value, bool) and labels not in seen:
                        seen.add(labels)
                        family.add_metric(list(labels), value)
        yield family


PROGRESS = AdapterProgress()
REGISTRY.register(PROGRESS)
