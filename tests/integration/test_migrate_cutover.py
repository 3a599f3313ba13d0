"""The cut-over from a migration to the live flow, for a legacy PostgreSQL table: the history by
`bus migrate run`, then `sql_poll` from the position the run recorded before it read.

Rows change while the run is stopped half-way and after it finished; a row is added. After
`bus migrate cutover` the hub's sql_poll publishes exactly the rows changed since the run began
(not the history again), and the target ends equal to the source: no row lost, none doubled,
each holding its newest version. A second cut-over is refused: the inbound has a position now."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bus.app.cli import main
from bus.app.migrate.run import RunOptions, run_migration
from bus.kafka.reader import read_topic
from tests.conftest import require_service
from tests.support.hub import build_hub, load, unique_prefix, write_config
from tests.support.pg_logical import logical_postgres

DSN = "postgresql://postgres@127.0.0.1:5432/test"
ROWS = 400
TOKEN = "migration-viewer-5b1d9e"


def hub_config(bootstrap: str, source: str, target: str) -> dict[str, Any]:
    emit = {"schema": "Customer", "key": "id", "map": {"customer_id": "str(id)", "name": "name"}}
    return {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 2, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0, "tokens": [{"name": "viewer", "token": TOKEN, "scope": "read"}]},
        "inbound": [
            {
                "name": "accounts-live",
                "type": "sql_poll",
                "dsn": DSN,
                "table": source,
                "columns": ["id", "name"],
                "watermark": {"column": "updated_at", "id": "id"},
                "interval": "200ms",
                "settle": "300ms",
                "emit": emit,
            }
        ],
        "routes": [{"name": "to-crm", "from": "Customer", "to": ["crm"]}],
        "outbound": [
            {
                "name": "crm",
                "type": "sql",
                "dsn": DSN,
                "table": target,
                "key": ["customer_id"],
                "columns": {"customer_id": "customer_id", "name": "name"},
            },
        ],
        "migrations": [
            {
                "name": "accounts-history",
                "source": {"sql": {"dsn": DSN, "table": source}},
                "emit": emit,
                "then": "accounts-live",
                "batch_size": 100,
            }
        ],
    }


async def test_history_by_migration_then_sql_poll_from_where_it_began(tmp_path: Path, bootstrap: str) -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import asyncpg

    suffix = uuid.uuid4().hex[:8]
    source, target = f"accounts_{suffix}", f"crm_{suffix}"
    db = await asyncpg.connect(DSN)
    await db.execute(f"CREATE TABLE {source} (id integer PRIMARY KEY, name text, updated_at timestamptz NOT NULL DEFAULT now())")
    await db.execute(f"CREATE TABLE {target} (customer_id text PRIMARY KEY, name text)")
    try:
        await db.execute(f"INSERT INTO {source} SELECT i, 'Account ' || i, now() - interval '1 hour' FROM generate_series(1, {ROWS}) AS i")
        path = write_config(tmp_path / "bus.yaml", hub_config(bootstrap, source, target))
        loaded, registry, catalog = load(path)
        state = tmp_path / ".bus-migrate"  # the default, beside the config: where the hub looks too

        # The run stops after its first batch; rows change meanwhile (one it has written, one it
        # has not read yet), then it resumes and finishes. It recorded its position before reading.
        with pytest.raises(KeyboardInterrupt):
            await run_migration(loaded, catalog, "accounts-history", base_dir=tmp_path, state_dir=state, registry=registry,
                                options=RunOptions(stop_after_batches=1))  # fmt: skip
        await db.execute(f"UPDATE {source} SET name = name || ' (renamed while stopped)', updated_at = now() WHERE id IN (1, 350)")
        run = await run_migration(loaded, catalog, "accounts-history", base_dir=tmp_path, state_dir=state, registry=registry)
        assert run.status == "finished" and run.options["handover"]["inbound"] == "accounts-live"
        assert await db.fetchval(f"SELECT count(*) FROM {target}") == ROWS

        # After the run: more changes and a new row, which only the live flow can bring.
        await db.execute(f"UPDATE {source} SET name = name || ' (renamed after)', updated_at = now() WHERE id IN (2, 200)")
        await db.execute(f"INSERT INTO {source} (id, name) VALUES ({ROWS + 1}, 'Account new')")

        code = await asyncio.to_thread(
            main, ["migrate", "cutover", run.id, "-c", str(path), "--state", str(state), "--bootstrap", bootstrap]
        )
        assert code == 0

        async with build_hub(path) as hub:

            async def converged() -> bool:
                want = {str(r["id"]): r["name"] for r in await db.fetch(f"SELECT id, name FROM {source}")}
                have = {r["customer_id"]: r["name"] for r in await db.fetch(f"SELECT customer_id, name FROM {target}")}
                return want == have

            for _ in range(600):
                if await converged():
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the target did not come to equal the source within 60 s")
            records = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Customer"))
            published = sorted(int(dict(r.headers)["ce_id"].decode().split(":")[1].split("@")[0]) for r in records)
            # Exactly the rows changed since the run began: the history was not read again.
            assert published == [1, 2, 200, 350, ROWS + 1]

            # The hub's API lists the run with its progress, and serves its report.
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{hub.ops.port}/api/v1", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as api:
                listed = (await api.get("/migrations")).json()
                [shown] = listed["runs"]
                assert shown["id"] == run.id and shown["status"] == "finished" and shown["rows_read"] == ROWS
                assert shown["counts"]["written"] + shown["counts"]["unchanged"] >= ROWS
                page = await api.get(f"http://127.0.0.1:{hub.ops.port}{shown['report']}")  # a path from the root
                assert page.status_code == 200 and page.headers["content-type"].startswith("text/html") and run.id in page.text
                missing = await api.get("/migrations/no-such-run/report")
                assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")

        code = await asyncio.to_thread(
            main, ["migrate", "cutover", run.id, "-c", str(path), "--state", str(state), "--bootstrap", bootstrap]
        )
        assert code == 1  # the inbound has its own position now
    finally:
        await db.execute(f"DROP TABLE IF EXISTS {source}")
        await db.execute(f"DROP TABLE IF EXISTS {target}")
        await db.close()


async def test_a_cutover_to_an_inbound_that_now_reads_another_table_is_refused(
    tmp_path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run recorded the live inbound's position in one table; the config was changed after to
    read another (a new version of the table). The cut-over saved the old table's position for it,
    and the poller passed over every row of the new table before it. Now the run records what the
    position is in; the cut-over refuses another, and the checkpoint it saves says what it is in."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import asyncpg

    from bus.kafka.clients import make_producer
    from bus.kafka.topics import TopicNames
    from bus.runtime.checkpoints import KafkaCheckpoints

    suffix = uuid.uuid4().hex[:8]
    source, other, target = f"accounts_{suffix}", f"accounts_v2_{suffix}", f"crm_{suffix}"
    db = await asyncpg.connect(DSN)
    try:
        for table in (source, other):
            await db.execute(f"CREATE TABLE {table} (id integer PRIMARY KEY, name text, updated_at timestamptz NOT NULL DEFAULT now())")
            await db.execute(f"INSERT INTO {table} SELECT i, 'Account ' || i, now() - interval '1 hour' FROM generate_series(1, 5) AS i")
        await db.execute(f"CREATE TABLE {target} (customer_id text PRIMARY KEY, name text)")
        config = hub_config(bootstrap, source, target)
        path = write_config(tmp_path / "bus.yaml", config)
        loaded, registry, catalog = load(path)
        state = tmp_path / ".bus-migrate"
        run = await run_migration(loaded, catalog, "accounts-history", base_dir=tmp_path, state_dir=state, registry=registry)
        assert run.status == "finished"

        config["inbound"][0]["table"] = other
        moved = write_config(tmp_path / "moved.yaml", config)
        code = await asyncio.to_thread(
            main, ["migrate", "cutover", run.id, "-c", str(moved), "--state", str(state), "--bootstrap", bootstrap]
        )
        assert code == 1
        said = capsys.readouterr()
        assert f"recorded its hand-over position in table {source}, column updated_at, id id" in said.err + said.out
        assert f"now reads table {other}" in said.err + said.out

        code = await asyncio.to_thread(
            main, ["migrate", "cutover", run.id, "-c", str(path), "--state", str(state), "--bootstrap", bootstrap]
        )
        assert code == 0
        producer = make_producer(loaded.hub.kafka, bootstrap)
        await producer.start()
        try:
            topic = TopicNames(loaded.hub.kafka.topic_prefix).checkpoints
            saved = await KafkaCheckpoints(producer, loaded.hub.kafka, bootstrap, topic).load("accounts-live")
        finally:
            await producer.stop()
        assert saved is not None and saved["of"] == {"table": source, "column": "updated_at", "id": "id"}, saved
        assert saved["id"] == 5
    finally:
        for table in (source, other, target):
            await db.execute(f"DROP TABLE IF EXISTS {table}")
        await db.close()


@pytest.fixture(scope="module")
def logical_dsn() -> Iterator[str]:
    with logical_postgres() as dsn:
        yield dsn


async def test_history_by_migration_then_postgres_cdc_from_its_slot(tmp_path: Path, bootstrap: str, logical_dsn: str) -> None:
    """The same cut-over to `postgres_cdc`: the run creates the replication slot before it reads, so
    the slot keeps every change committed while the run is stopped and after it; the cut-over has
    nothing to save (the slot is the position); the hub then applies exactly those changes."""
    import asyncpg

    suffix = uuid.uuid4().hex[:8]
    source, target, slot = f"accounts_{suffix}", f"crm_{suffix}", f"bus_cut_{suffix}"
    db = await asyncpg.connect(logical_dsn)
    await db.execute(f"CREATE TABLE {source} (id integer PRIMARY KEY, name text)")
    await db.execute(f"CREATE TABLE {target} (customer_id text PRIMARY KEY, name text)")
    await db.execute(f"INSERT INTO {source} SELECT i, 'Account ' || i FROM generate_series(1, 300) AS i")
    config = hub_config(bootstrap, source, target)
    config["outbound"][0]["dsn"] = logical_dsn
    config["inbound"] = [
        {
            "name": "accounts-cdc",
            "type": "postgres_cdc",
            "dsn": logical_dsn,
            "tables": [source],
            "slot": slot,
            "publication": slot,
            "interval": "100ms",
            "emit": {
                "schema": "Customer",
                "key": "str(coalesce(after.id, before.id))",
                "map": {"customer_id": "str(coalesce(after.id, before.id))", "name": 'coalesce(after.name, before.name, "")'},
            },
        }
    ]
    migration = config["migrations"][0]
    migration["source"]["sql"]["dsn"] = logical_dsn
    migration["then"] = "accounts-cdc"
    path = write_config(tmp_path / "bus.yaml", config)
    loaded, registry, catalog = load(path)
    state = tmp_path / ".bus-migrate"
    try:
        with pytest.raises(KeyboardInterrupt):
            await run_migration(loaded, catalog, "accounts-history", base_dir=tmp_path, state_dir=state, registry=registry,
                                options=RunOptions(stop_after_batches=1))  # fmt: skip
        assert await db.fetchval("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", slot) == 1  # made before reading
        await db.execute(f"UPDATE {source} SET name = name || ' (renamed while stopped)' WHERE id IN (1, 250)")
        run = await run_migration(loaded, catalog, "accounts-history", base_dir=tmp_path, state_dir=state, registry=registry)
        assert run.status == "finished" and run.options["handover"]["position"]["slot"] == slot
        await db.execute(f"UPDATE {source} SET name = name || ' (renamed after)' WHERE id IN (2, 200)")
        await db.execute(f"INSERT INTO {source} VALUES (301, 'Account new')")

        code = await asyncio.to_thread(main, ["migrate", "cutover", run.id, "-c", str(path)])  # no Kafka needed: the slot is the position
        assert code == 0

        async with build_hub(path) as hub:
            for _ in range(600):
                want = {str(r["id"]): r["name"] for r in await db.fetch(f"SELECT id, name FROM {source}")}
                have = {r["customer_id"]: r["name"] for r in await db.fetch(f"SELECT customer_id, name FROM {target}")}
                if want == have:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the target did not come to equal the source within 60 s")
            records = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Customer"))
            assert sorted(int((r.key or b"").decode()) for r in records) == [1, 2, 200, 250, 301]  # the changes, not the history
    finally:
        await db.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", slot)
        await db.execute(f"DROP TABLE IF EXISTS {source}")
        await db.execute(f"DROP TABLE IF EXISTS {target}")
        await db.close()
