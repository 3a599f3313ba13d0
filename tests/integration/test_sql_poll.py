"""``sql_poll`` against the real PostgreSQL and MariaDB on this machine, through the real embedded
broker: a backfill whose batch boundaries fall inside runs of equal timestamps, a row committed
late by a transaction held open, updates, a row that does not fit the schema, a restart in the
middle of a backfill, and a database that is not there."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pymysql
import pytest

from bus.app.hub import Hub
from bus.kafka.reader import read_topic
from tests.conftest import require_service
from tests.integration.test_sql import DATABASES, run_sql
from tests.support.hub import build_hub, unique_prefix, write_config
from tests.support.wait import health_saying, healthy, until

COLUMNS = {
    "postgresql": "id integer PRIMARY KEY, cust_nm varchar(100), email varchar(100), updated_at timestamptz NOT NULL DEFAULT now()",
    "mariadb": "id integer PRIMARY KEY, cust_nm varchar(100), email varchar(100), "
    "updated_at datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)",
}


def hub_config(bootstrap: str, dsn: str, table: str, **poll: Any) -> dict[str, Any]:
    inbound = {
        "name": "legacy",
        "type": "sql_poll",
        "dsn": dsn,
        "table": table,
        "columns": ["id", "cust_nm", "email"],  # the watermark columns are added to the query
        "watermark": {"column": "updated_at", "id": "id"},
        "interval": "200ms",
        "settle": "300ms",
        "emit": {"schema": "Customer", "key": "id", "map": {"customer_id": "str(id)", "name": "cust_nm", "email": "email"}},
        **poll,
    }
    return {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 2, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "inbound": [inbound],
    }


async def published(hub: Hub) -> Counter[str]:
    """Events by ce_id: ``<adapter>:<id>@<updated_at>``, one per row version; a count above 1 is a duplicate."""
    records = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Customer"))
    return Counter(dict(r.headers)["ce_id"].decode() for r in records)


async def wait_published(hub: Hub, count: int, timeout: float = 60) -> Counter[str]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        ids = await published(hub)
        if len(ids) >= count:
            return ids
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{len(ids)} of {count} events published within {timeout}s")
        await asyncio.sleep(0.2)


@asynccontextmanager
async def table_in(kind: str) -> AsyncIterator[str]:
    name, port, dsn = DATABASES[kind]
    require_service(name, "127.0.0.1", port)
    table = f"legacy_customers_{uuid.uuid4().hex[:8]}"
    await run_sql(kind, dsn, f"CREATE TABLE {table} ({COLUMNS[kind]})")
    try:
        yield table
    finally:
        await run_sql(kind, dsn, f"DROP TABLE {table}")


def insert_rows(table: str, ids: range, stamp: Any) -> str:
    values = ", ".join(f"({i}, 'Customer {i}', 'c{i}@example.com', '{stamp(i)}')" for i in ids)
    return f"INSERT INTO {table} (id, cust_nm, email, updated_at) VALUES {values}"


@asynccontextmanager
async def open_transaction(kind: str, dsn: str, sql: str) -> AsyncIterator[Any]:
    """A writer that has inserted a row and not committed yet; yields the commit function."""
    if kind == "postgresql":
        import asyncpg

        connection = await asyncpg.connect(dsn)
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute(sql)
        try:
            yield transaction.commit
        finally:
            await connection.close()
        return
    import aiomysql

    connection = await aiomysql.connect(host="127.0.0.1", port=3306, user="root", password="", db="test", autocommit=False)
    async with connection.cursor() as cursor:
        await cursor.execute(sql)
    try:
        yield connection.commit
    finally:
        connection.close()


@pytest.mark.parametrize("kind", list(DATABASES))
async def test_backfill_ties_late_commit_updates_and_a_bad_row(
    kind: str, tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = DATABASES[kind][2]
    async with table_in(kind) as table:
        # 230 historical rows, 50 per timestamp: batches of 40 end inside runs of equal timestamps.
        await run_sql(kind, dsn, insert_rows(table, range(230), lambda i: f"2025-06-01 08:00:{i // 50:02d}"))
        await run_sql(kind, dsn, f"UPDATE {table} SET cust_nm = NULL WHERE id = 7")  # Customer.name is required
        path = write_config(tmp_path / "bus.yaml", hub_config(bootstrap, dsn, table, batch_size=40))
        async with build_hub(path) as hub:
            ids = await wait_published(hub, 229)
            assert any(i.startswith("legacy:0@2025-06-01T08:00:00") for i in ids), sorted(ids)[:3]
            parked: list[Any] = []

            async def one_parked() -> bool:
                nonlocal parked
                parked = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("legacy"))
                return len(parked) == 1

            for _ in range(100):
                if await one_parked():
                    break
                await asyncio.sleep(0.2)
            assert len(parked) == 1 and b"name" in dict(parked[0].headers)["bus_error"], parked
            assert b'"id": 7' in parked[0].value
            parked_said = [r for r in caplog.records if "inbound legacy: a message was parked on its dead letters" in r.getMessage()]
            assert [r.levelname for r in parked_said] == ["WARNING"] and "name" in parked_said[0].getMessage(), caplog.text  # was unsaid

            # A writer stamps row 1000 now and commits only later; row 1001 is stamped and committed after it.
            async with open_transaction(kind, dsn, f"INSERT INTO {table} (id, cust_nm, email) VALUES (1000, 'Late', 'l@x.io')") as commit:
                await asyncio.sleep(0.2)
                await run_sql(kind, dsn, f"INSERT INTO {table} (id, cust_nm, email) VALUES (1001, 'Prompt', 'p@x.io')")
                await asyncio.sleep(2.0)  # well past settle: only the open transaction holds 1001 back
                ids = await published(hub)
                assert not any(i.startswith("legacy:1001@") for i in ids), "the poller moved past an open writer"
                await commit()
            ids = await wait_published(hub, 231)
            assert any(i.startswith("legacy:1000@") for i in ids) and any(i.startswith("legacy:1001@") for i in ids)

            now = "now()" if kind == "postgresql" else "NOW(6)"
            await run_sql(kind, dsn, f"UPDATE {table} SET cust_nm = 'Renamed', updated_at = {now} WHERE id IN (3, 7)")
            ids = await wait_published(hub, 233)  # row 3 changed, row 7 fixed: two new versions
            assert sum(1 for i in ids if i.startswith("legacy:3@")) == 2
            assert any(i.startswith("legacy:7@") for i in ids)
            assert all(n == 1 for n in ids.values()), [i for i, n in ids.items() if n > 1]
            assert (await healthy(hub.inbound[0])).ok


@pytest.mark.parametrize("kind", list(DATABASES))
async def test_restart_mid_backfill_and_rows_written_while_down(kind: str, tmp_path: Path, bootstrap: str) -> None:
    dsn = DATABASES[kind][2]
    async with table_in(kind) as table:
        await run_sql(kind, dsn, insert_rows(table, range(600), lambda i: f"2025-07-01 {i // 60:02d}:00:{i % 7:02d}"))
        path = write_config(tmp_path / "bus.yaml", hub_config(bootstrap, dsn, table, batch_size=50))
        async with build_hub(path) as hub:
            poller = hub.inbound[0]
            await until(lambda: int(poller.progress()["rows"]) >= 100, "the first batches", timeout=60)
        stopped_at = int(poller.progress()["rows"])  # read after the stop: the batch in flight was finished
        assert stopped_at < 600, "the backfill finished before the stop: the test proves nothing"
        await run_sql(kind, dsn, insert_rows(table, range(600, 620), lambda i: "2025-08-01 00:00:00"))
        async with build_hub(path) as hub:
            ids = await wait_published(hub, 620)
            poller = hub.inbound[0]
            # A batch counts once its position is saved, just after its events were acknowledged:
            # read at once, the count could be a batch behind what was published (seen in CI).
            await until(lambda: int(poller.progress()["rows"]) >= 620 - stopped_at, "the last batch counted", timeout=30)
            resumed = int(poller.progress()["rows"])
        assert resumed == 620 - stopped_at, f"the restart read {resumed} rows; {620 - stopped_at} were new to it"
        assert sum(ids.values()) == 620, f"{sum(ids.values()) - 620} duplicates after a clean stop"


async def test_database_unreachable_or_table_missing_keeps_the_hub_up(tmp_path: Path, bootstrap: str) -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    config = hub_config(bootstrap, "postgresql://postgres@127.0.0.1:1/test", "customers")
    config["inbound"].append({**config["inbound"][0], "name": "missing", "dsn": DATABASES["postgresql"][2], "table": "no_such_table"})
    path = write_config(tmp_path / "bus.yaml", config)
    async with build_hub(path) as hub:
        down, missing = hub.inbound

        async def problems() -> tuple[str, str]:
            return (await down.health()).detail, (await missing.health()).detail

        for _ in range(100):
            detail_down, detail_missing = await problems()
            if "cannot connect" in detail_down and "no_such_table" in detail_missing:
                break
            await asyncio.sleep(0.1)
        assert "127.0.0.1:1/customers" in detail_down and "cannot connect" in detail_down, detail_down
        assert "postgres@" not in detail_down  # never the user or a password
        assert 'relation "no_such_table" does not exist' in detail_missing, detail_missing
        ready = await hub.readiness()
        assert not ready["inbound:legacy"] and not ready["inbound:missing"]


@pytest.mark.parametrize("kind", list(DATABASES))
async def test_a_table_another_session_holds_is_said_in_the_health_then_read(kind: str, tmp_path: Path, bootstrap: str) -> None:
    """A poll waiting for a lock another session holds waited for ever on PostgreSQL, for a day on
    MariaDB (metadata locks): the inbound stopped, its health saying nothing was wrong."""
    from tests.integration.test_sql import table_locked

    dsn = DATABASES[kind][2]
    async with table_in(kind) as table:
        await run_sql(kind, dsn, insert_rows(table, range(1, 4), lambda i: "2020-01-01 00:00:00"))
        config = hub_config(bootstrap, dsn, table, statement_timeout_s=1)
        async with table_locked(kind, dsn, table, exclusive=True), build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            [poll] = hub.inbound

            health = await health_saying(poll, "statement_timeout_s (1s)", timeout=30)
            assert "a lock another session holds" in health.detail, health.detail
            assert await published(hub) == Counter()
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            assert len(await wait_published(hub, 3)) == 3


@pytest.mark.parametrize("kind", list(DATABASES))
async def test_rows_the_watermark_cannot_reach_are_said(
    kind: str, tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A NULL in the watermark column is never read, and a time stamped decades ahead only then:
    both were left behind with nothing said. The poll names them (progress, /readyz, the metric,
    a WARNING), reads on, and says so again when they are mended."""
    from prometheus_client import REGISTRY

    dsn = DATABASES[kind][2]
    async with table_in(kind) as table:
        nullable = "ALTER COLUMN updated_at DROP NOT NULL" if kind == "postgresql" else "MODIFY updated_at datetime(6) NULL"
        await run_sql(kind, dsn, f"ALTER TABLE {table} {nullable}")
        await run_sql(kind, dsn, insert_rows(table, range(1, 4), lambda i: "2020-01-01 00:00:00"))
        await run_sql(
            kind, dsn, f"INSERT INTO {table} (id, cust_nm, email, updated_at) VALUES (4, 'N', 'n@x.io', NULL), (5, 'N', 'n@x.io', NULL)"
        )
        await run_sql(kind, dsn, insert_rows(table, range(6, 7), lambda i: "2099-01-01 00:00:00"))
        config = hub_config(bootstrap, dsn, table, stray_check="300ms", stray_ahead="1d")
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            [poll] = hub.inbound
            assert len(await wait_published(hub, 3)) == 3
            await until(lambda: poll.progress().get("stray_rows") == 3, "three stray rows counted", timeout=30)
            strays = str(poll.progress()["strays"])
            assert "2 row(s) with updated_at NULL are never read (id 4, 5)" in strays, strays
            assert (
                "1 row(s) with updated_at more than 86400s after the database's now" in strays
                and "(id 6; the first at 2099-01-01" in strays
            ), strays
            assert hub.detail()["adapters"]["inbound:legacy"]["stray_rows"] == 3  # type: ignore[index]
            labels = {"direction": "inbound", "adapter": "legacy", "measure": "stray_rows"}
            assert REGISTRY.get_sample_value("bus_adapter_progress", labels) == 3
            assert "are never read (id 4, 5)" in caplog.text
            assert (await healthy(poll)).ok  # the rows it can reach flow on

            await run_sql(kind, dsn, f"UPDATE {table} SET updated_at = '2021-01-01 00:00:00' WHERE id IN (4, 5, 6)")
            ids = await wait_published(hub, 6)
            assert {i.split("@")[0] for i in ids} == {f"legacy:{n}" for n in range(1, 7)}, ids
            await until(lambda: "stray_rows" not in poll.progress(), "the strays cleared", timeout=30)
            assert "no stray rows any more" in caplog.text
            assert REGISTRY.get_sample_value("bus_adapter_progress", labels) is None


async def test_mariadb_zero_dates_in_the_watermark_are_said_as_what_they_are(tmp_path: Path, bootstrap: str) -> None:
    """A legacy MariaDB column ``NOT NULL DEFAULT '0000-00-00 00:00:00'`` (an application that
    stamps only its updates): the zero date sorts first, so rows stamped so are read by a poll
    from the start, and one inserted so later is never read. ``IS NULL`` matches the zero date in
    such a column: the rows the backfill had read were said to be NULL and never read. They are
    said as zero dates, the row inserted later among them; a real NULL would still be said so."""
    dsn = DATABASES["mariadb"][2]
    async with table_in("mariadb") as table:
        await run_sql("mariadb", dsn, f"ALTER TABLE {table} MODIFY updated_at datetime(6) NOT NULL DEFAULT '0000-00-00 00:00:00'")
        await run_sql("mariadb", dsn, f"INSERT INTO {table} (id, cust_nm, email) VALUES (1, 'Z', 'z@x.io'), (2, 'Z', 'z@x.io')")
        await run_sql("mariadb", dsn, insert_rows(table, range(3, 5), lambda i: "2020-01-01 00:00:00"))
        config = hub_config(bootstrap, dsn, table, stray_check="300ms")
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            [poll] = hub.inbound
            ids = await wait_published(hub, 4)
            assert {i.split("@")[0] for i in ids} == {f"legacy:{n}" for n in range(1, 5)}, ids  # the zero-dated rows read first
            await run_sql("mariadb", dsn, f"INSERT INTO {table} (id, cust_nm, email) VALUES (5, 'Z', 'z@x.io')")
            await until(lambda: poll.progress().get("stray_rows") == 3, "three zero-dated rows counted", timeout=30)
            strays = str(poll.progress()["strays"])
            assert "3 row(s) with updated_at 0000-00-00" in strays and "(id 1, 2, 5)" in strays, strays
            assert "NULL" not in strays, strays
            assert len(await published(hub)) == 4  # what the zero date hides: the row inserted after the poll moved on


@pytest.mark.parametrize("kind", list(DATABASES))
async def test_a_table_whose_watermark_may_not_pick_out_one_row_is_said(
    kind: str, tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A legacy table with no primary key, its `id` not unique: each page goes on after its last
    row's (updated_at, id), so rows sharing both with that row and coming after it are never read,
    with nothing said (the table here holds two customers 2 at one time). The poll now says so at
    start (WARNING, the console's attention); a table with a unique index on the pair says nothing."""
    dsn = DATABASES[kind][2]
    async with table_in(kind) as keyed:
        loose = f"{keyed}_loose"
        await run_sql(kind, dsn, f"CREATE TABLE {loose} ({COLUMNS[kind].replace(' PRIMARY KEY', '')})")
        try:
            stamp = "2020-01-01 00:00:00"
            await run_sql(kind, dsn, insert_rows(loose, range(1, 4), lambda i: stamp).replace("(2, 'Customer 2'", "(2, 'Customer 2a'"))
            await run_sql(kind, dsn, f"INSERT INTO {loose} (id, cust_nm, email, updated_at) VALUES (2, 'Customer 2b', 'b@x.io', '{stamp}')")
            await run_sql(kind, dsn, f"CREATE UNIQUE INDEX {keyed}_pair ON {keyed} (updated_at, id)")
            config = hub_config(bootstrap, dsn, loose, batch_size=2)
            async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
                [poll] = hub.inbound
                await until(lambda: "no unique index" in poll.attention(), "the loose key said", timeout=30)
                assert poll.attention() == (
                    f"{loose} has no unique index on id (or on (updated_at, id)): rows that share (updated_at, id) with the last "
                    "row of a page are passed over; name a unique column (the primary key) in watermark.id"
                )
                assert "has no unique index on id" in caplog.text
            config["inbound"][0]["table"] = keyed
            config["kafka"]["topic_prefix"] = unique_prefix()  # a hub of its own: its own topics and position
            await run_sql(kind, dsn, insert_rows(keyed, range(1, 4), lambda i: stamp))
            async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
                [poll] = hub.inbound
                assert len(await wait_published(hub, 3)) == 3
                assert poll.attention() == ""
        finally:
            await run_sql(kind, dsn, f"DROP TABLE {loose}")


async def test_rows_stamped_after_the_database_clock_went_back_are_read(
    tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A legacy database keeping local time in a DATETIME goes back an hour when summer time ends:
    rows changed in the hour that comes twice are stamped before the position the poller reached
    in the first pass, and were never read, with nothing said. Here a private MariaDB's zone goes
    from +02:00 to +01:00 (what Europe/Berlin does at the end of October) with the hub running;
    the rows stamped after are read, and the move is said."""
    from tests.integration.test_sql import run_sql_at
    from tests.support.mariadb_private import private_mariadb

    with private_mariadb("--default-time-zone=+02:00") as dsn:
        table = "legacy_customers"
        await run_sql_at(dsn, f"CREATE TABLE {table} ({COLUMNS['mariadb']})")
        config = hub_config(bootstrap, dsn, table)
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            [poll] = hub.inbound
            await run_sql_at(dsn, f"INSERT INTO {table} (id, cust_nm, email) VALUES (1, 'a', 'a@x.io'), (2, 'b', 'b@x.io')")
            await wait_published(hub, 2)
            await asyncio.sleep(0.5)  # a poll or two with nothing new: the clock read at each

            await run_sql_at(dsn, "SET GLOBAL time_zone = '+01:00'")
            ours = await run_sql_at(dsn, "SELECT CONNECTION_ID()")
            for (session,) in await run_sql_at(dsn, "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'root'"):
                if (session,) not in ours:  # the hub connects again, in the new zone, as after the change
                    with contextlib.suppress(pymysql.err.OperationalError):  # a session that ended meanwhile
                        await run_sql_at(dsn, f"KILL {session}")
            await run_sql_at(dsn, f"INSERT INTO {table} (id, cust_nm, email) VALUES (3, 'c', 'c@x.io'), (4, 'd', 'd@x.io')")
            ids = await wait_published(hub, 4, timeout=30)
            assert {event_id.split("@")[0] for event_id in ids} == {"legacy:1", "legacy:2", "legacy:3", "legacy:4"}, ids
            assert poll.progress()["clock_went_back"] == 1
        assert "the database's clock went back about 60 min" in caplog.text, caplog.text


async def test_a_column_of_whole_seconds_does_not_let_an_open_writer_be_passed_over(tmp_path: Path, bootstrap: str) -> None:
    """A `timestamp(0)` holds whole seconds. A writer whose transaction opened at 10:00:00.6
    stamps its row 10:00:00; the horizon waited for that transaction's start, 10:00:00.6, so a row
    stamped 10:00:00 with a higher id, committed by another session, was read before it, and the
    writer's row (a lower id, the same time) was never read once it committed. The horizon now
    leaves the column's step (1 s) too."""
    dsn = DATABASES["postgresql"][2]
    async with table_in("postgresql") as table:
        await run_sql("postgresql", dsn, f"ALTER TABLE {table} ALTER COLUMN updated_at TYPE timestamp(0)")
        await run_sql("postgresql", dsn, insert_rows(table, range(1, 2), lambda i: "2020-01-01 00:00:00"))
        async with build_hub(write_config(tmp_path / "bus.yaml", hub_config(bootstrap, dsn, table))) as hub:
            await wait_published(hub, 1)
            import asyncpg

            writer = await asyncpg.connect(dsn)
            try:
                async with writer.transaction():  # opened at now(), within a second: the column holds that second, before it
                    stamp = await writer.fetchval(
                        f"UPDATE {table} SET cust_nm = 'Held', updated_at = date_trunc('second', now()) WHERE id = 1 RETURNING updated_at"
                    )
                    await run_sql(
                        "postgresql", dsn, f"INSERT INTO {table} (id, cust_nm, email, updated_at) VALUES (9, 'Other', 'o@x.io', '{stamp}')"
                    )
                    await asyncio.sleep(1.5)  # past settle: only the open transaction holds the poll back
                    assert not any(i.startswith("legacy:9@") for i in await published(hub)), "the poll moved past an open writer"
            finally:
                await writer.close()
            ids = await wait_published(hub, 3)
            assert {i.split("@")[0] for i in ids} == {"legacy:1", "legacy:9"} and sum(ids.values()) == 3, ids


async def test_a_date_watermark_reads_a_day_once_it_is_over(tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture) -> None:
    """A date column cannot tell a day's changes apart: read during the day, a row changed later
    that day with a lower id than one read before was never read. A day is now read once it is
    over, and the adapter says why."""
    dsn = DATABASES["mariadb"][2]
    async with table_in("mariadb") as table:
        await run_sql("mariadb", dsn, f"ALTER TABLE {table} MODIFY updated_at date NOT NULL")
        today, yesterday = "CURDATE()", "CURDATE() - INTERVAL 1 DAY"
        rows = f"(1, 'a', 'a@x.io', {yesterday}), (2, 'b', 'b@x.io', {today})"
        await run_sql("mariadb", dsn, f"INSERT INTO {table} (id, cust_nm, email, updated_at) VALUES {rows}")
        async with build_hub(write_config(tmp_path / "bus.yaml", hub_config(bootstrap, dsn, table))) as hub:
            await wait_published(hub, 1)
            await asyncio.sleep(1.0)  # polls go on: today's row waits for the day's end
            assert [i.split("@")[0] for i in await published(hub)] == ["legacy:1"]
        assert "updated_at is a date: a day's rows are read once the day is over" in caplog.text


async def test_a_position_saved_for_another_table_is_not_used(tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture) -> None:
    """The config of a poller changed to read another table (a new version of it, a view): the
    old table's saved position was applied to it, and every row before it was passed over, with
    nothing said. A position now says what it is a position in; another's is not used."""
    kind, dsn = "postgresql", DATABASES["postgresql"][2]
    async with table_in(kind) as old, table_in(kind) as new:
        await run_sql(kind, dsn, insert_rows(old, range(1, 3), lambda i: "2025-06-01 00:00:00"))
        await run_sql(kind, dsn, insert_rows(new, range(1, 4), lambda i: "2020-01-01 00:00:00"))  # before the old table's position
        config = hub_config(bootstrap, dsn, old)
        async with build_hub(write_config(tmp_path / "old.yaml", config)) as hub:
            assert len(await wait_published(hub, 2)) == 2
        config["inbound"][0]["table"] = new
        async with build_hub(write_config(tmp_path / "new.yaml", config)) as hub:
            ids = await wait_published(hub, 5, timeout=30)
        assert sum(1 for i in ids if i.endswith("@2020-01-01T00:00:00+00:00")) == 3, ids
        assert f"its saved position is in table {old}, column updated_at, id id, and the config now reads table {new}" in caplog.text


async def test_a_writer_that_commits_while_a_poll_runs_is_not_passed_over(tmp_path: Path, bootstrap: str) -> None:
    """A poll was one statement: its snapshot is taken when it starts, and the open transactions
    that hold the horizon back were read from pg_stat_activity after. A writer that committed in
    between was in neither: its row was not in the snapshot, its transaction no longer held the
    horizon, and a row stamped after it and committed before was read, so the position passed the
    writer's row for good (seen once in CI as "230 of 231 events"). Here the poll reads through a
    view that waits half a second after the snapshot, and the writer commits in that wait. The
    horizon is now read in a statement of its own, before the read's snapshot."""
    kind, dsn = "postgresql", DATABASES["postgresql"][2]
    async with table_in(kind) as table:
        view, gate = f"{table}_slow", f"{table}_gate"
        await run_sql(
            kind,
            dsn,
            f"CREATE FUNCTION {gate}() RETURNS boolean LANGUAGE plpgsql STABLE AS $$ BEGIN PERFORM pg_sleep(0.5); RETURN true; END $$;"
            f" CREATE VIEW {view} AS SELECT * FROM {table} WHERE {gate}()",  # a one-time filter: run after the snapshot, before the rows
        )
        try:
            await run_sql(kind, dsn, insert_rows(table, range(1, 2), lambda i: "2020-01-01 00:00:00"))
            config = hub_config(bootstrap, dsn, view, stray_check=None)
            async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
                await wait_published(hub, 1)
                import asyncpg

                async with open_transaction(
                    kind, dsn, f"INSERT INTO {table} (id, cust_nm, email) VALUES (1000, 'Late', 'l@x.io')"
                ) as commit:
                    await run_sql(kind, dsn, f"INSERT INTO {table} (id, cust_nm, email) VALUES (1001, 'Prompt', 'p@x.io')")
                    await asyncio.sleep(0.6)  # past settle: only the open transaction holds 1001 back
                    watcher = await asyncpg.connect(dsn)
                    try:
                        waiting = f"SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE '%FROM {view} WHERE%'"
                        # a poll is in the view's wait: it took its snapshot with the writer open (a
                        # poll comes round every interval; a loaded machine may take seconds to start one)
                        deadline = asyncio.get_running_loop().time() + 30
                        while not await watcher.fetchval(waiting):
                            if asyncio.get_running_loop().time() > deadline:
                                raise AssertionError("no poll was seen in the view's wait in 30 s")
                            await asyncio.sleep(0.02)
                    finally:
                        await watcher.close()
                    await commit()
                ids = await wait_published(hub, 3, timeout=20)
            assert {i.split("@")[0] for i in ids} == {"legacy:1", "legacy:1000", "legacy:1001"} and sum(ids.values()) == 3, ids
        finally:
            await run_sql(kind, dsn, f"DROP VIEW {view}; DROP FUNCTION {gate}()")


@pytest.mark.parametrize("kind", list(DATABASES))
async def test_a_watermark_column_that_holds_no_time_is_read(
    kind: str, tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A version number a legacy application bumps at each change, as the watermark: the query
    compared it with the database's clock (the time horizon) and failed at every poll, on
    PostgreSQL even with `settle: 0s` as the docs said (the wait for open transactions is a time
    too). Now the column's type is read from the catalog and a column that holds no time is read
    in its order without a time horizon, and what that cannot guard against is said."""
    dsn = DATABASES[kind][2]
    async with table_in(kind) as table:
        await run_sql(kind, dsn, f"ALTER TABLE {table} ADD COLUMN version bigint NOT NULL DEFAULT 0")
        await run_sql(kind, dsn, insert_rows(table, range(1, 4), lambda i: "2020-01-01 00:00:00"))
        await run_sql(kind, dsn, f"UPDATE {table} SET version = 10 + id")
        config = hub_config(bootstrap, dsn, table, watermark={"column": "version", "id": "id"}, stray_check="200ms")
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            await wait_published(hub, 3, timeout=20)
            await run_sql(kind, dsn, f"UPDATE {table} SET version = 20, cust_nm = 'Renamed' WHERE id = 1")
            ids = await wait_published(hub, 4, timeout=20)
            assert sorted(ids) == ["legacy:1@11", "legacy:1@20", "legacy:2@12", "legacy:3@13"], ids
            assert (await healthy(hub.inbound[0])).ok and "stray_rows" not in hub.inbound[0].progress()
        assert "version holds no time (bigint): read in its order without a time horizon" in caplog.text
        assert "query failed" not in caplog.text, caplog.text


async def test_a_renamed_poller_goes_on_from_the_position_its_former_name_saved(
    tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A poller renamed in the config found no position under its new name and read its whole
    table again: every row published a second time, under new event ids. The position of a name
    no longer in the config that read the same table is now taken as its own, and said."""
    kind, dsn = "postgresql", DATABASES["postgresql"][2]
    async with table_in(kind) as table:
        await run_sql(kind, dsn, insert_rows(table, range(1, 6), lambda i: f"2025-06-01 00:00:0{i}"))
        config = hub_config(bootstrap, dsn, table)
        async with build_hub(write_config(tmp_path / "old.yaml", config)) as hub:
            assert len(await wait_published(hub, 5)) == 5
        config["inbound"][0]["name"] = "legacy-crm"
        caplog.set_level(logging.WARNING)
        async with build_hub(write_config(tmp_path / "new.yaml", config)) as hub:
            await run_sql(kind, dsn, insert_rows(table, range(6, 8), lambda i: f"2025-06-01 00:00:0{i}"))
            ids = await wait_published(hub, 7, timeout=30)
            await asyncio.sleep(1)  # a second reading of the table would be on its way by now
            ids = await published(hub)
        assert sorted(ids) == sorted(
            [f"legacy:{i}@2025-06-01T00:00:0{i}+00:00" for i in range(1, 6)]
            + [f"legacy-crm:{i}@2025-06-01T00:00:0{i}+00:00" for i in (6, 7)]
        ), ids
        assert "legacy-crm: no saved position under this name, but legacy, no longer in the config" in caplog.text
