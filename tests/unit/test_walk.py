"""`Walk`: one poll's pass over a watermarked source, whatever order the source lists records in."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.polling import Poller, Position, Walk, earlier_by

records = st.lists(st.tuples(st.integers(0, 20), st.sampled_from("abcde")), max_size=40)


@given(records, st.integers(0, 20), st.sets(st.sampled_from("abcde")))
def test_a_walk_takes_every_record_after_where_it_began_once_in_any_order(
    listed: list[tuple[int, str]], since: int, seen: set[str]
) -> None:
    began = Position(since, set(seen), None)
    walk = Walk(Position(since, set(seen), None))
    taken = [(value, ident) for value, ident in listed if walk.take(value, ident)]
    new = {(v, i) for v, i in listed if v > since or (v == since and i not in seen)}
    assert sorted(taken) == sorted(new)  # each new record once (a record listed twice: once), nothing older
    assert walk.began.since == began.since and walk.began.seen == began.seen  # where it began is kept
    if new:
        newest = max(v for v, _ in new)
        assert walk.position.since == newest and walk.position.seen >= {i for v, i in new if v == newest}
    in_order = all(a[0] <= b[0] for a, b in itertools.pairwise(taken))
    assert (walk.disorder == "") == in_order  # out of order is said exactly when it happened


def test_disorder_names_the_first_record_out_of_order() -> None:
    walk = Walk(Position(None, set(), None))
    for value, ident in [("2026-01-03", "c"), ("2026-01-01", "a"), ("2026-01-02", "b")]:
        assert walk.take(value, ident)
    assert walk.disorder == "record 'a' at '2026-01-01' came after one at '2026-01-03'"
    assert walk.position.since == "2026-01-03" and walk.position.seen == {"c"}


def test_a_long_walk_remembers_only_its_last_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first poll that backfills millions of records held a mark of each (115 MB per 500,000);
    pages shift by a few records, so the last REMEMBERED are enough to take a repeat once."""
    monkeypatch.setattr(Walk, "REMEMBERED", 100)
    walk = Walk(Position(None, set(), None))
    for i in range(1_000):
        assert walk.take(i, f"r{i}")
    assert len(walk._taken) == 100
    assert not walk.take(950, "r950")  # a record met again on a shifted page: taken once


@pytest.mark.parametrize(
    ("value", "earlier"),
    [
        ("2026-03-01T10:00:00Z", "2026-03-01T09:55:00Z"),
        ("2026-03-01T10:00:00.000+0000", "2026-03-01T09:55:00.000+0000"),  # Salesforce's own layout, kept
        ("2026-03-01 00:02:30.123456+01:00", "2026-02-28 23:57:30.123456+01:00"),
        ("2026-03-01T10:00", "2026-03-01T09:55"),
        ("2026-03-01", "2026-02-28"),  # a date: the day before
        (1_767_261_600, 1_767_261_300),  # epoch seconds
        (1_767_261_600_000, 1_767_261_300_000),  # epoch milliseconds
        (1_767_261_600.5, 1_767_261_300.5),
        ("2026-03-01T10:00:00.1234567Z", "2026-03-01T09:55:00.1234560Z"),  # .NET's seven digits: read to six, written as long
        ("v42", None),  # not a time: nothing to move
        ("2026-13-01T00:00:00Z", None),
        (True, None),
    ],
)
def test_a_watermark_moved_back_is_written_as_the_api_wrote_it(value: Any, earlier: Any) -> None:
    assert earlier_by(value, 300) == earlier


def test_an_overlap_takes_a_record_that_became_visible_late_and_no_record_twice() -> None:
    position = Position("2026-03-01T10:00:00Z", {"b"}, None, overlap=300)
    position.recent = {("2026-03-01T09:58:00Z", "a")}
    assert position.asked() == "2026-03-01T09:55:00Z"
    walk = Walk(position)
    answer = [("2026-03-01T09:58:00Z", "a"), ("2026-03-01T09:59:00Z", "late"), ("2026-03-01T10:00:00Z", "b"), ("2026-03-01T10:01:00Z", "c")]
    assert [walk.take(value, ident) for value, ident in answer] == [False, True, False, True]
    assert not walk.disorder  # the window comes first in a sorted answer: in order
    saved = position.dump()
    assert saved["since"] == "2026-03-01T10:01:00Z" and saved["seen"] == ["c"]
    # The window moved on (from 09:56): a (09:58) stays remembered, b and late join it.
    assert saved["recent"] == [["2026-03-01T09:58:00Z", "a"], ["2026-03-01T09:59:00Z", "late"], ["2026-03-01T10:00:00Z", "b"]]
    again = Walk(Position.load(saved, overlap=300))
    assert [again.take(value, ident) for value, ident in answer] == [False, False, False, False]
    # Older than the window: not asked for, and not taken if an API answers with it anyway.
    assert not again.take("2026-03-01T09:50:00Z", "old")


def test_the_window_keeps_only_its_own_and_at_most_recent_records() -> None:
    position = Position(1_000, {"x"}, None, overlap=10)
    position.recent = {(985, "gone"), (995, "kept")}
    assert position.dump()["recent"] == [[995, "kept"]]
    crowded = Position(1_000, {"x"}, None, overlap=10)
    crowded.RECENT = 3
    crowded.recent = {(990 + i, f"r{i}") for i in range(6)}
    assert crowded.dump()["recent"] == [[993, "r3"], [994, "r4"], [995, "r5"]] and crowded.crowded


def test_without_an_overlap_the_position_is_as_before() -> None:
    position = Position("2026-03-01T10:00:00Z", {"b"}, "etag-1")
    assert position.asked() == "2026-03-01T10:00:00Z"
    assert not position.is_new("2026-03-01T09:59:00Z", "late")
    position.advance("2026-03-01T10:01:00Z", "c")
    assert position.dump() == {"since": "2026-03-01T10:01:00Z", "seen": ["c"], "etag": "etag-1"}


@given(records, records, st.integers(0, 20), st.sets(st.sampled_from("abcde")), st.integers(1, 8))
def test_with_an_overlap_every_record_in_the_window_is_taken_once_across_polls(
    first: list[tuple[int, str]], late: list[tuple[int, str]], since: int, seen: set[str], overlap: int
) -> None:
    """Two polls, each answered with every record at or after what it asks from, sorted; between
    them records appear late, some before the position. No record is taken twice, and every
    record the second poll is answered with was taken by one of them."""
    position = Position(since, set(seen), None, overlap=overlap)
    taken: list[tuple[int, str]] = []
    table: set[tuple[int, str]] = set(first)
    for arrivals in ([], late):
        table |= set(arrivals)
        floor = position.asked()
        answer = sorted(r for r in table if r[0] >= floor)
        walk = Walk(position)
        taken += [r for r in answer if walk.take(*r)]
        position = Position.load(position.dump(), overlap=overlap)
    assert len(taken) == len(set(taken)), "a record was taken twice"
    assert set(answer) - {(since, i) for i in seen} <= set(taken)


def test_an_overlap_that_cannot_move_the_watermark_back_is_said() -> None:
    assert "not a time" in Poller.crowded(Position("v42", {"a"}, None, overlap=300))
    assert Poller.crowded(Position("2026-03-01T10:00:00Z", {"a"}, None, overlap=300)) == ""
    assert Poller.crowded(Position("v42", {"a"}, None)) == ""  # no overlap asked for: nothing to say
