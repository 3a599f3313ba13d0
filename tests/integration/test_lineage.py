"""Event lineage (GET /api/v1/events/{id}, GET /api/v1/events?q=) against a running hub: one
event delivered to one subscriber and refused by another until it is dead-lettered, then replayed
once the target recovers. Its lineage shows where it entered, where each copy went with every
failed attempt and the target's answer, the dead letter and its replay, and where it is now; it
is found by its key too. A split event's elements are found under the id of the event."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from bus.app.cli import main
from tests.faults.test_delivery_faults import hub_config, post_all
from tests.support.hub import build_hub, write_config
from tests.support.target import Target

TOKEN = "lineage-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def lineage_when(api: httpx.AsyncClient, event_id: str, done: Any, timeout_s: float = 30) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        answer = await api.get(f"/events/{event_id}", headers=AUTH)
        if answer.status_code == 200 and done(found := answer.json()):
            return found
        assert asyncio.get_running_loop().time() < deadline, answer.text
        await asyncio.sleep(0.3)


async def cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, argv)
    out, err = capsys.readouterr()
    return code, out, err


async def test_an_event_is_followed_through_delivery_dead_letter_and_replay(
    tmp_path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    refusing = {"on": True}
    good = await Target().start()
    bad = await Target(answer=lambda call: (500, {}) if refusing["on"] and call.body["payment_id"] == "p-7" else (200, {})).start()
    try:
        config = hub_config(bootstrap, {"erp": {"url": f"{good.url}/erp"}, "crm": {"url": f"{bad.url}/crm"}})
        config["outbound"][1]["delivery"] = {"max_attempts": 3, "backoff_initial": "10ms", "backoff_max": "20ms"}
        config["ops"]["tokens"] = [{"name": "admin", "token": TOKEN}]
        async with (
            build_hub(write_config(tmp_path / "bus.yaml", config)) as hub,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.ops.port}/api/v1", timeout=60) as api,
        ):
            # Records on the index the hub did not write, on every partition: skipped by each lookup (a
            # "hops" that is no list, or a value nested past the stack, broke it: a 500).
            producer = AIOKafkaProducer(bootstrap_servers=hub.bootstrap)
            await producer.start()
            for partition in range(hub.config.lineage.partitions):
                junk_hops = [
                    ["r", ["p-7"]],
                    ["r", "p-7", "x", 5],
                    ["d", "p-7", *range(6), 5, 0],
                    # The right shape, a field of the wrong type: each was a 500 from the lookup.
                    ["r", "p-7", "t/0/1", [5]],  # a copy that is no text
                    ["d", "p-7", "2026-12-07T10:00:00Z", ["crm"], "t/0/1", "delivered", 1, [], None],  # unhashable
                    ["d", "p-7", "2026-12-07T10:00:00Z", "crm", "nowhere", "delivered", 1, [], None],  # no position
                    ["d", "p-7", "2026-12-07T10:00:00Z", "crm", "t/0/-5", "delivered", 1, [], None],  # a negative offset
                    ["d", "p-7", "2026-12-07T10:00:00Z", "crm", "t/0/1", "delivered", "one", [], None],  # no count
                    ["d", "p-7", "2026-12-07T10:00:00Z", "crm", "t/0/1", "delivered", 1, [[1, 2]], None],  # a failure of numbers
                ]
                for junk in (b'{"at": "x", "hops": 5}', b"[" * 100_000, b"not json", json.dumps({"at": "x", "hops": junk_hops}).encode()):
                    await producer.send_and_wait(hub.topics.lineage, junk, partition=partition)
            await producer.stop()
            await post_all(hub, [{"id": f"p-{i}", "key": f"cust-{i % 3}", "seq": i} for i in range(10)])
            found = await lineage_when(
                api,
                "p-7",
                lambda f: (
                    {w["subscriber"]: w["state"] for w in f["now"]}
                    == {
                        "erp": "delivered",
                        "crm": "dead_lettered",
                    }
                ),
            )
            entered = found["entered"]
            assert entered["key"] == "cust-1" and entered["source"] and entered["time"]
            assert entered["position"].startswith(hub.topics.canonical("Payment") + "/")
            assert entered["data"]["payment_id"] == "p-7" and entered["data"]["amount"] == 7
            assert sorted((c["route"], c["to"]) for c in found["routed"]) == [("all", "crm"), ("all", "erp")]
            by_subscriber = {d["subscriber"]: d for d in found["deliveries"]}
            assert by_subscriber["erp"]["outcome"] == "delivered" and by_subscriber["erp"]["attempts"] == 1
            assert by_subscriber["erp"]["failures"] == [] and by_subscriber["erp"]["data"]["payment_id"] == "p-7"
            crm = by_subscriber["crm"]
            assert crm["outcome"] == "dead_lettered" and crm["attempts"] == 3
            assert len(crm["failures"]) >= 3 and all("500" in f["answer"] for f in crm["failures"][:3])
            assert [(x["subscriber"], x["status"]) for x in found["dead_letters"]] == [("crm", "new")]

            # Another event of the same subscriber went through: its lineage says delivered on both.
            other = await lineage_when(api, "p-4", lambda f: len(f["now"]) == 2 and all(w["state"] == "delivered" for w in f["now"]))
            assert [d["outcome"] for d in other["deliveries"]] == ["delivered", "delivered"]

            # Found by its key, with the other events of that key.
            search = (await api.get("/events", params={"q": "cust-1"}, headers=AUTH)).json()
            assert search["lineage_enabled"] is True and sorted(search["ids"]) == ["p-1", "p-4", "p-7"]
            assert (await api.get("/events", params={"q": "p-7"}, headers=AUTH)).json()["ids"] == ["p-7"]
            assert (await api.get("/events", params={"q": "nobody"}, headers=AUTH)).json()["ids"] == []
            missing = await api.get("/events/nobody", headers=AUTH)
            assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")

            # `bus dlq` and `bus reconcile` through the API (--hub) say what they say straight from Kafka (-c).
            monkeypatch.setenv("BUS_OPS_TOKEN", TOKEN)
            hub_url, config_file = f"http://127.0.0.1:{hub.ops.port}", str(tmp_path / "bus.yaml")
            through_api = await cli(capsys, ["dlq", "list", "--hub", hub_url])
            assert through_api == await cli(capsys, ["dlq", "list", "-c", config_file])
            assert "p-7" in through_api[1] and "1 dead letter(s)" in through_api[1] and through_api[0] == 0
            balances = await cli(capsys, ["reconcile", "--hub", hub_url, "--json"])
            assert json.loads(balances[1]) == json.loads((await cli(capsys, ["reconcile", "-c", config_file, "--json"]))[1])
            assert {b["subscriber"]: (b["delivered"], b["dead_lettered"], b["ok"]) for b in json.loads(balances[1])} == {
                "erp": (10, 0, True),
                "crm": (9, 1, True),
            }
            assert "subscriber crm: balanced" in (await cli(capsys, ["reconcile", "--hub", hub_url]))[1]
            monkeypatch.delenv("BUS_OPS_TOKEN")
            refused = await cli(capsys, ["dlq", "list", "--hub", hub_url])
            assert refused[0] != 0 and "token" in refused[2]

            # The target recovers; the dead letter is replayed (through the API, dry run first): the
            # lineage shows the replay and its delivery.
            refusing["on"] = False
            monkeypatch.setenv("BUS_OPS_TOKEN", TOKEN)
            assert (await cli(capsys, ["dlq", "replay", "--hub", hub_url, "--subscriber", "crm", "--dry-run", "p-7"]))[1] == (
                "would replay 1 dead letter(s)\n"
            )
            assert (await cli(capsys, ["dlq", "replay", "--hub", hub_url, "--subscriber", "crm", "p-7"]))[
                1
            ] == "replayed 1 dead letter(s)\n"
            found = await lineage_when(api, "p-7", lambda f: {w["subscriber"]: w["state"] for w in f["now"]}.get("crm") == "delivered")
            crm_deliveries = [d for d in found["deliveries"] if d["subscriber"] == "crm"]
            assert [d["outcome"] for d in crm_deliveries] == ["dead_lettered", "delivered"]
            assert crm_deliveries[1]["replayed_from"].startswith(hub.topics.dead_letter("crm") + "/")
            assert [x["status"] for x in found["dead_letters"]] == ["replayed"]
            assert sum(1 for call in bad.accepted if call.body["payment_id"] == "p-7") == 1
    finally:
        await good.stop()
        await bad.stop()


async def test_lineage_off_says_so(tmp_path: Path, bootstrap: str) -> None:
    good = await Target().start()
    try:
        config = hub_config(bootstrap, {"erp": {"url": f"{good.url}/erp"}})
        config["ops"]["tokens"] = [{"name": "admin", "token": TOKEN}]
        config["lineage"] = {"enabled": False}
        async with (
            build_hub(write_config(tmp_path / "bus.yaml", config)) as hub,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.ops.port}/api/v1", timeout=60) as api,
        ):
            await post_all(hub, [{"id": "q-1", "key": "k", "seq": 1}])
            await good.wait_for(lambda: len(good.accepted) == 1)
            assert hub.topics.lineage not in await hub_topics(hub)
            search = (await api.get("/events", params={"q": "q-1"}, headers=AUTH)).json()
            assert search == {"value": "q-1", "ids": [], "lineage_enabled": False}
            assert (await api.get("/events/q-1", headers=AUTH)).status_code == 404
    finally:
        await good.stop()


async def hub_topics(hub: Any) -> set[str]:
    from bus.kafka.clients import make_admin

    admin = make_admin(hub.config.kafka, hub.bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()
