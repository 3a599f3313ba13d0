"""MariaDB TIMESTAMP columns on a server whose zone is not UTC (a private server set to
Europe/Berlin, as many legacy servers keep local time).

A TIMESTAMP column holds a moment, and reads a wall-clock time given to it in the session's zone.
The sql outbound wrote every time as its wall clock in the outbound's ``timezone`` (UTC), so on
such a server each stored moment was off by the zone's offset, with nothing said. Now a TIMESTAMP
column takes the moment itself (FROM_UNIXTIME), a DATETIME column keeps the wall clock in
``timezone``, a time a TIMESTAMP cannot hold is dead-lettered (FROM_UNIXTIME gave NULL), and what
MariaDB cannot tell apart (the hour a zone's clocks go back) is said at start. ``bus migrate``
loads many rows per statement into such a column, reads the moments back to compare, and puts
them back on rollback."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from bus.kafka.reader import read_topic
from tests.conftest import require_service
from tests.integration.test_migrate_files import cli
from tests.integration.test_migrate_files import write_config as write_migration_config
from tests.integration.test_sql import eventually, post_paid, run_sql_at
from tests.support.hub import build_hub, payment_hub_config, write_config
from tests.support.mariadb_private import private_mariadb
from tests.support.target import Target


@pytest.fixture(scope="module")
def berlin_mariadb() -> Iterator[str]:
    """A private MariaDB whose zone is Europe/Berlin (its zone tables loaded from the system's)."""
    with private_mariadb() as dsn:
        port = urlsplit(dsn).port
        zones = subprocess.run(["mariadb-tzinfo-to-sql", "/usr/share/zoneinfo"], capture_output=True, text=True, check=True).stdout
        client = ["mariadb", "--no-defaults", "-h127.0.0.1", f"-P{port}", "-uroot"]
        subprocess.run([*client, "mysql"], input=zones, text=True, capture_output=True, check=True)
        subprocess.run([*client, "-e", "SET GLOBAL time_zone = 'Europe/Berlin'"], check=True)
        yield dsn


async def moments(dsn: str, table: str, *columns: str) -> dict[str, tuple[str, ...]]:
    """key -> the moments (seconds since 1970, as the server holds them) of ``columns``."""
    selected = ", ".join(f"UNIX_TIMESTAMP({c})" for c in columns)
    return {r[0]: tuple(str(v) for v in r[1:]) for r in await run_sql_at(dsn, f"SELECT ref, {selected} FROM {table}")}


async def test_a_time_goes_into_a_timestamp_column_as_its_moment_whatever_the_servers_zone(
    berlin_mariadb: str, tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = berlin_mariadb
    [(zone,)] = await run_sql_at(dsn, "SELECT @@global.time_zone")
    assert zone == "Europe/Berlin"
    table = f"paid_{uuid.uuid4().hex[:8]}"
    await run_sql_at(dsn, f"CREATE TABLE {table} (ref VARCHAR(64) PRIMARY KEY, paid TIMESTAMP(3) NULL, paid_local DATETIME(3) NULL)")
    target = await Target().start()
    config = payment_hub_config(bootstrap, target.url)
    config["inbound"][0]["emit"]["map"]["description"] = "data.paid"
    config["routes"] = [{"name": "all", "from": "Payment", "to": ["books"]}]
    columns = {"ref": "payment_id", "paid": "timestamp(description)", "paid_local": "timestamp(description)"}
    config["outbound"] = [
        {"name": "books", "type": "sql", "dsn": dsn, "table": table, "columns": columns, "key": ["ref"], "timezone": "America/New_York"}
    ]
    sent = {
        "pi_1": "2024-03-01T10:00:00+02:00",  # Berlin in winter (+01:00), New York in winter (-05:00)
        "pi_2": "2024-07-01T12:00:00.123Z",  # both in summer time
        "pi_3": "1969-07-20T20:17:40Z",  # before the first second a TIMESTAMP holds
    }
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            await post_paid(hub, sent)

            async def settled() -> bool:
                written = len(await run_sql_at(dsn, f"SELECT ref FROM {table}"))
                refused = len(await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("books")))
                return written + refused >= 3

            await eventually(settled)
            letters = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("books"))
            [books] = [a for a in hub.outbound if a.config.name == "books"]
            assert "has summer time" in books.attention(), books.attention()  # the console lists it
        assert await moments(dsn, table, "paid") == {"pi_1": ("1709280000.000",), "pi_2": ("1719835200.123",)}
        local = {r[0]: str(r[1]) for r in await run_sql_at(dsn, f"SELECT ref, paid_local FROM {table}")}
        assert local == {"pi_1": "2024-03-01 03:00:00", "pi_2": "2024-07-01 08:00:00.123000"}  # New York's wall clock
        reasons = {dict(r.headers)["ce_id"]: dict(r.headers)["bus_error"].decode() for r in letters}
        assert list(reasons) == [b"evt_3"], reasons
        assert "column paid is a TIMESTAMP, which holds no time before 1970-01-01 00:00:01 UTC" in reasons[b"evt_3"], reasons
        assert "the database session's zone (Europe/Berlin) has summer time" in caplog.text
        assert "TIMESTAMP column(s) paid in that hour's second pass is stored an hour early" in caplog.text
    finally:
        await target.stop()
        await run_sql_at(dsn, f"DROP TABLE IF EXISTS {table}")


ROWS = 150


def write_migration(tmp_path: Path, dsn: str, table: str) -> Path:
    """test_migrate_files' export migration, of times in several zones, winter and summer, with
    milliseconds, into one MariaDB table ``table``."""
    with (tmp_path / "export.csv").open("w", newline="", encoding="latin-1") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ref", "amount", "currency", "customer", "paid"])
        for i in range(ROWS):
            writer.writerow(
                [f"F-{i:04d}", f"{i}.00", "eur", "Ada", f"2024-{1 + i % 12:02d}-15T{i % 24:02d}:30:00.{i % 1000:03d}-0{i % 8}:00"]
            )
    path = write_migration_config(tmp_path, table)
    document = yaml.safe_load(path.read_text())
    [books] = [o for o in document["outbound"] if o["name"] == "books"]
    books["dsn"] = dsn
    del books["columns"]["customer"]
    document["outbound"], document["routes"][0]["to"] = [books], ["books"]
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    return path


async def test_bus_migrate_loads_compares_and_rolls_back_timestamp_columns_as_moments(
    berlin_mariadb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import datetime

    dsn = berlin_mariadb
    table = f"books_{uuid.uuid4().hex[:8]}"
    await run_sql_at(dsn, f"CREATE TABLE {table} (ref VARCHAR(64) PRIMARY KEY, amount DECIMAL(12,2), paid TIMESTAMP(3) NULL)")
    # A row the run updates, its time in the hour before the clocks go forward (two offsets in one day).
    await run_sql_at(dsn, f"INSERT INTO {table} VALUES ('F-0005', 99.95, FROM_UNIXTIME(1711846800.5))")  # 2024-03-31 00:00:00.5Z
    before = await moments(dsn, table, "paid")
    config = str(write_migration(tmp_path, dsn, table))
    try:
        code, out, err = await asyncio.to_thread(cli, capsys, "migrate", "run", "export", "-c", config, "--json")
        assert code == 0, err
        report = json.loads(out)
        [books] = report["subscribers"]
        assert books["records"] == ROWS and books["differences"] == [] and books["checksums_equal"], books["differences"][:3]
        held = await moments(dsn, table, "paid")
        with (tmp_path / "export.csv").open() as handle:
            sent = {row["ref"]: datetime.fromisoformat(row["paid"]).timestamp() for row in csv.DictReader(handle)}
        assert {ref: float(values[0]) for ref, values in held.items()} == pytest.approx(sent, abs=0.0005)

        code, out, _ = await asyncio.to_thread(cli, capsys, "migrate", "rollback", report["run"], "-c", config)
        assert code == 0 and f"books: {ROWS - 1} deleted, 1 restored" in out, out
        assert await moments(dsn, table, "paid") == before  # the updated row's moment put back to the millisecond
    finally:
        await run_sql_at(dsn, f"DROP TABLE IF EXISTS {table}")


async def test_sql_poll_says_its_timestamp_columns_come_in_the_servers_zone(
    berlin_mariadb: str, tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """sql_poll reads a TIMESTAMP column as its wall-clock time in the session's zone, with no zone,
    and `timestamp()` in a mapping takes that as UTC: on a server outside UTC every time was off by
    its offset, unsaid. It is said once at start, with the zone and what to map instead."""
    from tests.integration.test_sql_poll import hub_config, wait_published

    dsn = berlin_mariadb
    table = f"customers_{uuid.uuid4().hex[:8]}"
    await run_sql_at(
        dsn, f"CREATE TABLE {table} (id integer PRIMARY KEY, cust_nm varchar(100), email varchar(100), updated_at TIMESTAMP(6) NULL)"
    )
    await run_sql_at(dsn, f"INSERT INTO {table} VALUES (1, 'Ada', 'ada@example.com', FROM_UNIXTIME(1709280000))")
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", hub_config(bootstrap, dsn, table, settle="0s"))) as hub:
            await wait_published(hub, 1)
            assert "TIMESTAMP column(s) updated_at are read" in hub.inbound[0].attention(), hub.inbound[0].attention()
        said = [r.getMessage() for r in caplog.records if "TIMESTAMP column(s)" in r.getMessage()]
        assert len(said) == 1, said
        assert "updated_at are read as wall-clock times in the database session's zone (Europe/Berlin, UTC+01:00 now" in said[0]
        assert 'map them as timestamp(updated_at, "<the server\'s zone>")' in said[0]
    finally:
        await run_sql_at(dsn, f"DROP TABLE IF EXISTS {table}")


async def legacy_source(dsn: str, table: str) -> None:
    """A legacy table of one payment, its time in a TIMESTAMP column."""
    await run_sql_at(
        dsn, f"CREATE TABLE {table} (ref VARCHAR(64) PRIMARY KEY, amount VARCHAR(16), currency VARCHAR(8), paid TIMESTAMP(3) NULL)"
    )
    await run_sql_at(dsn, f"INSERT INTO {table} VALUES ('F-1', '1.00', 'eur', FROM_UNIXTIME(1709280000))")


async def test_a_migration_from_mariadb_says_its_timestamp_columns_come_in_the_servers_zone(
    berlin_mariadb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A migration's MariaDB source reads its TIMESTAMP columns as wall-clock times in the session's
    zone, with no zone (the mapping's `timestamp()` takes them as UTC): said, with the zone, as the
    plan or run reads it. The same source on a UTC server says nothing."""
    dsn = berlin_mariadb
    source, target = f"legacy_{uuid.uuid4().hex[:8]}", f"books_{uuid.uuid4().hex[:8]}"
    await legacy_source(dsn, source)
    await run_sql_at(dsn, f"CREATE TABLE {target} (ref VARCHAR(64) PRIMARY KEY, amount DECIMAL(12,2), paid TIMESTAMP(3) NULL)")
    path = write_migration(tmp_path, dsn, target)
    document = yaml.safe_load(path.read_text())
    document["migrations"][0]["source"] = {
        "sql": {"dsn": dsn, "query": f"SELECT ref, amount, currency, 'Ada' AS customer, paid FROM {source}"}
    }
    document["migrations"][0]["emit"]["map"]["description"] = "str(paid)"
    path.write_text(yaml.safe_dump(document))
    try:
        code, out, err = await asyncio.to_thread(cli, capsys, "migrate", "plan", "export", "-c", str(path), "--json")
        assert code == 0, err
        assert json.loads(out)["rows"] == 1
        assert "migration export: TIMESTAMP column(s) paid of the source are read as wall-clock times" in err, err
        assert "(Europe/Berlin, UTC+01:00 now, with summer time)" in err or "(Europe/Berlin, UTC+02:00 now, with summer time)" in err, err

        # The machine's shared server keeps UTC: nothing to say.
        require_service("MariaDB", "127.0.0.1", 3306)
        shared = "mysql://root@127.0.0.1:3306/test"
        await legacy_source(shared, source)
        [(zone,)] = await run_sql_at(shared, "SELECT TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(), NOW())")
        assert zone == 0, "the shared server is expected to keep UTC"
        document["migrations"][0]["source"]["sql"]["dsn"] = shared
        path.write_text(yaml.safe_dump(document))
        code, out, err = await asyncio.to_thread(cli, capsys, "migrate", "plan", "export", "-c", str(path), "--json")
        assert code == 0 and json.loads(out)["rows"] == 1, err
        assert "TIMESTAMP column(s)" not in err, err
    finally:
        await run_sql_at(dsn, f"DROP TABLE IF EXISTS {source}")
        with contextlib.suppress(Exception):
            await run_sql_at("mysql://root@127.0.0.1:3306/test", f"DROP TABLE IF EXISTS {source}")
        await run_sql_at(dsn, f"DROP TABLE IF EXISTS {target}")
