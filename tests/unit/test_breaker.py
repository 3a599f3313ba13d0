from __future__ import annotations

from bus.runtime.breaker import CircuitBreaker, State


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_on_the_failed_share_of_recent_calls_and_probes_after_reset() -> None:
    clock = Clock()
    breaker = CircuitBreaker(10.0, failure_ratio=0.5, window=4, min_calls=4, clock=clock)
    for _ in range(3):
        breaker.failure()
    assert breaker.state == State.CLOSED  # too few calls to judge
    breaker.success()  # 3 of 4 failed: 75% >= 50%, but this call succeeded, so no change now
    assert breaker.state == State.CLOSED
    breaker.failure()  # last 4: F, F, S, F -> 75% failed
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


def test_a_flaky_target_keeps_its_circuit_closed() -> None:
    breaker = CircuitBreaker(10.0, failure_ratio=0.5, window=20, min_calls=10)
    for i in range(1000):  # 30% failures, some in long runs
        breaker.failure() if i % 10 in (0, 1, 2) else breaker.success()
    assert breaker.opened == 0


def test_a_dead_target_opens_it() -> None:
    breaker = CircuitBreaker(10.0, failure_ratio=0.5, window=20, min_calls=10)
    for _ in range(10):
        breaker.failure()
    assert breaker.state == State.OPEN


def test_a_probe_cut_before_its_answer_lets_the_next_call_probe() -> None:
    """A stop cuts calls still under way (delivery.drain_at_stop). Were one the half-open probe,
    the breaker waited for its answer for good: no call went again, the subscriber stalled."""
    clock = Clock()
    breaker = CircuitBreaker(10.0, failure_ratio=0.5, window=2, min_calls=2, clock=clock)
    breaker.failure()
    breaker.failure()
    clock.now = 10.0
    assert breaker.wait_time() == 0 and breaker.state == State.HALF_OPEN  # the probe goes
    assert breaker.wait_time() == 1.0  # the others wait for its answer
    breaker.cut()  # no answer will come
    assert breaker.wait_time() == 0 and breaker.state == State.HALF_OPEN  # the next call is the probe
