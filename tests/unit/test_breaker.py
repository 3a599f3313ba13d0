from __future__ import annotations

from bus.runtime.breaker import CircuitBreaker, State


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_and_probes_after_reset() -> None:
    clock = Clock()
    breaker = CircuitBreaker(3, 10.0, clock=clock)
    for _ in range(2):
        assert breaker.wait_time() == 0
        breaker.failure()
    breaker.success()  # a success resets the count
    for _ in range(3):
        breaker.failure()
    assert breaker.state == State.OPEN and breaker.opened == 1
    assert breaker.wait_time() == 10.0
    clock.now = 9.5
    assert breaker.wait_time() == 0.5
    clock.now = 10.0
    assert breaker.wait_time() == 0  # this caller is the probe
    assert breaker.state == State.HALF_OPEN
    assert breaker.wait_time() == 1.0  # everyone else waits while the probe is out
    breaker.failure()  # the probe failed: open again, for another full reset period
    assert breaker.state == State.OPEN and breaker.opened == 2
    clock.now = 20.0
    assert breaker.wait_time() == 0
    breaker.success()
    assert breaker.state == State.CLOSED and breaker.wait_time() == 0
