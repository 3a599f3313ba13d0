"""The delivery policy as a pure function: an attempt's outcome in, the next step out."""

from __future__ import annotations

import random

import pytest

from bus.config.delivery import DeliveryPolicy
from bus.errors import PermanentError, RetryableError
from bus.runtime.retry import RetryPolicy, event_age


def policy(**fields: object) -> RetryPolicy:
    return RetryPolicy(DeliveryPolicy.model_validate(fields), subscriber="erp", rng=random.Random(1))


def test_a_call_the_target_took_is_done() -> None:
    assert policy().next_step(1, 0.0).kind == "done"


def test_a_refusal_is_dead_lettered_at_once_with_its_reason() -> None:
    step = policy(max_attempts=10).next_step(1, 0.0, error=PermanentError("422 amount must be positive"))
    assert (step.kind, str(step.error)) == ("dead_letter", "422 amount must be positive")


def test_a_failure_is_retried_with_backoff_until_max_attempts() -> None:
    retry = policy(max_attempts=3, backoff_initial="1s", backoff_max="4s")
    first, second = retry.next_step(1, 0.0, error=RetryableError("503")), retry.next_step(2, 0.0, error=RetryableError("503"))
    assert (first.kind, second.kind) == ("retry", "retry")
    assert 0.5 <= first.delay <= 1.0 and 1.0 <= second.delay <= 2.0
    last = retry.next_step(3, 0.0, error=RetryableError("503"))
    assert (last.kind, str(last.error)) == ("dead_letter", "gave up after 3 attempt(s): 503")


def test_retry_after_is_honoured_up_to_the_backoff_ceiling() -> None:
    retry = policy(backoff_initial="100ms", backoff_max="10s")
    assert retry.next_step(1, 0.0, error=RetryableError("429", retry_after=7.0)).delay == 7.0
    assert retry.next_step(1, 0.0, error=RetryableError("429", retry_after=3600.0)).delay == 10.0


def test_the_default_gives_up_after_24_hours_of_age_not_of_attempts() -> None:
    retry = policy()
    assert retry.next_step(10_000, 86_399.0, error=RetryableError("down")).kind == "retry"
    step = retry.next_step(2, 86_400.0, error=RetryableError("down"))
    assert (step.kind, str(step.error)) == ("dead_letter", "gave up after older than 24h: down")


@pytest.mark.parametrize(("when_open", "kind"), [("wait", "wait"), ("dead_letter", "dead_letter")])
def test_an_open_circuit_waits_or_dead_letters_as_configured(when_open: str, kind: str) -> None:
    retry = policy(circuit_breaker={"when_open": when_open})
    step = retry.next_step(0, 0.0, blocked=12.5)
    assert step.kind == kind
    assert step.delay == 12.5 if kind == "wait" else str(step.error) == "circuit open for erp"


def test_event_age_reads_rfc3339_and_refuses_what_it_cannot_read() -> None:
    assert event_age("2026-12-03T10:00:00Z", now=1_796_292_060.0) == 60.0
    assert event_age("not a time", now=0.0) is None
    assert event_age("2026-12-03T10:00:00+00:00", now=0.0) == 0.0  # the future reads as no age, never negative


def test_a_time_another_producer_wrote_without_a_zone_is_utc_whatever_the_hubs_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ce_time` on a topic may come from any producer: one without a zone was read in the hub's
    local zone, so an event's age (and its max_age) moved with the pod's TZ."""
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert event_age("2026-12-03T10:00:00", now=1_796_292_060.0) == 60.0
        assert event_age("9999-12-31T23:59:59-01:00", now=0.0) is None  # no moment Python can hold
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
