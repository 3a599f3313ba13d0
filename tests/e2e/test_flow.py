"""End to end: `bus run` as a process, the real embedded broker, webhooks in, a local HTTP target out."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from bus.ports import free_port
from tests.support.hub import HubProcess, payment, payment_hub_config, write_config
from tests.support.target import Target

pytestmark = pytest.mark.e2e


def mixed_payments(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        payment(
            i,
            amount=rng.choice([10, 99_999, 100_000, 500_000]),
            currency=rng.choice(["USD", "usd", "eur"]),
            status=rng.choice(["succeeded", "succeeded", "failed"]),
        )
        for i in range(n)
    ]


def expected_targets(payments: list[dict[str, Any]]) -> dict[str, set[str]]:
    """The routes of payment_hub_config, written out plainly."""
    erp, support = set(), set()
    for p in payments:
        d = p["data"]
        large_usd = d["amount"] >= 100_000 and d["currency"].lower() == "usd"
        failed = d["status"] == "failed"
        if large_usd or failed:
            erp.add(p["id"])
        if failed:
            support.add(p["id"])
    return {"erp": erp, "support": support}


async def metric(ops_port: int, name: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{ops_port}/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


async def test_thousand_events_reach_exactly_the_matching_targets(tmp_path: Path, bootstrap: str) -> None:
    target = await Target().start()
    webhook_port, ops_port = free_port(), free_port()
    config = write_config(tmp_path / "bus.yaml", payment_hub_config(bootstrap, target.url, webhook_port=webhook_port, ops_port=ops_port))
    hub = HubProcess(config, ops_port)
    await hub.start()
    try:
        payments = mixed_payments(1000, seed=1)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{webhook_port}", headers={"X-API-Key": "k1"}, timeout=30) as client:
            sem = asyncio.Semaphore(32)

            async def post(p: dict[str, Any]) -> int:
                async with sem:
                    return (await client.post("/hooks/payments", json=p)).status_code

            assert await asyncio.gather(*(post(p) for p in payments)) == [202] * 1000

        want = expected_targets(payments)
        by_target = lambda name: [c for c in target.accepted if c.path == f"/{name}"]  # noqa: E731
        await target.wait_for(lambda: all(len(by_target(t)) >= len(ids) for t, ids in want.items()), timeout=120)
        # Every event decided by the router, so nothing else can still be on its way.
        deadline = asyncio.get_running_loop().time() + 60
        while await metric(ops_port, "bus_router_events_total") < 1000:
            assert asyncio.get_running_loop().time() < deadline, "router did not see all 1000 events"
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # let any stray delivery land before checking there is none

        by_id = {p["id"]: p for p in payments}
        erp_calls = by_target("erp")
        assert sorted(c.headers["Idempotency-Key"] for c in erp_calls) == sorted(want["erp"])
        for call in erp_calls:  # the route's mapping: external_id, amount_cents, event
            source = by_id[call.headers["Idempotency-Key"]]["data"]
            assert call.body == {"external_id": source["id"], "amount_cents": source["amount"], "event": call.headers["Idempotency-Key"]}
            assert call.headers["ce-type"] == "Payment"
            assert call.headers["traceparent"].startswith("00-")
        support_calls = by_target("support")
        assert sorted(c.headers["Idempotency-Key"] for c in support_calls) == sorted(want["support"])
        for call in support_calls:  # no body mapping: the canonical fields as they are
            source = by_id[call.headers["Idempotency-Key"]]["data"]
            assert call.body == {
                "payment_id": source["id"],
                "amount": source["amount"],
                "currency": source["currency"].lower(),
                "customer_id": source["customer"],
                "status": "failed",
                "description": None,
            }
        unmatched = 1000 - len(want["erp"] | want["support"])
        assert unmatched > 100  # the data set really contains events that match no route...
        assert await metric(ops_port, "bus_router_unmatched_events_total") == unmatched  # ...and they went nowhere
        assert await hub.terminate() == 0
    finally:
        await hub.kill()
        await target.stop()


async def test_sigterm_while_events_flow_loses_nothing_that_was_accepted(tmp_path: Path, bootstrap: str) -> None:
    target = await Target().start()
    webhook_port, ops_port = free_port(), free_port()
    config = write_config(tmp_path / "bus.yaml", payment_hub_config(bootstrap, target.url, webhook_port=webhook_port, ops_port=ops_port))
    hub = HubProcess(config, ops_port)
    await hub.start()
    payments = mixed_payments(600, seed=2)
    accepted: set[str] = set()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{webhook_port}", headers={"X-API-Key": "k1"}, timeout=10) as client:

            async def post_until_accepted(p: dict[str, Any]) -> None:
                # A webhook sender: retries on 503 and on connection errors until it gets a 202.
                while True:
                    try:
                        if (await client.post("/hooks/payments", json=p)).status_code == 202:
                            accepted.add(p["id"])
                            return
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.2)

            async def sender(chunk: list[dict[str, Any]]) -> None:
                for p in chunk:
                    await post_until_accepted(p)

            senders = asyncio.gather(*(sender(payments[i::8]) for i in range(8)))
            while len(accepted) < 200:
                await asyncio.sleep(0.01)
            loop = asyncio.get_running_loop()
            stop_started = loop.time()
            assert await hub.terminate() == 0  # graceful: drains and exits 0
            stop_seconds = loop.time() - stop_started
            accepted_before_restart = set(accepted)
            await hub.start()
            await asyncio.wait_for(senders, timeout=120)

        assert stop_seconds < 10
        assert 200 <= len(accepted_before_restart) < 600  # the stop really happened mid-flow
        want = expected_targets(payments)
        delivered = lambda name: {c.headers["Idempotency-Key"] for c in target.accepted if c.path == f"/{name}"}  # noqa: E731
        await target.wait_for(lambda: delivered("erp") >= want["erp"] and delivered("support") >= want["support"], timeout=120)
        assert delivered("erp") == want["erp"]
        assert delivered("support") == want["support"]
        assert await hub.terminate() == 0
    finally:
        await hub.kill()
        await target.stop()
