"""The ``delivery:`` block every outbound adapter accepts: how the runtime retries, paces and
protects a subscriber. Adapter authors never write retry loops (docs/architecture.md)."""

from __future__ import annotations

__all__ = ["STOP_AFTER_DRAIN_S", "STOP_WAITS_BEFORE_DRAIN_S", "CircuitBreakerConfig", "DeliveryPolicy", "RateLimitConfig"]

from typing import Literal

from pydantic import Field

from bus.config.base import ConfigModel
from bus.config.fields import Duration, duration
from bus.runtime.ending import FINISH_HOLDING_S, WEBHOOK_DRAIN_S


class RateLimitConfig(ConfigModel):
    """At most ``rate`` calls per second to the target, bursts up to ``burst``. Events wait in Kafka."""

    rate: float = Field(gt=0, description="Calls per second.", examples=[10])
    burst: int = Field(default=1, ge=1, description="Calls allowed at once after a quiet spell.", examples=[20])


class CircuitBreakerConfig(ConfigModel):
    """Stop calling a target that keeps failing; probe it again after ``reset_after``.

    The circuit opens when at least ``failure_ratio`` of the last ``window`` calls failed (and at
    least ``min_calls`` were made), so a flaky target keeps being called and a dead one does not.
    """

    failure_ratio: float = Field(default=0.5, gt=0, le=1, description="Share of failed calls that opens the circuit.")
    window: int = Field(
        default=100,
        ge=1,
        description="How many recent calls the share is taken over. A short window opens on bad luck: a target failing "
        "30% of calls reaches half of 20 calls often enough to open again and again.",
    )
    min_calls: int = Field(default=50, ge=1, description="Calls needed in the window before the circuit can open.")
    reset_after: Duration = Field(default=duration("15s"), description="How long the circuit stays open before one probe call (half-open).")
    when_open: Literal["wait", "dead_letter"] = Field(
        default="wait", description="While open: events wait in Kafka (default), or go to the dead-letter topic at once."
    )


# A stop's waits around the delivery drain (docs/architecture.md), for the config check that the
# whole stop fits the pod's grace period: the inbound adapters' and the webhook server's before it;
# committing, leaving the groups and the producer's flush after.
STOP_WAITS_BEFORE_DRAIN_S = FINISH_HOLDING_S + WEBHOOK_DRAIN_S
STOP_AFTER_DRAIN_S = 5.0


class DeliveryPolicy(ConfigModel):
    """Retries with exponential backoff and jitter (honouring Retry-After), limits, and protection."""

    concurrency: int = Field(
        default=8, ge=1, le=1024, description="Events delivered at once; events of one key are always delivered in order."
    )
    max_attempts: int | None = Field(default=None, ge=1, description="Attempts before dead-lettering; none: retry until max_age.")
    max_age: Duration | None = Field(
        default=None,
        description="Dead-letter an event still failing this long after it entered the hub; none: 24h. Only the failing "
        "event's key waits meanwhile. Time spent with the circuit open does not dead-letter anything by itself.",
        examples=["24h", "15m"],
    )
    max_buffered: int = Field(
        default=1000,
        ge=1,
        description="Events held in memory behind a failing event of their key (or waiting for a call slot). When reached, "
        "fetching pauses until some settle; the rest waits in Kafka.",
    )
    backoff_initial: Duration = Field(default=duration("200ms"), description="First retry delay; doubles each attempt, with jitter.")
    backoff_max: Duration = Field(default=duration("30s"), description="Longest retry delay.")
    rate_limit: RateLimitConfig | None = Field(default=None, description="Pace calls to the target.")
    drain_at_stop: Duration = Field(
        default=duration("20s"),
        description="How long a stop (or a worker's restart) waits for calls to the target still under way. Calls "
        "past it are cut: their events are not settled and are delivered again, with the same idempotency key, by the "
        "next owner. Keep it, with the other stops' waits, inside the pod's grace period (the chart's "
        "terminationGracePeriodSeconds, 45 s): a target that answers slowly (a long timeout_s, or an answer sent a "
        "byte at a time) held the stop until Kubernetes killed the pod.",
        examples=["20s", "5s"],
    )
    circuit_breaker: CircuitBreakerConfig | None = Field(
        default_factory=CircuitBreakerConfig, description="Open the circuit on repeated failures (set null to disable)."
    )
