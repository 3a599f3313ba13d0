"""A circuit breaker per subscriber: closed -> open when the failed share of recent calls reaches
``failure_ratio`` -> half-open after ``reset_after`` (one probe call at a time) -> closed on
success, open again on failure. Judging a share rather than a run of failures keeps a flaky
target (30% errors) in use while a dead one (100%) is left alone.

An open circuit costs the target nothing: no calls are made, and the events wait in Kafka (or go
to the dead-letter topic, if configured). Other subscribers are unaffected: each has its own
worker, consumer group and breaker.
"""

from __future__ import annotations

__all__ = ["CircuitBreaker", "State"]

import time
from collections import deque
from collections.abc import Callable
from enum import IntEnum


class State(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(
        self,
        reset_after: float,
        *,
        failure_ratio: float = 0.5,
        window: int = 20,
        min_calls: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ratio = failure_ratio
        self._min_calls = min(min_calls, window)
        self._recent: deque[bool] = deque(maxlen=window)  # True = failed
        self._reset_after = reset_after
        self._clock = clock
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

    def wait_time_peek(self) -> float:
        """Seconds until a call may go, without claiming the half-open probe (0: a call may go)."""
        if self.state == State.OPEN:
            return max(0.0, self._opened_at + self._reset_after - self._clock())
        return 0.0

    def cut(self) -> None:
        """A call cut before its answer: if it was the half-open probe, the next call may be one."""
        self._probing = False

    def success(self) -> None:
        if self.state != State.CLOSED:
            self._recent.clear()  # a fresh start after the target came back
        self._recent.append(False)
        self._probing = False
        self.state = State.CLOSED

    def failure(self) -> None:
        self._probing = False
        self._recent.append(True)
        failed = sum(self._recent)
        tripped = len(self._recent) >= self._min_calls and failed >= self._ratio * len(self._recent)
        if self.state == State.HALF_OPEN or tripped:
            if self.state != State.OPEN:
                self.opened += 1
            self.state = State.OPEN
            self._opened_at = self._clock()
