"""The topology's rates (bus.app.hub_view.Rates): per second between now and the newest sample at
least the window old, null on the first call, never negative when a counter restarts, and memory
bounded however often the topology is asked for."""

from __future__ import annotations

from bus.app.hub_view import Rates


def test_the_first_call_has_no_rate_and_later_ones_measure_over_the_window() -> None:
    rates = Rates(window_s=10)
    assert rates({"a": 0}, now=100.0) == {}
    assert rates({"a": 20}, now=102.0) == {"a": 10.0}  # younger than the window: from the oldest sample
    assert rates({"a": 40}, now=104.0) == {"a": 10.0}
    assert rates({"a": 240}, now=112.0) == {"a": 22.0}  # (240 - 20) / 10: from 102, the newest sample at least 10 s old


def test_a_counter_that_went_back_reads_zero_and_a_new_one_no_rate() -> None:
    rates = Rates(window_s=10)
    rates({"a": 50}, now=0.0)
    assert rates({"a": 10, "b": 5}, now=5.0) == {"a": 0.0}  # a restarted process: not a negative rate; b is new


def test_samples_are_bounded_by_the_window_whatever_the_calls() -> None:
    rates = Rates(window_s=10)
    for i in range(10_000):
        rates({"a": i}, now=i * 0.1)
    assert len(rates._samples) <= 102
    assert rates({"a": 10_000}, now=1000.0) == {"a": 10.0}  # one per 0.1 s
