"""Roles as separate processes, two routers in one consumer group, one joining while events flow:
nothing lost, per-key order held."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from bus.ports import free_port
from tests.support.hub import HubProcess, unique_prefix, write_config
from tests.support.target import Target

pytestmark = pytest.mark.e2e
KEYS = [f"k{i}" for i in range(12)]
PER_KEY = 120


async def test_second_router_joins_mid_flow_without_loss_or_reordering(tmp_path: Path, bootstrap: str) -> None:
    target = await Target().start()
    webhook_port = free_port()
    config = write_config(
        tmp_path / "bus.yaml",
        {
            "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 4, "session_timeout_ms": 3000},
            "http": {"host": "127.0.0.1", "port": webhook_port},
            "ops": {"host": "127.0.0.1", "port": "${OPS_PORT}"},
            "inbound": [
                {
                    "name": "orders",
                    "type": "http_webhook",
                    "path": "/orders",
                    "emit": {"schema": "Order", "key": "order_id", "id": "event_id"},
                }
            ],
            "routes": [{"name": "all-orders", "from": "Order", "to": ["sink"]}],
            "outbound": [{"name": "sink", "type": "http", "url": f"{target.url}/sink"}],
        },
    )

    def process(role: str) -> HubProcess:
        port = free_port()
        return HubProcess(config, port, role=role, env={"OPS_PORT": str(port)})

    inbound, outbound, router_1, router_2 = process("inbound"), process("outbound"), process("router"), process("router")
    try:
        for p in (outbound, router_1, inbound):
            await p.start()
        accepted = 0
        sent: dict[str, int] = {}
        second_routed = asyncio.Event()  # the router that joined has taken partitions and routed from them

        async def routed_by(router: HubProcess) -> float:
            async with httpx.AsyncClient() as ops:
                text = (await ops.get(f"http://127.0.0.1:{router.ops_port}/metrics")).text
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("bus_router_events_total{"))

        async def watch_second() -> None:
            while not second_routed.is_set():
                with contextlib.suppress(httpx.TransportError):
                    if await routed_by(router_2) > 0:
                        second_routed.set()
                await asyncio.sleep(0.2)

        async def send_key(client: httpx.AsyncClient, key: str) -> None:
            nonlocal accepted
            # One key's events in order, each waiting for its 202; at least PER_KEY of them, and on
            # until the joining router has routed some: its join must happen while events flow,
            # however fast the hub takes them.
            seq = 0
            deadline = time.monotonic() + 60
            while seq < PER_KEY or (not second_routed.is_set() and time.monotonic() < deadline):
                body = {"event_id": f"{key}-{seq}", "order_id": key, "currency": "usd", "total": seq, "lines": []}
                assert (await client.post("/orders", json=body)).status_code == 202
                accepted += 1
                seq += 1
                sent[key] = seq

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{webhook_port}", timeout=30) as client:
            senders = asyncio.gather(*(send_key(client, key) for key in KEYS))
            while accepted < len(KEYS) * PER_KEY // 3:
                await asyncio.sleep(0.05)
            await router_2.start()  # joins the group: partitions move while events flow
            watcher = asyncio.create_task(watch_second())
            joined_at = accepted
            await senders
            watcher.cancel()

        total = sum(sent.values())
        assert joined_at < total * 0.9, "the second router joined too late to test anything"
        await target.wait_for(lambda: len({c.headers["Idempotency-Key"] for c in target.accepted}) >= total, timeout=120)

        seen: dict[str, list[int]] = defaultdict(list)
        for call in target.accepted:
            seen[call.body["order_id"]].append(call.body["total"])
        for key in KEYS:
            first_arrivals = list(dict.fromkeys(seen[key]))  # a rebalance may redeliver; order is about first arrival
            assert first_arrivals == list(range(sent[key])), f"{key}: order broken or events lost"
        # Both routers did real work: the partitions really moved to the one that joined.
        for router in (router_1, router_2):
            assert await routed_by(router) > 0, f"router on {router.ops_port} routed nothing"
        for p in (inbound, router_1, router_2, outbound):
            assert await p.terminate() == 0
    finally:
        for p in (inbound, outbound, router_1, router_2):
            await p.kill()
        await target.stop()
