"""The migration journal hands a subscriber's entries back in the order they were journaled, in
chunks, through an index in that order: reading a run back (verify, rollback) stays linear in the
run's size (it once sorted the whole run again for every chunk of 500)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bus.migrate.journal import Entry, Journal


def _entries(subscriber: str, keys: range, state: str = "written") -> list[Entry]:
    return [Entry(subscriber, f"k{i:05d}", f'["k{i:05d}"]', None, "{}", f"d{i}", state, batch=i // 1000) for i in keys]


def test_a_subscribers_entries_come_back_in_journal_order_across_chunks_and_filtered(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    # Journaled out of key order, interleaved with another subscriber and another run.
    for start in (1200, 0, 600):
        journal.journal("run-1", "books", _entries("books", range(start, start + 600)))
        journal.journal("run-1", "crm", _entries("crm", range(start, start + 10)))
        journal.journal("run-2", "books", _entries("books", range(start, start + 10)))
    journal.mark("run-1", "books", [f"k{i:05d}" for i in range(0, 1800, 7)], "failed")

    chunks = list(journal.entries("run-1", "books", ("written",)))
    keys = [e.key for chunk in chunks for e in chunk]

    assert [len(c) for c in chunks][:2] == [500, 500]
    expected = [f"k{i:05d}" for start in (1200, 0, 600) for i in range(start, start + 600) if i % 7]
    assert keys == expected  # journal order, not key order; only this run, subscriber and state
    assert all(e.subscriber == "books" for chunk in chunks for e in chunk)
    assert [len(c) for c in journal.entries("run-1", "crm")] == [30]


def test_reading_entries_uses_the_ordered_index_and_sorts_nothing(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.journal("run-1", "books", _entries("books", range(1200)))
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)  # the statements entries() sends, values filled in
    list(journal.entries("run-1", "books", ("written", "pending")))
    journal._db.set_trace_callback(None)
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 4  # three chunks and the empty answer that ends them
    for sql in reads:
        plan = " | ".join(row[3] for row in journal._db.execute(f"EXPLAIN QUERY PLAN {sql}"))
        assert "entries_in_order" in plan and "rowid>?" in plan.replace(" ", ""), plan
        assert "TEMP B-TREE" not in plan, plan  # a sort per chunk is what made reading a run quadratic


def test_a_journal_made_before_the_index_gets_it_when_opened(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "journal.sqlite")
    db.execute(
        "CREATE TABLE entries (run TEXT NOT NULL, subscriber TEXT NOT NULL, key TEXT NOT NULL, address TEXT NOT NULL, "
        "before TEXT, expected TEXT, digest TEXT, state TEXT NOT NULL, error TEXT, batch INTEGER, PRIMARY KEY (run, subscriber, key))"
    )
    db.execute("INSERT INTO entries VALUES ('run-1', 'books', 'k1', '[\"k1\"]', NULL, '{}', 'd', 'written', NULL, 0)")
    db.commit()
    db.close()
    journal = Journal(tmp_path)
    assert [e.key for chunk in journal.entries("run-1", "books") for e in chunk] == ["k1"]
