"""The ``bus migrate`` commands: plan, run, verify, rollback, runs (wired by bus/app/cli.py)."""

from __future__ import annotations

__all__ = ["migrate_command"]

import argparse
import asyncio
import json
import signal
import sqlite3
import threading
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bus.adapter_api import AdapterRegistry
from bus.config.loader import LoadedConfig
from bus.errors import BusError
from bus.migrate.journal import Journal, RunInfo, state_folder

EXIT_PROBLEMS = 1
T = TypeVar("T")


class _Terminated(Exception):
    """SIGTERM (a Job's pod being stopped) ended a run or rollback between two of its awaits."""


def _stoppable(job: Coroutine[Any, Any, T]) -> T:
    """Run ``job`` so that SIGTERM stops it as Ctrl-C does: cancelled where it waits, its state
    saved (a run says ``interrupted`` and where), the same command resumes it. Without this, a
    Job's pod being stopped ended the process with nothing said."""

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        stopped: list[bool] = []

        def stop() -> None:
            stopped.append(True)
            task.cancel()

        # Only the main thread can take signals (the command is also called from a thread: the tests).
        handled = threading.current_thread() is threading.main_thread()
        if handled:
            loop.add_signal_handler(signal.SIGTERM, stop)
        try:
            return await job
        except asyncio.CancelledError:
            if stopped:
                raise _Terminated from None
            raise
        finally:
            if handled:
                loop.remove_signal_handler(signal.SIGTERM)

    return asyncio.run(main())


def migrate_command(args: argparse.Namespace, load: Callable[[Path, AdapterRegistry], tuple[LoadedConfig, object]]) -> int:
    from schemas.catalog import SchemaCatalog

    registry = AdapterRegistry.from_entry_points()
    loaded, catalog = load(args.config, registry)
    assert isinstance(catalog, SchemaCatalog)
    base_dir = args.config if args.config.is_dir() else args.config.parent
    command = args.migrate_command
    if command == "plan":
        from bus.app.migrate.plan import plan_migration, render_plan

        plan = asyncio.run(plan_migration(loaded, catalog, args.name, base_dir=base_dir))
        print(json.dumps(plan.as_json(), indent=2, ensure_ascii=False) if args.json else render_plan(plan))
        return EXIT_PROBLEMS if plan.refused_rows else 0
    state = state_folder(args.config, args.state)
    try:
        return _with_state(args, loaded, catalog, registry, base_dir=base_dir, state=state)
    except sqlite3.Error as exc:  # a full disk, a journal another tool holds: the run resumes once it is fixed
        raise BusError(f"the migration journal in {state} failed: {exc}; once that is fixed, the same command resumes") from None
    except OSError as exc:
        if exc.filename is None or not str(exc.filename).startswith(str(state)):
            raise
        raise BusError(f"the migration state folder {state} cannot be used: {exc.strerror}; set --state or $BUS_MIGRATE_STATE") from None


def _with_state(
    args: argparse.Namespace, loaded: LoadedConfig, catalog: Any, registry: AdapterRegistry, *, base_dir: Path, state: Path
) -> int:
    command = args.migrate_command
    if command == "runs":
        return _list_runs(state, args.name, as_json=args.json)
    if command == "run":
        from bus.app.migrate.run import RunOptions, run_migration

        if args.metrics_port:
            from prometheus_client import start_http_server

            start_http_server(args.metrics_port)
        options = RunOptions(without_rollback=args.without_rollback, again=args.again)
        try:
            run = _stoppable(
                run_migration(loaded, catalog, args.name, base_dir=base_dir, state_dir=state, registry=registry, options=options)
            )
        except KeyboardInterrupt:
            print("bus: interrupted; run the same command again to resume", flush=True)
            return 130
        except _Terminated:
            print("bus: stopped (SIGTERM); run the same command again to resume", flush=True)
            return 143
        return _print_outcome(run, as_json=args.json)
    if command == "verify":
        return _print_outcome(asyncio.run(_verify(loaded, catalog, args.run, state, registry)), as_json=args.json)
    if command == "rollback":
        from bus.app.migrate.rollback import rollback_run

        try:
            run, outcome = _stoppable(rollback_run(loaded, args.run, state_dir=state, registry=registry, force=args.force))
        except _Terminated:
            print("bus: stopped (SIGTERM); run the same command again to go on", flush=True)
            return 143
        if args.json:
            print(json.dumps({"run": run.as_json(), "rollback": outcome}, indent=2, ensure_ascii=False))
        else:
            print(f"run {run.id}: {run.status}")
            for name, result in outcome.items():
                line = f"  {name}: {result['deleted']:,} deleted, {result['restored']:,} restored"
                if result["left"]:
                    line += f", {result['left']:,} left as they are ({result.get('why')})"
                if result["still_different"]:
                    line += f", {result['still_different']:,} STILL DIFFERENT from before the run"
                print(line)
            print(f"  report: {run.reports.get('html')}")
        return EXIT_PROBLEMS if any(r["still_different"] or r["left"] for r in outcome.values()) else 0
    if command == "cutover":
        from bus.app.kafka_address import kafka_bootstrap
        from bus.app.migrate.cutover import cutover

        done = asyncio.run(
            cutover(
                loaded,
                args.run,
                state_dir=state,
                bootstrap=lambda: kafka_bootstrap(args, loaded.hub),
                registry=registry,
                force=args.force,
            )
        )
        if args.json:
            print(json.dumps(done, indent=2, default=str))
        elif done.get("held_by_source"):
            position = done["position"]
            print(f"{done['inbound']}: replication slot {position['slot']} holds every change since {position['lsn']} "
                  f"(created or found before run {done['run']} read); start the hub with it")  # fmt: skip
        elif done["position"] is None:
            print(f"{done['inbound']} starts from the beginning of its table (it was empty when run {done['run']} began)")
        else:
            print(f"{done['inbound']} will start after {done['position']} (where run {done['run']} began reading)")
        return 0
    raise BusError(f"unknown migrate command {command}")


async def _verify(loaded: LoadedConfig, catalog: Any, run_id: str, state: Path, registry: AdapterRegistry) -> RunInfo:
    from bus.app.migrate.flow import find_migration
    from bus.migrate.report import write_report
    from bus.migrate.targets import Targets
    from bus.migrate.verify import verify_run

    journal = Journal(state)
    try:
        run = journal.run(run_id)
        if run is None:
            raise BusError(f"no run {run_id!r} in {journal.path}")
        if run.status == "rolled_back":
            raise BusError(f"run {run_id} was rolled back: there is nothing of it to verify")
        migration = find_migration(loaded, run.migration)
        targets = Targets(loaded, migration, sorted(journal.count_entries(run_id)), registry)
        await targets.start()
        try:
            checks = await verify_run(journal, run_id, targets)
        finally:
            await targets.stop()
        run.reports = write_report(journal, run, checks, state)
        journal.set_reports(run_id, run.reports)
        run.options["checks"] = {name: check.as_json() for name, check in checks.items()}
        return run
    finally:
        journal.close()


def _print_outcome(run: RunInfo, *, as_json: bool) -> int:
    text = Path(run.reports["json"]).read_text(encoding="utf-8") if run.reports.get("json") else "{}"
    report = json.loads(text)
    if as_json:
        print(text)  # as written: a value that is no Unicode stays a JSON escape (printed, it could not be encoded)
    else:
        source = report.get("source", {})
        print(f"run {run.id}: {run.status}; {source.get('rows', 0):,} rows read, {source.get('refused', 0):,} refused by the "
              f"mapping; source checksum {source.get('checksum')}")  # fmt: skip
        for s in report.get("subscribers", []):
            entries = s.get("entries", {})
            verdict = (
                "unverifiable (no read-back)"
                if not s.get("verifiable")
                else f"{s.get('different', 0):,} record(s) differ"
                if not s.get("checksums_equal")
                else "checksums equal"
                if s.get("records")
                else "nothing it holds from this run to compare"
            )
            print(f"  {s['subscriber']}: {entries.get('written', 0):,} written, {entries.get('unchanged', 0):,} unchanged, "
                  f"{s.get('refused', 0):,} refused by the target; target {s.get('target_checksum') or '-'}: {verdict}")  # fmt: skip
            for d in s.get("differences", [])[:10]:
                fields = ", ".join(f"{k}: expected {v['expected']!r}, holds {v['actual']!r}" for k, v in d["fields"].items())
                print(f"      {d['key']}: {fields}")
        print(f"  report: {run.reports.get('html')}")
    # Rows refused (by the mapping, or by a target, before or at the write), records that differ or failed.
    problems = bool(report.get("refusals")) or any(
        s.get("different") or s.get("entries", {}).get("failed") for s in report.get("subscribers", [])
    )
    return EXIT_PROBLEMS if problems else 0


def _list_runs(state: Path, name: str | None, *, as_json: bool) -> int:
    if not (state / "journal.sqlite").exists():
        print(f"no migration has run with the journal in {state}")
        return 0
    journal = Journal(state)
    try:
        runs = journal.runs(name)
    finally:
        journal.close()
    if as_json:
        print(json.dumps([r.as_json() for r in runs], indent=2))
        return 0
    for r in runs:
        started = datetime.fromtimestamp(r.started, UTC).strftime("%Y-%m-%d %H:%M")
        counts = r.counts
        print(f"{r.id:<48} {r.status:<12} {started} UTC by {r.user:<10} rows {r.position:>9,}  written {counts.get('written', 0):>9,}"
              f"  refused {counts.get('refused', 0):>6,}")  # fmt: skip
    return 0
