"""``bus migrate plan NAME``: a migration's dry run. Reads the whole source, maps each row with the
migration's ``emit`` and routes it with the hub's own Dispatcher (the path ``bus run`` takes,
without Kafka), and reports what each subscriber would receive, the rows that would be refused
and why (grouped by reason, with samples), and a checksum of the source's content. Nothing is
written anywhere, not even to Kafka; the targets are not contacted.

The content checksum: for each row, sha256 of its mapped event's Avro encoding (one encoding per
value of the schema: the same whatever the source's own types were); overall, sha256 of the
sorted ``key<TAB>digest`` lines, first 16 hex digits. It is the same whatever order the source
returns rows in, and changes with any mapped field's value.

``bus migrate run`` (bus/app/migrate/run.py) writes; this module only looks.
"""

from __future__ import annotations

__all__ = ["MigrationPlan", "plan_migration", "render_plan"]

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bus.app.migrate.flow import RowFlow, find_migration, refusal_reason
from bus.app.migrate.sources import row_json, source_rows
from bus.config.loader import LoadedConfig
from bus.config.migrations import MigrationConfig
from bus.migrate.canonical import checksum_in_order
from bus.migrate.report import MAX_REASONS, OTHER_REASONS, SAMPLES, shown_row
from schemas.catalog import SchemaCatalog


@dataclass
class Refusal:
    count: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class MigrationPlan:
    migration: str
    rows: int = 0
    routed: int = 0  # rows at least one route sent somewhere
    unrouted: int = 0  # rows no route matched
    per_subscriber: Counter[str] = field(default_factory=Counter)
    per_route: Counter[str] = field(default_factory=Counter)
    refused: dict[str, Refusal] = field(default_factory=dict)
    checksum: str = ""
    duplicate_keys: int = 0

    @property
    def refused_rows(self) -> int:
        return sum(r.count for r in self.refused.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "migration": self.migration,
            "rows": self.rows,
            "routed": self.routed,
            "unrouted": self.unrouted,
            "refused": self.refused_rows,
            "duplicate_keys": self.duplicate_keys,
            "per_subscriber": dict(sorted(self.per_subscriber.items())),
            "per_route": dict(sorted(self.per_route.items())),
            "refusals": [{"reason": reason, "count": r.count, "samples": r.samples} for reason, r in self.refused.items()],
            "checksum": self.checksum,
        }


def _sample(where: str, row: Any) -> dict[str, Any]:
    text = row_json(row)
    return {"where": where, "row": None if text is None else json.loads(text)}


def note_refusal(refused: dict[str, Refusal], reason: str, where: str, row: Any) -> None:
    """Count a refused row under its reason, keeping a few samples (at most MAX_REASONS reasons)."""
    refusal = refused.get(reason)
    if refusal is None:
        reason = reason if len(refused) < MAX_REASONS else OTHER_REASONS
        refusal = refused.setdefault(reason, Refusal())
    refusal.count += 1
    if len(refusal.samples) < SAMPLES:  # rows shown per reason, as in the run's report
        refusal.samples.append(_sample(where, row))


class SeenKeys:
    """Each row's key and content digest, for the source checksum and to count keys that come
    twice, kept out of the job's memory: in a private temporary SQLite database, which SQLite keeps
    in memory while it is small and spills to a file of its own in $TMPDIR, unlinked as it is
    made (nothing is left, even after a kill). A plan of millions of rows held them in a dict:
    260 bytes a row. Not the journal: nothing any run or person reads."""

    FLUSH = 2000  # rows added between writes to the database

    def __init__(self) -> None:
        self._db = sqlite3.connect("", isolation_level=None)  # "": a private temporary database
        self._db.execute("PRAGMA cache_size = -32768")  # 32 MiB of pages in memory, the rest on disk
        self._db.execute("CREATE TABLE seen (key TEXT PRIMARY KEY, digest TEXT NOT NULL) WITHOUT ROWID")
        self._db.execute("CREATE TEMP TABLE batch (key TEXT PRIMARY KEY, digest TEXT NOT NULL) WITHOUT ROWID")
        self._batch: dict[str, str] = {}
        self.duplicates = 0

    def add(self, key: str, digest: str) -> None:
        if key in self._batch:
            self.duplicates += 1
        self._batch[key] = digest
        if len(self._batch) >= self.FLUSH:
            self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        db = self._db
        db.execute("BEGIN")
        db.executemany("INSERT INTO batch VALUES (?, ?)", self._batch.items())
        (seen,) = db.execute("SELECT count(*) FROM batch JOIN seen USING (key)").fetchone()
        self.duplicates += seen
        db.execute("INSERT OR REPLACE INTO seen SELECT key, digest FROM batch")
        db.execute("DELETE FROM batch")
        db.execute("COMMIT")
        self._batch = {}

    def checksum(self) -> str:
        """``overall_checksum`` of every key's latest digest (read in key order)."""
        self._flush()
        return checksum_in_order(self._db.execute("SELECT key, digest FROM seen ORDER BY key"))

    def close(self) -> None:
        self._db.close()


async def plan_migration(loaded: LoadedConfig, catalog: SchemaCatalog, name: str, *, base_dir: Path) -> MigrationPlan:
    migration = find_migration(loaded, name)
    flow = RowFlow(loaded, catalog, migration)
    plan = MigrationPlan(migration.name)
    seen = SeenKeys()
    try:
        with flow.at(datetime.now(UTC)):
            await _plan_rows(plan, flow, migration, seen, base_dir)
        plan.checksum = seen.checksum()
        plan.duplicate_keys = seen.duplicates
    finally:
        seen.close()
    return plan


async def _plan_rows(plan: MigrationPlan, flow: RowFlow, migration: MigrationConfig, seen: SeenKeys, base_dir: Path) -> None:
    async for where, row in source_rows(migration, base_dir):
        plan.rows += 1
        try:
            routed = flow.route(row, where)
        except Exception as exc:  # noqa: BLE001 - a row that cannot become an event is reported, not fatal
            note_refusal(plan.refused, refusal_reason(exc), where, row)
            continue
        seen.add(routed.key, routed.digest)
        for route in routed.failed_routes:
            note_refusal(plan.refused, f"route {route} failed", where, row)
        for subscriber, route, _ in routed.deliveries:
            plan.per_subscriber[subscriber] += 1
            plan.per_route[route] += 1
        if routed.deliveries:
            plan.routed += 1
        else:
            plan.unrouted += 1


def render_plan(plan: MigrationPlan) -> str:
    lines = [
        f"migration {plan.migration}: a dry run (nothing was written)",
        f"  rows read {plan.rows}   would be routed {plan.routed}   match no route {plan.unrouted}   refused {plan.refused_rows}",
        f"  source checksum (mapped content) {plan.checksum}" + (f"   duplicate keys {plan.duplicate_keys}" if plan.duplicate_keys else ""),
    ]
    if plan.per_subscriber:
        lines.append("  would write, per subscriber:")
        lines += [f"    {name:<24} {count:>8}" for name, count in sorted(plan.per_subscriber.items())]
    if plan.refused:
        lines.append("  refused, by reason:")
        for reason, refusal in sorted(plan.refused.items(), key=lambda item: -item[1].count):
            lines.append(f"    {refusal.count:>8}  {reason}")
            lines += [f"              e.g. {s['where']}: {shown_row(s['row'])}" for s in refusal.samples]
    return "\n".join(lines)
