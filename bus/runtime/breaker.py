"""A circuit breaker per subscriber: closed -> open after N consecutive failures -> half-open after
``reset_after`` (one probe call at a time) -> closed on success, open again on failure.

An open circuit costs the target nothing: no calls are made, and the events wait in Kafka (or go
to the dead-letter topic, if configured). Other subscribers are unaffected: each has its own
worker, consumer group and breaker.
"""

from __future__ import annotations

__all__ = ["CircuitBreaker", "State"]

import time
from collections.abc import Callable
from enum import IntEnum


class State(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(self, failures: int, reset_after: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._threshold = failures
        self._reset_after = reset_after
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.state = State.CLOSED
        self.opened = 0  # times the circuit opened, for metrics and tests

    def wait_time(self) -> float:
        """0 if a call may go now (and, half-open, it becomes the probe); else seconds to wait."""
        if self.state == State.CLOSED:
            return 0.0
        if self.state == State.OPEN:
            remaining = self._opened_at + self._reset_after - self._clock()
            if remaining > 0:
                return remaining
            self.state = State.HALF_OPEN
        if self._probing:
            return min(1.0, self._reset_after)  # one probe at a time; the others look again shortly
        self._probing = True
        return 0.0

    def success(self) -> None:
        self._failures = 0
        self._probing = False
        self.state = State.CLOSED

    def failure(self) -> None:
        self._probing = False
        self._failures += 1
        if self.state == State.HALF_OPEN or self._failures >= self._threshold:
            if self.state != State.OPEN:
                self.opened += 1
            self.state = State.OPEN
            self._opened_at = self._clock()
