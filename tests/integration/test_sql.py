"""The sql outbound adapter against the real PostgreSQL and MariaDB on this machine: upserts in key
order, deletes, redeliveries that change nothing, and a constraint violation dead-lettered with
the database's own message."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from bus.kafka.reader import read_topic
from tests.conftest import require_service
from tests.integration.test_delivery import post
from tests.support.hub import build_hub, payment, payment_hub_config, write_config
from tests.support.target import Target

DATABASES = {
    "postgresql": ("PostgreSQL", 5432, "postgresql://postgres@127.0.0.1:5432/test"),
    "mariadb": ("MariaDB", 3306, "mysql://root@127.0.0.1:3306/test"),
}


async def run_sql(kind: str, dsn: str, sql: str) -> list[tuple[Any, ...]]:
    if kind == "postgresql":
        import asyncpg

        connection = await asyncpg.connect(dsn)
        try:
            return (
                [tuple(r) for r in await connection.fetch(sql)]
                if sql.lstrip().upper().startswith("SELECT")
                else [await connection.execute(sql)]
            )
        finally:
            await connection.close()
    import aiomysql

    connection = await aiomysql.connect(host="127.0.0.1", port=3306, user="root", password="", db="test", autocommit=True)
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(sql)
            return list(await cursor.fetchall())
    finally:
        connection.close()


def ledger_config(bootstrap: str, target: Target, dsn: str, table: str, **outbound: Any) -> dict[str, Any]:
    """Every Payment to one sql outbound, "ledger", upserting payment_id and amount into ``table``."""
    config = payment_hub_config(bootstrap, target.url)
    config["routes"] = [{"name": "all", "from": "Payment", "to": ["ledger"]}]
    columns = {"payment_id": "payment_id", "amount": "amount"}
    config["outbound"] = [
        {"name": "ledger", "type": "sql", "dsn": dsn, "table": table, "columns": columns, "key": ["payment_id"], **outbound}
    ]
    return config


async def written_and_not_refused(hub: Any, kind: str, dsn: str, table: str, outbound: str) -> None:
    """Wait for a row in ``table``; then no event may have been dead-lettered by ``outbound`` (its reason shown if one was)."""

    async def written() -> bool:
        return bool(await run_sql(kind, dsn, f"SELECT 1 FROM {table}"))

    with contextlib.suppress(AssertionError):  # not written in time: the dead letter below says why
        await eventually(written)
    letters = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter(outbound))
    assert not letters, dict(letters[0].headers)["bus_error"]


async def post_paid(hub: Any, sent: dict[str, str]) -> None:
    """Post payments pi_1, pi_2... each with ``data.paid`` the time ``sent`` gives it."""
    events = [payment(i) for i in range(1, len(sent) + 1)]
    for event in events:
        event["data"]["paid"] = sent[event["data"]["id"]]
    await post(hub, *events)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    for _ in range(int(timeout / 0.2)):
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError("condition not met")


@pytest.mark.parametrize("kind", list(DATABASES))
async def test_upsert_delete_and_refusals(kind: str, tmp_path: Path, bootstrap: str) -> None:
    name, port, dsn = DATABASES[kind]
    require_service(name, "127.0.0.1", port)
    table = f"t_ledger_{uuid.uuid4().hex[:8]}"
    await run_sql(
        kind,
        dsn,
        f"CREATE TABLE {table} (payment_id VARCHAR(64) PRIMARY KEY, amount BIGINT NOT NULL CHECK (amount >= 0), "
        "status VARCHAR(32), event_id VARCHAR(64))",
    )
    target = await Target().start()
    config = payment_hub_config(bootstrap, target.url)
    config["routes"] = [{"name": "all", "from": "Payment", "to": ["ledger"]}]
    config["outbound"] = [
        {
            "name": "ledger",
            "type": "sql",
            "dsn": dsn,
            "table": table,
            "columns": {"payment_id": "payment_id", "amount": "amount", "status": "status", "event_id": "$id"},
            "key": ["payment_id"],
            "delete_when": 'status == "canceled"',
        }
    ]
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            await post(hub, *(payment(i, amount=100 * i) for i in range(6)))
            # Later events of a key land after the earlier ones: an update, a delete, a repeat.
            again = payment(2, amount=999)
            again["id"] = "evt_2b"
            cancel = payment(3, status="canceled")
            cancel["id"] = "evt_3b"
            negative = payment(9, amount=-5)
            await post(hub, again, cancel, payment(4, amount=400), negative)

            expected = {
                "pi_0": (0, "succeeded", "evt_0"),
                "pi_1": (100, "succeeded", "evt_1"),
                "pi_2": (999, "succeeded", "evt_2b"),
                "pi_4": (400, "succeeded", "evt_4"),
                "pi_5": (500, "succeeded", "evt_5"),
            }

            async def table_rows() -> dict[str, tuple[int, str, str]]:
                found = await run_sql(kind, dsn, f"SELECT payment_id, amount, status, event_id FROM {table}")
                return {r[0]: (int(r[1]), r[2], r[3]) for r in found}

            async def settled() -> bool:
                # The whole expected state, not a count of rows: five rows also pass by on the way
                # (five of the first six inserted, before the update, the delete and the sixth).
                return await table_rows() == expected

            with contextlib.suppress(AssertionError):  # not settled in time: the assertion below shows how
                await eventually(settled)
            assert await table_rows() == expected

            async def refused() -> bool:
                return bool(await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("ledger")))

            await eventually(refused)
            letters = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("ledger"))
            headers = dict(letters[0].headers)
            assert len(letters) == 1 and headers["ce_id"] == b"evt_9"
            assert headers["bus_error_class"] == b"PermanentError" and b"constraint" in headers["bus_error"].lower()
    finally:
        await run_sql(kind, dsn, f"DROP TABLE {table}")
        await target.stop()


@asynccontextmanager
async def table_locked(kind: str, dsn: str, table: str, *, exclusive: bool = False) -> AsyncIterator[None]:
    """Another session holds a write lock on the table: every write waits until it is released
    (``exclusive``: every read too; MariaDB's write lock holds reads already)."""
    if kind == "postgresql":
        import asyncpg

        connection = await asyncpg.connect(dsn)
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute(f"LOCK TABLE {table} IN {'ACCESS EXCLUSIVE' if exclusive else 'EXCLUSIVE'} MODE")
        try:
            yield
        finally:
            await transaction.commit()
            await connection.close()
        return
    import aiomysql

    connection = await aiomysql.connect(host="127.0.0.1", port=3306, user="root", password="", db="test", autocommit=True)
    async with connection.cursor() as cursor:
        await cursor.execute(f"LOCK TABLES {table} WRITE")
    try:
        yield
    finally:
        async with connection.cursor() as cursor:
            await cursor.execute("UNLOCK TABLES")
        connection.close()


@pytest.mark.parametrize("kind", list(DATABASES))
async def test_events_waiting_together_share_a_transaction(kind: str, tmp_path: Path, bootstrap: str) -> None:
    """Group commit: events that queue up while a transaction runs go in the next one, together;
    a bad row in a batch is dead-lettered alone and the rest of its batch is written."""
    name, port, dsn = DATABASES[kind]
    require_service(name, "127.0.0.1", port)
    table = f"t_batch_{uuid.uuid4().hex[:8]}"
    await run_sql(kind, dsn, f"CREATE TABLE {table} (payment_id VARCHAR(64) PRIMARY KEY, amount BIGINT NOT NULL CHECK (amount >= 0))")
    target = await Target().start()
    config = ledger_config(bootstrap, target, dsn, table, batch_size=50, delivery={"concurrency": 64})
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            ledger = hub.outbound[0]
            async with table_locked(kind, dsn, table):
                await post(hub, *(payment(i, amount=-1 if i == 77 else i) for i in range(300)))
                await asyncio.sleep(1.0)  # deliveries pile up behind the lock
            rows: list[Any] = []

            async def all_written() -> bool:
                nonlocal rows
                rows = await run_sql(kind, dsn, f"SELECT payment_id, amount FROM {table}")
                return len(rows) == 299

            await eventually(all_written)
            assert {r[0] for r in rows} == {f"pi_{i}" for i in range(300) if i != 77}
            letters: list[Any] = []

            async def refused() -> bool:
                nonlocal letters
                letters = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("ledger"))
                return len(letters) == 1

            await eventually(refused)
            assert dict(letters[0].headers)["ce_id"] == b"evt_77"
            # 300 events, at most 64 in flight: a few dozen transactions, not 300 (the bad row's
            # batch is rolled back and written again one row per transaction).
            transactions = ledger.progress()["transactions"]
            assert transactions <= 300 // 3, f"{transactions} transactions for 300 events: no batching"
    finally:
        await run_sql(kind, dsn, f"DROP TABLE {table}")
        await target.stop()


@pytest.mark.parametrize("kind", list(DATABASES))
async def test_a_table_not_created_yet_is_retried_loudly_not_dead_lettered(kind: str, tmp_path: Path, bootstrap: str) -> None:
    """A migration not run yet: the target's setup, not the events' fault. The events wait (retried
    behind the circuit breaker, the reason in /readyz), none is dead-lettered, and once the table
    exists every one of them is written."""
    name, port, dsn = DATABASES[kind]
    require_service(name, "127.0.0.1", port)
    table = f"t_later_{uuid.uuid4().hex[:8]}"
    target = await Target().start()
    config = ledger_config(
        bootstrap, target, dsn, table, delivery={"backoff_initial": "50ms", "backoff_max": "300ms", "circuit_breaker": None}
    )
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            await post(hub, *(payment(i) for i in range(5)))
            worker = hub.workers[0]

            async def says_why() -> bool:
                status = worker.status()
                return status["state"] == "retrying" and "no such table" in str(status.get("last_error", ""))

            try:
                await eventually(says_why)
            except AssertionError:
                letters = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("ledger"))
                raise AssertionError((worker.status(), [dict(x.headers).get("bus_error") for x in letters])) from None
            assert await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("ledger")) == []
            await run_sql(kind, dsn, f"CREATE TABLE {table} (payment_id VARCHAR(64) PRIMARY KEY, amount BIGINT NOT NULL)")

            async def all_written() -> bool:
                return len(await run_sql(kind, dsn, f"SELECT payment_id FROM {table}")) == 5

            await eventually(all_written)
            assert await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("ledger")) == []
    finally:
        await target.stop()
        await run_sql(kind, dsn, f"DROP TABLE IF EXISTS {table}")


@pytest.mark.parametrize("kind", list(DATABASES))
async def test_a_table_another_session_holds_is_retried_loudly_and_written_once_released(kind: str, tmp_path: Path, bootstrap: str) -> None:
    """A session that forgot a transaction holding the table (a LOCK TABLE in psql, a migration
    half done): PostgreSQL waits for a lock for ever by default, and every write of the subscriber
    waited behind it with nothing said. Now a write waits statement_timeout_s, is retried, and says why."""
    name, port, dsn = DATABASES[kind]
    require_service(name, "127.0.0.1", port)
    table = f"t_held_{uuid.uuid4().hex[:8]}"
    await run_sql(kind, dsn, f"CREATE TABLE {table} (payment_id VARCHAR(64) PRIMARY KEY, amount BIGINT NOT NULL)")
    target = await Target().start()
    config = ledger_config(
        bootstrap, target, dsn, table, statement_timeout_s=1,
        delivery={"backoff_initial": "50ms", "backoff_max": "300ms", "circuit_breaker": None},
    )  # fmt: skip
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            worker = hub.workers[0]
            async with table_locked(kind, dsn, table):
                await post(hub, *(payment(i) for i in range(3)))

                async def says_why() -> bool:
                    status = worker.status()
                    error = str(status.get("last_error", ""))
                    return status["state"] == "retrying" and ("statement_timeout_s" in error or "Lock wait timeout" in error)

                await eventually(says_why)

            async def all_written() -> bool:
                return len(await run_sql(kind, dsn, f"SELECT payment_id FROM {table}")) == 3

            await eventually(all_written)
            assert await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("ledger")) == []
    finally:
        await target.stop()
        await run_sql(kind, dsn, f"DROP TABLE IF EXISTS {table}")


# As in production, where the driver's warnings are printed, not raised (this suite raises every warning).
@pytest.mark.filterwarnings("default::pymysql.err.Warning")
async def test_a_legacy_mariadb_outside_strict_mode_refuses_what_it_would_have_changed(tmp_path: Path, bootstrap: str) -> None:
    """A server with `sql_mode=''` (MySQL 5.6's default, kept by many legacy servers) stores what
    it cannot hold with a warning only: an amount over the column's range as its largest value, a
    status cut to the column's length. The events counted as delivered with other data in the
    table. Now the hub's sessions are strict: each such event is dead-lettered with the database's
    reason, and the others are written exactly."""
    from tests.support.mariadb_private import private_mariadb

    with private_mariadb("--sql-mode=") as dsn:
        [(mode,)] = await run_sql_at(dsn, "SELECT @@GLOBAL.sql_mode")
        assert mode == ""  # a legacy server, as its own settings say
        table = "legacy_ledger"
        await run_sql_at(dsn, f"CREATE TABLE {table} (payment_id VARCHAR(64) PRIMARY KEY, amount DECIMAL(6,2), status VARCHAR(9))")
        target = await Target().start()
        config = ledger_config(bootstrap, target, dsn, table)
        config["outbound"][0]["columns"] = {"payment_id": "payment_id", "amount": "decimal(amount) / 100", "status": "status"}
        try:
            async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
                await post(hub, payment(1, amount=12345), payment(2, amount=123456789), payment(3, status="partially_refunded"), payment(4))

                async def both_refused() -> bool:
                    return len(await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("ledger"))) >= 2

                await eventually(both_refused)

                async def written() -> bool:
                    return len(await run_sql_at(dsn, f"SELECT payment_id FROM {table}")) >= 2

                await eventually(written)
                letters = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("ledger"))
            rows = {r[0]: (str(r[1]), r[2]) for r in await run_sql_at(dsn, f"SELECT payment_id, amount, status FROM {table}")}
            assert rows == {"pi_1": ("123.45", "succeeded"), "pi_4": ("1500.00", "succeeded")}, rows
            reasons = {dict(r.headers)["ce_id"]: dict(r.headers)["bus_error"].decode() for r in letters}
            assert set(reasons) == {b"evt_2", b"evt_3"}
            assert "Out of range value for column 'amount'" in reasons[b"evt_2"], reasons
            assert "Data too long for column 'status'" in reasons[b"evt_3"], reasons
        finally:
            await target.stop()


async def run_sql_at(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    import aiomysql

    url = urlsplit(dsn)
    connection = await aiomysql.connect(host=url.hostname, port=url.port, user="root", password="", db="test", autocommit=True)
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(sql)
            return list(await cursor.fetchall())
    finally:
        connection.close()


@pytest.mark.parametrize("kind", list(DATABASES))
async def test_times_go_into_columns_without_a_zone_as_wall_clock_time_in_the_tables_zone(
    kind: str, tmp_path: Path, bootstrap: str
) -> None:
    """PostgreSQL's `timestamp` and MariaDB's `DATETIME` hold no zone. PostgreSQL's driver refused
    every time the hub has (they are moments, with a zone), so such a table could not be written at
    all; MariaDB's stored each time's own wall clock, so times sent with different offsets were
    stored in different zones. Now each is the wall-clock time in the outbound's `timezone`
    (UTC unless told), and a `timestamptz` column takes the moment itself."""
    name, port, dsn = DATABASES[kind]
    require_service(name, "127.0.0.1", port)
    suffix = uuid.uuid4().hex[:8]
    tables = {"utc": f"t_utc_{suffix}", "berlin": f"t_berlin_{suffix}"}
    naive, zoned = ("timestamp", "timestamptz") if kind == "postgresql" else ("datetime(3)", None)
    for table in tables.values():
        await run_sql(
            kind, dsn, f"CREATE TABLE {table} (payment_id VARCHAR(64) PRIMARY KEY, paid {naive}" + (f", paid_tz {zoned})" if zoned else ")")
        )
    target = await Target().start()
    config = payment_hub_config(bootstrap, target.url)
    config["inbound"][0]["emit"]["map"]["description"] = "data.paid"
    config["routes"] = [{"name": "all", "from": "Payment", "to": list(tables)}]
    columns = {"payment_id": "payment_id", "paid": "timestamp(description)", **({"paid_tz": "timestamp(description)"} if zoned else {})}
    config["outbound"] = [
        {"name": label, "type": "sql", "dsn": dsn, "table": table, "columns": columns, "key": ["payment_id"]}
        | ({"timezone": "Europe/Berlin"} if label == "berlin" else {})
        for label, table in tables.items()
    ]
    sent = {"pi_1": "2024-03-01T10:00:00+02:00", "pi_2": "2024-03-01T08:30:00Z", "pi_3": "2024-07-01T12:00:00Z"}  # pi_3: summer time
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            await post_paid(hub, sent)

            async def written() -> bool:
                for table in tables.values():
                    if len(await run_sql(kind, dsn, f"SELECT payment_id FROM {table}")) < 3:
                        return False
                return True

            with contextlib.suppress(AssertionError):
                await eventually(written)
            letters = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("utc"))
            assert not letters, dict(letters[0].headers)["bus_error"]
        stored: dict[str, dict[str, tuple[str, ...]]] = {}
        for label, table in tables.items():
            stored[label] = {r[0]: tuple(str(v) for v in r[1:]) for r in await run_sql(kind, dsn, f"SELECT * FROM {table}")}
        wall = {
            "utc": {"pi_1": "2024-03-01 08:00:00", "pi_2": "2024-03-01 08:30:00", "pi_3": "2024-07-01 12:00:00"},
            "berlin": {"pi_1": "2024-03-01 09:00:00", "pi_2": "2024-03-01 09:30:00", "pi_3": "2024-07-01 14:00:00"},
        }
        for label in tables:
            assert {k: v[0] for k, v in stored[label].items()} == wall[label], stored[label]
            if zoned:  # the moment itself, whatever the zone setting
                assert {k: v[1] for k, v in stored[label].items()} == {k: f"{w}+00:00" for k, w in wall["utc"].items()}, stored[label]
    finally:
        for table in tables.values():
            await run_sql(kind, dsn, f"DROP TABLE {table}")
        await target.stop()


@pytest.mark.parametrize("kind", list(DATABASES))
async def test_an_upsert_whose_key_no_unique_index_matches_waits_saying_so(kind: str, tmp_path: Path, bootstrap: str) -> None:
    """A legacy table with no primary key: PostgreSQL refuses the upsert's conflict target, but
    MariaDB's ON DUPLICATE KEY UPDATE without a unique key is a plain INSERT: each update and each
    redelivery added a row (pi_1 twice here), unsaid. Both now wait, saying why, and once the key
    is unique each event is written once and the update lands on its row."""
    name, port, dsn = DATABASES[kind]
    require_service(name, "127.0.0.1", port)
    table = f"t_nokey_{uuid.uuid4().hex[:8]}"
    await run_sql(kind, dsn, f"CREATE TABLE {table} (payment_id VARCHAR(64) NOT NULL, amount BIGINT NOT NULL)")
    target = await Target().start()
    config = ledger_config(
        bootstrap, target, dsn, table, delivery={"backoff_initial": "50ms", "backoff_max": "300ms", "circuit_breaker": None}
    )
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            update = payment(1, amount=999)
            update["id"] = "evt_1b"
            await post(hub, payment(1), payment(2))
            await post(hub, update)
            worker = hub.workers[0]

            async def says_why() -> bool:
                status = worker.status()
                return status["state"] == "retrying" and "no unique index matches the key columns" in str(status.get("last_error", ""))

            try:
                await eventually(says_why)
            except AssertionError:
                raise AssertionError((worker.status(), await run_sql(kind, dsn, f"SELECT * FROM {table}"))) from None
            assert await run_sql(kind, dsn, f"SELECT * FROM {table}") == []  # nothing written meanwhile
            await run_sql(kind, dsn, f"ALTER TABLE {table} ADD PRIMARY KEY (payment_id)")

            async def settled() -> bool:
                rows = await run_sql(kind, dsn, f"SELECT payment_id, amount FROM {table}")
                return sorted((r[0], int(r[1])) for r in rows) == [("pi_1", 999), ("pi_2", 150_000)]

            await eventually(settled)
            assert await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("ledger")) == []
    finally:
        await target.stop()
        await run_sql(kind, dsn, f"DROP TABLE IF EXISTS {table}")


@pytest.mark.parametrize("kind", list(DATABASES))
async def test_a_number_with_more_decimal_places_than_its_column_keeps_is_not_rounded_unsaid(
    kind: str, tmp_path: Path, bootstrap: str
) -> None:
    """A `numeric(12,2)` column given 1.005 (a Kuwaiti dinar amount, three decimals, in major
    units) stored 1.01, and an integer column given 2.5 stored 3 on MariaDB and 2 on PostgreSQL
    (asyncpg truncates), with nothing said: the target held numbers the events never had. Now
    such an event is dead-lettered saying what it would have become (`numbers: exact`, the
    default), or rounded half away from zero by the hub, alike on both (`numbers: round`).
    Float noise (0.1 * 3 = 0.30000000000000004) is the number meant, and fits."""
    name, port, dsn = DATABASES[kind]
    require_service(name, "127.0.0.1", port)
    suffix = uuid.uuid4().hex[:8]
    tables = {"exact": f"t_exact_{suffix}", "rounding": f"t_round_{suffix}"}
    for table in tables.values():
        await run_sql(
            kind,
            dsn,
            f"CREATE TABLE {table} (payment_id VARCHAR(64) PRIMARY KEY, major NUMERIC(12,2), tripled NUMERIC(12,2), units INTEGER)",
        )
    target = await Target().start()
    config = payment_hub_config(bootstrap, target.url)
    config["routes"] = [{"name": "all", "from": "Payment", "to": list(tables)}]
    columns = {
        "payment_id": "payment_id",
        "major": "major_units(amount, currency)",
        "tripled": "float(major_units(amount, currency)) * 3",
        "units": "amount / 10",
    }
    config["outbound"] = [
        {"name": label, "type": "sql", "dsn": dsn, "table": table, "columns": columns, "key": ["payment_id"]}
        | ({"numbers": "round"} if label == "rounding" else {})
        for label, table in tables.items()
    ]
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            await post(hub, payment(1, amount=10), payment(2, amount=1005, currency="KWD"), payment(3, amount=25))

            async def stored(table: str) -> dict[str, tuple[str, int]]:
                rows = await run_sql(kind, dsn, f"SELECT payment_id, major, tripled, units FROM {table}")
                return {r[0]: (f"{r[1]} {r[2]}", int(r[3])) for r in rows}

            async def all_there() -> bool:
                letters = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("exact"))
                return len(await stored(tables["rounding"])) == 3 and len(letters) + len(await stored(tables["exact"])) == 3

            await eventually(all_there)
            letters = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("exact"))
            why = {(r.key or b"").decode(): dict(r.headers)["bus_error"].decode() for r in letters}
        assert await stored(tables["exact"]) == {"pi_1": ("0.10 0.30", 1)}
        assert sorted(why) == ["pi_2", "pi_3"], why
        assert (
            "major is Decimal('1.005'), and the column is" in why["pi_2"]
            and "with 2 decimal places: it would be stored as 1.01, with nothing said" in why["pi_2"]
        )
        assert "units is 2.5, and the column is" in why["pi_3"] and "(whole numbers): it would be stored as 3" in why["pi_3"]
        rounded = await stored(tables["rounding"])
        assert {k: (v[0].split()[0], v[1]) for k, v in rounded.items()} == {"pi_1": ("0.10", 1), "pi_2": ("1.01", 101), "pi_3": ("0.25", 3)}
    finally:
        for table in tables.values():
            await run_sql(kind, dsn, f"DROP TABLE {table}")
        await target.stop()


@pytest.mark.parametrize("kind", list(DATABASES))
async def test_a_record_or_a_list_goes_into_a_column_as_its_json_text(kind: str, tmp_path: Path, bootstrap: str) -> None:
    """An order's lines (a list of records) mapped to a JSON column or a text column: neither driver
    takes one (asyncpg: "expected str, got dict", PyMySQL: "dict can not be used as parameter"),
    so every such event was dead-lettered with a driver's words. They now go in as their JSON
    text; a PostgreSQL array column takes a list as it is."""
    name, port, dsn = DATABASES[kind]
    require_service(name, "127.0.0.1", port)
    table = f"t_orders_{uuid.uuid4().hex[:8]}"
    json_type, array = ("jsonb", ", codes text[]") if kind == "postgresql" else ("JSON", "")
    await run_sql(kind, dsn, f"CREATE TABLE {table} (order_id VARCHAR(64) PRIMARY KEY, order_lines {json_type}, first_line TEXT{array})")
    target = await Target().start()
    config = payment_hub_config(bootstrap, target.url)
    config["inbound"][0]["emit"] = {
        "schema": "Order",
        "id": "id",
        "key": "data.id",
        "map": {"order_id": "data.id", "currency": '"eur"', "total": "data.amount", "lines": "data.lines"},
    }
    config["routes"] = [{"name": "all", "from": "Order", "to": ["orders"]}]
    columns = {"order_id": "order_id", "order_lines": "lines", "first_line": "lines[0]"} | (
        {"codes": 'split(order_id, "_")'} if kind == "postgresql" else {}
    )
    config["outbound"] = [{"name": "orders", "type": "sql", "dsn": dsn, "table": table, "columns": columns, "key": ["order_id"]}]
    lines = [{"sku": "A-1", "quantity": 2, "unit_price": 450}, {"sku": "B-7", "quantity": 1, "unit_price": 1999}]
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            order = payment(1)
            order["data"]["lines"] = lines
            await post(hub, order)

            await written_and_not_refused(hub, kind, dsn, table, "orders")
        [row] = await run_sql(kind, dsn, f"SELECT * FROM {table}")
        assert json.loads(row[1]) == lines and json.loads(row[2]) == lines[0], row
        if kind == "postgresql":
            assert row[3] == ["pi", "1"], row
    finally:
        await run_sql(kind, dsn, f"DROP TABLE {table}")
        await target.stop()


@pytest.mark.parametrize("kind", list(DATABASES))
async def test_a_time_goes_into_a_column_of_fewer_digits_cut_not_rounded_into_the_next_day(
    kind: str, tmp_path: Path, bootstrap: str
) -> None:
    """A payment at 23:59:59.9996 on New Year's Eve into a column of whole seconds: PostgreSQL
    rounded it into the next year (and into `timestamp(3)` too), MariaDB cut it: the same event
    landed in different days by database. The hub now cuts a time to the digits its column keeps."""
    name, port, dsn = DATABASES[kind]
    require_service(name, "127.0.0.1", port)
    table = f"t_digits_{uuid.uuid4().hex[:8]}"
    whole, milli = ("timestamptz(0)", "timestamp(3)") if kind == "postgresql" else ("datetime", "datetime(3)")
    await run_sql(kind, dsn, f"CREATE TABLE {table} (payment_id VARCHAR(64) PRIMARY KEY, whole {whole}, milli {milli})")
    target = await Target().start()
    config = payment_hub_config(bootstrap, target.url)
    config["inbound"][0]["emit"]["map"]["description"] = "data.paid"
    config["routes"] = [{"name": "all", "from": "Payment", "to": ["ledger"]}]
    columns = {"payment_id": "payment_id", "whole": "timestamp(description)", "milli": "timestamp(description)"}
    config["outbound"] = [{"name": "ledger", "type": "sql", "dsn": dsn, "table": table, "columns": columns, "key": ["payment_id"]}]
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            event = payment(1)
            event["data"]["paid"] = "2026-12-31T23:59:59.999600Z"
            await post(hub, event)

            await written_and_not_refused(hub, kind, dsn, table, "ledger")
        [(whole_at, milli_at)] = await run_sql(kind, dsn, f"SELECT whole, milli FROM {table}")
        assert (whole_at.replace(tzinfo=None), milli_at) == (datetime(2026, 12, 31, 23, 59, 59), datetime(2026, 12, 31, 23, 59, 59, 999000))
    finally:
        await run_sql(kind, dsn, f"DROP TABLE {table}")
        await target.stop()


async def test_what_bus_migrate_reads_back_from_a_jsonb_column_is_what_was_written(tmp_path: Path) -> None:
    """jsonb gives back its own text of a document (`{"a": 1}` for `{"a":1}`, keys in its order):
    compared as text with what was written, every record written into one would be reported as
    changed behind the hub's back. The read-back compares it as JSON."""
    from adapters.sql.config import SqlOutboundConfig
    from adapters.sql.outbound import SqlOutbound
    from bus.adapter_api import Context, Event, TargetOptions
    from bus.migrate.canonical import differing_fields

    name, port, dsn = DATABASES["postgresql"]
    require_service(name, "127.0.0.1", port)
    table = f"t_jsonb_{uuid.uuid4().hex[:8]}"
    await run_sql("postgresql", dsn, f"CREATE TABLE {table} (order_id VARCHAR(64) PRIMARY KEY, order_lines jsonb)")
    config = SqlOutboundConfig.model_validate(
        {
            "name": "orders",
            "type": "sql",
            "dsn": dsn,
            "table": table,
            "columns": {"order_id": "order_id", "order_lines": "lines"},
            "key": ["order_id"],
        }
    )
    outbound = SqlOutbound(config, Context(name="orders", logger=logging.getLogger("test")))
    await outbound.start()
    try:
        lines = [{"unit_price": 450, "sku": "A-1", "quantity": 2}]
        event = Event(schema="Order", source="/test", key="o1", data={"order_id": "o1", "lines": lines})
        await outbound.deliver_many([event])
        state = outbound.target_state(TargetOptions())
        address, expected = state.record(event)
        [held] = await state.read([address])
        assert differing_fields(expected, held) == {}, (expected, held)
        await run_sql("postgresql", dsn, f"""UPDATE {table} SET order_lines = '[{{"sku": "A-1", "quantity": 3, "unit_price": 450}}]'""")
        [held] = await state.read([address])
        assert set(differing_fields(expected, held)) == {"order_lines"}  # a real change is still one
    finally:
        await outbound.stop()
        await run_sql("postgresql", dsn, f"DROP TABLE {table}")


@pytest.mark.parametrize("kind", list(DATABASES))
async def test_a_pool_whose_connection_is_never_given_back_closes_within_its_bound(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Closing a pool waits for its connections to be given back: a query that never ended (a lock
    wait, a stuck server) held the adapter's stop, and the hub's, for good. Now the wait has a
    bound, after which the connections are dropped."""
    from adapters.sql import pool as pools

    name, port, dsn = DATABASES[kind]
    require_service(name, "127.0.0.1", port)
    monkeypatch.setattr(pools, "CLOSE_WITHIN", 0.5)
    pool = await pools.open_pool(dsn, 2, what="test")
    held = await pool.acquire()  # as a task stuck in a query would hold it
    try:
        await asyncio.wait_for(pools.close_pool(pool, dsn), timeout=10)  # before: waited for good
        if kind == "postgresql":
            import asyncpg

            with pytest.raises(asyncpg.InterfaceError, match="released back to the pool"):  # dropped with the pool
                await held.fetchval("SELECT 1")
        else:
            assert held.closed, "the connection still held is dropped"
    finally:
        if kind == "mariadb":
            held.close()


@pytest.mark.parametrize("kind", list(DATABASES))
async def test_a_time_goes_into_date_and_time_of_day_columns_as_its_date_and_time_in_the_tables_zone(
    kind: str, tmp_path: Path, bootstrap: str
) -> None:
    """asyncpg put an aware time into a `date` column as its own date: 23:30 at -05:00 went in as
    that day, though it is the next in UTC and in the outbound's `timezone`, while MariaDB took the
    date of the wall clock in `timezone`. One moment landed on different days by database and by
    the sender's offset. A `time` column took the time of day at the sender's offset on PostgreSQL
    (rounded: 23:30:00.9 became 23:30:01), and in `timezone` on MariaDB. Now a time goes into a date column
    as its date in `timezone`, and into a time-of-day column as its wall-clock time there, cut to
    the column's digits, on both."""
    name, port, dsn = DATABASES[kind]
    require_service(name, "127.0.0.1", port)
    table = f"t_dates_{uuid.uuid4().hex[:8]}"
    await run_sql(kind, dsn, f"CREATE TABLE {table} (payment_id VARCHAR(64) PRIMARY KEY, paid_on DATE, paid_at TIME(0))")
    target = await Target().start()
    config = ledger_config(bootstrap, target, dsn, table, timezone="Asia/Tokyo")
    config["inbound"][0]["emit"]["map"]["description"] = "data.paid"
    paid = "timestamp(description)"
    config["outbound"][0]["columns"] = {"payment_id": "payment_id", "paid_on": paid, "paid_at": paid}
    sent = {
        "pi_1": "2024-03-01T23:30:00.9-05:00",  # 04:30 the next day in UTC, 13:30 in Tokyo
        "pi_2": "2024-03-02T00:30:00+02:00",  # 22:30 the day before in UTC, 07:30 in Tokyo
        "pi_3": "2024-03-01T10:00:00Z",  # 19:00 in Tokyo, the same day
    }
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            await post_paid(hub, sent)

            async def written() -> bool:
                return len(await run_sql(kind, dsn, f"SELECT payment_id FROM {table}")) >= 3

            with contextlib.suppress(AssertionError):
                await eventually(written)
            letters = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("ledger"))
            assert not letters, dict(letters[0].headers)["bus_error"]
        rows = await run_sql(kind, dsn, f"SELECT payment_id, paid_on, paid_at FROM {table}")
        of_day = [r[2] if kind == "postgresql" else (datetime.min + r[2]).time() for r in rows]  # MariaDB: a timedelta
        stored = {r[0]: (str(r[1]), str(t)) for r, t in zip(rows, of_day, strict=True)}
        assert stored == {
            "pi_1": ("2024-03-02", "13:30:00"),  # .9 cut, not rounded into the next second
            "pi_2": ("2024-03-02", "07:30:00"),
            "pi_3": ("2024-03-01", "19:00:00"),
        }, stored
    finally:
        await target.stop()
        await run_sql(kind, dsn, f"DROP TABLE IF EXISTS {table}")


async def test_mariadb_over_mutual_tls_from_the_dsn_and_a_query_it_does_not_read_is_refused(tmp_path: Path) -> None:
    """Managed MySQL and MariaDB (RDS with require_secure_transport, Azure, PlanetScale) take
    only TLS, and some users only with a client certificate. The DSN's query was ignored: there
    was no way to ask for TLS, and `?ssl=true` connected in plain text, unsaid. Now the query
    takes MySQL's own option names; anything else is a config error. A server of the test's own
    with a user that must show a certificate signed by the test's CA."""
    import aiomysql
    from pydantic import ValidationError

    from adapters.sql.config import SqlOutboundConfig
    from bus.adapter_api import Context, Event, RetryableError
    from tests.support.certs import Authority
    from tests.support.mariadb_private import private_mariadb

    authority = Authority(tmp_path / "pki")
    server, client = authority.issue("mariadb", server=True), authority.issue("hub")
    files = {"ca.pem": authority.cert, "server.pem": server.cert, "server.key": server.key}
    tls = ("--ssl-ca={dir}/ca.pem", "--ssl-cert={dir}/server.pem", "--ssl-key={dir}/server.key")
    with private_mariadb(*tls, files=files) as dsn:
        url = urlsplit(dsn)
        admin = await aiomysql.connect(host="127.0.0.1", port=url.port, user="root", db="test", autocommit=True)
        async with admin.cursor() as cursor:
            await cursor.execute("CREATE TABLE notes (id VARCHAR(20) PRIMARY KEY, body TEXT)")
            await cursor.execute("CREATE USER 'hub'@'%' REQUIRE X509")
            await cursor.execute("GRANT ALL ON test.* TO 'hub'@'%'")
        admin.close()

        def sql_out(query: str) -> Any:
            from adapters.sql.outbound import SqlOutbound

            spec = {"name": "notes", "type": "sql", "dsn": f"mysql://hub@127.0.0.1:{url.port}/test?{query}", "table": "notes"}
            config = SqlOutboundConfig.model_validate({**spec, "key": ["id"], "columns": {"id": "id", "body": "body"}})
            return SqlOutbound(config, Context("notes", logging.getLogger("test")))

        certified = f"ssl-mode=VERIFY_IDENTITY&ssl-ca={authority.cert}&ssl-cert={client.cert}&ssl-key={client.key}"
        out = sql_out(certified)
        await out.start()
        try:
            await out.deliver(Event(schema="Note", data={"id": "n1", "body": "over TLS"}, source="/t", id="e1"))
            async with out._pool.acquire() as connection, connection.cursor() as cursor:
                await cursor.execute("SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'")
                assert (await cursor.fetchone())[0], "the hub's session is not encrypted"
                await cursor.execute("SELECT body FROM notes WHERE id = 'n1'")
                assert await cursor.fetchone() == ("over TLS",)
        finally:
            await out.stop()

        uncertified = sql_out(f"ssl-ca={authority.cert}")  # TLS (VERIFY_CA implied), but no certificate to show
        with pytest.raises(RetryableError, match=r"cannot connect: .*Access denied for user 'hub'"):
            await uncertified.start()

    base = {"name": "n", "type": "sql", "table": "t", "key": ["id"], "columns": {"id": "id"}}
    for query, said in (
        ("ssl=true", "the dsn's query has ssl, which the hub does not read"),
        ("ssl-mode=PREFERRED", "is not one of DISABLED"),
        ("ssl-ca=/no/such.pem", "the dsn's TLS files cannot be used"),
    ):
        with pytest.raises(ValidationError, match=said):
            SqlOutboundConfig.model_validate({**base, "dsn": f"mysql://h/db?{query}"})
