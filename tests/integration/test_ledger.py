"""The delivery ledger over the real broker: `bus reconcile` balances a clean run, compares with a
target's ids, and finds events that a consumer committed past without settling them."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from bus.app.cli import main
from bus.app.hub import Hub
from tests.integration.test_delivery import post
from tests.support.hub import build_hub, payment, payment_hub_config, write_config
from tests.support.target import Target


async def reconcile(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["reconcile", *args])  # main() runs its own event loop
    return code, capsys.readouterr().out


async def settled(capsys: pytest.CaptureFixture[str], path: Path, bootstrap: str, timeout: float = 30) -> dict[str, Any]:
    """Reconcile until nothing is in flight (the last batch's commit may trail the target's answer)."""
    deadline = time.monotonic() + timeout
    while True:
        code, out = await reconcile(capsys, "-c", str(path), "--bootstrap", bootstrap, "--subscriber", "erp", "--json")
        balance: dict[str, Any] = json.loads(out)[0]
        if balance["in_flight"] == 0 or time.monotonic() > deadline:
            balance["exit"] = code
            return balance
        await asyncio.sleep(0.5)


async def ledger_gauges(hub: Hub, subscriber: str) -> dict[str, float]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{hub.ops.port}/metrics")).text
    return {
        sample.labels["state"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "bus_ledger_events"
        for sample in family.samples
        if sample.labels["subscriber"] == subscriber
    }


async def gauges_when(hub: Hub, wanted: dict[str, float], timeout: float = 15) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while (found := await ledger_gauges(hub, "erp")) != wanted and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return found


async def test_reconcile_balances_and_compares_with_the_target(tmp_path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    target = await Target(answer=lambda c: (422, {}) if c.body["external_id"] in ("pi_3", "pi_7") else (201, {})).start()
    path = write_config(tmp_path / "bus.yaml", payment_hub_config(bootstrap, target.url))
    try:
        async with build_hub(path) as hub:
            await post(hub, *(payment(i) for i in range(40)))
            await target.wait_for(lambda: len(target.accepted) == 38)
            balance = await settled(capsys, path, bootstrap)
            counts = {k: balance[k] for k in ("entered", "delivered", "dead_lettered", "in_flight", "unaccounted", "exit")}
            assert counts == {"entered": 40, "delivered": 38, "dead_lettered": 2, "in_flight": 0, "unaccounted": [], "exit": 0}
            assert balance["ledger_totals"] == balance["settled_offsets"] == [38, 2]
            # The same balance, live, as Prometheus scrapes it.
            assert await gauges_when(hub, {"entered": 40, "delivered": 38, "dead_lettered": 2, "in_flight": 0}) == {
                "entered": 40,
                "delivered": 38,
                "dead_lettered": 2,
                "in_flight": 0,
            }

        # The target's own list of ids agrees, window by window; one id short is found and named.
        at_target = [c.body["event"] for c in target.accepted]
        ids = tmp_path / "target-ids.txt"
        ids.write_text("\n".join(at_target) + "\n")
        code, out = await reconcile(capsys, "-c", str(path), "--bootstrap", bootstrap, "--subscriber", "erp", "--target-ids", str(ids))
        assert code == 0, out
        assert "subscriber erp: balanced" in out and "0 delivered id(s) missing there" in out
        ids.write_text("\n".join(i for i in at_target if i != "evt_5") + "\n")
        code, out = await reconcile(capsys, "-c", str(path), "--bootstrap", bootstrap, "--subscriber", "erp", "--target-ids", str(ids))
        assert code == 1
        assert "DIFFERS" in out and "missing at the target: evt_5" in out
    finally:
        await target.stop()


async def test_reconcile_finds_events_committed_past_without_delivery(
    tmp_path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = await Target().start()
    path = write_config(tmp_path / "bus.yaml", payment_hub_config(bootstrap, target.url))
    try:
        async with build_hub(path) as hub:
            await post(hub, *(payment(i) for i in range(10)))
            await target.wait_for(lambda: len(target.accepted) == 10)
            assert (await settled(capsys, path, bootstrap))["exit"] == 0
            topic, group = hub.topics.delivery("erp"), hub.topics.delivery_group("erp")

        # A faulty consumer in the delivery group (faust #606 would do this): it commits past three
        # events it never delivered.
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        for n in range(3):
            await producer.send_and_wait(topic, b"", key=b"k", headers=[("ce_id", f"lost_{n}".encode())])
        # And records on the ledger the hub did not write: skipped and said (they ended every reconcile).
        for junk in (b"not json", b"[" * 100_000, b'{"partition": 0}'):
            await producer.send_and_wait(hub.topics.ledger("erp"), junk, partition=0)
        await producer.stop()
        rogue = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, session_timeout_ms=3000)
        await rogue.start()
        try:
            seen = 0
            while seen < 3:
                seen += sum(len(b) for b in (await rogue.getmany(timeout_ms=1000)).values())
            await rogue.commit()
        finally:
            await rogue.stop()

        code, out = await reconcile(capsys, "-c", str(path), "--bootstrap", bootstrap)
        assert code == 1
        assert "subscriber erp: NOT BALANCED: 3 event(s) unaccounted for" in out
        assert "unaccounted ids: lost_0, lost_1, lost_2" in out
        assert "subscriber support: balanced" in out

        # A hub started afterwards shows the hole in its ledger gauges: entered exceeds the rest by three.
        async with build_hub(path) as hub:
            gauges = await gauges_when(hub, {"entered": 13, "delivered": 10, "dead_lettered": 0, "in_flight": 0})
            assert gauges == {"entered": 13, "delivered": 10, "dead_lettered": 0, "in_flight": 0}
    finally:
        await target.stop()
