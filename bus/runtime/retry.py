"""What to do next with a delivery attempt's outcome: done, retry after a delay, wait for the
circuit, or dead-letter with the reason. Pure: no I/O, no clock (the caller passes the age).

The default policy (``delivery:`` without ``max_attempts`` or ``max_age``) retries an event for up
to 24 hours after it entered the hub, with exponential backoff (200 ms doubling to 30 s, with
jitter, and never sooner than the target's Retry-After), then dead-letters it with the last
error. Only that event's key waits meanwhile; every other key flows. While the circuit is open
nothing is called and nothing ages out: the events wait in Kafka, and the first attempts after
the circuit closes again judge their age (see docs/delivery.md).
"""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_AGE", "RetryPolicy", "Step", "event_age", "seconds"]

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from bus.config.delivery import DeliveryPolicy
from bus.config.fields import format_duration
from bus.errors import BusError, PermanentError, RetryableError
from bus.moments import moment_of

DEFAULT_MAX_AGE = "24h"


def seconds(delta: timedelta | None, default: float) -> float:
    """A duration field in seconds, or ``default`` when it is not set."""
    return delta.total_seconds() if delta is not None else default


def event_age(event_time: str, now: float) -> float | None:
    """Seconds from an event's own time (ce_time) to ``now`` (epoch); None for a time we cannot read."""
    moment = moment_of(event_time)
    return None if moment is None else max(0.0, now - moment.timestamp())


@dataclass(frozen=True, slots=True)
class Step:
    """What the delivery worker does next with an event."""

    kind: Literal["done", "retry", "wait", "dead_letter"]
    delay: float = 0.0  # retry, wait: seconds first
    error: BusError | None = None  # dead_letter: the reason kept with it


DONE = Step("done")


class RetryPolicy:
    def __init__(self, policy: DeliveryPolicy, *, subscriber: str = "", rng: random.Random | None = None) -> None:
        self.subscriber = subscriber
        breaker = policy.circuit_breaker
        self.dead_letter_when_open = breaker is not None and breaker.when_open == "dead_letter"
        self.max_attempts = policy.max_attempts
        self.max_age_text = format_duration(policy.max_age) if policy.max_age is not None else DEFAULT_MAX_AGE
        self.max_age = seconds(policy.max_age, 86400.0)
        self.backoff_initial = seconds(policy.backoff_initial, 0.2)
        self.backoff_max = seconds(policy.backoff_max, 30.0)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security

    def give_up(self, attempts: int, age_s: float) -> str | None:
        """Why to stop retrying after ``attempts`` failed attempts of an event ``age_s`` old; None: retry."""
        if self.max_attempts is not None and attempts >= self.max_attempts:
            return f"{attempts} attempt(s)"
        if age_s >= self.max_age:
            return f"older than {self.max_age_text}"
        return None

    def delay(self, attempts: int, error: RetryableError) -> float:
        """Seconds to wait before the next attempt: exponential with jitter, at least the target's Retry-After."""
        backoff = min(self.backoff_max, self.backoff_initial * 2 ** min(attempts - 1, 30))
        return max(self._rng.uniform(backoff / 2, backoff), min(error.retry_after or 0.0, self.backoff_max))

    def next_step(self, attempts: int, age_s: float, *, error: BusError | None = None, blocked: float = 0.0) -> Step:
        """After attempt number ``attempts`` of an event ``age_s`` old: ``error`` what it raised
        (None: the target took it), ``blocked`` how long the open circuit says to wait (no call
        was made)."""
        if blocked > 0:
            if self.dead_letter_when_open:
                return Step("dead_letter", error=RetryableError(f"circuit open for {self.subscriber}"))
            return Step("wait", blocked)
        if error is None:
            return DONE
        if isinstance(error, PermanentError):
            return Step("dead_letter", error=error)
        why = self.give_up(attempts, age_s)
        if why is not None:
            return Step("dead_letter", error=RetryableError(f"gave up after {why}: {error}"))
        return Step("retry", self.delay(attempts, error if isinstance(error, RetryableError) else RetryableError(str(error))))
