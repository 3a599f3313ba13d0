"""What to do after a failed delivery attempt: wait and retry, or give up (dead-letter). Pure.

The default policy (``delivery:`` without ``max_attempts`` or ``max_age``) retries an event for up
to 24 hours after it entered the hub, with exponential backoff (200 ms doubling to 30 s, with
jitter, and never sooner than the target's Retry-After), then dead-letters it with the last
error. Only that event's key waits meanwhile; every other key flows. While the circuit is open
nothing is called and nothing ages out: the events wait in Kafka, and the first attempts after
the circuit closes again judge their age (see docs/delivery.md).
"""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_AGE", "RetryPolicy", "seconds"]

import random
from datetime import timedelta

from bus.config.delivery import DeliveryPolicy
from bus.config.fields import format_duration
from bus.errors import RetryableError

DEFAULT_MAX_AGE = "24h"


def seconds(delta: timedelta | None, default: float) -> float:
    """A duration field in seconds, or ``default`` when it is not set."""
    return delta.total_seconds() if delta is not None else default


class RetryPolicy:
    def __init__(self, policy: DeliveryPolicy, *, rng: random.Random | None = None) -> None:
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
