"""``postgres_cdc`` against a real PostgreSQL with wal_level=logical (a private server the test
starts, tests/support/pg_logical.py) and the real embedded broker: inserts, updates and deletes in
commit order, a row that does not fit the schema, a restart with changes committed while the hub
was down, and the shared server (wal_level=replica) refused with a message saying what to change."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bus.app.hub import Hub
from bus.kafka.reader import read_topic
from tests.conftest import require_service
from tests.support.hub import build_hub, unique_prefix, write_config
from tests.support.pg_logical import logical_postgres, server_tool
from tests.support.wait import healthy, until


@pytest.fixture(scope="module")
def logical_dsn() -> Iterator[str]:
    with logical_postgres() as dsn:
        yield dsn


CUST_MASTER = "CREATE TABLE cust_master (cust_no integer PRIMARY KEY, cust_nm text, email_addr text, credit numeric(12,2))"


def hub_config(bootstrap: str, dsn: str, **cdc: Any) -> dict[str, Any]:
    inbound = {
        "name": "legacy-cdc",
        "type": "postgres_cdc",
        "dsn": dsn,
        "tables": ["cust_master"],
        "interval": "100ms",
        "emit": {
            "schema": "Customer",
            "key": "str(coalesce(after.cust_no, before.cust_no))",
            "subject": "op",  # routes can tell deletes apart: when: $subject == "d"
            "map": {
                "customer_id": "str(coalesce(after.cust_no, before.cust_no))",
                "name": 'coalesce(after.cust_nm, before.cust_nm, "")',
                "email": "after.email_addr",
            },
        },
        **cdc,
    }
    return {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 1, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "inbound": [inbound],
    }


async def changes(hub: Hub) -> list[tuple[str, str, str]]:
    """(op, customer id, event id) of every event on the Customer topic, in topic order."""
    records = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Customer"))
    out = []
    for record in records:
        headers = dict(record.headers)
        out.append((headers["ce_subject"].decode(), (record.key or b"").decode(), headers["ce_id"].decode()))
    return out


async def wait_changes(hub: Hub, count: int, timeout: float = 60) -> list[tuple[str, str, str]]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        seen = await changes(hub)
        if len(seen) >= count:
            return seen
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{len(seen)} of {count} changes published within {timeout}s")
        await asyncio.sleep(0.2)


async def slot_made(hub: Hub) -> Any:
    """The hub's postgres_cdc inbound, once it has made (or found) its slot."""
    cdc = hub.inbound[0]
    await until(lambda: bool(cdc.progress()["position"]), "the slot to be created")
    return cdc


async def sql(dsn: str, *statements: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def drop_slots_and_publications(dsn: str, *names: str) -> None:
    """What a test made under ``names`` on the shared private server, gone for the next test."""
    listed = ", ".join(f"'{name}'" for name in names)
    await sql(
        dsn,
        f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name IN ({listed})",
        f"DROP PUBLICATION IF EXISTS {', '.join(names)}",
    )


async def slot_position(dsn: str, slot: str = "bus_legacy_cdc") -> str:
    connection = await asyncpg.connect(dsn)
    try:
        query = "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1"
        return str(await connection.fetchval(query, slot))
    finally:
        await connection.close()


async def test_inserts_updates_deletes_and_restart(logical_dsn: str, tmp_path: Path, bootstrap: str) -> None:
    await sql(
        logical_dsn,
        "DROP TABLE IF EXISTS cust_master",
        CUST_MASTER,
        "ALTER TABLE cust_master REPLICA IDENTITY FULL",  # deletes carry the whole old row
        "INSERT INTO cust_master VALUES (0, 'Before the slot', 'old@x.io', 0)",  # committed before CDC starts: not a change
    )
    path = write_config(tmp_path / "bus.yaml", hub_config(bootstrap, logical_dsn))
    async with build_hub(path) as hub:
        cdc = await slot_made(hub)
        await sql(
            logical_dsn,
            "BEGIN; INSERT INTO cust_master SELECT i, 'Customer ' || i, 'c' || i || '@x.io', i * 1.5 FROM generate_series(1, 40) i; COMMIT",
            "UPDATE cust_master SET cust_nm = 'Renamed' WHERE cust_no IN (3, 4)",
            "DELETE FROM cust_master WHERE cust_no = 5",
            "INSERT INTO cust_master VALUES (41, NULL, NULL, 1)",  # name NULL: mapped to "", fits
        )
        seen = await wait_changes(hub, 44)
        assert [op for op, _, _ in seen] == ["c"] * 40 + ["u", "u", "d", "c"]
        assert [key for _, key, _ in seen[:3]] == ["1", "2", "3"] and seen[42][1] == "5"
        assert len({event_id for _, _, event_id in seen}) == 44
        assert (await healthy(cdc)).ok
        position = await slot_position(logical_dsn)
        assert position == cdc.progress()["position"]  # advanced after Kafka acknowledged

    # While the hub is down: more changes. They wait in the slot.
    await sql(
        logical_dsn,
        "UPDATE cust_master SET email_addr = 'new@x.io' WHERE cust_no BETWEEN 10 AND 14",
        "DELETE FROM cust_master WHERE cust_no = 40",
    )
    async with build_hub(path) as hub:
        seen = await wait_changes(hub, 50)
        await asyncio.sleep(1.0)  # a few more reads of the slot: nothing may be repeated
        seen = await changes(hub)
    assert [op for op, _, _ in seen[44:]] == ["u"] * 5 + ["d"]
    assert len(seen) == 50 and len({event_id for _, _, event_id in seen}) == 50, "a change was published twice"


async def test_bad_rows_are_parked_and_the_slot_moves_on(logical_dsn: str, tmp_path: Path, bootstrap: str) -> None:
    await sql(
        logical_dsn,
        "DROP TABLE IF EXISTS cust_master",
        "CREATE TABLE cust_master (cust_no integer PRIMARY KEY, cust_nm text, email_addr text)",
    )
    config = hub_config(bootstrap, logical_dsn, slot="bus_strict", publication="bus_strict")
    config["inbound"][0]["emit"]["map"]["name"] = "after.cust_nm"  # no fallback: a NULL name does not fit Customer
    path = write_config(tmp_path / "bus.yaml", config)
    async with build_hub(path) as hub:
        cdc = await slot_made(hub)
        await sql(logical_dsn, "INSERT INTO cust_master VALUES (1, 'Ok', NULL), (2, NULL, NULL), (3, 'Ok too', NULL)")
        await wait_changes(hub, 2)
        for _ in range(100):
            parked = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("legacy-cdc"))
            if parked:
                break
            await asyncio.sleep(0.1)
        assert len(parked) == 1 and b'"cust_no": 2' in parked[0].value and b"name" in dict(parked[0].headers)["bus_error"]
        await until(lambda: cdc.progress()["changes"] == 3, "the parked row to count as handled")


async def test_a_value_the_hub_cannot_read_parks_its_row_and_the_slot_moves_on(logical_dsn: str, tmp_path: Path, bootstrap: str) -> None:
    """A jsonb nested 2,000 deep, which PostgreSQL takes: its change made the decoder raise, and the
    adapter read that transaction again and again, the slot holding the server's WAL from then on.
    Now that row is parked with the reason, and the next ones are published."""
    await sql(
        logical_dsn,
        "DROP TABLE IF EXISTS cust_master",
        "CREATE TABLE cust_master (cust_no integer PRIMARY KEY, cust_nm text, email_addr text, extra jsonb)",
    )
    path = write_config(tmp_path / "bus.yaml", hub_config(bootstrap, logical_dsn, slot="bus_deep", publication="bus_deep"))
    deep = "[" * 2000 + "]" * 2000
    async with build_hub(path) as hub:
        await slot_made(hub)
        await sql(logical_dsn, f"INSERT INTO cust_master VALUES (1, 'Before', NULL, '{{}}'), (2, 'Deep', NULL, '{deep}')")
        await sql(logical_dsn, "INSERT INTO cust_master VALUES (3, 'After', NULL, NULL)")  # a later transaction
        seen = await wait_changes(hub, 2)
        assert [key for _, key, _ in seen] == ["1", "3"]
        for _ in range(100):
            parked = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("legacy-cdc"))
            if parked:
                break
            await asyncio.sleep(0.1)
        assert len(parked) == 1
        reason = dict(parked[0].headers)["bus_error"].decode()
        assert reason.startswith("public.cust_master: column extra: JSON nested more than 256 levels deep"), reason
        assert b'"cust_no": 2' in parked[0].value


async def test_a_server_without_logical_decoding_is_named_with_the_fix(tmp_path: Path, bootstrap: str) -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)  # the shared server: wal_level=replica
    path = write_config(tmp_path / "bus.yaml", hub_config(bootstrap, "postgresql://postgres@127.0.0.1:5432/test"))
    async with build_hub(path) as hub:
        cdc = hub.inbound[0]
        for _ in range(100):
            detail = (await cdc.health()).detail
            if "wal_level" in detail:
                break
            await asyncio.sleep(0.1)
        assert "wal_level=replica" in detail and "ALTER SYSTEM SET wal_level = logical" in detail, detail
        assert not (await hub.readiness())["inbound:legacy-cdc"]


async def test_a_transaction_too_large_to_hold_is_published_as_it_is_read(logical_dsn: str, tmp_path: Path, bootstrap: str) -> None:
    """A bulk UPDATE of millions of rows was read in one fetch and held whole until its Commit:
    the pod killed for its memory, and the same transaction read again at every start, the slot
    never moving and the server's WAL growing. Now it is found, then streamed: the same ids, in
    commit order, between the transactions around it, each change once."""
    await sql(
        logical_dsn,
        "DROP TABLE IF EXISTS cust_master",
        CUST_MASTER,
    )
    config = hub_config(bootstrap, logical_dsn, large_transaction=50, batch=100, slot="bus_large", publication="bus_large")
    path = write_config(tmp_path / "bus.yaml", config)
    async with build_hub(path) as hub:
        cdc = await slot_made(hub)
        await sql(
            logical_dsn,
            "INSERT INTO cust_master VALUES (0, 'First', 'a@x.io', 0)",
            "BEGIN; INSERT INTO cust_master SELECT i, 'Bulk ' || i, NULL, i FROM generate_series(1, 2500) i; COMMIT",
            "UPDATE cust_master SET cust_nm = 'After' WHERE cust_no = 0",
        )
        seen = await wait_changes(hub, 2502)
        await asyncio.sleep(1.0)  # more reads of the slot: nothing may come twice
        seen = await changes(hub)
        assert len(seen) == 2502 and len({event_id for *_, event_id in seen}) == 2502, "a change was published twice"
        # (Compared as booleans: pytest's diff of two lists of 2,500 takes minutes to write.)
        expected = [("c", "0"), *(("c", str(i)) for i in range(1, 2501)), ("u", "0")]
        wrong = [i for i, ((op, key, _), want) in enumerate(zip(seen, expected, strict=True)) if (op, key) != want]
        assert not wrong, f"{len(wrong)} out of commit order, the first at {wrong[0]}: {seen[wrong[0]]}"
        bulk = [event_id.rsplit(":", 1) for _, _, event_id in seen[1:2501]]
        assert len({commit for commit, _ in bulk}) == 1  # one transaction, its end LSN as every change's id says
        assert all(int(ordinal) == i for i, (_, ordinal) in enumerate(bulk))  # as read whole, they would be
        assert await slot_position(logical_dsn, "bus_large") == cdc.progress()["position"]


def test_the_decoder_never_holds_more_than_a_large_transaction_of_changes() -> None:
    """Skimming drops a large transaction's changes as they come; fed again with what it found,
    the decoder hands them out stamped, as read."""
    from adapters.sql.pgoutput import Decoder

    def message(kind: bytes, *parts: bytes) -> bytes:
        return kind + b"".join(parts)

    def begin(final: int, xid: int) -> bytes:
        return message(b"B", final.to_bytes(8, "big"), (0).to_bytes(8, "big"), xid.to_bytes(4, "big"))

    def commit(final: int, end: int) -> bytes:
        return message(b"C", b"\0", final.to_bytes(8, "big"), end.to_bytes(8, "big"), (0).to_bytes(8, "big"))

    relation = message(b"R", (7).to_bytes(4, "big"), b"public\0", b"t\0", b"d", (1).to_bytes(2, "big"), b"\1", b"id\0",
                       (23).to_bytes(4, "big"), (-1).to_bytes(4, "big", signed=True))  # fmt: skip

    def insert(i: int) -> bytes:
        value = str(i).encode()
        return message(b"I", (7).to_bytes(4, "big"), b"N", (1).to_bytes(2, "big"), b"t", len(value).to_bytes(4, "big"), value)

    stream = [relation, begin(100, 1), *(insert(i) for i in range(30)), commit(100, 120)]
    skim = Decoder(hold=10)
    out = [skim.feed(m) for m in stream]
    assert skim.pending == [] and out[-1] == [] and skim.skimmed == 100 and skim.known == {100: (120, skim.known[100][1])}
    assert skim.safe_lsn == 0  # nothing of it came out: the slot may not pass it
    again = Decoder(hold=10, known=skim.known)
    for m in stream:
        assert again.feed(m) in (None, [])
        assert len(again.pending) == 0
    assert [(c.after, c.commit_lsn, c.ordinal) for c in again.ready] == [({"id": i}, 120, i) for i in range(30)]
    assert again.safe_lsn == 120 and again.known == {}


async def test_a_slot_that_is_gone_is_not_made_again_unsaid(
    logical_dsn: str, tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A DBA drops the slot to free the server's disk (or a failover lands on a server without it).
    The adapter made a new one at its next connection, passing over every change committed in
    between, with an INFO line. Now a slot it had read is known lost: nothing is read and the health
    says from which position, until `lost_slot: recreate` says to go on (the gap logged)."""
    from tests.support.wait import health_saying

    await sql(
        logical_dsn,
        "DROP TABLE IF EXISTS cust_master",
        CUST_MASTER,
    )
    config = hub_config(bootstrap, logical_dsn, slot="bus_lost", publication="bus_lost")
    path = write_config(tmp_path / "bus.yaml", config)
    async with build_hub(path) as hub:
        cdc = await slot_made(hub)
        await sql(logical_dsn, "INSERT INTO cust_master VALUES (1, 'Before', 'a@x.io', 0)")
        await wait_changes(hub, 1)
        read_up_to = str(cdc.progress()["position"])
    await sql(logical_dsn, "SELECT pg_drop_replication_slot('bus_lost')", "INSERT INTO cust_master VALUES (2, 'In the gap', 'b@x.io', 0)")

    async with build_hub(path) as hub:
        cdc = hub.inbound[0]
        health = await health_saying(cdc, "replication slot bus_lost is gone", timeout=30)
        assert not health.ok and f"had read up to {read_up_to}" in health.detail and "lost_slot: recreate" in health.detail, health
        await sql(logical_dsn, "INSERT INTO cust_master VALUES (3, 'Still refused', 'c@x.io', 0)")
        await asyncio.sleep(1.0)
        assert len(await changes(hub)) == 1
        assert await slot_position(logical_dsn, "bus_lost") == "None"  # not made again behind the operator's back

    config["inbound"][0]["lost_slot"] = "recreate"
    async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
        cdc = hub.inbound[0]
        await until(lambda: bool(cdc.progress()["position"]), "the slot made again")
        assert f"changes committed after {read_up_to} and before now were not read" in caplog.text
        await sql(logical_dsn, "INSERT INTO cust_master VALUES (4, 'After', 'd@x.io', 0)")
        seen = await wait_changes(hub, 2)
        assert [key for _, key, _ in seen] == ["1", "4"]  # 2 and 3 fell in the gap, as the WARNING said
        assert (await healthy(cdc)).ok


async def test_an_update_that_left_a_large_value_unchanged_carries_that_value(logical_dsn: str, tmp_path: Path, bootstrap: str) -> None:
    """PostgreSQL does not send again a TOASTed value (a large text, stored apart) that an UPDATE
    did not change. Left out of `after`, it was mapped as null, and a target written by upsert lost
    the value at every update of another column. It is taken from the whole old row where the
    table sends one (REPLICA IDENTITY FULL), else read from the table by the row's key."""
    large = "".join(f"{i:05d}-{i * 7919 % 100_003:06d};" for i in range(1_500))  # 19,500 characters: stored apart
    await sql(
        logical_dsn,
        "DROP TABLE IF EXISTS cust_master",
        CUST_MASTER,
        "DROP TABLE IF EXISTS cust_pair",
        # A key of two columns, and the default identity (only the key's old values are sent).
        "CREATE TABLE cust_pair (region text, cust_no integer, cust_nm text, email_addr text, credit numeric(12,2), "
        "PRIMARY KEY (region, cust_no))",
    )
    config = hub_config(bootstrap, logical_dsn, tables=["cust_master", "cust_pair"], slot="bus_toast", publication="bus_toast")
    path = write_config(tmp_path / "bus.yaml", config)
    async with build_hub(path) as hub:
        await slot_made(hub)
        await sql(
            logical_dsn,
            f"INSERT INTO cust_master SELECT i, 'Customer', '{large}' || i, i FROM generate_series(1, 4) i",
            f"INSERT INTO cust_pair VALUES ('eu', 1, 'Pair', '{large}p', 1)",
            "UPDATE cust_master SET cust_nm = 'One renamed' WHERE cust_no = 1",  # default identity: read back by key
            "UPDATE cust_pair SET cust_nm = 'Pair renamed' WHERE region = 'eu' AND cust_no = 1",
            "ALTER TABLE cust_master REPLICA IDENTITY FULL",
            "UPDATE cust_master SET cust_nm = 'Two renamed' WHERE cust_no = 2",  # the whole old row comes with it
            "ALTER TABLE cust_master REPLICA IDENTITY DEFAULT",
            # Changed again before the hub reads it (one transaction: the hub reads it whole, after its
            # commit): the value read back is the row's latest, and its own change follows.
            "BEGIN; UPDATE cust_master SET cust_nm = 'Three renamed' WHERE cust_no = 3; "
            "UPDATE cust_master SET email_addr = 'three@x.io' WHERE cust_no = 3; COMMIT",
            # Deleted before the hub reads the update: no value to read; the delete follows.
            "BEGIN; UPDATE cust_master SET cust_nm = 'Four renamed' WHERE cust_no = 4; DELETE FROM cust_master WHERE cust_no = 4; COMMIT",
        )
        seen = await wait_changes(hub, 12)
        records = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Customer"))
        events = [(op, hub.codec.decode(r.value)[1]) for (op, _, _), r in zip(seen, records, strict=True)]
    updates = [(e["name"], e["email"]) for op, e in events if op == "u"]
    assert updates == [
        ("One renamed", large + "1"),
        ("Pair renamed", large + "p"),
        ("Two renamed", large + "2"),
        ("Three renamed", "three@x.io"),  # the row's value when it was read: its own change comes next
        ("Three renamed", "three@x.io"),
        ("Four renamed", None),
    ], [(name, (email or "")[-12:]) for name, email in updates]
    assert [op for op, _ in events][-1] == "d"


async def test_a_table_added_to_the_config_is_published(
    logical_dsn: str, tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The publication is made once, with the tables of its day: a table added to the config later
    was never published (its changes never came), one taken out went on coming. The adapter's own
    publication is now set to the config's tables at start, and says so."""
    await sql(
        logical_dsn,
        "DROP TABLE IF EXISTS cust_master",
        CUST_MASTER,
        "DROP TABLE IF EXISTS cust_extra",
        CUST_MASTER.replace("cust_master", "cust_extra"),
    )
    config = hub_config(bootstrap, logical_dsn, slot="bus_follow", publication="bus_follow")
    path = write_config(tmp_path / "bus.yaml", config)
    # This test once held a worker of the full suite for 17 minutes, and once ran past pytest-timeout
    # with only an idle event loop to show: a bound of its own names the line it waits on.
    async with asyncio.timeout(150):
        async with build_hub(path) as hub:
            await slot_made(hub)
            await sql(logical_dsn, "INSERT INTO cust_master VALUES (1, 'One', 'a@x.io', 1)")
            await wait_changes(hub, 1)
        config["inbound"][0]["tables"] = ["cust_extra"]  # cust_master taken out, cust_extra added
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            await until(lambda: "publication bus_follow set to the config's tables" in caplog.text, "the publication to be set")
            await sql(
                logical_dsn,
                "INSERT INTO cust_master VALUES (2, 'Two', 'b@x.io', 2)",
                "INSERT INTO cust_extra VALUES (3, 'Three', 'c@x.io', 3)",
            )
            seen = await wait_changes(hub, 2)
            await asyncio.sleep(1.0)
            seen = await changes(hub)
    assert [key for _, key, _ in seen] == ["1", "3"], seen
    assert "(added: cust_extra; taken out: public.cust_master)" in caplog.text, caplog.text


async def test_two_replicas_share_one_slot_one_reads_and_the_other_takes_over(tmp_path: Path, bootstrap: str) -> None:
    """Two processes of the inbound role with one postgres_cdc: the slot takes one reader, so one
    reads and the other stands by, both ready (the second failed for good on the active slot, and
    was never ready). When the reader stops, the other reads on from the slot's position.

    On a server of its own: once in a full run, on the server the module's other tests had used
    (their slots and publications left behind), the reader's first read of the new slot did not
    return for a minute; not seen on a fresh server."""
    with logical_postgres() as dsn:
        await _two_replicas_share_one_slot(dsn, tmp_path, bootstrap)


async def _two_replicas_share_one_slot(logical_dsn: str, tmp_path: Path, bootstrap: str) -> None:
    await sql(logical_dsn, "DROP TABLE IF EXISTS cust_master", CUST_MASTER)
    config = hub_config(bootstrap, logical_dsn)
    config["inbound"][0]["name"] = "shared-cdc"
    path = write_config(tmp_path / "bus.yaml", config)
    first, second = build_hub(path, role="inbound"), build_hub(path, role="inbound")
    try:
        await asyncio.gather(first.start(), second.start())
        standing = [getattr(hub.inbound[0], "standing_by", None) for hub in (first, second)]
        assert sorted(standing, key=str) == [False, True], standing
        reader, standby = (first, second) if standing[1] else (second, first)
        await until(lambda: bool(reader.inbound[0].progress().get("position")), "the slot to be created")
        for _ in range(100):  # the reader is ready once connected to its slot; the standby at once
            if all((await reader.readiness()).values()):
                break
            await asyncio.sleep(0.1)
        assert all((await standby.readiness()).values()) and all((await reader.readiness()).values())
        await sql(logical_dsn, "INSERT INTO cust_master SELECT i, 'C' || i, NULL, 0 FROM generate_series(1, 10) i")
        await wait_changes(reader, 10)

        await reader.stop()
        await sql(logical_dsn, "INSERT INTO cust_master SELECT i, 'C' || i, NULL, 0 FROM generate_series(11, 20) i")
        seen = await wait_changes(standby, 20, timeout=30)
        assert [key for _, key, _ in seen] == [str(i) for i in range(1, 21)], "each change once, in commit order"
        assert standby.inbound[0].progress()["position"] == await slot_position(logical_dsn, "bus_shared_cdc")
    finally:
        await asyncio.gather(first.stop(), second.stop())


async def _wal_moves(dsn: str, *, seconds: float) -> int:
    """How often the server's flushed WAL moved in ``seconds`` (asked every 20 ms; asking writes none)."""
    connection = await asyncpg.connect(dsn)
    try:
        moves, last = 0, await connection.fetchval("SELECT pg_current_wal_flush_lsn()::text")
        deadline = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
            now = await connection.fetchval("SELECT pg_current_wal_flush_lsn()::text")
            moves, last = moves + (now != last), now
        return moves
    finally:
        await connection.close()


def _decoding_sessions(dsn_log: Path, slot: str) -> int:
    return dsn_log.read_text(errors="replace").count(f'starting logical decoding for slot "{slot}"')


async def test_an_idle_server_is_not_decoded_again_at_every_interval(logical_dsn: str, tmp_path: Path, bootstrap: str) -> None:
    """Each peek is a decoding session on the server (the WAL read again from the slot's restart
    point, two LOG lines in its log); with nothing written there is nothing to decode."""
    await sql(logical_dsn, "DROP TABLE IF EXISTS cust_master", CUST_MASTER)
    connection = await asyncpg.connect(logical_dsn)
    try:  # the test's server logs to server.log beside its data folder (tests/support/private_server.py)
        log = Path(await connection.fetchval("SHOW data_directory")).parent / "server.log"
    finally:
        await connection.close()
    path = write_config(tmp_path / "bus.yaml", hub_config(bootstrap, logical_dsn, slot="bus_idle", publication="bus_idle"))
    async with build_hub(path) as hub:  # interval 100ms
        await slot_made(hub)
        await sql(logical_dsn, "INSERT INTO cust_master VALUES (1, 'Ada', 'ada@example.com', 10)")
        await wait_changes(hub, 1)
        await asyncio.sleep(1)  # the change's read, and the one that found the slot caught up, are done
        before = _decoding_sessions(log, "bus_idle")
        moves = await _wal_moves(logical_dsn, seconds=3)  # 30 intervals with nothing written by anyone but the server
        idle = _decoding_sessions(log, "bus_idle") - before
        # The server writes WAL of its own now and then (a running-transactions record every 15 s after
        # activity, a checkpoint's): each move may take one peek; every interval took one before.
        assert idle <= 1 + moves, f"{idle} decoding sessions in 3 s on an idle server (its WAL moved {moves} time(s))"
        await sql(logical_dsn, "INSERT INTO cust_master VALUES (2, 'Grace', 'grace@example.com', 20)")
        assert [key for _, key, _ in await wait_changes(hub, 2, timeout=10)] == ["1", "2"]


async def test_a_renamed_adapter_reads_on_from_its_former_slot_and_frees_it(
    logical_dsn: str, tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An adapter renamed in the config (its slot is named after it: bus_<name>) made a new slot
    from now: every change committed while the hub was down for the rename was passed over, and
    the former slot, read by no one, kept the server's WAL until its disk filled. It now takes its
    former name's slot over (found by the position that name saved in Kafka): copied, dropped."""
    await sql(logical_dsn, "DROP TABLE IF EXISTS cust_master", CUST_MASTER)
    config = hub_config(bootstrap, logical_dsn)
    config["inbound"][0]["name"] = "crm-cdc"
    path = write_config(tmp_path / "bus.yaml", config)
    try:
        async with build_hub(path) as hub:
            await slot_made(hub)
            await sql(logical_dsn, "INSERT INTO cust_master VALUES (1, 'Before', 'a@x.io', 0)")
            await wait_changes(hub, 1)
        await sql(logical_dsn, "INSERT INTO cust_master VALUES (2, 'During the rename', 'b@x.io', 0)")

        config["inbound"][0]["name"] = "crm-changes"
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            await slot_made(hub)
            await sql(logical_dsn, "INSERT INTO cust_master VALUES (3, 'After', 'c@x.io', 0)")
            await wait_changes(hub, 3)
            await asyncio.sleep(1)  # anything read twice would have come by now
            assert [key for _, key, _ in await changes(hub)] == ["1", "2", "3"]
        assert await slot_position(logical_dsn, "bus_crm_cdc") == "None"  # dropped: no WAL kept for no one
        assert await slot_position(logical_dsn, "bus_crm_changes") != "None"
        assert "renamed: replication slot bus_crm_cdc (of its former name) copied to bus_crm_changes" in caplog.text

        await sql(logical_dsn, "INSERT INTO cust_master VALUES (4, 'Next start', 'd@x.io', 0)")
        async with build_hub(path) as hub:  # and at the next start, its own slot with the publication it read with
            await wait_changes(hub, 4)
            await asyncio.sleep(1)
            assert [key for _, key, _ in await changes(hub)] == ["1", "2", "3", "4"]
            assert (await healthy(hub.inbound[0])).ok
    finally:
        await drop_slots_and_publications(logical_dsn, "bus_crm_cdc", "bus_crm_changes")


async def test_a_former_slot_still_read_at_the_rename_is_dropped_once_no_one_reads_it(
    logical_dsn: str, tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A rolling update: the pods of the old config (the adapter's former name) still read its
    slot when the renamed adapter starts, so the former slot cannot be dropped then. It is copied,
    and dropped once no process reads it; left, it kept the server's WAL for good."""
    await sql(logical_dsn, "DROP TABLE IF EXISTS cust_master", CUST_MASTER)
    config = hub_config(bootstrap, logical_dsn)
    config["inbound"][0]["name"] = "erp-cdc"
    path = write_config(tmp_path / "bus.yaml", config)
    old_pod = None
    try:
        async with build_hub(path) as hub:
            await slot_made(hub)
            await sql(logical_dsn, "INSERT INTO cust_master VALUES (1, 'Before', 'a@x.io', 0)")
            await wait_changes(hub, 1)
        # A process of the old config reading the former slot (a replication connection holds it).
        old_pod = await asyncio.create_subprocess_exec(
            server_tool("pg_recvlogical"), "-d", logical_dsn, "-S", "bus_erp_cdc", "--start", "-o", "proto_version=1",
            "-o", "publication_names=bus_erp_cdc", "-f", "/dev/null",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await until_slot_active(logical_dsn, "bus_erp_cdc")

        config["inbound"][0]["name"] = "erp-changes"
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            await slot_made(hub)
            assert "is still read by another process" in caplog.text
            assert await slot_position(logical_dsn, "bus_erp_cdc") != "None"  # not dropped while read
            await sql(logical_dsn, "INSERT INTO cust_master VALUES (2, 'After', 'b@x.io', 0)")
            await wait_changes(hub, 2)

            old_pod.terminate()  # the old pod stops
            await old_pod.wait()
            old_pod = None
            for _ in range(300):
                if await slot_position(logical_dsn, "bus_erp_cdc") == "None":
                    break
                await asyncio.sleep(0.1)
            assert await slot_position(logical_dsn, "bus_erp_cdc") == "None", "the former slot is still there"
            assert "replication slot bus_erp_cdc (of its former name) dropped: no process reads it any more" in caplog.text
            assert (await healthy(hub.inbound[0])).ok
    finally:
        if old_pod is not None:
            old_pod.kill()
            await old_pod.wait()
        await drop_slots_and_publications(logical_dsn, "bus_erp_cdc", "bus_erp_changes")


async def until_slot_active(dsn: str, slot: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        for _ in range(100):
            if await connection.fetchval("SELECT active FROM pg_replication_slots WHERE slot_name = $1", slot):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"slot {slot} never became active")
    finally:
        await connection.close()
