"""What a server's Retry-After or rate-limit reset asks a poller to wait (adapters.polling.wait_seconds):
seconds, an epoch time or an HTTP date; what no clock can use is no answer (the poller's own
backoff), and a time already past is no wait."""

from __future__ import annotations

import time

import pytest

from adapters.polling import wait_seconds

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("header", "wait"),
    [
        ("120", 120.0),
        (" 2.5 ", 2.5),
        (str(int(NOW) + 30), 30.0),  # X-RateLimit-Reset as an epoch time
        (str(int(NOW) - 30), 0.0),  # a reset already past: no wait, not a negative one
        ("-5", 0.0),
        ("Fri, 15 Jan 2027 08:00:30 GMT", 30.0),  # NOW is 2027-01-15T08:00:00Z
        ("Fri, 15 Jan 2027 07:00:00 GMT", 0.0),
        ("", None),
        ("soon", None),
        ("nan", None),  # waited not at all (asyncio takes a NaN timeout as none): a retry at once, again and again
        ("inf", None),
        ("1e999", None),
    ],
)
def test_a_wait_a_server_asks_for_is_a_finite_number_of_seconds_or_none(header: str, wait: float | None) -> None:
    assert wait_seconds(header, NOW) == wait


def test_a_targets_retry_after_is_read_the_same_way_seconds_or_an_http_date() -> None:
    """An HTTP target's 429/503 Retry-After (adapters.http.outbound): an HTTP date, which RFC 9110
    allows beside seconds, was ignored for the runtime's backoff; "inf" asked for a wait of forever."""
    from email.utils import formatdate

    from multidict import CIMultiDict, CIMultiDictProxy

    from adapters.http.outbound import Answer, _retry_after

    def asked(value: str) -> float | None:
        return _retry_after(Answer(503, "", CIMultiDictProxy(CIMultiDict({"Retry-After": value}))))

    in_a_minute = asked(formatdate(time.time() + 60, usegmt=True))
    assert in_a_minute is not None and 55 <= in_a_minute <= 61, in_a_minute
    assert asked("7") == 7.0
    assert asked("inf") is None and asked("nan") is None and asked("later") is None
