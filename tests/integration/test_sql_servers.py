"""A PostgreSQL DSN that names several servers, as libpq's do for a primary that can move
(Patroni, CloudNativePG, a standby promoted by hand): the sql adapters take it and go where it says,
against the machine's PostgreSQL and one of the test's own made read-only (a standby's answer to
`SHOW transaction_read_only`)."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest

from bus.kafka.reader import read_topic
from bus.ports import free_port
from tests.conftest import require_service
from tests.integration.test_delivery import post
from tests.integration.test_sql import eventually, ledger_config
from tests.support.hub import build_hub, payment, reading, write_config
from tests.support.pg_logical import logical_postgres
from tests.support.pgbouncer_private import pgbouncer
from tests.support.target import Target

SHARED = "postgresql://postgres@127.0.0.1:5432/test"


async def the_same_table_on_both(private: str, table: str) -> tuple[asyncpg.Connection, asyncpg.Connection, str]:
    """``table`` made in database `test` of the private server (made there too) and of the
    machine's; connections to both, and the private server's port."""
    create = f"CREATE TABLE {table} (payment_id VARCHAR(64) PRIMARY KEY, amount BIGINT NOT NULL)"
    admin = await asyncpg.connect(private)
    await admin.execute("CREATE DATABASE test")
    await admin.close()
    own = await asyncpg.connect(private.rsplit("/", 1)[0] + "/test")
    await own.execute(create)
    shared = await asyncpg.connect(SHARED)
    await shared.execute(create)
    return own, shared, private.rsplit(":", 1)[1].split("/", maxsplit=1)[0]


async def read_only(connection: asyncpg.Connection) -> None:
    """Its server turns read-only for every session, as a standby answers `SHOW transaction_read_only`."""
    await connection.execute("ALTER SYSTEM SET default_transaction_read_only = on")
    await connection.execute("SELECT pg_reload_conf()")


async def test_a_dsn_naming_several_servers_writes_and_reads_on_the_one_that_takes_writes(tmp_path: Path, bootstrap: str) -> None:
    """The DSN lists a server that is down, a read-only one and the writable one, with
    `target_session_attrs=read-write`: the sql outbound writes every event to the writable one
    (none on the read-only one, none dead-lettered) and a sql_poll reads them back from it. Both
    raised at start before: the URL's port was read as one number."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    table = f"t_servers_{uuid.uuid4().hex[:8]}"
    with logical_postgres() as private:
        standby, shared, port = await the_same_table_on_both(private, table)
        await read_only(standby)
        dsn = f"postgresql://postgres@127.0.0.1:{free_port()},127.0.0.1:{port},127.0.0.1:5432/test?target_session_attrs=read-write"
        target = await Target().start()
        config = ledger_config(bootstrap, target, dsn, table)
        config["inbound"].append(
            {
                "name": "ledger-rows",
                "type": "sql_poll",
                "dsn": dsn,
                "table": table,
                "watermark": {"id": "payment_id"},
                "interval": "200ms",
                "emit": {"schema": "Payment", "map": {"payment_id": "payment_id", "amount": "amount", "currency": '"usd"'}},
            }
        )
        try:
            async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
                await post(hub, *(payment(i) for i in range(1, 6)))

                async def all_written() -> bool:
                    return int(await shared.fetchval(f"SELECT count(*) FROM {table}")) == 5

                await eventually(all_written)
                assert await standby.fetchval(f"SELECT count(*) FROM {table}") == 0
                assert not await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("ledger"))

                async def polled() -> bool:  # the five posted, and the five rows read back by sql_poll
                    return len(await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Payment"))) == 10

                await eventually(polled)
        finally:
            await shared.execute(f"DROP TABLE {table}")
            await shared.close()
            await standby.close()
            await target.stop()


async def test_a_primary_that_turns_read_only_is_left_for_the_server_that_takes_writes(tmp_path: Path, bootstrap: str) -> None:
    """A switchover: the DSN names a private server (first, writable) and the machine's, with
    `target_session_attrs=read-write`. Events go to the first; then it turns read-only (a demoted
    primary, a cloud database whose storage is full). The writes it refuses are the setup's fault,
    retried with the reason and never dead-lettered, and the pool's connections are dropped, so the
    next try connects afresh and lands on the server that takes writes now. Before, every event
    was dead-lettered ("cannot execute INSERT in a read-only transaction")."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    table = f"t_switch_{uuid.uuid4().hex[:8]}"
    with logical_postgres() as private:
        first, shared, port = await the_same_table_on_both(private, table)
        dsn = f"postgresql://postgres@127.0.0.1:{port},127.0.0.1:5432/test?target_session_attrs=read-write"
        target = await Target().start()
        delivery = {"backoff_initial": "50ms", "backoff_max": "300ms", "circuit_breaker": None}
        # One event a transaction: a refused batch is written again row by row, which would hide
        # how one refusal is classed.
        config = ledger_config(bootstrap, target, dsn, table, delivery=delivery, batch_size=1)
        try:
            async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
                await post(hub, *(payment(i) for i in range(1, 4)))

                async def on_the_first() -> bool:
                    return int(await first.fetchval(f"SELECT count(*) FROM {table}")) == 3

                await eventually(on_the_first)
                await read_only(first)
                await post(hub, *(payment(i) for i in range(4, 7)))

                async def on_the_other() -> bool:
                    return int(await shared.fetchval(f"SELECT count(*) FROM {table}")) == 3

                await eventually(on_the_other)
                assert not await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("ledger"))
                assert int(await first.fetchval(f"SELECT count(*) FROM {table}")) == 3
        finally:
            await shared.execute(f"DROP TABLE {table}")
            await shared.close()
            await first.close()
            await target.stop()


async def test_behind_pgbouncer_in_transaction_mode_the_dsn_flag_keeps_no_prepared_statements(
    tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """PgBouncer in transaction mode runs one session's statements on several server connections.
    Without `?pgbouncer=true` the driver's prepared statements are not where the next statement
    runs: the writes that fail wait, retried with what to add to the dsn, and none is
    dead-lettered (each one was before: "prepared statement __asyncpg_stmt_4__ does not exist").
    With the flag every event is written, and a sql_poll reads a legacy table through the pooler
    (its rows, in key order, become events that are written too)."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    table = f"t_pooled_{uuid.uuid4().hex[:8]}"
    shared = await asyncpg.connect(SHARED)
    await shared.execute(f"CREATE TABLE {table} (payment_id VARCHAR(64) PRIMARY KEY, amount BIGINT NOT NULL)")
    # A table of its own for the poller, filled before it starts: an id watermark on the table the
    # outbound fills at concurrency 16 would pass keys committed out of order, and miss them.
    await shared.execute(f"CREATE TABLE {table}_legacy (payment_id VARCHAR(64) PRIMARY KEY, amount BIGINT NOT NULL)")
    await shared.executemany(f"INSERT INTO {table}_legacy VALUES ($1, $2)", [(f"legacy-{i:02d}", i) for i in range(40)])
    target = await Target().start()
    delivery = {"backoff_initial": "50ms", "backoff_max": "300ms", "circuit_breaker": None, "concurrency": 16}
    try:
        with pgbouncer() as port:
            pooled = f"postgresql://postgres@127.0.0.1:{port}/test"
            config = ledger_config(bootstrap, target, pooled, table, delivery=delivery, batch_size=1)
            async with build_hub(write_config(tmp_path / "without.yaml", config)) as hub:
                await post(hub, *(payment(i) for i in range(1, 41)))
                worker = hub.workers[0]

                async def says_what_to_add() -> bool:
                    return "add ?pgbouncer=true to the dsn" in str(worker.status().get("last_error", ""))

                await eventually(says_what_to_add)
                assert not await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("ledger"))

            await shared.execute(f"TRUNCATE {table}")
            caplog.clear()
            flagged = f"{pooled}?pgbouncer=true"
            config = ledger_config(bootstrap, target, flagged, table, delivery=delivery, batch_size=1)
            config["inbound"].append(
                {
                    "name": "ledger-rows",
                    "type": "sql_poll",
                    "dsn": flagged,
                    "table": f"{table}_legacy",
                    "watermark": {"id": "payment_id"},
                    "interval": "200ms",
                    "emit": {"schema": "Payment", "map": {"payment_id": "payment_id", "amount": "amount", "currency": '"usd"'}},
                }
            )
            async with build_hub(write_config(tmp_path / "with.yaml", config)) as hub:
                await post(hub, *(payment(i) for i in range(1, 41)))

                async def all_written() -> bool:  # the forty posted, and the forty legacy rows polled
                    return int(await shared.fetchval(f"SELECT count(*) FROM {table}")) == 80

                await eventually(all_written, timeout=90)

                seen: list[int] = [0]

                async def polled() -> bool:  # the forty posted, and the forty legacy rows polled
                    seen[0] = len(await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Payment")))
                    return seen[0] >= 80

                try:
                    await eventually(polled, timeout=90)
                except AssertionError:
                    raise AssertionError(f"{seen[0]} events, the poller's health: {await reading(hub, 1).health()}") from None
                assert seen[0] == 80
                assert not await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("ledger"))
            # Not written in the end by retrying until a statement happened to run where it was
            # prepared: no write and no poll met the pooler's refusal at all.
            met = [r.getMessage() for r in caplog.records if "pgbouncer=true" in r.getMessage() or "does not exist" in r.getMessage()]
            assert not met, met[:3]
    finally:
        await shared.execute(f"DROP TABLE {table}, {table}_legacy")
        await shared.close()
        await target.stop()
