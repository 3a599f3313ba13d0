"""A subscriber's delivery state, as an operator needs it: healthy, retrying, or circuit open.

Derived from what the delivery worker sees (events failing now, the breaker), logged at WARNING
once per change of state (never per event), exported as ``bus_subscriber_state{subscriber,state}``
(1 for the current state) and shown in ``/readyz``'s detail. A failing target does not make the
hub unready (the hub itself is fine and the events wait in Kafka); it makes it *visible*.
"""

from __future__ import annotations

__all__ = ["STATES", "SubscriberState"]

import logging
import time
from typing import Any

from bus.metrics import SUBSCRIBER_STATE

log = logging.getLogger("bus.runtime.delivery")
STATES = ("healthy", "retrying", "circuit_open", "paused")


class SubscriberState:
    def __init__(self, subscriber: str) -> None:
        self.subscriber = subscriber
        self.state = "healthy"
        self.since = time.time()
        self.last_error = ""
        self._failing: set[tuple[int, int]] = set()  # (partition, offset) of events whose last attempt failed
        self._circuit_open = False
        self.paused_by = ""  # who paused it (a token's name), while paused
        self._gauges = {state: SUBSCRIBER_STATE.labels(subscriber, state) for state in STATES}
        self._gauges["healthy"].set(1)

    def failed(self, where: tuple[int, int], error: str) -> None:
        self._failing.add(where)
        self.last_error = error
        self._update()

    def settled(self, where: tuple[int, int]) -> None:
        if where in self._failing:
            self._failing.discard(where)
            self._update()

    def forget(self, partition: int) -> None:
        """Partition handed over: its failing events are another worker's now."""
        self._failing = {w for w in self._failing if w[0] != partition}
        self._update()

    def circuit(self, is_open: bool) -> None:
        if is_open != self._circuit_open:
            self._circuit_open = is_open
            self._update()

    def pause(self, by: str | None) -> None:
        """Paused by an operator (``by``: who), or resumed (None)."""
        if (by or "") != self.paused_by:
            self.paused_by = by or ""
            self._update()

    def _update(self) -> None:
        state = "paused" if self.paused_by else "circuit_open" if self._circuit_open else "retrying" if self._failing else "healthy"
        if state == self.state:
            return
        before, self.state, self.since = self.state, state, time.time()
        for name, gauge in self._gauges.items():
            gauge.set(1 if name == state else 0)
        if state == "healthy":
            log.warning("subscriber %s: healthy again (was %s)", self.subscriber, before)
        elif state == "paused":
            log.warning("subscriber %s: paused by %s (was %s); its events wait in Kafka", self.subscriber, self.paused_by, before)
        else:
            log.warning(
                "subscriber %s: %s (was %s); %d event(s) failing; last error: %s",
                self.subscriber,
                state.replace("_", " "),
                before,
                len(self._failing),
                self.last_error,
            )

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since)),
            "failing_events": len(self._failing),
            "last_error": self.last_error,
            **({"paused_by": self.paused_by} if self.paused_by else {}),
        }
