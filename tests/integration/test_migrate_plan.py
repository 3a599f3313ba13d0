"""`bus migrate plan`: a migration's dry run over real sources (a table of a LATIN1 PostgreSQL database, a MariaDB
query, a CSV export of the same rows). It predicts exactly what each subscriber would receive and
which rows would be refused and why, writes nothing (no Kafka: the config's broker does not even
exist; the targets are not contacted), and its content checksum is the same for the same mapped
rows whatever the source and order, and different when one value differs."""

from __future__ import annotations

import contextlib
import csv
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from bus.app.cli import main
from tests.conftest import require_service

ROWS = 600


def rows() -> list[dict[str, Any]]:
    """Payments of a legacy system: every 50th has no amount (refused: the schema requires one)."""
    found = []
    for i in range(ROWS):
        found.append(
            {
                "ref": f"LEG-{i:05d}",
                "amount_cents": None if i % 50 == 7 else i * 10,
                "currency": "eur" if i % 3 else "usd",
                "customer": f"Müller & Søn {i % 40}",  # not ASCII: the export's encoding must hold
            }
        )
    return found


def config(tmp_path: Path, source: dict[str, Any], amount: str = "amount_cents") -> Path:
    document = {
        # No broker runs at this address: a plan that touched Kafka would fail.
        "kafka": {"bootstrap": "127.0.0.1:1", "topic_prefix": f"m{uuid.uuid4().hex[:8]}"},
        "routes": [
            {"name": "large-to-erp", "from": "Payment", "when": "amount >= 3000", "to": ["erp"]},
            {"name": "all-to-crm", "from": "Payment", "to": ["crm"]},
        ],
        "outbound": [
            {"name": "erp", "type": "http", "url": "http://127.0.0.1:1/erp"},
            {"name": "crm", "type": "http", "url": "http://127.0.0.1:1/crm"},
        ],
        "migrations": [
            {
                "name": "legacy-payments",
                "source": source,
                "emit": {
                    "schema": "Payment",
                    "key": "ref",
                    "id": '"legacy-" + ref',
                    "map": {"payment_id": "ref", "amount": amount, "currency": "currency", "customer_id": "customer"},
                },
            }
        ],
    }
    path = tmp_path / "bus.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    return path


def expected() -> dict[str, Any]:
    good = [r for r in rows() if r["amount_cents"] is not None]
    return {"crm": len(good), "erp": sum(1 for r in good if r["amount_cents"] >= 3000), "refused": ROWS - len(good)}


def plan(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main(["migrate", "plan", "legacy-payments", "-c", str(path), "--json"])
    return code, json.loads(capsys.readouterr().out)


def check(found: dict[str, Any]) -> None:
    want = expected()
    assert found["rows"] == ROWS
    assert found["per_subscriber"] == {"crm": want["crm"], "erp": want["erp"]}
    assert found["refused"] == want["refused"] and found["routed"] == want["crm"] and found["unrouted"] == 0
    [refusal] = found["refusals"]
    assert refusal["count"] == want["refused"] and "amount" in refusal["reason"]
    refused = {r["ref"] for r in rows() if r["amount_cents"] is None}
    assert len(refusal["samples"]) == 3 and {s["row"]["ref"] for s in refusal["samples"]} <= refused  # rows that were refused


async def latin1_database(asyncpg: Any) -> str:
    """A LATIN1 database, as old systems have them (the driver reads it as UTF-8 text)."""
    admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = 'legacy_latin1'"):
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):  # another test worker made it meanwhile
                await admin.execute("CREATE DATABASE legacy_latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    finally:
        await admin.close()
    return "postgresql://postgres@127.0.0.1:5432/legacy_latin1"


async def test_a_postgresql_table_is_planned_exactly_and_nothing_is_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import asyncpg

    table = f"legacy_payments_{uuid.uuid4().hex[:8]}"
    dsn = await latin1_database(asyncpg)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f"CREATE TABLE {table} (ref text PRIMARY KEY, amount_cents bigint, currency text, customer text)")
        await connection.copy_records_to_table(table, records=[tuple(r.values()) for r in reversed(rows())])
        code, from_sql = await _in_thread(plan, capsys, config(tmp_path, {"sql": {"dsn": dsn, "table": table, "batch_size": 64}}))
        assert code == 1  # rows would be refused
        check(from_sql)
        assert await connection.fetchval(f"SELECT count(*) FROM {table}") == ROWS  # the source as it was

        # The same rows as a CSV export, in another order: the same prediction, the same checksum.
        export = tmp_path / "export.csv"
        with export.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows()[0]))
            writer.writeheader()
            writer.writerows(rows())
        csv_config = config(tmp_path, {"file": {"path": "export.csv"}}, amount="int(amount_cents)")
        code, from_csv = await _in_thread(plan, capsys, csv_config)
        check(from_csv)
        assert from_csv["checksum"] == from_sql["checksum"]

        # One value changed at the source: the checksum says so.
        await connection.execute(f"UPDATE {table} SET currency = 'gbp' WHERE ref = 'LEG-00100'")
        _, changed = await _in_thread(plan, capsys, config(tmp_path, {"sql": {"dsn": dsn, "query": f"SELECT * FROM {table}"}}))
        assert changed["rows"] == ROWS and changed["checksum"] != from_sql["checksum"]
    finally:
        await connection.execute(f"DROP TABLE IF EXISTS {table}")
        await connection.close()


async def test_a_mariadb_query_with_the_sources_own_filter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_service("MariaDB", "127.0.0.1", 3306)
    import aiomysql

    table = f"legacy_payments_{uuid.uuid4().hex[:8]}"
    connection = await aiomysql.connect(host="127.0.0.1", port=3306, user="root", password="", db="test", autocommit=True)
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(
                f"CREATE TABLE {table} (ref VARCHAR(20) PRIMARY KEY, amount_cents BIGINT NULL, currency VARCHAR(3), customer VARCHAR(64)) "
                "CHARACTER SET utf8mb4"
            )
            await cursor.executemany(f"INSERT INTO {table} VALUES (%s, %s, %s, %s)", [tuple(r.values()) for r in rows()])
        dsn = "mysql://root@127.0.0.1:3306/test"
        filtered = config(tmp_path, {"sql": {"dsn": dsn, "query": f"SELECT * FROM {table} WHERE currency = 'usd'"}})
        code, found = await _in_thread(plan, capsys, filtered)
        usd = [r for r in rows() if r["currency"] == "usd"]
        good = [r for r in usd if r["amount_cents"] is not None]
        assert found["rows"] == len(usd) and found["refused"] == len(usd) - len(good)
        assert found["per_subscriber"] == {"crm": len(good), "erp": sum(1 for r in good if r["amount_cents"] >= 3000)}
        assert code == 1
    finally:
        async with connection.cursor() as cursor:
            await cursor.execute(f"DROP TABLE IF EXISTS {table}")
        connection.close()


def test_a_migration_naming_a_missing_route_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = config(tmp_path, {"file": {"path": "export.csv"}})
    document = yaml.safe_load(path.read_text())
    document["migrations"][0]["routes"] = ["all-to-crm", "al-to-erp"]
    path.write_text(yaml.safe_dump(document))
    assert main(["validate", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "migrations[0].routes[1]" in err and "no route named 'al-to-erp'" in err


async def _in_thread(fn: Any, *args: Any) -> Any:
    import asyncio

    return await asyncio.to_thread(fn, *args)


def test_a_migrations_mapping_is_checked_against_its_schema_like_an_inbounds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A typo in a migration's mapping is a config error at load, not a silent null in every row."""
    path = config(tmp_path, {"file": {"path": "export.csv"}})
    document = yaml.safe_load(path.read_text())
    emit = document["migrations"][0]["emit"]
    emit["map"]["amonut"] = emit["map"].pop("amount")  # the schema has amount, required
    emit["key"] = "upper(ref, 3)"  # a function called wrongly
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    assert main(["validate", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "migrations[0].emit.map.amonut: schema Payment has no field 'amonut'; did you mean 'amount'?" in err
    assert "migrations[0].emit.map: schema Payment.amount has no default and is not mapped" in err
    assert "migrations[0].emit.key: upper() takes 1 argument(s), given 2" in err


def test_a_file_that_cannot_be_read_is_said_plainly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = config(tmp_path, {"file": {"path": "nowhere.csv"}})
    assert main(["migrate", "plan", "legacy-payments", "-c", str(missing)]) == 1
    assert "migration legacy-payments: cannot read" in capsys.readouterr().err
    (tmp_path / "export.csv").write_bytes("ref,amount_cents,currency,customer\nLEG-1,10,eur,M\xfcller\n".encode("latin-1"))
    utf8 = config(tmp_path, {"file": {"path": "export.csv"}}, amount="int(amount_cents)")
    assert main(["migrate", "plan", "legacy-payments", "-c", str(utf8)]) == 1  # the line is refused, with what to change
    out = capsys.readouterr().out
    assert "1  not utf-8 text" in out and "set source.file.encoding (e.g. latin-1)" in out and "M\\xfcller" in out
    latin = config(tmp_path, {"file": {"path": "export.csv", "encoding": "latin-1"}}, amount="int(amount_cents)")
    capsys.readouterr()
    assert main(["migrate", "plan", "legacy-payments", "-c", str(latin), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["per_subscriber"] == {"crm": 1}
