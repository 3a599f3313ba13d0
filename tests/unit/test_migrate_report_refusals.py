"""A run's report groups its refused rows by reason the way `bus migrate plan` does: at most
MAX_REASONS reasons listed for the mapping and for each target, the rest counted under one,
however many rows were refused. A reason often names the value (one reason per row when a column
is bad throughout), and a report of one group per row helps nobody and grew with the source."""

from __future__ import annotations

import json
from pathlib import Path

from bus.migrate.journal import Journal, RunInfo
from bus.migrate.report import MAX_REASONS, OTHER_REASONS, SAMPLES, build_report


def test_refusals_are_grouped_by_reason_capped_and_every_row_counted(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    run = RunInfo("run-1", "m", "finished", 0.0, 1.0, "u", "h", "c", None, None, 5000)
    journal.new_run(run)
    rows = [(f"row {i}", "", f"amount {i!r} is not a number", json.dumps({"amount": i})) for i in range(3000)]
    rows += [(f"row {i}", "", "no key", None) for i in range(3000, 3010)]  # the first reason seen again, later
    rows.insert(0, ("row -1", "", "no key", None))
    rows += [(f"row {i}", "crm", "the target answered 422", None) for i in range(5)]
    journal.refuse("run-1", rows)

    report = build_report(journal, run, {})

    groups = {(g["subscriber"], g["reason"]): g for g in report["refusals"]}
    # The mapping's first MAX_REASONS distinct reasons, then "other"; a target's own are listed apart.
    assert len(groups) == MAX_REASONS + 2
    assert groups[(None, "no key")]["count"] == 11
    assert groups[(None, OTHER_REASONS)]["count"] == 3000 - (MAX_REASONS - 1)
    assert groups[("crm", "the target answered 422")]["count"] == 5
    assert sum(g["count"] for g in report["refusals"]) == len(rows)
    assert all(len(g["samples"]) <= SAMPLES for g in report["refusals"])
    assert report["source"]["refused"] == 3011
    assert report["refusals"][0]["reason"] == OTHER_REASONS  # most rows first
