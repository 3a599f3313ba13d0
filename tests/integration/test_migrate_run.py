"""`bus migrate run`, `verify` and `rollback` over real systems: legacy payments in a LATIN1
PostgreSQL table, loaded into a MariaDB table (the sql outbound) and an HTTP service (a stand-in
that stores documents by URL, as a REST API does), both already holding records before the run.

- `plan` writes nothing and predicts exactly the rows that are refused;
- `run` is killed with SIGKILL twice and resumed: it ends with the source and target checksums
  equal for both targets, every key present once, and the refused rows named with their reason;
- a second run writes nothing (every record already holds what it would write);
- a record changed behind the hub's back is named by `verify` with the differing field (the
  report, rendered in headless Chromium, shows it);
- `rollback` leaves both targets exactly as they were before the runs (a checksum of each whole
  target, taken before, is equal after).

BUS_MIGRATE_ROWS sets the size (default 100,000, the acceptance size)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sqlite3
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_service
from tests.integration.test_migrate_plan import latin1_database
from tests.support.documents import DocumentService
from tests.support.tools import ROOT

ROWS = int(os.environ.get("BUS_MIGRATE_ROWS", "100000"))
NAMES = ["Müller & Søn", "Café Zürich", "Ærø Fisk", "Señora Núñez", "Plain Ltd"]  # LATIN1 text, not ASCII
SHOTS = ROOT / "test-artifacts" / "migrate"


def source_rows() -> list[tuple[Any, ...]]:
    """(ref, amount_cents, currency, customer); every 50th has no amount: refused (the schema requires one)."""
    return [
        (f"LEG-{i:06d}", None if i % 50 == 7 else i * 10, "eur" if i % 3 else "usd", f"{NAMES[i % len(NAMES)]} {i % 97}")
        for i in range(ROWS)
    ]


def refused_refs() -> set[str]:
    return {ref for ref, amount, _, _ in source_rows() if amount is None}


@pytest.fixture
async def service() -> AsyncIterator[DocumentService]:
    found = await DocumentService().start()
    try:
        yield found
    finally:
        await found.stop()


def write_config(tmp_path: Path, source_dsn: str, source_table: str, target_table: str, port: int) -> Path:
    document = {
        "kafka": {"bootstrap": "127.0.0.1:1", "topic_prefix": f"m{uuid.uuid4().hex[:8]}"},  # no broker: a migration needs none
        "routes": [
            {"name": "all-to-ledger", "from": "Payment", "to": ["ledger"]},
            {"name": "tenth-to-crm", "from": "Payment", "when": "amount % 100 == 0", "to": ["crm"]},
        ],
        "outbound": [
            {
                "name": "ledger",
                "type": "sql",
                "dsn": "mysql://root@127.0.0.1:3306/test",
                "table": target_table,
                "key": ["payment_id"],
                "columns": {"payment_id": "payment_id", "amount": "amount", "currency": "currency", "customer": "customer_id"},
                "batch_size": 500,
            },
            {
                "name": "crm",
                "type": "http",
                "method": "PUT",
                "url": f"http://127.0.0.1:{port}/payments/$${{payment_id}}",
                "body": {"ref": "payment_id", "amount": "amount", "customer": "customer_id"},
                "delivery": {"concurrency": 32},
            },
        ],
        "migrations": [
            {
                "name": "legacy-payments",
                "source": {"sql": {"dsn": source_dsn, "table": source_table, "batch_size": 2000}},
                "emit": {
                    "schema": "Payment",
                    "key": "ref",
                    "id": '"legacy-" + ref',
                    "map": {"payment_id": "ref", "amount": "amount_cents", "currency": "currency", "customer_id": "customer"},
                },
                "targets": {"crm": {"read": f"http://127.0.0.1:{port}/payments/$${{payment_id}}"}},
                "batch_size": 1000,
            }
        ],
    }
    path = tmp_path / "bus.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    return path


async def mariadb_checksum(table: str) -> tuple[int, str]:
    import aiomysql

    connection = await aiomysql.connect(host="127.0.0.1", port=3306, user="root", db="test", autocommit=True)
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(f"SELECT payment_id, amount, currency, customer FROM {table} ORDER BY payment_id")
            rows = await cursor.fetchall()
    finally:
        connection.close()
    return len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()


async def mariadb(sql: str, *args: Any) -> list[Any]:
    import aiomysql

    connection = await aiomysql.connect(host="127.0.0.1", port=3306, user="root", db="test", autocommit=True, charset="utf8mb4")
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(sql, args)
            return list(await cursor.fetchall())
    finally:
        connection.close()


async def bus(*args: str) -> tuple[int, str]:
    """The CLI in its own process (so it can be killed like a real job)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bus.app.cli", *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode()


async def kill_when(state: Path, rows: int, config: Path) -> None:
    """Start a run and SIGKILL it once the journal's checkpoint has passed ``rows``."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bus.app.cli", "migrate", "run", "legacy-payments", "-c", str(config), "--state", str(state),
        cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(6000):
            await asyncio.sleep(0.05)
            assert process.returncode is None, "the run ended before it could be killed"
            position = 0
            if (state / "journal.sqlite").exists():
                db = sqlite3.connect(f"file:{state / 'journal.sqlite'}?mode=ro", uri=True, timeout=5)
                try:
                    found = db.execute("SELECT max(position) FROM runs WHERE status = 'running'").fetchone()
                    position = found[0] or 0 if found else 0
                except sqlite3.OperationalError:
                    position = 0  # the journal's tables are being created
                finally:
                    db.close()
            if position >= rows:
                break
        else:
            pytest.fail(f"the run did not reach row {rows}")
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        await process.wait()
    assert process.returncode == -signal.SIGKILL


@pytest.mark.timeout(900)  # 100,000 rows through three runs, a verify and two rollbacks: about 80 s alone
async def test_a_load_killed_twice_resumes_checks_out_reports_drift_and_rolls_back(tmp_path: Path, service: DocumentService) -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("MariaDB", "127.0.0.1", 3306)
    import asyncpg

    suffix = uuid.uuid4().hex[:8]
    source_table, target_table = f"legacy_payments_{suffix}", f"ledger_{suffix}"
    dsn = await latin1_database(asyncpg)
    source = await asyncpg.connect(dsn)
    await source.execute(f"CREATE TABLE {source_table} (ref text PRIMARY KEY, amount_cents bigint, currency text, customer text)")
    await source.copy_records_to_table(source_table, records=source_rows())
    await mariadb(
        f"CREATE TABLE {target_table} (payment_id varchar(32) PRIMARY KEY, amount bigint, currency char(3), customer varchar(100))"
        " CHARACTER SET utf8mb4"
    )
    try:
        # What the targets held before: records the load replaces, and records it does not touch.
        before_rows = [(f"LEG-{i:06d}", 1, "old", "Before Ltd") for i in range(0, ROWS, 97)] + [("OTHER-1", 5, "usd", "Untouched")]
        await mariadb(f"INSERT INTO {target_table} VALUES " + ", ".join(["(%s, %s, %s, %s)"] * len(before_rows)), *sum(before_rows, ()))
        for i in range(1, ROWS, 89):
            service.documents[f"/payments/LEG-{i:06d}"] = {
                "ref": f"LEG-{i:06d}",
                "amount": 2,
                "customer": "Before GmbH",
                "stored_by": "stand-in",
            }
        service.documents["/payments/OTHER-2"] = {"ref": "OTHER-2", "amount": 9, "customer": "Untouched", "stored_by": "stand-in"}
        ledger_before, crm_before = await mariadb_checksum(target_table), service.checksum()

        config = write_config(tmp_path, dsn, source_table, target_table, service.port)
        state = tmp_path / "state"
        good = [r for r in source_rows() if r[1] is not None]
        tenth = [r for r in good if r[1] % 100 == 0]  # what the crm route takes: a tenth

        # The dry run: exact prediction, nothing written anywhere (not even the journal).
        code, out = await bus("migrate", "plan", "legacy-payments", "-c", str(config), "--json")
        plan = json.loads(out)
        assert code == 1 and plan["refused"] == len(refused_refs())
        assert {s["row"]["ref"] for r in plan["refusals"] for s in r["samples"]} <= refused_refs()
        assert plan["per_subscriber"] == {"ledger": len(good), "crm": len(tenth)}
        assert await mariadb_checksum(target_table) == ledger_before and service.checksum() == crm_before
        assert service.calls == Counter() and not state.exists()

        # The load, killed twice (SIGKILL) and resumed each time.
        await kill_when(state, ROWS // 5, config)
        await kill_when(state, ROWS // 2, config)
        code, out = await bus("migrate", "run", "legacy-payments", "-c", str(config), "--state", str(state), "--json")
        report = json.loads(out[out.index("{") :])
        assert code == 1, out[-2000:]  # rows were refused: said by the exit code
        run_id = report["run"]
        assert report["status"] == "finished" and report["source"]["rows"] == ROWS
        assert report["source"]["refused"] == len(refused_refs())
        [refusal] = report["refusals"]
        assert refusal["count"] == len(refused_refs()) and "amount" in refusal["reason"]
        by_name = {s["subscriber"]: s for s in report["subscribers"]}
        for name, meant in (("ledger", good), ("crm", tenth)):
            check = by_name[name]
            assert check["records"] == len(meant) and check["checksums_equal"], check
            assert check["source_checksum"] == check["target_checksum"] and check["different"] == 0
            assert check["batches_differing"] == [] and len(check["batches"]) == -(-ROWS // 1000)  # checksums per batch too
        # Every key present once, with its content (LATIN1 text arrived as the same characters).
        held = dict(await mariadb(f"SELECT payment_id, customer FROM {target_table}"))
        refused = refused_refs()
        assert {ref: name for ref, _, _, name in good} == {k: v for k, v in held.items() if k.startswith("LEG-") and k not in refused}
        assert {f"/payments/{r[0]}" for r in tenth} <= set(service.documents)
        assert service.documents[f"/payments/{tenth[1][0]}"]["customer"] == tenth[1][3]

        # Run again: nothing is written (each record already holds what it would write).
        puts = service.calls["PUT"]
        code, out = await bus("migrate", "run", "legacy-payments", "-c", str(config), "--state", str(state), "--json")
        second = json.loads(out[out.index("{") :])
        assert {s["subscriber"]: s["entries"] for s in second["subscribers"]} == {
            "ledger": {"unchanged": len(good)},
            "crm": {"unchanged": len(tenth)},
        }
        assert service.calls["PUT"] == puts

        # Changed behind the hub's back: named by key with the differing field.
        drifted = good[3][0]
        await mariadb(f"UPDATE {target_table} SET amount = amount + 1 WHERE payment_id = %s", drifted)
        service.documents[f"/payments/{tenth[5][0]}"]["customer"] = tenth[5][3][:4]  # truncated
        code, out = await bus("migrate", "verify", run_id, "-c", str(config), "--state", str(state), "--json")
        verified = json.loads(out[out.index("{") :])
        assert code == 1
        by_name = {s["subscriber"]: s for s in verified["subscribers"]}
        assert by_name["ledger"]["differences"] == [
            {"key": drifted, "fields": {"amount": {"expected": str(good[3][1]), "actual": str(good[3][1] + 1)}}}
        ]
        assert by_name["crm"]["differences"] == [
            {"key": f"http://127.0.0.1:{service.port}/payments/{tenth[5][0]}",
             "fields": {"customer": {"expected": tenth[5][3], "actual": tenth[5][3][:4]}}}
        ]  # fmt: skip
        assert by_name["ledger"]["source_checksum"] != by_name["ledger"]["target_checksum"]
        assert by_name["ledger"]["batches_differing"] == [1] and by_name["crm"]["batches_differing"] == [1]  # rows 3 and 500
        await render(run_id, state)

        # Rollback, newest run first (the older one refuses while a newer one stands).
        code, out = await bus("migrate", "rollback", run_id, "-c", str(config), "--state", str(state))
        assert code == 1 and "roll it back first" in out
        [second_id] = [r for r in await runs(config, state) if r != run_id]
        code, out = await bus("migrate", "rollback", second_id, "-c", str(config), "--state", str(state))
        assert code == 0, out
        code, out = await bus("migrate", "rollback", run_id, "-c", str(config), "--state", str(state), "--json")
        outcome = json.loads(out[out.index("{") :])["rollback"]
        assert code == 0, out
        replaced_ledger = sum(1 for i in range(0, ROWS, 97) if i % 50 != 7)
        assert outcome["ledger"]["restored"] == replaced_ledger and outcome["ledger"]["deleted"] == len(good) - replaced_ledger
        assert outcome["ledger"]["still_different"] == 0 and outcome["crm"]["still_different"] == 0
        assert await mariadb_checksum(target_table) == ledger_before
        assert service.checksum() == crm_before
    finally:
        await source.execute(f"DROP TABLE IF EXISTS {source_table}")
        await source.close()
        await mariadb(f"DROP TABLE IF EXISTS {target_table}")


async def runs(config: Path, state: Path) -> list[str]:
    code, out = await bus("migrate", "runs", "legacy-payments", "-c", str(config), "--state", str(state), "--json")
    assert code == 0, out
    return [r["id"] for r in json.loads(out)]


async def render(run_id: str, state: Path) -> None:
    """The HTML report in headless Chromium: the drifted records are shown; a screenshot is kept."""
    from playwright.async_api import async_playwright

    from tests.support.tools import tool

    page_path = state / "reports" / f"{run_id}.html"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=tool("chromium"), args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(page_path.as_uri())
            assert await page.locator("#status").inner_text() == "finished"
            rows = await page.locator("#differences tr").all_inner_texts()
            assert len(rows) == 3 and any("amount" in r for r in rows) and any("customer" in r for r in rows)
            assert (await page.locator("#subscribers").inner_text()).count("1 differ") == 2  # one record in each target
            SHOTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SHOTS / "report-with-drift.png"), full_page=True)
        finally:
            await browser.close()
