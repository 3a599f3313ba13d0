"""The canonical event's stamps: ce_time and a fresh traceparent, made once per event."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from bus.event import Event, _second_text, new_traceparent, now_rfc3339

RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_now_is_rfc3339_utc_with_milliseconds_and_agrees_with_the_clock() -> None:
    before = datetime.now(UTC)
    stamp = now_rfc3339()
    after = datetime.now(UTC)
    assert RFC3339_MS.match(stamp), stamp
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    # Truncated to the millisecond, as datetime.isoformat(timespec="milliseconds") does.
    assert before - timedelta(milliseconds=1) < when <= after


@given(st.integers(min_value=0, max_value=4_102_444_799))  # 1970 .. 2099
def test_the_cached_second_is_the_same_text_datetime_gives(second: int) -> None:
    expected = datetime.fromtimestamp(second, UTC).isoformat().replace("+00:00", "")
    assert _second_text(second) == expected


def test_traceparent_is_w3c_version_00_sampled_and_fresh_each_time() -> None:
    seen = {new_traceparent() for _ in range(100)}
    assert len(seen) == 100
    for value in seen:
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", value), value


def test_an_event_without_stamps_gets_them() -> None:
    event = Event(schema="Payment", data={}, source="/test")
    assert RFC3339_MS.match(event.time)
    assert event.traceparent.startswith("00-")
    assert dict(event.headers())["ce_time"] == event.time.encode()
