"""The migration journal answers what a run needs without the run holding its rows in memory:
entries in key order, in chunks, on the primary key's index (reading a run back once sorted the
whole run again for every chunk of 500: quadratic); the source checksum from the rows it kept; what
a resumed run finds done and what earlier runs delivered, asked for a batch's keys."""

from __future__ import annotations

import random
from pathlib import Path

from bus.migrate.canonical import overall_checksum
from bus.migrate.journal import Entry, Journal


def _entries(subscriber: str, keys: list[int], state: str = "written") -> list[Entry]:
    return [Entry(subscriber, f"k{i:05d}", f'["k{i:05d}"]', None, "{}", f"d{i}", state, batch=i // 1000) for i in keys]


def test_a_subscribers_entries_come_back_in_key_order_across_chunks_and_filtered(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    shuffled = list(range(1800))
    random.Random(7).shuffle(shuffled)
    for start in range(0, 1800, 600):  # journaled out of key order, beside another subscriber and another run
        journal.journal("run-1", "books", _entries("books", shuffled[start : start + 600]))
        journal.journal("run-1", "crm", _entries("crm", shuffled[start : start + 10]))
        journal.journal("run-2", "books", _entries("books", shuffled[start : start + 10]))
    journal.mark("run-1", "books", [f"k{i:05d}" for i in range(0, 1800, 7)], "failed")

    chunks = list(journal.entries("run-1", "books", ("written",)))

    assert [len(c) for c in chunks][:2] == [500, 500]
    assert [e.key for chunk in chunks for e in chunk] == [f"k{i:05d}" for i in range(1800) if i % 7]
    assert all(e.subscriber == "books" and e.state == "written" for chunk in chunks for e in chunk)
    assert [len(c) for c in journal.entries("run-1", "crm")] == [30]


def test_reading_entries_walks_the_primary_key_and_sorts_nothing(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.journal("run-1", "books", _entries("books", list(range(1200))))
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)  # the statements entries() sends, values filled in
    list(journal.entries("run-1", "books", ("written", "pending")))
    journal._db.set_trace_callback(None)
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 4  # three chunks and the empty answer that ends them
    for sql in reads:
        plan = " | ".join(row[3] for row in journal._db.execute(f"EXPLAIN QUERY PLAN {sql}"))
        assert "key>?" in plan.replace(" ", ""), plan  # each chunk starts where the last ended
        assert "TEMP B-TREE" not in plan, plan  # a sort per chunk is what made reading a run quadratic


def test_the_source_checksum_is_the_overall_checksum_of_every_row_read_the_latest_digest_per_key(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    first = {f"row-{i}": f"a{i}" for i in range(0, 900, 2)}
    second = {**{f"row-{i}": f"b{i}" for i in range(1, 900, 2)}, "row-4": "again"}  # a key read twice: the latest counts
    journal.checkpoint("run-1", position=450, counts={}, batch=1, rows=450, checksum="x", digests=first)
    journal.checkpoint("run-1", position=900, counts={}, batch=2, rows=450, checksum="y", digests=second)
    journal.checkpoint("run-2", position=1, counts={}, batch=1, rows=1, checksum="z", digests={"row-0": "other run"})
    assert journal.source_checksum("run-1") == overall_checksum({**first, **second})
    assert journal.source_checksum("run-1") != overall_checksum({**second, **first})


def test_what_a_batch_needs_to_know_is_asked_for_its_keys_only(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    assert not journal.has_entries("run-1")
    journal.journal("run-1", "books", _entries("books", list(range(1200))))
    journal.journal("run-1", "crm", _entries("crm", [5], state="pending"))
    assert journal.has_entries("run-1")
    asked = [f"k{i:05d}" for i in (3, 1100, 5)] + ["k99999"]  # more keys than one query takes are asked in parts
    assert journal.states("run-1", "books", asked * 300) == {f"k{i:05d}": ("written", f"d{i}") for i in (3, 1100, 5)}
    assert journal.states("run-1", "crm", asked) == {"k00005": ("pending", "d5")}


def test_what_earlier_finished_runs_delivered_is_asked_for_a_batchs_keys_the_latest_run_winning(tmp_path: Path) -> None:
    from bus.migrate.journal import RunInfo

    journal = Journal(tmp_path)
    for n, status in enumerate(("finished", "finished", "rolled_back", "running")):
        run_id = f"run-{n}"
        journal.new_run(RunInfo(run_id, "m", status, float(n), None, "u", "h", "c", None, None, 0))
        journal.journal(run_id, "hook", [Entry("hook", "k1", '["k1"]', None, "{}", f"from {run_id}", "written", batch=1)])
    journal.journal("run-0", "hook", [Entry("hook", "k2", '["k2"]', None, "{}", "only run-0", "written", batch=1)])
    journal.journal("run-0", "hook", [Entry("hook", "k3", '["k3"]', None, "{}", "failed", "failed", batch=1)])
    found = journal.delivered_digests("m", "hook", ["k1", "k2", "k3", "k4"], before_run="run-3")
    assert found == {"k1": "from run-1", "k2": "only run-0"}  # not rolled back, not this run, not failed


def test_key_order_is_pythons_sorted_order_for_any_text_so_streamed_checksums_equal_sorted_ones(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    keys = ["z", "Z", "é", "e\u0301", "Ä", "a b", "a\tb", "10", "9", "\U0001f600", "\u00ff", "\uffff", "", "ß", "Å"]
    journal.journal("run-1", "books", [Entry("books", k, "[]", None, "{}", f"d-{k}", "written", batch=1) for k in keys])
    journal.checkpoint("run-1", position=1, counts={}, batch=1, rows=len(keys), checksum="x", digests={k: f"d-{k}" for k in keys})
    assert [e.key for chunk in journal.entries("run-1", "books") for e in chunk] == sorted(keys)
    assert journal.source_checksum("run-1") == overall_checksum({k: f"d-{k}" for k in keys})
