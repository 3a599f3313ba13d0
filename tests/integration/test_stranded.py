"""A subscriber taken out of the config (or renamed) while its topics still hold work is said at
the next start (bus.app.stranded): the events it never delivered and its open dead letters, by
name, in the log, a gauge and /readyz. The real hub on the embedded broker."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from tests.faults.test_delivery_faults import hub_config, post_all
from tests.support.hub import build_hub, write_config
from tests.support.target import Target
from tests.support.wait import until


async def test_a_subscriber_removed_with_work_left_on_its_topics_is_said_at_start(
    tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = await Target().start()
    down = await Target(answer=lambda call: (503, {})).start()  # retried: its events stay undelivered
    refusing = await Target(answer=lambda call: (400, {"error": "no"})).start()  # dead-lettered at once
    try:
        config = hub_config(
            bootstrap,
            {"erp": {"url": f"{good.url}/erp"}, "crm": {"url": f"{down.url}/crm"}, "legacy": {"url": f"{refusing.url}/legacy"}},
        )
        drops = tmp_path / "drops"
        drops.mkdir()
        emit = {"schema": "Payment", "id": "id", "key": "key", "map": {"payment_id": "id", "amount": "seq", "currency": '"usd"'}}
        config["inbound"].append(
            {"name": "drops", "type": "file", "path": str(drops), "poll_interval": "100ms", "settle": "0s", "emit": emit}
        )
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            (drops / "bad.jsonl").write_bytes(b"{broken\n[1, 2]\n")  # two lines the adapter cannot read: inbound dead letters
            await post_all(hub, [{"id": f"o-{i}", "key": f"k{i}", "seq": i} for i in range(5)])
            await good.wait_for(lambda: len(good.accepted) == 5)
            await until(lambda: (drops / "done" / "bad.jsonl").exists() or (drops / "failed" / "bad.jsonl").exists(), "the file read")
            await until(
                lambda: int(next(w for w in hub.workers if w.name == "legacy").balance()["dead_lettered"]) == 5, "legacy's dead letters"
            )
            await until(lambda: len(down.calls) >= 5, "crm tried")
            assert not hub.stranded

        # crm and legacy taken out of the config, and the drop folder; erp and the webhook stay.
        config["routes"][0]["to"] = ["erp"]
        config["outbound"] = [o for o in config["outbound"] if o["name"] == "erp"]
        config["inbound"] = [i for i in config["inbound"] if i["name"] != "drops"]
        caplog.set_level(logging.INFO, logger="bus.app.stranded")
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            await until(lambda: len(hub.stranded) == 3, "the look at start", timeout=30)
            assert hub.stranded == {
                "crm": {"undelivered": 5, "dead_letters": 0},
                "legacy": {"undelivered": 0, "dead_letters": 5},
                "_in.drops": {"undelivered": 0, "dead_letters": 2},
            }
            said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            crm = next(m for m in said if m.startswith("subscriber crm "))
            assert "5 event(s) it never delivered" in crm and f"{hub.topics.delivery('crm')}" in crm and "Put it back" in crm
            assert any(m.startswith("subscriber legacy ") and "5 open dead letter(s)" in m for m in said), said
            drops_said = next(m for m in said if m.startswith("inbound adapter drops "))
            assert f"{hub.topics.inbound_dead_letter('drops')} holds 2 open dead letter(s)" in drops_said, drops_said
            assert REGISTRY.get_sample_value("bus_stranded_events", {"subscriber": "_in.drops", "kind": "dead_letters"}) == 2
            labels = {"subscriber": "legacy", "kind": "dead_letters"}
            assert REGISTRY.get_sample_value("bus_stranded_events", labels) == 5
            async with httpx.AsyncClient() as client:
                ready = (await client.get(f"http://127.0.0.1:{hub.ops.port}/readyz")).json()
            assert ready["ready"] and ready["stranded"]["crm"] == {"undelivered": 5, "dead_letters": 0}, ready
            assert len(good.accepted) == 5
    finally:
        for target in (good, down, refusing):
            await target.stop()
