"""``bus migrate run NAME``: the load itself, as a job.

Rows are read in batches of ``batch_size``. For each batch, per subscriber:

1. every row is mapped and routed as ``plan`` does (bus/app/migrate/flow.py); a row that cannot
   become an event is refused with its reason (kept in the journal and the report);
2. what the target holds at each record's address is read (the before-image). A record already
   holding what the run would write is ``unchanged`` and not written: running a migration again
   writes nothing. A target that cannot be read is compared with what earlier runs wrote to it;
3. the entries (address, before-image, what will be written) are committed to the journal
   before the writes, so a kill between the two still knows what to put back;
4. the events go to the subscriber's own outbound adapter with its retry policy; each entry ends
   ``written`` or ``failed`` (with the target's reason);
5. the batch's checkpoint and content checksum are committed.

A run killed at any point (SIGKILL included) is resumed by the next ``bus migrate run NAME``: it
reads the source again and skips every record the journal shows as settled with the same
content, and writes the rest. Only one process runs a migration at a time (a lock file).

After the last batch, every record is read back and compared (bus/migrate/verify.py), and the
reconciliation report is written (bus/migrate/report.py).
"""

from __future__ import annotations

__all__ = ["RunOptions", "run_migration"]

import asyncio
import getpass
import hashlib
import json
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from bus.adapter_api import AdapterRegistry, Inbound
from bus.app.migrate.flow import Routed, RowFlow, find_migration, refusal_reason
from bus.app.migrate.sources import count_rows, file_digest, row_json, source_path, source_rows
from bus.config.loader import LoadedConfig
from bus.config.migrations import MigrationConfig
from bus.errors import BusError, PermanentError
from bus.event import Event
from bus.migrate.canonical import differing_fields, digest, overall_checksum, to_typed_json
from bus.migrate.journal import Entry, Journal, RunInfo, migration_lock
from bus.migrate.progress import Progress
from bus.migrate.report import write_report
from bus.migrate.targets import Target, Targets
from bus.migrate.verify import verify_run
from schemas.catalog import SchemaCatalog

log = logging.getLogger("bus.migrate")
RESUMABLE = ("running", "interrupted", "verifying")  # verifying: killed while reading back; resuming writes nothing more
SETTLED = ("written", "unchanged", "failed")


@dataclass
class RunOptions:
    without_rollback: bool = False  # start although some target cannot be rolled back
    again: bool = False  # import a file although a finished run already imported the same bytes
    stream: TextIO | None = None  # where the progress bar goes (default stderr)
    stop_after_batches: int | None = None  # tests and benches: stop (as if interrupted) after this many batches


@dataclass
class _Item:
    where: str
    row: Any
    key: str
    address: Any
    event: Event
    expected: dict[str, Any] | None
    digest: str


def config_digest(loaded: LoadedConfig, migration: MigrationConfig, subscribers: list[str]) -> str:
    """Of what decides what a run writes: the migration, its routes and its targets' configs."""
    wanted = set(migration.routes) or {r.name for r in loaded.hub.routes if r.from_ == migration.emit.schema_}
    parts = {
        "migration": migration.model_dump(mode="json"),
        "routes": [r.model_dump(mode="json", by_alias=True) for r in loaded.hub.routes if r.name in wanted],
        "targets": [c.model_dump(mode="json") for c in loaded.outbound if c.name in subscribers],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _Runner:
    def __init__(self, flow: RowFlow, targets: Targets, journal: Journal, run: RunInfo, *, progress: Progress) -> None:
        self.flow = flow
        self.targets = targets
        self.journal = journal
        self.run = run
        self.progress = progress
        # What a resumed run finds done, and what earlier runs left in targets that cannot be read,
        # are asked of the journal batch by batch: a run's memory does not grow with its rows.
        self.resuming = journal.has_entries(run.id)

    async def batch(self, number: int, rows: list[tuple[str, Any]]) -> None:
        refused: list[tuple[str, str, str, str | None]] = []
        per_target: dict[str, dict[str, _Item]] = {t.name: {} for t in self.targets}
        digests: dict[str, str] = {}
        for where, row in rows:
            self.progress.add("read")
            try:
                routed: Routed = self.flow.route(row, where)
            except Exception as exc:  # noqa: BLE001 - a row that cannot become an event is refused, not fatal
                refused.append((where, "", refusal_reason(exc), row_json(row)))
                self.progress.add("refused")
                continue
            digests[routed.key] = routed.digest
            refused += [(where, "", f"route {route} failed", row_json(row)) for route in routed.failed_routes]
            for subscriber, _, event in routed.deliveries:
                target = self.targets[subscriber]
                try:
                    item = self._item(target, where, row, event)
                except Exception as exc:  # noqa: BLE001 - the target's mapping fails on this event
                    refused.append((where, subscriber, refusal_reason(exc), row_json(row)))
                    continue
                per_target[subscriber][item.key] = item  # a key seen twice in a batch: the last one is what stays
        self.journal.refuse(self.run.id, refused)
        failed = await asyncio.gather(*(self._write(self.targets[name], items, number) for name, items in per_target.items() if items))
        self.journal.refuse(self.run.id, [f for one in failed for f in one])
        batch_sum = overall_checksum(digests)
        self.run.position += len(rows)
        self.journal.checkpoint(
            self.run.id,
            position=self.run.position,
            counts=dict(self.progress.counts),
            batch=number,
            rows=len(rows),
            checksum=batch_sum,
            digests=digests,
        )
        self.progress.show()

    def _item(self, target: Target, where: str, row: Any, event: Event) -> _Item:
        if target.state is None:
            expected: dict[str, Any] | None = event.data
            address: Any = [event.key or event.id]
        else:
            address, expected = target.state.record(event)
        # The key is the address's typed JSON: what the journal keeps as both the entry's key and its address.
        return _Item(where, row, to_typed_json(address), address, event, expected, digest(expected))

    async def _write(self, target: Target, items: dict[str, _Item], batch: int) -> list[tuple[str, str, str, str | None]]:
        todo = []
        settled = self.journal.states(self.run.id, target.name, list(items)) if self.resuming else {}
        for key, item in items.items():
            done = settled.get(key)
            if done is not None and done[0] in SETTLED and done[1] == item.digest:
                self.progress.add("unchanged" if done[0] == "unchanged" else "written" if done[0] == "written" else "failed")
                continue
            todo.append(item)
        if not todo:
            return []
        entries: list[Entry] = []
        if target.state is not None and target.state.verifiable:
            readable: list[tuple[_Item, dict[str, Any] | None]] = []
            refused: list[tuple[str, str, str, str | None]] = []
            for item, before in zip(todo, await target.read_each([i.address for i in todo]), strict=True):
                if isinstance(before, PermanentError):  # the target will not show this record: not written, refused with why
                    refused.append((item.where, target.name, f"reading the record before writing failed: {before}", row_json(item.row)))
                else:
                    readable.append((item, before))
            self.journal.refuse(self.run.id, refused)
            self.progress.add("failed", len(refused))
            todo = [item for item, _ in readable]
            for item, before in readable:
                state_now = "pending" if differing_fields(item.expected, before) else "unchanged"
                image = None if before is None else to_typed_json(before)
                entries.append(Entry(target.name, item.key, item.key, image, to_typed_json(item.expected), item.digest,
                                     state_now, batch=batch))  # fmt: skip
        else:
            earlier = self.journal.delivered_digests(self.run.migration, target.name, [i.key for i in todo], before_run=self.run.id)
            for item in todo:
                same = earlier.get(item.key) == item.digest
                entries.append(Entry(target.name, item.key, item.key, None, to_typed_json(item.expected), item.digest,
                                     "unchanged" if same else "pending", batch=batch))  # fmt: skip
        self.journal.journal(self.run.id, target.name, entries)
        pending = [item for item, entry in zip(todo, entries, strict=True) if entry.state == "pending"]
        self.progress.add("unchanged", len(todo) - len(pending))
        errors = await target.deliver_all([item.event for item in pending])
        written = [item.key for item, error in zip(pending, errors, strict=True) if error is None]
        failed = [(item, error) for item, error in zip(pending, errors, strict=True) if error is not None]
        self.journal.mark(self.run.id, target.name, written, "written")
        if failed:
            self.journal.mark(self.run.id, target.name, [i.key for i, _ in failed], "failed", [e for _, e in failed])
        self.progress.add("written", len(written))
        self.progress.add("failed", len(failed))
        return [(item.where, target.name, error, row_json(item.row)) for item, error in failed]


async def _handover_position(loaded: LoadedConfig, migration: MigrationConfig, registry: AdapterRegistry) -> dict[str, Any] | None:
    """Where the live inbound named by ``then`` will start: its position now, before the run reads."""
    if migration.then is None:
        return None
    config = next(c for c in loaded.inbound if c.name == migration.then)
    cls = registry.get(config.type, "inbound")
    if not isinstance(cls, type) or not issubclass(cls, Inbound) or not cls.handover:
        raise BusError(
            f"migration {migration.name}: then: {migration.then} is a {config.type} inbound, which cannot take over "
            "from a migration (sql_poll and postgres_cdc can)"
        )
    position = await cls.position_now(config)
    # What the position is a position in (a table and its watermark): the cut-over refuses to hand
    # it to an inbound whose config reads another by then, and stamps the checkpoint with it.
    return {"inbound": migration.then, "position": position, "of": cls.position_of(config)}


def _new_run_id(migration: str) -> str:
    return f"{migration}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


async def run_migration(
    loaded: LoadedConfig,
    catalog: SchemaCatalog,
    name: str,
    *,
    base_dir: Path,
    state_dir: Path,
    registry: AdapterRegistry,
    options: RunOptions | None = None,
) -> RunInfo:
    options = options or RunOptions()
    migration = find_migration(loaded, name)
    flow = RowFlow(loaded, catalog, migration)
    if not flow.subscribers:
        raise BusError(f"migration {name} feeds no subscriber: no route of {migration.emit.schema_} sends to an outbound adapter")
    targets = Targets(loaded, migration, flow.subscribers, registry)
    with migration_lock(state_dir, name):
        journal = Journal(state_dir)
        try:
            run = await _open_run(journal, loaded, migration, flow, targets, base_dir=base_dir, options=options)
            # A run happens at one time, its start: a resumed run makes the same events and renders the same records.
            with flow.at(datetime.fromtimestamp(run.started, UTC)):
                return await _execute(journal, run, migration, flow, targets, base_dir=base_dir, state_dir=state_dir, options=options)
        finally:
            journal.close()


async def _open_run(
    journal: Journal,
    loaded: LoadedConfig,
    migration: MigrationConfig,
    flow: RowFlow,
    targets: Targets,
    *,
    base_dir: Path,
    options: RunOptions,
) -> RunInfo:
    digest_now = config_digest(loaded, migration, flow.subscribers)
    source_digest = file_digest(source_path(migration, base_dir)) if migration.source.file is not None else None
    earlier = journal.runs(migration.name)
    unfinished = [r for r in earlier if r.status in RESUMABLE]
    changed = bool(unfinished) and (unfinished[-1].config_digest, unfinished[-1].source_digest) != (digest_now, source_digest)
    if changed and not journal.has_entries(unfinished[-1].id):
        # It stopped before writing anything (a target not set up, a typo in its table): nothing to
        # finish or undo, so the fix (of the config, or of the file) starts a new run.
        journal.set_status(unfinished[-1].id, "abandoned", finished=True)
        log.warning("run %s of %s wrote nothing and its config or file has changed since: set aside", unfinished[-1].id, migration.name)
        unfinished = []
    if unfinished:
        run = unfinished[-1]
        if run.config_digest != digest_now:
            raise BusError(
                f"run {run.id} of {migration.name} did not finish and the config has changed since it started; "
                f"run it to its end with the config it started with, or undo it: bus migrate rollback {run.id}"
            )
        if run.source_digest != source_digest:
            raise BusError(
                f"run {run.id} did not finish and its source file has changed since; undo it first: bus migrate rollback {run.id}"
            )
        log.warning("resuming run %s of %s from row %d", run.id, migration.name, run.position)
        return run
    impossible = {t.name: t.why_no_rollback for t in targets if t.why_no_rollback}
    if impossible and not options.without_rollback:
        lines = "; ".join(f"{name}: {why}" for name, why in impossible.items())
        raise BusError(f"a run of {migration.name} could not be rolled back ({lines}). Start it anyway with --without-rollback")
    if source_digest is not None and not options.again:
        same = [r for r in earlier if r.source_digest == source_digest and r.status == "finished"]
        if same:
            raise BusError(
                f"{source_path(migration, base_dir).name} (sha256 {source_digest[:16]}) was imported by run {same[-1].id} "
                f"on {datetime.fromtimestamp(same[-1].started, UTC):%Y-%m-%d %H:%M} UTC; import it again with --again"
            )
    handover = await _handover_position(loaded, migration, targets.registry)  # before the history is read
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    run = RunInfo(
        _new_run_id(migration.name), migration.name, "running", time.time(), None, os.environ.get("BUS_MIGRATE_USER", user),
        socket.gethostname(), digest_now, source_digest, None, 0,
        options={"without_rollback": options.without_rollback, "again": options.again,
                 "rollback_impossible": impossible, **({"handover": handover} if handover else {})},
    )  # fmt: skip
    journal.new_run(run)
    return run


async def _execute(
    journal: Journal,
    run: RunInfo,
    migration: MigrationConfig,
    flow: RowFlow,
    targets: Targets,
    *,
    base_dir: Path,
    state_dir: Path,
    options: RunOptions,
) -> RunInfo:
    total = await count_rows(migration, base_dir)
    progress = Progress(migration.name, total, stream=options.stream)
    await targets.start()
    journal.set_status(run.id, "running")
    try:
        runner = _Runner(flow, targets, journal, run, progress=progress)
        run.position = 0  # the source is read again from its start; what is settled is skipped
        batch: list[tuple[str, Any]] = []
        number = 0
        async for where, row in source_rows(migration, base_dir):
            batch.append((where, row))
            if len(batch) >= migration.batch_size:
                number += 1
                await runner.batch(number, batch)
                batch = []
                if options.stop_after_batches is not None and number >= options.stop_after_batches:
                    _stop_here()
        if batch:
            number += 1
            await runner.batch(number, batch)
        progress.show(final=True)
        journal.set_status(run.id, "verifying")
        checks = await verify_run(journal, run.id, targets)
    except (KeyboardInterrupt, asyncio.CancelledError):
        journal.set_status(run.id, "interrupted")
        log.warning("run %s of %s interrupted at row %d: run it again to resume", run.id, migration.name, run.position)
        raise
    finally:
        await targets.stop()
    journal.set_status(run.id, "finished", finished=True)
    finished = journal.run(run.id)
    assert finished is not None
    finished.reports = write_report(journal, finished, checks, state_dir, source_checksum=journal.source_checksum(run.id))
    journal.set_reports(run.id, finished.reports)
    return finished


def _stop_here() -> None:
    raise KeyboardInterrupt
