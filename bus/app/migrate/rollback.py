"""``bus migrate rollback RUN``: put every target back as it was before the run.

From the journal, per subscriber: a record the run created (no before-image) is deleted, a record
it replaced gets its before-image back; records it found already right (``unchanged``) or that the
target refused (``failed``) are left alone. ``pending`` entries (journaled, then the run was
killed before it knew whether the write happened) are restored too: putting back a before-image
is right whether or not the write landed. Each restored entry is marked ``rolled_back`` in the
same step, so a rollback that is killed resumes where it stopped. Afterwards every restored record
is read back and compared with its before-image.

Refused: a run another run of the same migration wrote after (rolling back the older one would
overwrite the newer one's records; ``--force`` to do it anyway), and a run still in progress.
Targets that cannot be restored (a queue, an HTTP API without a read URL) are named in the
report with how many records stay.
"""

from __future__ import annotations

__all__ = ["rollback_run"]

import logging
from pathlib import Path
from typing import Any, TextIO

from bus.adapter_api import AdapterRegistry
from bus.app.migrate.flow import find_migration
from bus.config.loader import LoadedConfig
from bus.errors import BusError
from bus.migrate.canonical import differing_fields, from_typed_json
from bus.migrate.journal import Journal, RunInfo, migration_lock
from bus.migrate.progress import Progress
from bus.migrate.report import key_label, write_report
from bus.migrate.targets import Targets

log = logging.getLogger("bus.migrate")
TO_RESTORE = ("written", "pending")


async def rollback_run(
    loaded: LoadedConfig,
    run_id: str,
    *,
    state_dir: Path,
    registry: AdapterRegistry,
    force: bool = False,
    stream: TextIO | None = None,
) -> tuple[RunInfo, dict[str, Any]]:
    journal = Journal(state_dir)
    try:
        run = journal.run(run_id)
        if run is None:
            known = ", ".join(r.id for r in journal.runs()[-5:]) or "none"
            raise BusError(f"no run {run_id!r} in {journal.path} (latest: {known})")
        migration = find_migration(loaded, run.migration)
        with migration_lock(state_dir, run.migration):
            if run.status == "rolled_back":
                raise BusError(f"run {run_id} was already rolled back")
            later = [r for r in journal.runs(run.migration) if r.started > run.started and r.status not in ("rolled_back", "abandoned")]
            if later and not force:
                raise BusError(
                    f"run {later[-1].id} of {run.migration} ran after {run_id}: roll it back first "
                    f"(rolling back the older run would overwrite what the newer one wrote), or use --force"
                )
            counts = journal.count_entries(run_id)
            targets = Targets(loaded, migration, sorted(counts), registry)
            await targets.start()
            try:
                journal.set_status(run_id, "rolling_back")
                outcome = await _restore(journal, run_id, targets, counts, stream)
                journal.set_status(run_id, "rolled_back", finished=True)
            finally:
                await targets.stop()
            done = journal.run(run_id)
            assert done is not None
            done.reports = write_report(journal, done, {}, state_dir, rollback=outcome)
            journal.set_reports(run_id, done.reports)
            return done, outcome
    finally:
        journal.close()


async def _restore(
    journal: Journal, run_id: str, targets: Targets, counts: dict[str, dict[str, int]], stream: TextIO | None
) -> dict[str, Any]:
    total = sum(n for states in counts.values() for state, n in states.items() if state in TO_RESTORE)
    progress = Progress(run_id, total, stream=stream, phase="rollback")
    outcome: dict[str, Any] = {}
    for target in targets:
        result: dict[str, Any] = {"deleted": 0, "restored": 0, "left": 0, "still_different": 0, "differences": []}
        outcome[target.name] = result
        state = target.state
        if state is None or state.rollback:
            left = sum(n for s, n in counts.get(target.name, {}).items() if s in TO_RESTORE)
            result["left"] = left
            result["why"] = target.why_no_rollback
            if left:
                log.warning("rollback of %s: %d record(s) stay in %s: %s", run_id, left, target.name, target.why_no_rollback)
            continue
        for chunk in journal.entries(run_id, target.name, TO_RESTORE):
            items = [(from_typed_json(e.address), None if e.before is None else from_typed_json(e.before)) for e in chunk]
            await target.with_retries("restoring", state.restore, items)
            journal.mark(run_id, target.name, [e.key for e in chunk], "rolled_back")
            result["deleted"] += sum(1 for _, before in items if before is None)
            result["restored"] += sum(1 for _, before in items if before is not None)
            progress.add("read", len(chunk))
            progress.add("written", len(chunk))
            progress.show()
        if state.verifiable:  # read back what was restored: does each record hold its before-image?
            for chunk in journal.entries(run_id, target.name, ("rolled_back",)):
                now = await target.with_retries("reading back", state.read, [from_typed_json(e.address) for e in chunk])
                for entry, held in zip(chunk, now, strict=True):
                    before = None if entry.before is None else from_typed_json(entry.before)
                    diff = differing_fields(before, held)
                    if diff:
                        result["still_different"] += 1
                        if len(result["differences"]) < 100:
                            result["differences"].append({"key": key_label(entry.key), "fields": {k: list(v) for k, v in diff.items()}})
    progress.show(final=True)
    return outcome
