"""``bus positions``: a poller's saved position seen, kept across a change of its filter, and
forgotten on purpose, against this machine's PostgreSQL and the real embedded broker; and the
filter itself part of what a position is in, so a widened `where` no longer passes over the rows
it lets in."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from bus.app.cli import main
from bus.app.hub import Hub
from tests.integration.test_sql import DATABASES, run_sql
from tests.integration.test_sql_poll import hub_config, insert_rows, published, table_in, wait_published
from tests.support.hub import build_hub, ready_within, write_config

pytestmark = pytest.mark.timeout(240)

KIND, DSN = "postgresql", DATABASES["postgresql"][2]
ADMIN = "positions-admin-token"


def stamp(day: str) -> Any:
    return lambda _i: f"{day} 00:00:00"


async def bus(*argv: str | Path) -> int:
    """The ``bus`` command as an operator types it (in a thread: it runs its own event loop)."""
    return await asyncio.to_thread(main, [str(a) for a in argv])


async def listed(path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, Any]]:
    capsys.readouterr()
    assert await bus("positions", "list", "-c", path, "--bootstrap", bootstrap, "--json") == 0
    return {row["name"]: row for row in json.loads(capsys.readouterr().out)}


async def settled(hub: Hub, count: int) -> set[str]:
    """The rows published once ``count`` are, after a few more polls (a row read late would show)."""
    await wait_published(hub, count, timeout=30)
    await asyncio.sleep(1.5)  # seven more intervals
    ids = await published(hub)
    assert all(n == 1 for n in ids.values()), ids
    return {i.split("@")[0] for i in ids}


async def read_again(hub: Hub, rows: int) -> None:
    """Every one of ``rows`` rows published a second time (read again from the start), none a third."""
    for _ in range(150):
        counts = await published(hub)
        if sum(counts.values()) >= 2 * rows:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    assert sorted((await published(hub)).values()) == [2] * rows, "read again from the start, each row once more"


async def test_a_widened_where_is_said_before_the_start_and_adopt_keeps_the_position(
    tmp_path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with table_in(KIND) as table:
        await run_sql(KIND, DSN, insert_rows(table, range(1, 3), stamp("2020-01-02")))
        await run_sql(KIND, DSN, insert_rows(table, range(3, 4), stamp("2020-01-01")))  # outside the filter, before its position
        config = hub_config(bootstrap, DSN, table, where="id <= 2")
        narrow = write_config(tmp_path / "narrow.yaml", config)
        async with build_hub(narrow) as hub:
            assert await settled(hub, 2) == {"legacy:1", "legacy:2"}
        assert (await listed(narrow, bootstrap, capsys))["legacy"]["state"] == "current"

        config["inbound"][0]["where"] = "id <= 100"  # widened: row 3 now belongs, and sits before the saved watermark
        wide = write_config(tmp_path / "wide.yaml", config)
        row = (await listed(wide, bootstrap, capsys))["legacy"]
        assert row["state"] == "another-source" and row["differs"] == ["where"], row
        assert row["saved_in"]["where"] == "id <= 2" and row["reads"]["where"] == "id <= 100", row
        assert row["position"] and "another" not in json.dumps(row["position"]), row
        capsys.readouterr()
        assert await bus("positions", "list", "-c", wide, "--bootstrap", bootstrap) == 0
        said = capsys.readouterr().out
        assert "legacy (sql_poll): saved in another source (where changed" in said and "bus positions adopt legacy" in said, said

        # Not paused, and not said to be stopped: a reader would save over it.
        assert await bus("positions", "adopt", "legacy", "-c", wide, "--bootstrap", bootstrap) == 1
        assert "legacy is not paused" in capsys.readouterr().err
        # Another watermark order is more than a filter: the position would be read as what it is not.
        config["inbound"][0]["watermark"] = {"id": "id"}
        reordered = write_config(tmp_path / "reordered.yaml", config)
        assert await bus("positions", "adopt", "legacy", "-c", reordered, "--bootstrap", bootstrap, "--stopped") == 2
        refused = capsys.readouterr().err
        assert "column changed, not only its filter (where)" in refused and "--force" in refused, refused
        config["inbound"][0]["watermark"] = {"column": "updated_at", "id": "id"}

        assert await bus("positions", "adopt", "legacy", "-c", wide, "--bootstrap", bootstrap, "--stopped") == 0
        assert "position kept for what it reads now (where changed)" in capsys.readouterr().out
        assert (await listed(wide, bootstrap, capsys))["legacy"]["state"] == "current"
        await run_sql(KIND, DSN, insert_rows(table, range(4, 5), stamp("2021-01-01")))
        async with build_hub(wide) as hub:
            assert await settled(hub, 3) == {"legacy:1", "legacy:2", "legacy:4"}, "adopted: row 3, before the position, is not read"
        # Renamed in the config: no position under the new name, and the former one's is taken at the start.
        config["inbound"][0]["name"] = "customers"
        row = (await listed(write_config(tmp_path / "renamed.yaml", config), bootstrap, capsys))["customers"]
        assert row["state"] == "renamed-from" and row["renamed_from"] == "legacy" and row["position"], row


async def test_a_widened_where_reads_the_table_again_and_a_narrowed_one_goes_on(tmp_path: Path, bootstrap: str) -> None:
    """Without `adopt` the position of the narrower filter is not used: row 3, which the widened
    filter lets in before that position, is read (it was passed over, with nothing said). A filter
    added where there was none only narrows what is read: the position is used as it is."""
    async with table_in(KIND) as table:
        await run_sql(KIND, DSN, insert_rows(table, range(1, 3), stamp("2020-01-02")))
        await run_sql(KIND, DSN, insert_rows(table, range(3, 4), stamp("2020-01-01")))
        config = hub_config(bootstrap, DSN, table)
        async with build_hub(write_config(tmp_path / "all.yaml", config)) as hub:
            assert await settled(hub, 3) == {"legacy:1", "legacy:2", "legacy:3"}
        config["inbound"][0]["where"] = "id <> 3"  # narrowed: the position holds
        async with build_hub(write_config(tmp_path / "narrowed.yaml", config)) as hub:
            assert await settled(hub, 3) == {"legacy:1", "legacy:2", "legacy:3"}, "nothing read twice"
        config["inbound"][0]["where"] = "id <= 100"  # changed: another set of rows, read from the start
        async with build_hub(write_config(tmp_path / "changed.yaml", config)) as hub:
            await read_again(hub, 3)


async def test_a_paused_poller_is_reset_and_reads_its_table_again_on_resume(
    tmp_path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with table_in(KIND) as table:
        await run_sql(KIND, DSN, insert_rows(table, range(1, 3), stamp("2020-01-02")))
        config = hub_config(bootstrap, DSN, table)
        config["ops"]["tokens"] = [{"name": "admin", "token": ADMIN, "scope": "write"}]
        path = write_config(tmp_path / "bus.yaml", config)
        async with build_hub(path) as hub:
            await settled(hub, 2)
            hub_url = f"http://127.0.0.1:{hub.ops.port}"
            capsys.readouterr()
            assert await bus("positions", "reset", "legacy", "-c", path, "--bootstrap", bootstrap) == 1
            assert "bus pause inbound legacy" in capsys.readouterr().err
            assert await bus("positions", "reset", "nope", "-c", path, "--bootstrap", bootstrap) == 2
            assert "no inbound named 'nope'" in capsys.readouterr().err

            monkeypatch.setenv("BUS_OPS_TOKEN", ADMIN)
            assert await bus("pause", "inbound", "legacy", "--hub", hub_url) == 0
            row = (await listed(path, bootstrap, capsys))["legacy"]
            assert row["paused_by"] == "admin" and row["state"] == "current", row
            assert await bus("positions", "reset", "legacy", "-c", path, "--hub", hub_url) == 0
            assert "position forgotten" in capsys.readouterr().out
            assert (await listed(path, bootstrap, capsys))["legacy"]["state"] == "none"
            await asyncio.sleep(1.0)  # paused: nothing read again yet
            assert sorted((await published(hub)).values()) == [1, 1]
            assert await bus("resume", "inbound", "legacy", "--hub", hub_url) == 0
            await read_again(hub, 2)
            await ready_within(hub.ops.port)


async def test_a_source_that_keeps_its_own_place_is_listed_not_changed(
    tmp_path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A NATS durable consumer keeps its place in the stream: the position saved in Kafka is a
    fallback, and forgetting it would change nothing. Listed as such; reset refused, and why."""
    config = hub_config(bootstrap, DSN, "customers")
    config["inbound"].append(
        {
            "name": "orders",
            "type": "nats",
            "url": "nats://127.0.0.1:4222",
            "stream": "ORDERS",
            "subject": "orders.>",
            "emit": {"schema": "Customer", "key": "id", "map": {"customer_id": "str(id)", "name": "name", "email": "email"}},
        }
    )
    path = write_config(tmp_path / "bus.yaml", config)
    rows = await listed(path, bootstrap, capsys)
    assert rows["orders"]["kept_in"] == "the source" and rows["legacy"]["kept_in"] == "kafka", rows
    assert rows["orders"]["state"] == rows["legacy"]["state"] == "none", rows
    assert await bus("positions", "reset", "orders", "-c", path, "--bootstrap", bootstrap, "--stopped") == 2
    assert "keeps its place in its source" in capsys.readouterr().err


async def test_a_changed_filter_is_adopted_through_the_management_api_while_the_source_is_paused(tmp_path: Path, bootstrap: str) -> None:
    """The operator's way on a running hub: pause the source, deploy the widened `where` (it stays
    paused across the restart, not read), see its position saved in another source, adopt it,
    resume. Refused while the source is read, for a read-only token and for an unknown name."""
    async with table_in(KIND) as table:
        await run_sql(KIND, DSN, insert_rows(table, range(1, 3), stamp("2020-01-02")))
        await run_sql(KIND, DSN, insert_rows(table, range(3, 4), stamp("2020-01-01")))  # outside the filter, before its position
        config = hub_config(bootstrap, DSN, table, where="id <= 2")
        config["ops"]["tokens"] = [
            {"name": "admin", "token": ADMIN, "scope": "write"},
            {"name": "viewer", "token": "viewer-token", "scope": "read"},
        ]
        admin = {"Authorization": f"Bearer {ADMIN}"}
        async with build_hub(write_config(tmp_path / "narrow.yaml", config)) as hub:
            assert await settled(hub, 2) == {"legacy:1", "legacy:2"}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.ops.port}/api/v1", headers=admin, timeout=60) as api:
                refused = await api.post("/inbound/legacy/position/reset")
                assert refused.status_code == 409 and "being read by this process" in refused.json()["detail"], refused.text
                assert (await api.post("/inbound/legacy/pause", json={"reason": "where widened"})).status_code == 202

        config["inbound"][0]["where"] = "id <= 100"  # widened: row 3 belongs now, before the saved watermark
        async with (
            build_hub(write_config(tmp_path / "wide.yaml", config)) as hub,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.ops.port}/api/v1", headers=admin, timeout=60) as api,
        ):
            rows = (await api.get("/positions")).json()
            assert [(r["name"], r["state"], r["differs"], r["paused_by"]) for r in rows] == [
                ("legacy", "another-source", ["where"], "admin")
            ], rows
            viewer = await api.post("/inbound/legacy/position/adopt", headers={"Authorization": "Bearer viewer-token"})
            assert viewer.status_code == 403, viewer.text
            unknown = await api.post("/inbound/nope/position/adopt")
            assert unknown.status_code == 404 and "legacy" in unknown.json()["detail"], unknown.text
            bad = await api.post("/inbound/legacy/position/adopt", json={"force": "perhaps"})
            assert bad.status_code == 400, bad.text

            adopted = await api.post("/inbound/legacy/position/adopt")
            assert adopted.status_code == 200, adopted.text
            done = adopted.json()
            assert done["changed"] and done["before"]["state"] == "another-source" and "where changed" in done["said"], done
            assert (await api.get("/positions")).json()[0]["state"] == "current"
            again = (await api.post("/inbound/legacy/position/adopt")).json()
            assert not again["changed"] and again["said"].startswith("nothing to adopt"), again

            await run_sql(KIND, DSN, insert_rows(table, range(4, 5), stamp("2021-01-01")))
            assert (await api.post("/inbound/legacy/resume")).status_code == 202
            assert await settled(hub, 3) == {"legacy:1", "legacy:2", "legacy:4"}, "adopted: row 3, before the position, is not read"
