"""The aggregator over the real broker: state survives kill -9 without loss or double counting,
and time windows close on their own."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import OffsetAndMetadata

from bus.app.cli import main
from bus.kafka.reader import read_topic
from bus.ports import free_port
from routing.worker import RouterWorker
from tests.support.hub import HubProcess, build_hub, unique_prefix, write_config
from tests.support.target import Target

pytestmark = pytest.mark.e2e


def config(bootstrap: str, target: str, *, aggregate: dict[str, Any], webhook_port: int = 0, ops_port: int = 0) -> dict[str, Any]:
    return {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 3, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": webhook_port},
        "ops": {"host": "127.0.0.1", "port": ops_port},
        "inbound": [
            {
                "name": "orders",
                "type": "http_webhook",
                "path": "/orders",
                "emit": {
                    "schema": "Order",
                    "key": "account",
                    "id": "event_id",
                    "map": {"order_id": "event_id", "customer_id": "account", "currency": '"usd"', "total": "total", "lines": "[]"},
                },
            }
        ],
        "routes": [
            {
                "name": "order-totals",
                "from": "Order",
                "aggregate": {**aggregate, "fields": {"orders": "count()", "sum": "sum(total)"}},
                "transform": {
                    "schema": "UsageMetric",
                    "map": {
                        "account_id": "key",
                        "metric": '"order_total"',
                        "value": "float(sum)",
                        "count": "orders",
                        "window_start": "window_start",
                        "window_end": "window_end",
                    },
                },
                "to": ["metrics"],
            }
        ],
        "outbound": [{"name": "metrics", "type": "http", "url": f"{target}/metrics"}],
    }


async def post(port: int, account: str, i: int, total: int) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.post(f"http://127.0.0.1:{port}/orders", json={"event_id": f"{account}-{i}", "account": account, "total": total})
        assert r.status_code == 202


async def rewind_group(bootstrap: str, group: str, topic: str) -> None:
    """Join the router's group as its only member (once the killed one's session expired), take
    every partition, commit offset 0, and leave."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, session_timeout_ms=3000, heartbeat_interval_ms=500
    )
    await consumer.start()
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while len(consumer.assignment()) < 3:
            assert asyncio.get_running_loop().time() < deadline, "could not join the router group"
            await consumer.getmany(timeout_ms=200)
        await consumer.commit({tp: OffsetAndMetadata(0, "") for tp in consumer.assignment()})
    finally:
        await consumer.stop()


async def routed(ops_port: int) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{ops_port}/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("bus_router_events_total{"))


async def test_count_window_survives_kill_9_without_double_counting(tmp_path: Path, bootstrap: str) -> None:
    target = await Target().start()
    webhook_port, ops_port = free_port(), free_port()
    cfg = config(bootstrap, target.url, aggregate={"count": 4}, webhook_port=webhook_port, ops_port=ops_port)
    prefix = cfg["kafka"]["topic_prefix"]
    path = write_config(tmp_path / "bus.yaml", cfg)
    hub = HubProcess(path, ops_port)
    try:
        await hub.start()
        for i, total in enumerate([10, 20, 30]):
            await post(webhook_port, "acct-1", i, total)
        deadline = asyncio.get_running_loop().time() + 30
        while await routed(ops_port) < 3:  # folded into the window's state (and maybe not yet committed)
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        await hub.kill()  # kill -9: no drain
        # Make it the worst case, deterministically: the commit of those events was lost too, so the
        # restarted router routes all three again, and their state must not count them twice.
        await rewind_group(bootstrap, f"{prefix}-router", f"{prefix}.canonical.Order")

        await hub.start()
        await post(webhook_port, "acct-1", 3, 40)
        await target.wait_for(lambda: len(target.accepted) >= 1, timeout=60)
        await asyncio.sleep(1)  # a double-counted replay would show up as a second, early emission
        [call] = target.accepted
        assert call.body == {
            "account_id": "acct-1",
            "metric": "order_total",
            "value": 100.0,
            "count": 4,
            "window_start": None,
            "window_end": None,
        }
        assert call.headers["Idempotency-Key"] == "order-totals:acct-1:0"
        assert await hub.terminate() == 0
    finally:
        await hub.kill()
        await target.stop()


async def test_a_result_the_transform_refused_is_replayed_through_the_fixed_route(
    tmp_path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A window's result that the route's transform could not shape is a router dead letter;
    once the transform is fixed, `bus dlq replay` brings it to the subscriber, shaped by the fixed
    route, with the result's own id. (It was sent to a topic named "aggregate <id>", which Kafka
    refuses, failing the whole replay.)"""
    target = await Target().start()
    broken = config(bootstrap, target.url, aggregate={"count": 2})
    broken["routes"][0]["transform"]["map"]["value"] = "float(100 / (sum - 3))"  # no value for a window summing to 3
    fixed = copy.deepcopy(broken)
    fixed["routes"][0]["transform"]["map"]["value"] = "float(sum)"
    try:
        async with build_hub(write_config(tmp_path / "broken.yaml", broken)) as hub:
            assert hub.web is not None
            for i, (account, total) in enumerate([("a", 1), ("b", 2), ("a", 2), ("b", 2)]):
                await post(hub.web.port, account, i, total)
            await target.wait_for(lambda: len(target.accepted) == 1)  # b's window: 2 + 2 shaped by the broken transform
            assert target.accepted[0].body["account_id"] == "b"
        path = write_config(tmp_path / "fixed.yaml", fixed)
        cli = ["-c", str(path), "--bootstrap", bootstrap, "--subscriber", "_router"]
        assert await asyncio.to_thread(main, ["dlq", "list", *cli, "--json"]) == 0
        [letter] = json.loads(capsys.readouterr().out)
        assert letter["event_id"] == "order-totals:a:0" and "division by zero" in letter["error"], letter

        # A letter of a result as hubs before this one wrote it: its origin names no topic. It is
        # left out and named; the replay of the others goes on.
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            old = [("ce_id", b"order-totals:c:0"), ("bus_origin", b"aggregate order-totals:c:0"), ("bus_route", b"order-totals")]
            await producer.send_and_wait(f"{fixed['kafka']['topic_prefix']}.dlq._router", b'{"key": "c"}', key=b"c", headers=old)
        finally:
            await producer.stop()
        capsys.readouterr()
        async with build_hub(path):
            assert await asyncio.to_thread(main, ["dlq", "replay", *cli]) == 1
            await target.wait_for(lambda: len(target.accepted) == 2)
        said = capsys.readouterr()
        assert "replayed 1 dead letter(s)" in said.out, said.out
        assert "1 cannot be replayed: order-totals:c:0: it names no topic to go back to" in said.err, said.err
        call = target.accepted[1]
        assert call.body["account_id"] == "a" and call.body["value"] == 3.0 and call.body["count"] == 2, call.body
        assert call.headers["Idempotency-Key"] == "order-totals:a:0"
    finally:
        await target.stop()


async def test_time_window_closes_by_itself(tmp_path: Path, bootstrap: str) -> None:
    target = await Target().start()
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config(bootstrap, target.url, aggregate={"window": "2s"}))) as hub:
            assert hub.web is not None
            for i, (account, total) in enumerate([("a", 1), ("b", 5), ("a", 2), ("a", 4)]):
                await post(hub.web.port, account, i, total)

            # Events may straddle a window boundary: check what the windows add up to per account.
            def totals() -> dict[str, tuple[int, float]]:
                out: dict[str, tuple[int, float]] = {}
                for c in target.accepted:
                    n, v = out.get(c.body["account_id"], (0, 0.0))
                    out[c.body["account_id"]] = (n + c.body["count"], v + c.body["value"])
                return out

            await target.wait_for(lambda: totals() == {"a": (3, 7.0), "b": (1, 5.0)}, timeout=30)

            # Closed, and their last events committed: a and b are forgotten (memory does not grow
            # with every key ever seen), with tombstones on the changelog so a reload does not bring
            # them back. One more event makes a batch to commit after the windows closed.
            router = hub.router
            assert isinstance(router, RouterWorker)
            aggregator = router.dispatcher.aggregators["order-totals"]
            await post(hub.web.port, "c", 9, 1)
            for _ in range(100):
                if not {"a", "b"} & set(aggregator.state):
                    break
                await asyncio.sleep(0.1)
            assert not {"a", "b"} & set(aggregator.state), aggregator.state
            changelog = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.aggregate_state("order-totals"))
            last = {r.key: r.value for r in changelog}
            assert last[b"a"] is None and last[b"b"] is None
        for call in target.accepted:
            start, end = call.body["window_start"], call.body["window_end"]
            assert start < end and call.headers["Idempotency-Key"] == f"order-totals:{call.body['account_id']}:{start}"
    finally:
        await target.stop()


async def test_a_split_route_feeds_an_aggregate(tmp_path: Path, bootstrap: str) -> None:
    """Units per customer, from order lines: each order's lines are folded in together, and a
    count window of 5 lines closes in the middle of an order."""
    target = await Target().start()
    cfg = config(bootstrap, target.url, aggregate={"count": 5})
    cfg["inbound"][0]["emit"]["map"]["lines"] = "lines"
    route = cfg["routes"][0]
    route["split"] = {"items": "lines", "as": "line"}
    route["aggregate"]["fields"] = {"orders": "count()", "sum": "sum(line.quantity)"}
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", cfg)) as hub:
            assert hub.web is not None
            async with httpx.AsyncClient() as client:
                for i, quantities in enumerate([[1, 2, 3], [4, 5, 6]]):
                    lines = [{"sku": f"s{q}", "quantity": q, "unit_price": 100} for q in quantities]
                    body = {"event_id": f"acme-{i}", "account": "acme", "total": 1, "lines": lines}
                    assert (await client.post(f"http://127.0.0.1:{hub.web.port}/orders", json=body)).status_code == 202
            await target.wait_for(lambda: len(target.accepted) == 1)
        [emitted] = [c.body for c in target.accepted]
        assert emitted["count"] == 5 and emitted["value"] == 1 + 2 + 3 + 4 + 5  # the sixth line waits for the next window
        assert emitted["account_id"] == "acme"
    finally:
        await target.stop()
