"""`Walk`: one poll's pass over a watermarked source, whatever order the source lists records in."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.polling import Position, Walk

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
