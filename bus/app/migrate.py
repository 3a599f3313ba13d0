"""``bus migrate plan NAME``: a migration's dry run. Reads the whole source, maps each row with the
migration's ``emit`` and routes it with the hub's own Dispatcher (the path ``bus run`` takes,
without Kafka), and reports what each subscriber would receive, the rows that would be refused
and why (grouped by reason, with samples), and a checksum of the source's content. Nothing is
written anywhere, not even to Kafka; the targets are not contacted.

The content checksum: for each row, sha256 of the canonical JSON (sorted keys) of its mapped
event; overall, sha256 of the sorted ``key<TAB>digest`` lines, first 16 hex digits. It is the
same whatever order the source returns rows in, and changes with any mapped field's value.

Not built yet (issue 23): ``run`` (resumable, with progress), target read-back checksums,
rollback, idempotent re-runs by file digest, the reconciliation report, the cut-over to live.
"""

from __future__ import annotations

__all__ = ["MigrationPlan", "plan_migration", "render_plan"]

import csv
import hashlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bus.app.route_tests import RouteTester
from bus.config.loader import LoadedConfig
from bus.config.migrations import MigrationConfig
from bus.errors import BusError, EventRejected
from bus.jsontext import dumps as json_dumps
from bus.mapping import Emitter
from schemas.catalog import SchemaCatalog

MAX_SAMPLES = 3  # rows shown per refusal reason
MAX_REASONS = 50  # distinct reasons kept; the rest are counted under one


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


async def _file_rows(config: MigrationConfig, base_dir: Path) -> AsyncIterator[tuple[str, Any]]:
    """(where, row) per line of a CSV or JSON Lines file; a line that is not JSON: (where, ValueError)."""
    source = config.source.file
    assert source is not None
    path = source.path if source.path.is_absolute() else base_dir / source.path
    kind = source.format or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    try:
        with path.open(encoding=source.encoding, newline="") as handle:
            if kind == "csv":
                for line, row in enumerate(csv.DictReader(handle), start=2):
                    yield f"{path.name}:{line}", row
                return
            for line, text in enumerate(handle, start=1):
                if text.strip():
                    try:
                        yield f"{path.name}:{line}", json.loads(text)
                    except ValueError as exc:
                        yield f"{path.name}:{line}", ValueError(f"not JSON: {exc}")
    except OSError as exc:
        raise BusError(f"migration {config.name}: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:  # the whole file is in another encoding: say which setting to change
        raise BusError(
            f"migration {config.name}: {path} is not {source.encoding} text (byte {exc.start}: {exc.reason}); "
            "set source.file.encoding (e.g. latin-1)"
        ) from None


async def _sql_rows(config: MigrationConfig) -> AsyncIterator[tuple[str, Any]]:
    """Every row of the table or query, through a server-side cursor (batch_size at a time)."""
    from adapters.sql.pool import close_pool, is_postgres, open_pool

    source = config.source.sql
    assert source is not None
    dsn = source.dsn.get_secret_value()
    query = source.query or f"SELECT * FROM {source.table}"  # noqa: S608 - the table name matches ^[A-Za-z_][A-Za-z0-9_.]*$
    pool = await open_pool(dsn, 1, what=f"migration {config.name}")
    n = 0
    try:
        if is_postgres(dsn):
            async with pool.acquire() as conn, conn.transaction(readonly=True):
                async for record in conn.cursor(query, prefetch=source.batch_size):
                    n += 1
                    yield f"row {n}", dict(record)
        else:
            import aiomysql

            async with pool.acquire() as conn, conn.cursor(aiomysql.SSDictCursor) as cursor:
                await cursor.execute(query)
                while rows := await cursor.fetchmany(source.batch_size):
                    for row in rows:
                        n += 1
                        yield f"row {n}", row
    finally:
        await close_pool(pool, dsn)


def _row_or_raise(row: Any) -> Any:
    """A line of a file that could not be read arrives as its error: refused like a bad row."""
    if isinstance(row, Exception):
        raise row
    return row


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, (EventRejected, ValueError)) else f"{type(exc).__name__}: {exc}"


async def plan_migration(loaded: LoadedConfig, catalog: SchemaCatalog, name: str, *, base_dir: Path) -> MigrationPlan:
    migration = next((m for m in loaded.hub.migrations if m.name == name), None)
    if migration is None:
        known = ", ".join(m.name for m in loaded.hub.migrations) or "none"
        raise BusError(f"no migration named {name!r} in the config (migrations: {known})")
    tester = RouteTester(loaded, catalog)  # the hub's codec, router and Dispatcher, without Kafka
    wanted = set(migration.routes) or {r.name for r in loaded.hub.routes if r.from_ == migration.emit.schema_}
    emitter = Emitter(migration.emit, source=f"/migration/{migration.name}")
    plan = MigrationPlan(migration.name)
    digests: dict[str, str] = {}
    rows = _file_rows(migration, base_dir) if migration.source.file is not None else _sql_rows(migration)
    async for where, row in rows:
        plan.rows += 1
        try:
            event = emitter.build(_row_or_raise(row))
            tester.codec.validate(event.schema, event.data)
            sends = tester.dispatcher.plan(
                event.key.encode() if event.key is not None else None, tester.codec.encode(event.schema, event.data), event.headers(), where
            )
        except Exception as exc:  # noqa: BLE001 - a row that cannot become an event is reported, not fatal
            refusal = plan.refused.get(reason := _reason(exc))
            if refusal is None:
                reason = reason if len(plan.refused) < MAX_REASONS else "other reasons (more than 50 distinct ones)"
                refusal = plan.refused.setdefault(reason, Refusal())
            refusal.count += 1
            if len(refusal.samples) < MAX_SAMPLES:
                refusal.samples.append({"where": where, "row": json.loads(json_dumps(row)) if not isinstance(row, Exception) else None})
            continue
        key = event.key if event.key is not None else event.id
        if key in digests:
            plan.duplicate_keys += 1
        digests[key] = hashlib.sha256(json.dumps(json.loads(json_dumps(event.data)), sort_keys=True).encode()).hexdigest()
        went = False
        for send in sends:
            if send.route not in wanted:
                continue
            subscriber = tester.subscriber_of(send.topic)
            if subscriber is not None:
                plan.per_subscriber[subscriber] += 1
                plan.per_route[send.route] += 1
                went = True
            elif send.topic == tester.topics.router_dead_letter:
                refusal = plan.refused.setdefault(f"route {send.route} failed", Refusal())
                refusal.count += 1
                if len(refusal.samples) < MAX_SAMPLES:
                    refusal.samples.append({"where": where, "row": json.loads(json_dumps(row))})
        if went:
            plan.routed += 1
        else:
            plan.unrouted += 1
    overall = hashlib.sha256()
    for key in sorted(digests):
        overall.update(f"{key}\t{digests[key]}\n".encode())
    plan.checksum = overall.hexdigest()[:16]
    return plan


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
            lines += [f"              e.g. {s['where']}: {json.dumps(s['row'], ensure_ascii=False)[:160]}" for s in refusal.samples]
    return "\n".join(lines)
