"""`bus migrate run` from a CSV export into a PostgreSQL table (numeric and timestamp columns, read
back and restored with their own types) and a file outbound (a target that cannot be read back
or restored: what is written is written).

- a run that could not be rolled back is refused unless the user says so, naming the target;
- the same file (by digest) is not imported twice unless asked, and when asked nothing is
  written again, to either target (the readable one holds it; the other got it from the earlier run);
- rollback restores the PostgreSQL rows exactly (values with their types), names the records
  it cannot take back from the file target, and says so with its exit code;
- one process per migration: a second one is refused while the first holds the migration."""

from __future__ import annotations

import asyncio
import csv
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from bus.app.cli import main
from bus.errors import BusError
from bus.migrate.journal import migration_lock
from tests.conftest import require_service
from tests.support.documents import DocumentService

DSN = "postgresql://postgres@127.0.0.1:5432/test"
ROWS = 300


def write_export(path: Path) -> None:
    with path.open("w", newline="", encoding="latin-1") as handle:  # an old system's export
        writer = csv.writer(handle)
        writer.writerow(["ref", "amount", "currency", "customer", "paid"])
        for i in range(ROWS):
            writer.writerow([f"F-{i:04d}", f"{i}.{i % 100:02d}", "eur", f"Société {i % 7}", f"2024-03-{1 + i % 28:02d}T10:00:00+02:00"])


def write_config(tmp_path: Path, table: str) -> Path:
    document = {
        "kafka": {"bootstrap": "127.0.0.1:1", "topic_prefix": f"m{uuid.uuid4().hex[:8]}"},
        "routes": [{"name": "all", "from": "Payment", "to": ["books", "archive"]}],
        "outbound": [
            {
                "name": "books",
                "type": "sql",
                "dsn": DSN,
                "table": table,
                "key": ["ref"],
                "columns": {
                    "ref": "payment_id",
                    "amount": "decimal(amount) / 100",
                    "customer": "customer_id",
                    "paid": "timestamp(description)",
                },
            },
            {"name": "archive", "type": "file", "path": str(tmp_path / "archive")},
        ],
        "migrations": [
            {
                "name": "export",
                "source": {"file": {"path": "export.csv", "encoding": "latin-1"}},
                "emit": {
                    "schema": "Payment",
                    "key": "ref",
                    "map": {
                        "payment_id": "ref",
                        "amount": "minor_units(amount, currency)",
                        "currency": "currency",
                        "customer_id": "customer",
                        "description": "paid",
                    },
                },
                "batch_size": 64,
            }
        ],
    }
    path = tmp_path / "bus.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    return path


def archived(tmp_path: Path) -> int:
    folder = tmp_path / "archive"
    return sum(len(p.read_text().splitlines()) for p in folder.glob("*")) if folder.exists() else 0


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def table_rows(connection: Any, table: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await connection.fetch(f"SELECT ref, amount, customer, paid FROM {table} ORDER BY ref")]


async def test_a_file_is_loaded_once_checked_and_rolled_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import asyncio

    import asyncpg

    table = f"books_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(DSN)
    await connection.execute(f"CREATE TABLE {table} (ref text PRIMARY KEY, amount numeric(12, 2), customer text, paid timestamptz)")
    try:
        await connection.execute(
            f"INSERT INTO {table} VALUES ('F-0005', 99.95, 'Before', '2020-01-01T00:00:00Z'), ('X-1', 1.10, 'Other', NULL)"
        )
        before = await table_rows(connection, table)
        write_export(tmp_path / "export.csv")
        config = str(write_config(tmp_path, table))

        def run(*extra: str) -> tuple[int, str, str]:
            return cli(capsys, "migrate", "run", "export", "-c", config, "--json", *extra)

        code, _, err = await asyncio.to_thread(run)
        assert code == 1 and "archive: a file target cannot be read back or restored" in err and "--without-rollback" in err
        assert archived(tmp_path) == 0 and await table_rows(connection, table) == before  # refused before writing anything

        written_before = REGISTRY.get_sample_value("bus_migration_rows_total", {"migration": "export", "outcome": "written"}) or 0
        code, out, err = await asyncio.to_thread(run, "--without-rollback")
        assert code == 0, err
        written = REGISTRY.get_sample_value("bus_migration_rows_total", {"migration": "export", "outcome": "written"})
        assert written == written_before + 2 * ROWS  # a record per target (what --metrics-port serves)
        report = json.loads(out)
        first = report["run"]
        subscribers = {s["subscriber"]: s for s in report["subscribers"]}
        assert subscribers["books"]["checksums_equal"] and subscribers["books"]["records"] == ROWS
        assert subscribers["archive"]["verifiable"] is False and subscribers["archive"]["target_checksum"] is None
        assert archived(tmp_path) == ROWS
        row = await connection.fetchrow(f"SELECT amount, customer FROM {table} WHERE ref = 'F-0123'")
        assert str(row["amount"]) == "123.23" and row["customer"] == "Société 4"

        # The same bytes again: refused, naming the run that imported them; with --again nothing is written.
        code, _, err = await asyncio.to_thread(run, "--without-rollback")
        assert code == 1 and f"was imported by run {first}" in err and "--again" in err
        code, out, err = await asyncio.to_thread(run, "--without-rollback", "--again")
        assert code == 0, err
        again = {s["subscriber"]: s["entries"] for s in json.loads(out)["subscribers"]}
        assert again == {"books": {"unchanged": ROWS}, "archive": {"unchanged": ROWS}}
        assert archived(tmp_path) == ROWS

        # One process per migration.
        with migration_lock(tmp_path / ".bus-migrate", "export"):
            code, _, err = await asyncio.to_thread(run, "--without-rollback", "--again")
            assert code == 1 and "being run or rolled back by another process" in err

        # Rollback, newest first: the table as it was (numeric and timestamp values included); the
        # archive's records stay, and the exit code says so.
        code, out, _ = await asyncio.to_thread(cli, capsys, "migrate", "runs", "export", "-c", config, "--json")
        second = [r["id"] for r in json.loads(out)][-1]
        code, out, _ = await asyncio.to_thread(cli, capsys, "migrate", "rollback", second, "-c", config)
        assert code == 0, out  # it wrote nothing: nothing to take back, nothing left
        code, out, _ = await asyncio.to_thread(cli, capsys, "migrate", "rollback", first, "-c", config)
        assert code == 1 and f"archive: 0 deleted, 0 restored, {ROWS} left as they are" in out
        assert "books: 299 deleted, 1 restored" in out
        assert await table_rows(connection, table) == before
        code, _, err = await asyncio.to_thread(cli, capsys, "migrate", "rollback", first, "-c", config)
        assert code == 1 and "already rolled back" in err
    finally:
        await connection.execute(f"DROP TABLE IF EXISTS {table}")
        await connection.close()


def test_the_lock_names_its_holder(tmp_path: Path) -> None:
    with migration_lock(tmp_path, "m"), pytest.raises(BusError, match=r"another process \(pid \d+ on "), migration_lock(tmp_path, "m"):
        pass


async def test_a_record_the_target_will_not_show_fails_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An HTTP target that refuses to show one record (400 on its read URL): that record is not
    written and is refused with the target's reason; every other record is loaded and checks out."""
    import asyncio

    service = await DocumentService(refuse=frozenset({"/p/P-7"})).start()
    port, stored = service.port, service.documents
    try:
        (tmp_path / "export.jsonl").write_text("".join(json.dumps({"ref": f"P-{i}", "cents": i}) + "\n" for i in range(20)))
        url = f"http://127.0.0.1:{port}/p/$${{payment_id}}"
        document = {
            "kafka": {"bootstrap": "127.0.0.1:1", "topic_prefix": f"m{uuid.uuid4().hex[:8]}"},
            "routes": [{"name": "all", "from": "Payment", "to": ["crm"]}],
            "outbound": [{"name": "crm", "type": "http", "method": "PUT", "url": url, "delivery": {"max_attempts": 2}}],
            "migrations": [
                {
                    "name": "payments",
                    "source": {"file": {"path": "export.jsonl"}},
                    "emit": {"schema": "Payment", "key": "ref", "map": {"payment_id": "ref", "amount": "cents", "currency": '"eur"'}},
                    "targets": {"crm": {"read": url}},
                }
            ],
        }
        (tmp_path / "bus.yaml").write_text(yaml.safe_dump(document))
        code, out, err = await asyncio.to_thread(cli, capsys, "migrate", "run", "payments", "-c", str(tmp_path / "bus.yaml"), "--json")
        assert code == 1, err  # a record failed: said by the exit code
        report = json.loads(out)
        [crm] = report["subscribers"]
        assert crm["records"] == 19 and crm["checksums_equal"] and crm["entries"] == {"written": 19}
        [refusal] = report["refusals"]
        assert refusal["subscriber"] == "crm" and refusal["count"] == 1 and "record locked by another user" in refusal["reason"]
        assert refusal["samples"][0]["row"]["ref"] == "P-7"
        assert len(stored) == 19 and not any(path.endswith("/P-7") for path in stored)
    finally:
        await service.stop()


async def test_a_row_the_database_refuses_fails_alone_the_rest_in_batches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A SQL target takes a load in transactions of its batch_size; one row its CHECK constraint
    refuses fails alone, with the database's reason, and every other row is written and checks out."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import asyncio

    import asyncpg

    table = f"checked_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(DSN)
    await connection.execute(f"CREATE TABLE {table} (ref text PRIMARY KEY, amount bigint CHECK (amount >= 0))")
    try:
        rows = [{"ref": f"P-{i:03d}", "cents": -5 if i == 137 else i} for i in range(300)]
        (tmp_path / "export.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        document = {
            "kafka": {"bootstrap": "127.0.0.1:1", "topic_prefix": f"m{uuid.uuid4().hex[:8]}"},
            "routes": [{"name": "all", "from": "Payment", "to": ["books"]}],
            "outbound": [
                {
                    "name": "books",
                    "type": "sql",
                    "dsn": DSN,
                    "table": table,
                    "key": ["ref"],
                    "batch_size": 50,
                    "columns": {"ref": "payment_id", "amount": "amount"},
                    "delivery": {"max_attempts": 2},
                },
            ],
            "migrations": [
                {
                    "name": "payments",
                    "source": {"file": {"path": "export.jsonl"}},
                    "emit": {"schema": "Payment", "key": "ref", "map": {"payment_id": "ref", "amount": "cents", "currency": '"eur"'}},
                    "batch_size": 100,
                }
            ],
        }
        (tmp_path / "bus.yaml").write_text(yaml.safe_dump(document))
        code, out, err = await asyncio.to_thread(cli, capsys, "migrate", "run", "payments", "-c", str(tmp_path / "bus.yaml"), "--json")
        assert code == 1, err  # a row failed: said by the exit code
        report = json.loads(out)
        [books] = report["subscribers"]
        assert books["records"] == 299 and books["checksums_equal"] and books["entries"] == {"written": 299, "failed": 1}
        [refusal] = report["refusals"]
        assert refusal["count"] == 1 and "violates check constraint" in refusal["reason"]
        assert refusal["samples"][0]["row"]["ref"] == "P-137"
        stored = {r["ref"]: r["amount"] for r in await connection.fetch(f"SELECT ref, amount FROM {table}")}
        assert stored == {row["ref"]: row["cents"] for row in rows if row["ref"] != "P-137"}
        # Rows written by one transaction share its xmin: five batches of 50, and the other 49 of
        # the batch holding P-137 one at a time.
        assert await connection.fetchval(f"SELECT count(DISTINCT xmin::text) FROM {table}") == 5 + 49
    finally:
        await connection.execute(f"DROP TABLE IF EXISTS {table}")
        await connection.close()


async def test_now_in_a_mapping_is_the_runs_time_so_a_resumed_run_agrees_with_itself(tmp_path: Path) -> None:
    """A `loaded_at: now()` column and an `iso(now())` field: the run renders each record for its
    journal, again to write it, and a resumed run renders it once more. Each read the clock, so
    every row differed from what was journaled (the report named all of them and the exit code
    said failed) and a resumed run wrote every settled row again. Now a run has one time, its start."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import asyncpg

    from bus.app.migrate.run import RunOptions, run_migration
    from tests.support.hub import load

    table = f"stamped_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(DSN)
    await connection.execute(f"CREATE TABLE {table} (ref text PRIMARY KEY, amount bigint, noted text, loaded_at timestamptz, sent text)")
    try:
        (tmp_path / "export.jsonl").write_text("".join(json.dumps({"ref": f"T-{i:03d}", "cents": i}) + "\n" for i in range(120)))
        document = {
            "kafka": {"bootstrap": "127.0.0.1:1", "topic_prefix": f"m{uuid.uuid4().hex[:8]}"},
            "routes": [{"name": "all", "from": "Payment", "to": ["books"]}],
            "outbound": [
                {
                    "name": "books",
                    "type": "sql",
                    "dsn": DSN,
                    "table": table,
                    "key": ["ref"],
                    "columns": {"ref": "payment_id", "amount": "amount", "noted": "description", "loaded_at": "now()", "sent": "$time"},
                },
            ],
            "migrations": [
                {
                    "name": "payments",
                    "source": {"file": {"path": "export.jsonl"}},
                    "emit": {
                        "schema": "Payment",
                        "key": "ref",
                        "map": {"payment_id": "ref", "amount": "cents", "currency": '"eur"', "description": '"moved " + iso(now())'},
                    },
                    "batch_size": 50,
                }
            ],
        }
        (tmp_path / "bus.yaml").write_text(yaml.safe_dump(document))
        loaded, registry, catalog = load(tmp_path / "bus.yaml")
        state = tmp_path / ".bus-migrate"
        with pytest.raises(KeyboardInterrupt):  # stopped after its first batch of 50
            await run_migration(loaded, catalog, "payments", base_dir=tmp_path, state_dir=state, registry=registry,
                                options=RunOptions(stop_after_batches=1))  # fmt: skip
        first = {r["ref"]: r["xmin"] for r in await connection.fetch(f"SELECT ref, xmin::text AS xmin FROM {table}")}
        assert len(first) == 50
        await asyncio.sleep(0.05)  # the clock moves on between the two attempts
        run = await run_migration(loaded, catalog, "payments", base_dir=tmp_path, state_dir=state, registry=registry)
        assert run.status == "finished"
        report = json.loads(Path(run.reports["json"]).read_text())
        [books] = report["subscribers"]
        assert books["differences"] == [] and books["checksums_equal"], books["differences"][:3]
        assert books["records"] == 120
        rows = await connection.fetch(f"SELECT ref, xmin::text AS xmin, noted, loaded_at, sent FROM {table}")
        # The resumed run wrote only the 70 rows the first attempt had not: the 50 settled were the same records.
        assert {r["ref"]: r["xmin"] for r in rows if r["ref"] in first} == first
        started = datetime.fromtimestamp(run.started, UTC)
        assert {r["loaded_at"] for r in rows} == {started}
        stamp = f"{started:%Y-%m-%dT%H:%M:%S}.{started.microsecond // 1000:03d}Z"
        assert {r["noted"] for r in rows} == {f"moved {stamp}"} and {r["sent"] for r in rows} == {stamp}
    finally:
        await connection.execute(f"DROP TABLE IF EXISTS {table}")
        await connection.close()


@pytest.mark.parametrize(
    ("layout", "keeps"),
    [
        pytest.param("as sent", None, id="as-sent"),
        pytest.param(  # Salesforce's layout: milliseconds, an offset without a colon
            "+0000",
            lambda d: {**d, "paid": datetime.fromisoformat(d["paid"]).strftime("%Y-%m-%dT%H:%M:%S.000+0000")},
            id="salesforce-layout",
        ),
        pytest.param(  # Stripe's: seconds since 1970
            "epoch", lambda d: {**d, "paid": int(datetime.fromisoformat(d["paid"]).timestamp())}, id="epoch-seconds"
        ),
    ],
)
async def test_a_time_an_api_keeps_in_its_own_layout_is_the_same_time(
    layout: str, keeps: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An HTTP target answers a time as text, in its own layout, or as epoch seconds, where the run
    meant a time: compared as text, every record was a difference (even an API that keeps the
    hub's own "2024-03-01T08:00:00.000Z"), the report failed, and a second run wrote every record
    again. A time read back where a time was meant is compared as the moment it names."""
    service = await DocumentService(keeps=keeps).start()
    try:
        write_export(tmp_path / "export.csv")
        document = yaml.safe_load(write_config(tmp_path, "unused").read_text())
        document["routes"] = [{"name": "all", "from": "Payment", "to": ["crm"]}]
        url = f"http://127.0.0.1:{service.port}/p/$${{payment_id}}"
        document["outbound"] = [
            {"name": "crm", "type": "http", "method": "PUT", "url": url, "body": {"ref": "payment_id", "paid": "timestamp(description)"}}
        ]
        document["migrations"][0]["targets"] = {"crm": {"read": url}}
        config = tmp_path / "bus.yaml"
        config.write_text(yaml.safe_dump(document, allow_unicode=True))

        code, out, err = await asyncio.to_thread(cli, capsys, "migrate", "run", "export", "-c", str(config), "--json")
        assert code == 0, err
        [crm] = json.loads(out)["subscribers"]
        assert crm["records"] == ROWS and crm["differences"] == [] and crm["checksums_equal"], crm["differences"][:3]
        kept = service.documents["/p/F-0001"]["paid"]
        assert kept == {"as sent": "2024-03-02T08:00:00.000Z", "+0000": "2024-03-02T08:00:00.000+0000", "epoch": 1709366400}[layout]

        writes = sum(service.writes.values())
        code, out, err = await asyncio.to_thread(cli, capsys, "migrate", "run", "export", "-c", str(config), "--json", "--again")
        assert code == 0, err
        assert json.loads(out)["subscribers"][0]["entries"] == {"unchanged": ROWS}
        assert sum(service.writes.values()) == writes  # nothing written again
    finally:
        await service.stop()
