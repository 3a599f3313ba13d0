"""Book-keeping of a delivery worker, per partition: which offsets are settled, what may be committed.

Pure (no I/O, no clock), so it can be tested exhaustively. The delivery worker settles offsets in
any order (keys go concurrently; a key whose event keeps failing holds only its own later
events). Kafka commits one offset per partition, so:

- ``committed``: every offset below it is settled and recorded in the ledger;
- settled offsets at or above it (delivered past a held event) are kept as ranges, so memory
  grows with the number of *gaps* (held events), not with the events that flowed past them;
- ``draft()`` makes the next ledger entry: the offsets settled since the last entry, the offset
  the commit can advance to (past every settled offset in a row) and the running totals there.
  The worker writes the entry to the ledger, then commits, then ``confirm``s it; if the write
  fails it ``abandon``s it and the same offsets go into the next draft.

After a restart or a rebalance, the new owner builds the book from the ledger (``restore``):
offsets the ledger says were settled above the committed offset are not delivered again.
"""

from __future__ import annotations

__all__ = ["Draft", "OffsetSet", "PartitionBook"]

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

from bus.ledger import LedgerEntry, offset_ranges


class OffsetSet:
    """A set of offsets as sorted, disjoint, inclusive ranges (offsets mostly arrive in order)."""

    __slots__ = ("_ends", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, offset: int) -> None:
        starts, ends = self._starts, self._ends
        i = bisect.bisect_right(starts, offset) - 1
        if i >= 0 and offset <= ends[i]:
            return
        joins_left = i >= 0 and ends[i] == offset - 1
        joins_right = i + 1 < len(starts) and starts[i + 1] == offset + 1
        if joins_left and joins_right:
            ends[i] = ends[i + 1]
            del starts[i + 1], ends[i + 1]
        elif joins_left:
            ends[i] = offset
        elif joins_right:
            starts[i + 1] = offset
        else:
            starts.insert(i + 1, offset)
            ends.insert(i + 1, offset)

    def __contains__(self, offset: int) -> bool:
        i = bisect.bisect_right(self._starts, offset) - 1
        return i >= 0 and offset <= self._ends[i]

    def run_from(self, offset: int) -> int:
        """The first offset at or after ``offset`` that is not in the set."""
        i = bisect.bisect_right(self._starts, offset) - 1
        return self._ends[i] + 1 if i >= 0 and offset <= self._ends[i] else offset

    def count_below(self, limit: int) -> int:
        total = 0
        for start, end in zip(self._starts, self._ends, strict=True):
            if start >= limit:
                break
            total += min(end, limit - 1) - start + 1
        return total

    def drop_below(self, limit: int) -> None:
        i = bisect.bisect_right(self._ends, limit - 1)
        del self._starts[:i], self._ends[:i]
        if self._starts and self._starts[0] < limit:
            self._starts[0] = limit

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))

    def __len__(self) -> int:
        return sum(e - s + 1 for s, e in zip(self._starts, self._ends, strict=True))


@dataclass(frozen=True, slots=True)
class Draft:
    """A ledger entry about to be written, and the offsets it records (to put back if it fails)."""

    entry: LedgerEntry
    delivered: list[int]
    dead: list[int]


class PartitionBook:
    def __init__(self, partition: int, committed: int, totals: tuple[int, int] = (0, 0)) -> None:
        self.partition = partition
        self.committed = committed
        self.totals = totals  # (delivered, dead-lettered) offsets below ``committed``
        self._delivered = OffsetSet()  # settled at or above ``committed``
        self._dead = OffsetSet()
        self._new_delivered: list[int] = []  # settled since the last draft
        self._new_dead: list[int] = []
        self._gone: list[tuple[int, int]] = []  # [start, end) removed from the topic before they were read (``pass_over``)

    @classmethod
    def restore(cls, partition: int, committed: int, entries: Iterable[LedgerEntry]) -> PartitionBook:
        """The book at ``committed``, from the partition's ledger entries (oldest first).

        The totals are the latest entry's at or below the committed offset (an entry whose commit
        then failed has ``upto`` beyond it). Offsets any entry records as settled at or above the
        committed offset were delivered (or dead-lettered) already: they are settled here too, and
        will be neither delivered again nor written to the ledger again.
        """
        book = cls(partition, committed)
        for entry in entries:
            if entry.upto <= committed:
                book.totals = (entry.delivered_total, entry.dead_lettered_total)
            for first, last in entry.delivered:
                for offset in range(max(first, committed), last + 1):
                    book._delivered.add(offset)
            for first, last in entry.dead_lettered:
                for offset in range(max(first, committed), last + 1):
                    if offset not in book._delivered:
                        book._dead.add(offset)
        return book

    def is_settled(self, offset: int) -> bool:
        return offset < self.committed or offset in self._delivered or offset in self._dead or self._in_gone(offset) is not None

    def _in_gone(self, offset: int) -> int | None:
        """The end of the removed range ``offset`` is in, if any (rarely any: a list, not a set)."""
        for start, end in self._gone:
            if start <= offset < end:
                return end
        return None

    def pass_over(self, start: int, end: int) -> None:
        """Offsets ``start`` to ``end - 1`` are gone from the topic (its retention removed them
        before they were read): neither delivered nor dead-lettered, and the commit may pass them.
        Waited for, they held the partition's commit where it was for ever."""
        if end > max(start, self.committed):
            self._gone.append((max(start, self.committed), end))

    def settle(self, offset: int, delivered: bool) -> None:
        if self.is_settled(offset):
            return
        if delivered:
            self._delivered.add(offset)
            self._new_delivered.append(offset)
        else:
            self._dead.add(offset)
            self._new_dead.append(offset)

    def committable(self) -> int:
        """How far the commit can go: past every settled offset in a row from ``committed``."""
        offset = self.committed
        while True:
            after = max(self._delivered.run_from(offset), self._dead.run_from(offset))
            if self._gone and (end := self._in_gone(offset)) is not None:
                after = max(after, end)
            if after == offset:
                return offset
            offset = after

    @property
    def settled_ahead(self) -> int:
        """Settled offsets at or above ``committed`` (delivered past a held event)."""
        return len(self._delivered) + len(self._dead)

    def draft(self, at: str) -> Draft | None:
        """The next ledger entry, or None when nothing was settled since the last one."""
        upto = self.committable()
        if not self._new_delivered and not self._new_dead and upto == self.committed:
            return None
        delivered, dead = self._new_delivered, self._new_dead
        self._new_delivered, self._new_dead = [], []
        totals = (self.totals[0] + self._delivered.count_below(upto), self.totals[1] + self._dead.count_below(upto))
        entry = LedgerEntry(self.partition, upto, offset_ranges(delivered), offset_ranges(dead), *totals, at)
        return Draft(entry, delivered, dead)

    def confirm(self, draft: Draft) -> None:
        """The entry is in the ledger and its offset committed: forget what lies below it."""
        upto = draft.entry.upto
        if upto > self.committed:
            self.totals = (draft.entry.delivered_total, draft.entry.dead_lettered_total)
            self.committed = upto
            self._delivered.drop_below(upto)
            self._dead.drop_below(upto)
            self._gone = [(start, end) for start, end in self._gone if end > upto]

    def abandon(self, draft: Draft) -> None:
        """The entry could not be written: its offsets go into the next draft."""
        self._new_delivered[:0] = draft.delivered
        self._new_dead[:0] = draft.dead
