"""PostgreSQL values as ``sql_poll`` and ``bus migrate`` read them, against this machine's
PostgreSQL: a date or time that Python cannot hold (past year 9999, BC) failed the whole query, so
a ``sql_poll`` read nothing after that row at any poll, and a migration stopped at it; a uuid or
an inet came as a Python object no string field takes, so a table keyed by uuid had every row
refused.

- the text a reader gets for a time beyond Python's years is PostgreSQL's own, to the character,
  for thousands of values of each type; values Python holds come as asyncpg gives them; and a
  value read goes back into a query as the same value;
- ``sql_poll`` reads on past such rows: one whose odd value the mapping does not use is published,
  one whose odd value the mapping puts into a time is parked with the value named; a uuid key and
  an inet are mapped into string fields as their text;
- ``bus migrate plan`` over such a table refuses exactly those rows, naming the value;
- a MariaDB ``BIT(1)`` flag (the legacy boolean) comes as the number it holds: its driver gave
  bytes, and ``bool()`` of ``b"\\x00"`` was true.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from bus.app.cli import main
from bus.kafka.reader import read_topic
from tests.conftest import require_service
from tests.support.hub import build_hub, unique_prefix, write_config
from tests.support.wait import healthy, until_true

DSN = "postgresql://postgres@127.0.0.1:5432/test"

# id -> (born, archived_at): rows 2 and 3 hold a value Python cannot hold where the mapping does not
# look (born); 4 and 5 where it puts it into a time (archived_at -> Lead.updated_at).
ROWS = {
    1: ("1980-05-01", "2025-01-01 10:00:00"),
    2: ("10000-01-01", "2025-01-01 10:00:00"),
    3: ("0044-03-15 BC", None),
    4: ("1990-01-01", "20224-05-01 10:00:00.5"),
    5: ("1990-01-01", "0300-01-01 00:00:00 BC"),
    6: ("infinity", "infinity"),
    7: ("2001-02-03", "2025-02-03 04:05:06"),
}
MAPPED_ODDLY = {4: "20224-05-01 10:00:00.5", 5: "0300-01-01 00:00:00 BC"}
# The uuid key and the inet go into string fields as they are: no str() needed.
MAP = {"lead_id": "ref", "company": "lower(ref)", "email": "email", "source": "seen_from", "updated_at": "archived_at"}


@asynccontextmanager
async def odd_table() -> AsyncIterator[str]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import asyncpg

    table = f"odd_times_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(DSN)
    try:
        await connection.execute(
            f"CREATE TABLE {table} (id integer PRIMARY KEY, ref uuid NOT NULL DEFAULT gen_random_uuid(), email text, born date, "
            "archived_at timestamp, seen_from inet DEFAULT '10.1.2.3', updated_at timestamptz NOT NULL DEFAULT '2025-06-01 08:00:00+00')"
        )
        for ident, (born, archived) in ROWS.items():
            await connection.execute(
                f"INSERT INTO {table} (id, email, born, archived_at) VALUES ($1, $2, $3::text::date, $4::text::timestamp)",
                ident, f"p{ident}@example.com", born, archived,
            )  # fmt: skip
        yield table
    finally:
        await connection.execute(f"DROP TABLE IF EXISTS {table}")
        await connection.close()


async def test_the_text_is_postgresqls_own_and_goes_back_as_the_same_value() -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import asyncpg

    from adapters.sql.pool import close_pool, open_pool

    rnd = random.Random(7)
    values = ["10000-01-01", "294276-12-30 23:59:59.999999", "4713-01-01 BC", "0001-01-01 BC", "0001-01-01", "9999-12-30 23:59:59.999999"]
    values += ["12000-02-29 12:00:00", "0401-02-29 BC", "2024-02-29 01:02:03.000450", "infinity", "-infinity"]
    for _ in range(600):
        clock = f"{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}.{rnd.randint(0, 999_999):06d}"
        era = rnd.choice(["", " BC"])
        year = rnd.randint(1, 4_713 if era else 290_000)  # the range of a PostgreSQL timestamp
        values.append(f"{year:04d}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d} {clock}{era}")
    # The server's own text in UTC and ISO style, which the hub's text follows whatever the session's settings.
    plain = await asyncpg.connect(DSN, server_settings={"TimeZone": "UTC", "DateStyle": "ISO"})
    pool = await open_pool(DSN, 1, what="test", reads_rows=True)
    beyond = {"date": 0, "timestamp": 0, "timestamptz": 0}
    try:
        async with pool.acquire() as connection:
            for kind in beyond:
                texts = [r["t"] for r in await plain.fetch(f"SELECT v::{kind}::text AS t FROM unnest($1::text[]) AS v", values)]
                # The texts name no zone: a timestamptz is read as UTC's, whatever the session's zone.
                cast = "v::timestamp AT TIME ZONE 'UTC'" if kind == "timestamptz" else f"v::{kind}"
                read = f"SELECT {cast} AS v FROM unnest($1::text[]) WITH ORDINALITY AS t(v, n) ORDER BY n"
                await connection.execute("SET TimeZone = 'America/New_York'; SET DateStyle = 'German'")
                found = [r["v"] for r in await connection.fetch(read, values)]
                for value, text in zip(found, texts, strict=True):
                    if isinstance(value, str):
                        assert value == text, (kind, value, text)
                        beyond[kind] += 1
                # Values Python holds come as asyncpg's own decoder gives them.
                inside = [i for i, v in enumerate(found) if not isinstance(v, str)]
                native = [r["v"] for r in await plain.fetch(read, [values[i] for i in inside])]
                assert [found[i] for i in inside] == native
                # Every value read goes back into a query as the same value (a position saved from such a row),
                # but for the first and last day Python holds, which asyncpg takes for -infinity and infinity.
                await connection.execute("SET TimeZone = 'UTC'")
                ends = {dt.date.min, dt.date.max, dt.datetime.min, dt.datetime.max}
                kept = [(f, v) for f, v in zip(found, values, strict=True) if isinstance(f, str) or f not in ends]
                differ = await connection.fetch(
                    f"SELECT a::text, b FROM unnest($1::{kind}[], $2::text[]) AS t(a, b) WHERE a IS DISTINCT FROM b::{kind}",
                    [f for f, _ in kept], [v for _, v in kept],
                )  # fmt: skip
                assert not differ and len(kept) > 600, (kind, differ[:3])
    finally:
        await close_pool(pool, DSN)
        await plain.close()
    assert all(n > 300 for n in beyond.values()), beyond  # most of the values are beyond Python's years


async def uuids(table: str) -> dict[int, str]:
    import asyncpg

    connection = await asyncpg.connect(DSN)
    try:
        return {r["id"]: r["ref"] for r in await connection.fetch(f"SELECT id, ref::text AS ref FROM {table}")}
    finally:
        await connection.close()


def poll_config(bootstrap: str, table: str) -> dict[str, Any]:
    return {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 1, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "inbound": [
            {
                "name": "legacy",
                "type": "sql_poll",
                "dsn": DSN,
                "table": table,
                "columns": ["id", "ref", "email", "born", "archived_at", "seen_from"],
                "watermark": {"column": "updated_at", "id": "id"},
                "interval": "200ms",
                "settle": "0s",
                "batch_size": 3,
                "emit": {"schema": "Lead", "key": "id", "map": MAP},
            }
        ],
    }


async def test_sql_poll_reads_on_past_times_python_cannot_hold(tmp_path: Path, bootstrap: str) -> None:
    async with odd_table() as table:
        path = write_config(tmp_path / "bus.yaml", poll_config(bootstrap, table))
        async with build_hub(path) as hub:
            topic, parked_topic = hub.topics.canonical("Lead"), hub.topics.inbound_dead_letter("legacy")

            async def all_seen() -> tuple[list[Any], list[Any]] | None:
                events = await read_topic(hub.config.kafka, hub.bootstrap, topic)
                parked = await read_topic(hub.config.kafka, hub.bootstrap, parked_topic)
                return (events, parked) if len(events) + len(parked) >= len(ROWS) else None

            seen: tuple[list[Any], list[Any]] | None = None

            async def every_row_seen() -> bool:
                nonlocal seen
                seen = await all_seen()
                return seen is not None

            await until_true(every_row_seen, timeout=60, what="every row published or parked")
            assert seen is not None
            events, parked = seen
            published = sorted(int(dict(r.headers)["ce_id"].decode().split(":")[1].split("@")[0]) for r in events)
            assert published == [1, 2, 3, 6, 7]
            refs = await uuids(table)
            leads = [hub.codec.decode(r.value)[1] for r in events]
            assert sorted(lead["lead_id"] for lead in leads) == sorted(refs[i] for i in published)
            assert all(lead["company"] == lead["lead_id"] and lead["source"] == "10.1.2.3" for lead in leads), leads[0]
            reasons = {json.loads(r.value)["id"]: dict(r.headers)["bus_error"].decode() for r in parked}
            assert set(reasons) == set(MAPPED_ODDLY)
            for ident, text in MAPPED_ODDLY.items():
                assert text in reasons[ident] and "updated_at" in reasons[ident], reasons[ident]
                assert json.loads(parked[[json.loads(r.value)["id"] for r in parked].index(ident)].value)["archived_at"] == text
            assert (await healthy(hub.inbound[0])).ok
            assert hub.inbound[0].progress()["rows"] == len(ROWS)


def migration_config(tmp_path: Path, table: str) -> Path:
    document = {
        "kafka": {"bootstrap": "127.0.0.1:1"},
        "routes": [{"name": "all", "from": "Lead", "to": ["crm"]}],
        "outbound": [{"name": "crm", "type": "http", "method": "PUT", "url": "http://127.0.0.1:1/leads/$${lead_id}"}],
        "migrations": [
            {
                "name": "leads",
                "source": {"sql": {"dsn": DSN, "table": table, "batch_size": 2}},
                "emit": {"schema": "Lead", "key": "id", "map": MAP},
            }
        ],
    }
    path = tmp_path / "bus.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


async def test_a_migration_plan_refuses_only_the_rows_that_map_such_a_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with odd_table() as table:
        config = str(migration_config(tmp_path, table))

        def plan() -> tuple[int, str, str]:
            capsys.readouterr()
            code = main(["migrate", "plan", "leads", "-c", config, "--json"])
            captured = capsys.readouterr()
            return code, captured.out, captured.err

        code, out, err = await asyncio.to_thread(plan)
        assert code == 1, err  # rows would be refused
        found = json.loads(out)
        assert found["rows"] == len(ROWS) and found["per_subscriber"] == {"crm": len(ROWS) - len(MAPPED_ODDLY)}, found
        samples = {s["row"]["id"]: r["reason"] for r in found["refusals"] for s in r["samples"]}
        assert set(samples) == set(MAPPED_ODDLY), samples
        assert all(MAPPED_ODDLY[ident] in reason for ident, reason in samples.items()), samples


async def test_a_mariadb_bit_flag_is_read_as_its_number(tmp_path: Path, bootstrap: str) -> None:
    require_service("MariaDB", "127.0.0.1", 3306)
    from tests.integration.test_sql import run_sql

    dsn = "mysql://root@127.0.0.1:3306/test"
    table = f"products_{uuid.uuid4().hex[:8]}"
    await run_sql(
        "mariadb", dsn,
        f"CREATE TABLE {table} (sku varchar(20) PRIMARY KEY, name varchar(50), price decimal(10,2), active BIT(1), "
        "updated_at datetime(6) NOT NULL DEFAULT '2025-06-01 08:00:00')",
    )  # fmt: skip
    await run_sql("mariadb", dsn, f"INSERT INTO {table} (sku, name, price, active) VALUES ('A', 'On', 1.50, 1), ('B', 'Off', 2.00, 0)")
    try:
        config = poll_config(bootstrap, table)
        config["inbound"][0].update(
            dsn=dsn,
            columns=["sku", "name", "price", "active"],
            watermark={"column": "updated_at", "id": "sku"},
            emit={
                "schema": "Product",
                "key": "sku",
                "map": {"sku": "sku", "name": "name", "currency": '"eur"', "price": 'minor_units(price, "eur")', "active": "bool(active)"},
            },
        )
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            found: dict[str, bool] = {}

            async def both() -> bool:
                records = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Product"))
                found.update({p["sku"]: p["active"] for p in (hub.codec.decode(r.value)[1] for r in records)})
                return len(found) == 2

            await until_true(both, timeout=60, what="both products published")
            assert found == {"A": True, "B": False}
    finally:
        await run_sql("mariadb", dsn, f"DROP TABLE {table}")
