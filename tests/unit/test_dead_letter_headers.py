"""What every dead letter says about why it failed, and what it keeps of a record too large for
Kafka: a letter that Kafka refused would be written again for ever, holding up what is behind it."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from bus.deadletters import KEPT_OF_TOO_LARGE, MAX_REASON_CHARS, DeadLetter, Filter, cut_to_fit, why_headers
from bus.kafka.clients import MAX_EVENT_BYTES


def test_a_reason_quoting_a_whole_value_is_cut_and_says_how_much() -> None:
    value = "v" * MAX_EVENT_BYTES  # a mapping error quoting the field it could not convert
    whole = f"cannot convert {value!r} to a number"
    headers = dict(why_headers(whole, "PermanentError", subscriber="erp"))
    reason = headers["bus_error"].decode()
    assert reason == f"{whole[:MAX_REASON_CHARS]}... ({len(whole) - MAX_REASON_CHARS:,} more characters cut)"
    assert len(reason) < MAX_REASON_CHARS + 64
    assert headers["bus_subscriber"] == b"erp"
    short = dict(why_headers("answered 422", "PermanentError"))
    assert short["bus_error"] == b"answered 422"  # an ordinary reason is kept whole


def test_a_reason_holding_text_that_is_not_utf8_is_kept_escaped() -> None:
    headers = dict(why_headers("customer_id holds \ud800", "EventRejected", origin="t/0/\udc80"))
    assert headers["bus_error"] == b"customer_id holds \\ud800" and headers["bus_origin"] == b"t/0/\\udc80"


def test_a_record_too_large_is_cut_part_by_part_to_what_kafka_takes() -> None:
    value, key = b"v" * (2 * MAX_EVENT_BYTES), b"k" * (KEPT_OF_TOO_LARGE + 1)
    headers = [("ce_id", b"e1"), ("notes", b"n" * MAX_EVENT_BYTES)]
    cut_key, cut_value, cut_headers = cut_to_fit(key, value, headers)
    marks = dict(cut_headers)
    assert cut_value == value[:KEPT_OF_TOO_LARGE] and marks["bus_truncated_from_bytes"] == str(len(value)).encode()
    assert marks["bus_payload_sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert cut_key == key[:KEPT_OF_TOO_LARGE] and marks["bus_key_truncated_from_bytes"] == str(len(key)).encode()
    assert marks["bus_headers_dropped"] == b"2" and "ce_id" not in marks
    assert DefaultRecordBatchBuilder.estimate_size_in_bytes(cut_key, cut_value, cut_headers) < MAX_EVENT_BYTES
    assert DeadLetter("erp", "t", 0, 0, cut_key, cut_value, cut_headers).cut  # never replayed

    # Parts that fit are kept as they were: only the value was too large here.
    small = [("ce_id", b"e1")]
    same_key, _, kept = cut_to_fit(b"k1", value, small)
    assert same_key == b"k1" and ("ce_id", b"e1") in kept and "bus_headers_dropped" not in dict(kept)
    assert not DeadLetter("erp", "t", 0, 0, b"k1", b"whole", small).cut


def test_a_letter_whose_origin_is_not_topic_partition_offset_has_none() -> None:
    def letter(origin: bytes) -> DeadLetter:
        return DeadLetter("erp", "t.dlq.erp", 0, 7, None, b"{}", [("bus_origin", origin)])

    assert letter(b"t.deliver.erp/2/41").origin == ("t.deliver.erp", 2, 41)
    # written by anything that can produce to the topic: "\u00b2" is a digit to isdigit() and broke int() (a ValueError
    # out of every listing of the topic's letters)
    for origin in ("t.deliver.erp/2/4\u00b2".encode(), b"t.deliver.erp/x/41", b"41", b"", b"t.deliver.erp/2/" + b"4" * 5000):
        assert letter(origin).origin is None, origin


def test_a_time_window_over_letters_takes_a_time_without_a_zone_as_utc_and_skips_letters_it_cannot_place() -> None:
    """`--since 2026-12-01` (no zone) against the hub's aware times raised TypeError at the first
    letter; a `bus_failed_at` that is no time (written by anything that can produce to the topic)
    raised ValueError. Either broke the whole listing or purge."""

    def letter(failed_at: bytes) -> DeadLetter:
        return DeadLetter("erp", "t.dlq.erp", 0, 7, None, b"{}", [("bus_failed_at", failed_at)])

    window = Filter(since=datetime(2026, 12, 1), until=datetime(2026, 12, 2, tzinfo=UTC))
    assert window(letter(b"2026-12-01T10:00:00Z")) and window(letter(b"2026-12-01T10:00:00"))  # a naive one: UTC too
    assert not window(letter(b"2026-11-30T23:59:59+00:00")) and not window(letter(b"2026-12-02T00:00:00Z"))
    assert not window(letter(b"2026-12-01T00:30:00+01:00"))  # 23:30 UTC the day before
    for unplaced in (b"yesterday", b"", b"2026-13-01T00:00:00Z"):
        assert not window(letter(unplaced)), unplaced
    assert Filter()(letter(b"yesterday"))  # no window asked: in
