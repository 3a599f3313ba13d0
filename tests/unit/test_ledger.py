"""The ledger's audit: every id in exactly one state, losses found, checksums a target can match."""

from __future__ import annotations

import hashlib
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from bus.ledger import LedgerEntry, audit, offset_ranges, render, totals_at, window_checksum

TOPIC = "p.deliver.erp"


@dataclass
class Rec:  # the fields of aiokafka's ConsumerRecord that the audit reads
    partition: int
    offset: int
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def rec(partition: int, offset: int, event_id: str, time: str = "2026-11-24T10:15:00Z") -> Rec:
    return Rec(partition, offset, [("ce_id", event_id.encode()), ("ce_time", time.encode())])


def entry(partition: int, upto: int, delivered: list[int], dead: list[int] = (), totals: tuple[int, int] = (0, 0)) -> LedgerEntry:  # type: ignore[assignment]
    return LedgerEntry(partition, upto, offset_ranges(delivered), offset_ranges(dead), *totals, "2026-11-24T10:16:00Z")


@given(st.sets(st.integers(min_value=0, max_value=300)))
def test_offset_ranges_round_trip(offsets: set[int]) -> None:
    ranges = offset_ranges(offsets)
    assert {o for first, last in ranges for o in range(first, last + 1)} == offsets
    assert all(b[0] > a[1] + 1 for a, b in itertools.pairwise(ranges))  # maximal: no two touch


def test_entry_survives_encoding() -> None:
    e = entry(2, 10, [3, 4, 5, 8], [6], (7, 1))
    assert LedgerEntry.decode(e.encode()) == e


def test_every_id_in_one_state() -> None:
    incoming = [rec(0, 0, "a"), rec(0, 1, "b"), rec(0, 2, "c"), rec(0, 3, "d"), rec(1, 0, "e"), rec(1, 1, "f")]
    entries = [entry(0, 2, [0], [1], (1, 1)), entry(1, 1, [0], [], (1, 0))]
    letters = {f"{TOPIC}/0/1"}
    # partition 0 committed at 2: c, d in flight; partition 1 committed at 2 although f (offset 1) has no entry: lost.
    b = audit("erp", {0: 2, 1: 2}, incoming, entries, letters, TOPIC, 3600, None)
    assert (b.entered, b.delivered, b.dead_lettered, b.in_flight) == (6, 2, 1, 2)
    assert b.unaccounted == ["f"]
    assert not b.balanced
    assert b.entered == b.delivered + b.dead_lettered + b.in_flight + len(b.unaccounted)


def test_dead_letter_promised_by_the_ledger_but_missing_from_the_topic_is_unaccounted() -> None:
    incoming = [rec(0, 0, "a"), rec(0, 1, "b")]
    b = audit("erp", {0: 2}, incoming, [entry(0, 2, [0], [1])], set(), TOPIC, 3600, None)
    assert b.unaccounted == ["b"]


def test_a_later_copy_decides_the_state() -> None:
    # a dead-lettered, replayed (offset 2) and delivered; b dead-lettered, replayed, still waiting.
    incoming = [rec(0, 0, "a"), rec(0, 1, "b"), rec(0, 2, "a"), rec(0, 3, "b")]
    entries = [entry(0, 2, [], [0, 1]), entry(0, 3, [2], [])]
    b = audit("erp", {0: 3}, incoming, entries, {f"{TOPIC}/0/0", f"{TOPIC}/0/1"}, TOPIC, 3600, None)
    assert (b.entered, b.delivered, b.in_flight, b.dead_lettered, b.unaccounted, b.copies) == (2, 1, 1, 0, [], 4)


def test_redelivery_after_a_crash_is_counted_not_lost() -> None:
    incoming = [rec(0, 0, "a"), rec(0, 1, "b")]
    # The first owner wrote its entry and died before committing; the next one delivered both again.
    entries = [entry(0, 2, [0, 1], [], (2, 0)), entry(0, 2, [0, 1], [], (2, 0))]
    b = audit("erp", {0: 2}, incoming, entries, set(), TOPIC, 3600, None)
    assert (b.delivered, b.redelivered, b.balanced) == (2, 2, True)
    assert b.ledger_totals == b.settled_offsets == (2, 0)


def test_running_totals_come_from_the_entry_the_commit_relies_on() -> None:
    entries = [entry(0, 100, [], totals=(100, 0)), entry(0, 200, [], totals=(190, 10)), entry(0, 150, [], totals=(145, 5))]
    # 200 was written but not committed; the next owner committed 150.
    assert totals_at(entries, 150) == (145, 5)
    assert totals_at(entries, 120) == (100, 0)
    assert totals_at(entries, 99) == (0, 0)


def test_checksum_is_the_documented_one_and_ignores_order_and_repeats() -> None:
    ids = ["evt_2", "evt_10", "evt_1"]
    expected = hashlib.sha256(b"evt_1\nevt_10\nevt_2\n").hexdigest()[:16]
    assert window_checksum(ids) == expected == window_checksum([*reversed(ids), "evt_1"])
    assert window_checksum(ids[:2]) != expected


def test_windows_and_target_comparison() -> None:
    incoming = [rec(0, 0, "a", "2026-11-24T10:59:59Z"), rec(0, 1, "b", "2026-11-24T11:00:00Z"), rec(0, 2, "c", "2026-11-24T11:30:00.5Z")]
    entries = [entry(0, 3, [0, 1, 2])]
    b = audit("erp", {0: 3}, incoming, entries, set(), TOPIC, 3600, {"a", "b", "zz"})
    assert [(w.start, w.delivered) for w in b.windows] == [("2026-11-24T10:00:00Z", 1), ("2026-11-24T11:00:00Z", 2)]
    assert [w.agrees for w in b.windows] == [True, False]
    assert b.missing_at_target == ["c"]
    assert b.unknown_to_hub == ["zz"]
    assert b.balanced
    assert not b.ok


def test_times_other_producers_wrote_fall_in_their_window_or_in_unknown_and_never_stop_the_audit() -> None:
    """`ce_time` is whatever the producer of the topic wrote: a time past year 9999 once in UTC
    stopped `bus reconcile` with "year 10000 is out of range", and one without a zone went to a
    window of the reconciler's local zone."""
    times = ["9999-12-31T23:59:59-01:00", "2026-11-24T10:15:00", "no time", "0001-01-01T00:00:00+01:00"]
    incoming = [rec(0, i, f"e{i}", time) for i, time in enumerate(times)]
    b = audit("erp", {0: 4}, incoming, [entry(0, 4, [0, 1, 2, 3], totals=(4, 0))], set(), TOPIC, 3600, None)
    assert [(w.start, w.delivered) for w in b.windows] == [("2026-11-24T10:00:00Z", 1), ("unknown", 3)]
    assert b.balanced


def test_a_commit_with_no_ledger_behind_it_cannot_be_proved_balanced() -> None:
    # Offsets 0-4 were committed by a consumer the ledger knows nothing of (it is younger, or lost).
    incoming = [rec(0, i, f"e{i}") for i in range(6)]
    b = audit("erp", {0: 5}, incoming, [], set(), TOPIC, 3600, None)
    assert not b.balanced and b.unprovable and "committed 5" in b.unprovable[0]
    assert "CANNOT PROVE" in render(b)
    # A ledger that has entries but not this commit: events committed past, named as unaccounted.
    b = audit("erp", {0: 5}, incoming, [entry(0, 2, [0, 1], totals=(2, 0))], set(), TOPIC, 3600, None)
    assert not b.unprovable and b.unaccounted == ["e2", "e3", "e4"]
    # With the entry the commit relied on, the same audit is balanced.
    b = audit("erp", {0: 5}, incoming, [entry(0, 5, [0, 1, 2, 3, 4], totals=(5, 0))], set(), TOPIC, 3600, None)
    assert b.balanced and not b.unprovable


def reference_audit(
    committed: dict[int, int], incoming: list[Rec], entries: list[LedgerEntry], letters: set[str], target_ids: set[str]
) -> dict[str, Any]:
    """The audit's rules as plain Python over lists in memory (how it was computed before it moved
    to a store on disk): what the store must agree with."""
    delivered_at: Counter[tuple[int, int]] = Counter()
    dead_at: set[tuple[int, int]] = set()
    for e in entries:
        delivered_at.update((e.partition, o) for first, last in e.delivered for o in range(first, last + 1))
        dead_at.update((e.partition, o) for first, last in e.dead_lettered for o in range(first, last + 1))
    rank = {"unaccounted": 0, "dead_lettered": 1, "in_flight": 2, "delivered": 3}
    states: dict[str, str] = {}
    times: dict[str, str] = {}
    for r in sorted(incoming, key=lambda r: (r.partition, r.offset)):
        event_id, time = (dict(r.headers)[k].decode() for k in ("ce_id", "ce_time"))
        times.setdefault(event_id, time)
        if (r.partition, r.offset) in delivered_at:
            state = "delivered"
        elif r.offset >= committed.get(r.partition, 0):
            state = "in_flight"
        elif (r.partition, r.offset) in dead_at and f"{TOPIC}/{r.partition}/{r.offset}" in letters:
            state = "dead_lettered"
        else:
            state = "unaccounted"
        if rank[state] > rank.get(states.get(event_id, ""), -1):
            states[event_id] = state
    delivered = sorted(i for i, s in states.items() if s == "delivered")
    windows: dict[str, list[str]] = {}
    for i in delivered:
        windows.setdefault(times[i][:13], []).append(i)
    return {
        "states": Counter(states.values()),
        "unaccounted": sorted(i for i, s in states.items() if s == "unaccounted"),
        "redelivered": sum(1 for n in delivered_at.values() if n > 1),
        "windows": [(len(ids), window_checksum(ids)) for _, ids in sorted(windows.items())],
        "missing_at_target": [i for i in delivered if i not in target_ids],
        "unknown_to_hub": sorted(target_ids - set(states)),
    }


@given(st.randoms(use_true_random=False))
def test_the_audit_on_disk_agrees_with_the_rules_in_memory(rng: random.Random) -> None:
    """Random topics (copies of a few ids, replays, entries delivering or dead-lettering, letters
    present or lost, commits anywhere, records in any order): every figure agrees."""
    incoming, entries, letters, committed = [], [], set(), {}
    for p in range(rng.randint(1, 3)):
        n = rng.randint(0, 40)
        incoming += [rec(p, o, f"e{rng.randint(0, 30)}", f"2026-12-0{rng.randint(1, 3)}T1{rng.randint(0, 3)}:00:00Z") for o in range(n)]
        committed[p] = rng.randint(0, n)
        for o in range(n):
            roll = rng.random()
            if roll < 0.6:
                entries.append(entry(p, o + 1, [o]))
            elif roll < 0.8:
                entries.append(entry(p, o + 1, [], [o]))
                if rng.random() < 0.7:
                    letters.add(f"{TOPIC}/{p}/{o}")
    target = {f"e{rng.randint(0, 40)}" for _ in range(15)}
    expected = reference_audit(committed, incoming, entries, letters, target)
    rng.shuffle(incoming)
    b = audit("erp", committed, incoming, entries, letters, TOPIC, 3600, target)
    states = expected["states"]
    assert (b.delivered, b.dead_lettered, b.in_flight, len(b.unaccounted)) == tuple(
        states[name] for name in ("delivered", "dead_lettered", "in_flight", "unaccounted")
    )
    assert b.entered == sum(states.values())
    assert b.unaccounted == expected["unaccounted"] and b.redelivered == expected["redelivered"]
    assert [(w.delivered, w.checksum) for w in b.windows] == expected["windows"]
    assert b.missing_at_target == expected["missing_at_target"] and b.unknown_to_hub == expected["unknown_to_hub"]
