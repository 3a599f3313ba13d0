"""What stands between a delivery worker and its target: an operator's pause, call slots
(``delivery.concurrency``), the rate limit and the circuit breaker, each with its metrics and
the subscriber's state."""

from __future__ import annotations

__all__ = ["TargetGate"]

import asyncio

from bus.config.delivery import DeliveryPolicy
from bus.metrics import CIRCUIT_OPENED, CIRCUIT_STATE, RATE_LIMIT_WAIT
from bus.ratelimit import TokenBucket
from bus.runtime.breaker import CircuitBreaker, State
from bus.runtime.retry import seconds
from bus.runtime.subscriber_state import SubscriberState


class TargetGate:
    def __init__(self, name: str, policy: DeliveryPolicy, health: SubscriberState) -> None:
        self.slots = asyncio.Semaphore(policy.concurrency)
        rate = policy.rate_limit
        self.bucket = TokenBucket(rate.rate, rate.burst) if rate else None
        config = policy.circuit_breaker
        self.breaker = (
            CircuitBreaker(
                seconds(config.reset_after, 30.0), failure_ratio=config.failure_ratio, window=config.window, min_calls=config.min_calls
            )
            if config
            else None
        )
        self._health = health
        self.flowing = asyncio.Event()  # cleared while an operator has the subscriber paused
        self.flowing.set()
        self._circuit_state = CIRCUIT_STATE.labels(name)
        self._shown = State.CLOSED  # the state the gauge and the subscriber's state last showed
        self._circuit_state.set(State.CLOSED)  # a new breaker starts closed, whatever one before it showed
        self._circuit_opened = CIRCUIT_OPENED.labels(name)
        self._rate_wait = RATE_LIMIT_WAIT.labels(name)

    async def until_flowing(self, closing: asyncio.Event) -> bool:
        """While paused: wait until resumed (True) or until ``closing`` is set (False)."""
        resumed, closed = asyncio.ensure_future(self.flowing.wait()), asyncio.ensure_future(closing.wait())
        done, pending = await asyncio.wait((resumed, closed), return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return resumed in done

    def rate_delay(self) -> float:
        """Seconds to wait before the next call for the rate limit (a token is taken)."""
        if self.bucket is None:
            return 0.0
        delay = self.bucket.delay_for()
        if delay > 0:
            self._rate_wait.inc(delay)
        return delay

    def open(self) -> bool:
        """True while the circuit is open (asks without taking a probe)."""
        return self.breaker is not None and self.breaker.wait_time_peek() > 0

    def blocked(self) -> float:
        """Right before a call: how long the circuit says to wait instead (0: call now)."""
        if self.breaker is None:
            return 0.0
        wait: float = self.breaker.wait_time()
        self._moved()
        return wait

    def failed(self) -> None:
        if self.breaker is not None:
            opened = self.breaker.opened
            self.breaker.failure()
            if self.breaker.opened > opened:
                self._circuit_opened.inc()
            self._moved()

    def cut(self) -> None:
        """A call cut before the target answered (a stop): it says nothing of the target."""
        if self.breaker is not None:
            self.breaker.cut()

    def answered(self) -> None:
        """The target answered (took the event or refused it): it is up."""
        if self.breaker is not None:
            self.breaker.success()
            self._moved()

    def _moved(self) -> None:
        """After anything that can change the breaker's state: the gauge and the subscriber's state follow it."""
        assert self.breaker is not None
        state = self.breaker.state
        if state is self._shown:  # twice per call: only a change is worth the gauge's lock
            return
        self._shown = state
        self._circuit_state.set(state)
        self._health.circuit(state != State.CLOSED)
