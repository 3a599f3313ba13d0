"""`bus migrate` over an export as real ones come, into a target that answers what it likes; and a
source query that would write, which never does.

The export is Excel's "CSV UTF-8" (a byte order mark first) with what legacy exports hold: a
quoted field over two lines, a 300 KB notes field, blank lines, a record with an unquoted comma
(one field too many), a record cut short, and lines in another encoding (latin-1 bytes in a UTF-8
file). The HTTP target already holds one record whose text is no Unicode (a lone surrogate, as a
JSON ``"\\ud800"`` escape), and answers another read with one.

- the plan names every refused record by its line and reason, exactly as the run then refuses them;
- the run loads every other record, writes its report (JSON and HTML), and is not stopped by any
  of them; nothing is half-written;
- rollback puts the record that held the lone surrogate back as it was, to the character.

A source query is refused at `bus validate` unless it is a SELECT; under it, both databases read
in a read-only transaction, so a query that writes anyway (a PostgreSQL CTE, a MariaDB table
without transactions) fails without changing a row.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from pydantic import SecretStr

from bus.app.cli import main
from bus.app.migrate.sources import source_rows
from bus.config.migrations import MigrationConfig, SqlSource
from examples.kit.standin import serve
from tests.conftest import require_service
from tests.support.documents import DocumentService

BOM = b"\xef\xbb\xbf"
NOTES = "n" * 300_000  # over the csv module's default field limit (128 KiB)


def write_export(path: Path) -> dict[str, str]:
    """The export's bytes; returns line -> the reason its record is refused."""
    lines = [
        b"ref,amount,currency,customer,notes",
        b"H-0001,1.00,eur,Plain Ltd,",  # line 2
        b'H-0002,2.00,eur,"Two-line, Inc",' + b'"first line',  # line 3: the notes field runs over two lines
        b'second line"',  # line 4
        b"H-0003,3.00,eur,Replaced Ltd,ok",  # line 5: the target holds a broken record here before the run
        b"",  # line 6: blank
        b"H-0004,4.00,eur,M\xfcller, S\xf8n,",  # line 7: latin-1 bytes (and an unquoted comma)
        b"H-0005,5.00,eur,Comma, Unquoted,",  # line 8: one field too many
        b"H-0006,6.00",  # line 9: cut short
        b"H-0007,7.00,eur,Long Notes," + NOTES.encode(),  # line 10
        b"H-0008,8.00,eur,Caf\xc3\xa9 Z\xc3\xbcrich,",  # line 11: UTF-8, fine
        b"H-0009,9.00,eur,Answers Oddly,",  # line 12: the target answers its read with a lone surrogate
    ]
    path.write_bytes(BOM + b"\r\n".join(lines) + b"\r\n")
    return {
        "export.csv:7": "not utf-8 text",
        "export.csv:8": "6 fields where the header has 5",
        "export.csv:9": "2 fields where the header has 5",
    }


class OddService:
    """Stores JSON documents by URL; one record (H-0003) holds a lone surrogate from before the
    run, and the read of H-0009 answers one in a field of its own."""

    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {"/p/H-0003": {"ref": "H-0003", "amount": 1, "customer": "Broken \ud800 Ltd"}}
        self.writes = 0

    async def handle(self, request: web.Request) -> web.Response:
        if request.method == "PUT":
            self.writes += 1
            self.documents[request.path] = await request.json()
            return web.json_response({})
        if request.method == "DELETE":
            return web.json_response({}, status=200 if self.documents.pop(request.path, None) else 404)
        found = self.documents.get(request.path)
        if found is None:
            return web.json_response({"error": "not found"}, status=404)
        extra = {"etag": "\udc00"} if request.path.endswith("H-0009") else {}
        return web.json_response({**found, **extra})  # json.dumps escapes the surrogate as \udc00


def write_config(tmp_path: Path, port: int) -> Path:
    url = f"http://127.0.0.1:{port}/p/$${{payment_id}}"
    document = {
        "kafka": {"bootstrap": "127.0.0.1:1", "topic_prefix": f"h{uuid.uuid4().hex[:8]}"},
        "routes": [{"name": "all", "from": "Payment", "to": ["crm"]}],
        "outbound": [
            {
                "name": "crm",
                "type": "http",
                "method": "PUT",
                "url": url,
                "body": {"ref": "payment_id", "amount": "amount", "customer": "customer_id"},
            }
        ],
        "migrations": [
            {
                "name": "export",
                "source": {"file": {"path": "export.csv"}},
                "emit": {
                    "schema": "Payment",
                    "key": "ref",
                    "map": {
                        "payment_id": "ref",
                        "amount": "minor_units(amount, currency)",
                        "currency": "currency",
                        "customer_id": "customer",
                    },
                },
                "targets": {"crm": {"read": url}},
                "batch_size": 4,
            }
        ],
    }
    path = tmp_path / "bus.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_a_hostile_export_into_an_odd_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    service = OddService()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", service.handle)
    runner, port = await serve(app)
    try:
        refused = write_export(tmp_path / "export.csv")
        config = str(write_config(tmp_path, port))
        before = json.dumps(service.documents, sort_keys=True)

        code, out, err = await asyncio.to_thread(cli, capsys, "migrate", "plan", "export", "-c", config, "--json")
        plan = json.loads(out)
        assert code == 1, err
        assert service.writes == 0
        planned = {s["where"]: r["reason"] for r in plan["refusals"] for s in r["samples"]}
        assert {where: reason.split(" (")[0] for where, reason in planned.items()} == refused
        assert plan["rows"] == 9 and plan["per_subscriber"] == {"crm": 6}
        latin = next(r for r in plan["refusals"] if r["reason"].startswith("not utf-8"))
        assert latin["samples"][0]["row"] == "H-0004,4.00,eur,M\\xfcller, S\\xf8n,"  # the bytes shown, not lost

        code, out, err = await asyncio.to_thread(cli, capsys, "migrate", "run", "export", "-c", config, "--json")
        report = json.loads(out)
        assert code == 1, err  # rows were refused
        assert report["status"] == "finished"
        ran = {s["where"]: g["reason"].split(" (")[0] for g in report["refusals"] for s in g["samples"]}
        assert ran == refused
        html = (tmp_path / ".bus-migrate" / "reports" / f"{report['run']}.html").read_text(encoding="utf-8")
        assert html.count("export.csv:") == 3
        held = {path.rsplit("/", 1)[1] for path in service.documents}
        assert held == {f"H-000{i}" for i in (1, 2, 3, 7, 8, 9)}
        assert service.documents["/p/H-0002"]["customer"] == "Two-line, Inc"
        assert service.documents["/p/H-0008"]["customer"] == "Café Zürich"
        assert service.documents["/p/H-0003"]["customer"] == "Replaced Ltd"
        crm = next(s for s in report["subscribers"] if s["subscriber"] == "crm")
        assert crm["checksums_equal"] and crm["different"] == 0, crm  # the odd field is the target's own, not ours

        code, out, err = await asyncio.to_thread(cli, capsys, "migrate", "rollback", report["run"], "-c", config)
        assert code == 0, out + err
        assert json.dumps(service.documents, sort_keys=True) == before  # the lone surrogate is back, to the character
    finally:
        await runner.cleanup()


async def test_a_source_query_that_would_write_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="the query must be a SELECT"):
        SqlSource.model_validate({"dsn": "mysql://root@127.0.0.1:3306/test", "query": "DELETE FROM payments"})
    require_service("MariaDB", "127.0.0.1", 3306)
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import aiomysql
    import asyncpg

    table = f"victim_{uuid.uuid4().hex[:8]}"
    my = await aiomysql.connect(host="127.0.0.1", user="root", db="test", autocommit=True)
    pg = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
    writes = {
        # No transactions on MyISAM: only the read-only transaction stands between the query and the rows.
        "mysql://root@127.0.0.1:3306/test": f"DELETE FROM {table}",
        "postgresql://postgres@127.0.0.1:5432/test": f"WITH gone AS (DELETE FROM {table} RETURNING *) SELECT * FROM gone",
    }
    try:
        async with my.cursor() as cursor:
            await cursor.execute(f"CREATE TABLE {table} (ref varchar(10)) ENGINE=MyISAM")
            await cursor.execute(f"INSERT INTO {table} VALUES ('A'), ('B')")
        await pg.execute(f"CREATE TABLE {table} (ref text); INSERT INTO {table} VALUES ('A'), ('B')")
        for dsn, query in writes.items():
            unchecked = SqlSource.model_construct(dsn=SecretStr(dsn), table=None, query=query, batch_size=100)  # as if it had passed
            config = MigrationConfig.model_validate(
                {"name": "m", "source": {"sql": unchecked}, "emit": {"schema": "Payment", "map": {"payment_id": "ref"}}}
            )
            with pytest.raises(Exception, match=r"(?i)read.only"):
                [row async for row in source_rows(config, tmp_path)]
        async with my.cursor() as cursor:
            await cursor.execute(f"SELECT count(*) FROM {table}")
            assert await cursor.fetchone() == (2,)
        assert await pg.fetchval(f"SELECT count(*) FROM {table}") == 2
    finally:
        async with my.cursor() as cursor:
            await cursor.execute(f"DROP TABLE IF EXISTS {table}")
        my.close()
        await pg.execute(f"DROP TABLE IF EXISTS {table}")
        await pg.close()


def pg_config(tmp_path: Path, table: str) -> Path:
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"ref": f"T-{i}", "cents": i}) + "\n" for i in range(5)))
    document = {
        "kafka": {"bootstrap": "127.0.0.1:1"},
        "routes": [{"name": "all", "from": "Payment", "to": ["books"]}],
        "outbound": [
            {
                "name": "books",
                "type": "sql",
                "dsn": "postgresql://postgres@127.0.0.1:5432/test",
                "table": table,
                "key": ["ref"],
                "columns": {"ref": "payment_id", "amount": "amount"},
            }
        ],
        "migrations": [
            {
                "name": "rows",
                "source": {"file": {"path": "rows.jsonl"}},
                "emit": {"schema": "Payment", "key": "ref", "map": {"payment_id": "ref", "amount": "cents", "currency": '"eur"'}},
            }
        ],
    }
    path = tmp_path / "bus.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


async def test_a_target_not_set_up_stops_the_run_at_once_and_the_fix_starts_afresh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A table that is not there stops the run at its first read (retried, it would wait for
    hours with nobody told but the log), saying what to fix; that run wrote nothing, so the config
    with the right table starts a new one. A target that refuses every record (a key column of
    another type) is said per target in the summary, not hidden under "0 failed"."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import asyncpg

    good, wrong_type = f"books_{uuid.uuid4().hex[:8]}", f"books_{uuid.uuid4().hex[:8]}"
    pg = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
    try:
        await pg.execute(f"CREATE TABLE {good} (ref text PRIMARY KEY, amount bigint)")
        await pg.execute(f"CREATE TABLE {wrong_type} (ref int PRIMARY KEY, amount bigint)")
        config = str(pg_config(tmp_path, f"{good}_typo"))
        started = asyncio.get_running_loop().time()
        code, _, err = await asyncio.to_thread(cli, capsys, "migrate", "run", "rows", "-c", config)
        assert code == 1 and "the target is not set up for this config (no such table)" in err and "fix the target or the config" in err
        assert asyncio.get_running_loop().time() - started < 20  # not retried for the policy's hours

        config = str(pg_config(tmp_path, good))
        code, out, err = await asyncio.to_thread(cli, capsys, "migrate", "run", "rows", "-c", config)
        assert code == 0, err
        assert "books: 5 written, 0 unchanged, 0 refused by the target" in out and "checksums equal" in out
        assert await pg.fetchval(f"SELECT count(*) FROM {good}") == 5
        code, out, _ = await asyncio.to_thread(cli, capsys, "migrate", "runs", "rows", "-c", config, "--json")
        assert [r["status"] for r in json.loads(out)] == ["abandoned", "finished"]

        config = str(pg_config(tmp_path, wrong_type))
        code, out, err = await asyncio.to_thread(cli, capsys, "migrate", "run", "rows", "-c", config, "--again")  # the same file
        assert code == 1, err
        assert "books: 0 written, 0 unchanged, 5 refused by the target" in out and "nothing it holds from this run" in out
    finally:
        await pg.execute(f"DROP TABLE IF EXISTS {good}")
        await pg.execute(f"DROP TABLE IF EXISTS {wrong_type}")
        await pg.close()


async def test_sigterm_stops_a_run_saying_where_and_the_same_command_resumes_it(tmp_path: Path) -> None:
    """A Job's pod being stopped sends SIGTERM: the run stops where it waits, says so, is marked
    interrupted, and the same command finishes it with every record once."""
    import os
    import signal
    import sys

    service = await DocumentService(delay=0.02).start()  # a slow target: the run is mid-way when it is stopped
    port, got = service.port, service.writes
    try:
        rows = 300
        (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"ref": f"S-{i}", "cents": i}) + "\n" for i in range(rows)))
        url = f"http://127.0.0.1:{port}/p/$${{payment_id}}"
        document = {
            "kafka": {"bootstrap": "127.0.0.1:1"},
            "routes": [{"name": "all", "from": "Payment", "to": ["crm"]}],
            "outbound": [{"name": "crm", "type": "http", "method": "PUT", "url": url, "body": {"ref": "payment_id"}}],
            "migrations": [
                {
                    "name": "rows",
                    "source": {"file": {"path": "rows.jsonl"}},
                    "emit": {"schema": "Payment", "key": "ref", "map": {"payment_id": "ref", "amount": "cents", "currency": '"eur"'}},
                    "targets": {"crm": {"read": url}},
                    "batch_size": 20,
                }
            ],
        }
        config = tmp_path / "bus.yaml"
        config.write_text(yaml.safe_dump(document))
        command = [str(Path(sys.executable).with_name("bus")), "migrate", "run", "rows", "-c", str(config)]
        job = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        for _ in range(300):
            if len(got) >= 40 or job.returncode is not None:
                break
            await asyncio.sleep(0.05)
        assert job.returncode is None and 40 <= len(got) < rows, len(got)
        job.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(job.communicate(), 30)
        assert job.returncode == 143, (out, err)
        assert b"stopped (SIGTERM); run the same command again to resume" in out
        assert b"interrupted at row" in err
        listed = await asyncio.create_subprocess_exec(
            *command[:2], "runs", "rows", "-c", str(config), "--json", stdout=asyncio.subprocess.PIPE, env=os.environ.copy()
        )
        [run] = json.loads((await listed.communicate())[0])
        assert run["status"] == "interrupted"

        again = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(again.communicate(), 120)
        assert again.returncode == 0, out.decode()
        assert f"run {run['id']}: finished".encode() in out  # the same run, resumed
        assert len(got) == rows and max(got.values()) <= 2  # every record; one stopped mid-write may be written again
    finally:
        await service.stop()


async def test_a_mariadb_bit_flag_in_the_target_is_read_back_as_what_was_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A legacy MariaDB table keeps a flag as BIT(1). What the run wrote (true, false) came back
    as the bytes b"\\x01" and b"\\x00", which compared as other values: every record was reported
    as changed behind the hub's back. It is read back as its number, and the checksums agree."""
    require_service("MariaDB", "127.0.0.1", 3306)
    import aiomysql

    table = f"catalogue_{uuid.uuid4().hex[:8]}"
    rows = [{"sku": f"S-{i}", "name": f"Item {i}", "cents": 100 * i, "active": ["yes", "no"][i % 2]} for i in range(4)]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    document = {
        "kafka": {"bootstrap": "127.0.0.1:1"},
        "routes": [{"name": "all", "from": "Product", "to": ["catalogue"]}],
        "outbound": [
            {
                "name": "catalogue",
                "type": "sql",
                "dsn": "mysql://root@127.0.0.1:3306/test",
                "table": table,
                "key": ["sku"],
                "columns": {"sku": "sku", "active": "active"},
            }
        ],
        "migrations": [
            {
                "name": "items",
                "source": {"file": {"path": "items.jsonl"}},
                "emit": {
                    "schema": "Product",
                    "key": "sku",
                    "map": {"sku": "sku", "name": "name", "currency": '"eur"', "price": "cents", "active": "bool(active)"},
                },
            }
        ],
    }
    (tmp_path / "bus.yaml").write_text(yaml.safe_dump(document))
    my = await aiomysql.connect(host="127.0.0.1", user="root", db="test", autocommit=True)
    try:
        async with my.cursor() as cursor:
            await cursor.execute(f"CREATE TABLE {table} (sku varchar(20) PRIMARY KEY, active BIT(1) NOT NULL)")
        code, out, err = await asyncio.to_thread(cli, capsys, "migrate", "run", "items", "-c", str(tmp_path / "bus.yaml"), "--json")
        report = json.loads(out)
        catalogue = next(s for s in report["subscribers"] if s["subscriber"] == "catalogue")
        assert code == 0 and catalogue["checksums_equal"] and catalogue["different"] == 0, (catalogue, err)
        async with my.cursor() as cursor:
            await cursor.execute(f"SELECT sku, active + 0 FROM {table} ORDER BY sku")
            assert await cursor.fetchall() == (("S-0", 1), ("S-1", 0), ("S-2", 1), ("S-3", 0))
    finally:
        async with my.cursor() as cursor:
            await cursor.execute(f"DROP TABLE IF EXISTS {table}")
        my.close()
