"""What targets receive as JSON: RFC 3339 timestamps, decimals as text, whatever the adapter."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

from bus.jsontext import dumps


def test_timestamps_are_rfc_3339_in_utc_that_strict_parsers_accept() -> None:
    berlin = timezone(timedelta(hours=1))
    text = dumps(
        {"at": datetime(2026, 11, 1, 9, 0, 0, 123456, tzinfo=berlin), "naive": datetime(2026, 11, 1, 9, 0), "day": date(2026, 11, 1)}
    )
    assert json.loads(text) == {"at": "2026-11-01T08:00:00.123Z", "naive": "2026-11-01T09:00:00.000Z", "day": "2026-11-01"}
    # The shape Java's Instant.parse (ISO_INSTANT) takes: date T time, fraction, Z; no space, no offset.
    instant = json.loads(text)["at"]
    assert datetime.strptime(instant, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC) == datetime(2026, 11, 1, 8, 0, 0, 123000, tzinfo=UTC)


def test_money_durations_and_bytes_keep_their_value() -> None:
    text = dumps(
        {"amount": Decimal("12.30"), "ttl": timedelta(hours=1, minutes=30), "long": timedelta(days=2, seconds=5), "raw": b"\x00\xff"}
    )
    assert json.loads(text) == {"amount": "12.30", "ttl": "PT1H30M", "long": "P2DT5S", "raw": "AP8="}
    assert dumps({"zero": timedelta(0), "name": "Zoë"}) == '{"zero":"PT0S","name":"Zoë"}'
