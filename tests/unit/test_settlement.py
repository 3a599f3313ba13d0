"""The delivery worker's book-keeping: offsets settled in any order, the commit never passes an
unsettled one, and a book restored from the ledger skips exactly what was settled."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bus.ledger import totals_at
from bus.runtime.settlement import OffsetSet, PartitionBook


@given(st.sets(st.integers(min_value=0, max_value=300)))
def test_offset_set_holds_exactly_what_was_added(offsets: set[int]) -> None:
    found = OffsetSet()
    for offset in sorted(offsets, key=lambda o: (o * 7919) % 301):  # a scrambled order
        found.add(offset)
    assert {o for o in range(302) if o in found} == offsets
    assert len(found) == len(offsets)
    ranges = found.ranges()
    assert all(a <= b for a, b in ranges)
    assert all(ranges[i][1] + 1 < ranges[i + 1][0] for i in range(len(ranges) - 1))  # disjoint, never adjacent
    for limit in (0, 50, 150, 400):
        assert found.count_below(limit) == sum(1 for o in offsets if o < limit)


def test_a_held_offset_stops_the_commit_but_not_the_record_of_what_passed_it() -> None:
    book = PartitionBook(0, committed=10)
    for offset in (10, 11, 13, 14, 15):  # 12 is held (its key keeps failing)
        book.settle(offset, delivered=True)
    draft = book.draft("t")
    assert draft is not None
    assert draft.entry.upto == 12
    assert draft.entry.delivered == [(10, 11), (13, 15)]  # recorded, so never delivered again
    assert draft.entry.delivered_total == 2
    book.confirm(draft)
    assert book.committed == 12 and book.settled_ahead == 3
    assert book.draft("t") is None  # nothing new
    book.settle(12, delivered=False)  # the held one is dead-lettered at last
    draft = book.draft("t")
    assert draft is not None and draft.entry.upto == 16
    assert (draft.entry.delivered_total, draft.entry.dead_lettered_total) == (5, 1)
    book.confirm(draft)
    assert book.committed == 16 and book.settled_ahead == 0


def test_an_entry_that_could_not_be_written_goes_into_the_next_one() -> None:
    book = PartitionBook(0, committed=0)
    book.settle(0, delivered=True)
    book.settle(2, delivered=True)
    first = book.draft("t")
    assert first is not None
    book.abandon(first)
    book.settle(3, delivered=True)
    second = book.draft("t")
    assert second is not None and second.entry.delivered == [(0, 0), (2, 3)]


@given(
    outcomes=st.lists(st.sampled_from(["delivered", "dead", "held"]), min_size=1, max_size=60),
    order=st.randoms(use_true_random=False),
    flush_every=st.integers(min_value=1, max_value=10),
)
def test_commits_never_pass_an_unsettled_offset_and_a_restore_skips_only_what_was_recorded(
    outcomes: list[str], order: object, flush_every: int
) -> None:
    book = PartitionBook(0, committed=0)
    settled = [o for o, what in enumerate(outcomes) if what != "held"]
    order.shuffle(settled)  # type: ignore[attr-defined]
    entries = []
    for n, offset in enumerate(settled, start=1):
        book.settle(offset, delivered=outcomes[offset] == "delivered")
        if n % flush_every == 0 or n == len(settled):
            draft = book.draft("t")
            if draft is not None:
                entries.append(draft.entry)
                book.confirm(draft)
        assert all(book.is_settled(o) for o in range(book.committed))
    held = [o for o, what in enumerate(outcomes) if what == "held"]
    assert book.committed == (held[0] if held else len(outcomes))
    # Totals below the commit agree with the outcomes there.
    below = outcomes[: book.committed]
    assert book.totals == (below.count("delivered"), below.count("dead"))
    assert totals_at(entries, book.committed) == book.totals
    # A new owner, from the committed offset and the ledger, settles exactly the same offsets.
    restored = PartitionBook.restore(0, book.committed, entries)
    assert [restored.is_settled(o) for o in range(len(outcomes))] == [what != "held" for what in outcomes]
    assert restored.totals == book.totals


def test_offsets_removed_before_they_were_read_are_passed_over_not_waited_for() -> None:
    """Records 0-4 were removed by the topic's retention; 5-9 are read and delivered. Waiting for
    0-4 held the commit at 0 for ever; passed over, the commit goes to 10 and the ledger entry says
    only what was delivered."""
    book = PartitionBook(0, committed=0)
    for offset in range(5, 10):
        book.settle(offset, delivered=True)
    assert book.committable() == 0  # what happened before: nothing to commit, ever
    book.pass_over(0, 5)
    assert book.is_settled(3) and book.committable() == 10
    draft = book.draft("2026-12-05T00:00:00Z")
    assert draft is not None and draft.entry.upto == 10 and draft.entry.delivered == [(5, 9)] and draft.entry.delivered_total == 5
    book.confirm(draft)
    assert book.committed == 10 and not book.is_settled(10)
    book.pass_over(2, 4)  # below the commit: nothing to do
    assert book.committable() == 10
