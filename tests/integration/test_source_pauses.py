"""Sources an operator pauses through the management API (bus.app.source_pauses): a webhook
answers 503 with Retry-After, a queue's messages wait at the broker, a poller read by one process
at a time is read by none (its standby does not take over) and a process started meanwhile obeys
too; a resume reads on from where the source stopped, nothing lost or doubled. The real hub, the
embedded broker, RabbitMQ on this machine."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bus.app.cli import main
from bus.app.hub import Hub
from bus.app.leased_inbound import LeasedInbound
from bus.event import now_rfc3339
from bus.kafka.reader import read_topic
from tests.conftest import require_service
from tests.integration.test_leases import poll_config, started
from tests.support.crm import CrmApi
from tests.support.hub import build_hub, unique_prefix, write_config
from tests.support.wait import until

pytestmark = pytest.mark.timeout(240)

READ, WRITE = "pause-viewer-token", "pause-admin-token"
TOKENS = [{"name": "viewer", "token": READ, "scope": "read"}, {"name": "admin", "token": WRITE, "scope": "write"}]
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


async def ids(hub: Hub, schema: str) -> Counter[str]:
    records = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical(schema))
    return Counter(dict(r.headers)["ce_id"].decode() for r in records)


def api(hub: Hub, token: str = WRITE) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.ops.port}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=60)


async def node(hub: Hub, name: str) -> dict[str, Any]:
    async with api(hub, READ) as client:
        found: dict[str, Any] = next(n for n in (await client.get("/topology")).json()["inbound"] if n["name"] == name)
    return found


async def paused_metric(hub: Hub, name: str) -> float | None:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{hub.ops.port}/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "bus_inbound_paused" and sample.labels.get("adapter") == name:
                return sample.value
    return None


async def test_a_paused_webhook_and_queue_take_nothing_and_a_resume_loses_nothing(
    tmp_path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    queue, exchange = f"pause-{uuid.uuid4().hex[:8]}", f"pause-ex-{uuid.uuid4().hex[:8]}"
    emit = {"schema": "Payment", "id": "id", "key": "id", "map": {"payment_id": "id", "amount": "seq", "currency": '"eur"'}}
    config = {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 2, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0, "tokens": TOKENS},
        "inbound": [
            {"name": "hooks", "type": "http_webhook", "path": "/hooks", "emit": emit},
            {
                "name": "orders",
                "type": "amqp",
                "url": AMQP_URL,
                "queue": queue,
                "bindings": [{"exchange": exchange, "routing_key": "order.#"}],
                "emit": emit,
            },
        ],
    }
    path = write_config(tmp_path / "bus.yaml", config)
    connection = await aio_pika.connect_robust(AMQP_URL)
    try:
        channel = await connection.channel()
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)

        async def send(*seqs: int) -> None:
            for seq in seqs:
                body = json.dumps({"id": f"q{seq}", "seq": seq}).encode()
                await ex.publish(aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key="order.new")

        async with build_hub(path) as hub, api(hub) as admin, httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}") as web:  # type: ignore[union-attr]
            assert (await web.post("/hooks", json={"id": "w1", "seq": 1})).status_code == 202
            await send(1)
            await until_ids(hub, {"w1", "q1"})

            async with api(hub, READ) as viewer:
                refused = await viewer.post("/inbound/hooks/pause")
                assert refused.status_code == 403, refused.text
            missing = await admin.post("/inbound/nope/pause")
            assert missing.status_code == 404 and "hooks, orders" in missing.json()["detail"], missing.text
            for bad in (b'{"reason": "line one\\nline two"}', b'{"reason": "' + b"x" * 501 + b'"}', b'{"why": "x"}', b"not json", b"[1]"):
                refused = await admin.post("/inbound/hooks/pause", content=bad, headers={"Content-Type": "application/json"})
                assert refused.status_code == 400 and "reason" in refused.json()["detail"], (bad, refused.text)
            assert (await node(hub, "hooks"))["state"] == "running", "a refused request asks nothing"
            asked = await admin.post("/inbound/hooks/pause")  # no body: a pause without a reason
            assert asked.status_code == 202 and asked.json() == {"inbound": "hooks", "paused": True, "by": "admin", "reason": ""}
            # The CLI asks the same, with a reason, and waits until the hub shows it obeyed.
            monkeypatch.setenv("BUS_OPS_TOKEN", WRITE)
            hub_url = f"http://127.0.0.1:{hub.ops.port}"
            capsys.readouterr()
            why = "partner sends duplicates, ticket OPS-42"
            assert await asyncio.to_thread(main, ["pause", "inbound", "orders", "--hub", hub_url, "--reason", why]) == 0
            said = capsys.readouterr().out
            assert f"pause inbound orders ({why})" in said and "orders: paused (by admin)" in said, said
            assert (await node(hub, "hooks"))["state"] == "paused"

            answer = await web.post("/hooks", json={"id": "w2", "seq": 2})
            assert answer.status_code == 503 and answer.headers["Retry-After"], (answer.status_code, answer.text)
            await send(2, 3)
            await asyncio.sleep(2)  # a queue consumer would have taken them by now
            assert set(await ids(hub, "Payment")) == {"w1", "q1"}, "nothing taken while paused"
            shown = await node(hub, "orders")
            assert shown["paused_by"] == "admin" and f"paused by admin ({why})" in shown["detail"], shown
            assert shown["paused_reason"] == why and shown["paused_at"] <= now_rfc3339(), shown
            assert (await node(hub, "hooks"))["paused_reason"] is None
            assert await paused_metric(hub, "orders") == 1.0
            # Paused on purpose: the pod stays ready (a webhook's Service keeps it), and `bus status` says it.
            assert all((await hub.readiness()).values()), await hub.readiness()
            # A process started while they are paused obeys before it takes anything, and stops cleanly paused.
            async with build_hub(path, role="inbound") as late:
                await until_state(late, "orders", "paused")
                await until_state(late, "hooks", "paused")
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{late.web.port}") as late_web:  # type: ignore[union-attr]
                    held = await late_web.post("/hooks", json={"id": "w9", "seq": 9})
                assert held.status_code == 503 and held.headers["Retry-After"], (held.status_code, held.text)  # not a 404
                await asyncio.sleep(1)
            assert set(await ids(hub, "Payment")) == {"w1", "q1"}, "nothing taken by a process started while paused"
            monkeypatch.setenv("BUS_OPS_TOKEN", READ)
            capsys.readouterr()
            assert await asyncio.to_thread(main, ["status", "--hub", hub_url]) == 1
            assert f"paused by admin ({why})" in capsys.readouterr().out
            # A read token may not steer: said, exit 2, nothing asked.
            assert await asyncio.to_thread(main, ["resume", "inbound", "orders", "--hub", hub_url]) == 2
            assert "403" in capsys.readouterr().err
            assert (await node(hub, "orders"))["state"] == "paused"

            monkeypatch.setenv("BUS_OPS_TOKEN", WRITE)
            assert await asyncio.to_thread(main, ["resume", "inbound", "orders", "--hub", hub_url]) == 0
            assert "orders: running" in capsys.readouterr().out
            assert (await node(hub, "orders"))["paused_reason"] is None
            assert (await admin.post("/inbound/hooks/resume")).status_code == 202
            await until_state(hub, "hooks", "running")
            assert (await web.post("/hooks", json={"id": "w2", "seq": 2})).status_code == 202  # the sender's retry
            seen = await until_ids(hub, {"w1", "w2", "q1", "q2", "q3"})
            assert max(seen.values()) == 1, seen
            assert await paused_metric(hub, "orders") == 0.0
    finally:
        await connection.close()


async def until_ids(hub: Hub, wanted: set[str], timeout: float = 30) -> Counter[str]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        seen = await ids(hub, "Payment")
        if set(seen) >= wanted:
            return seen
        assert asyncio.get_running_loop().time() < deadline, f"{sorted(seen)} published; wanted {sorted(wanted)}"
        await asyncio.sleep(0.2)


async def until_state(hub: Hub, name: str, state: str, timeout: float = 5) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (shown := await node(hub, name))["state"] != state:
        assert asyncio.get_running_loop().time() < deadline, f"{name} is {shown['state']} ({shown['detail']}), not {state}"
        await asyncio.sleep(0.05)


def leased(hub: Hub) -> LeasedInbound:
    adapter = hub.inbound[0]
    assert isinstance(adapter, LeasedInbound)
    return adapter


async def test_a_paused_poller_is_read_by_no_replica_and_a_resume_reads_on_from_its_position(tmp_path: Path, bootstrap: str) -> None:
    crm = await CrmApi().start()
    for i in range(10):
        crm.add(f"c{i:03}", f"2026-01-01T00:00:{i:02d}Z")
    config = poll_config(bootstrap, crm, unique_prefix())
    config["ops"]["tokens"] = TOKENS
    path = write_config(tmp_path / "bus.yaml", config)
    first, second = build_hub(path, role="inbound"), build_hub(path, role="inbound")
    try:
        async with started(first, second):
            await until(lambda: {leased(first).standing_by, leased(second).standing_by} == {True, False}, "one holder, one standby")
            holder, standby = (first, second) if leased(second).standing_by else (second, first)
            await until_published(holder, 10)

            async with api(standby) as admin:  # asked of either replica: every one obeys
                assert (await admin.post("/inbound/contacts/pause")).status_code == 202
            await until_state(holder, "contacts", "paused")
            await until_state(standby, "contacts", "paused")
            polls = int(leased(holder).progress()["polls"])
            for i in range(10, 15):
                crm.add(f"c{i:03}", f"2026-01-01T00:01:{i:02d}Z")  # written while paused
            await asyncio.sleep(2)  # ten intervals
            assert int(leased(holder).progress()["polls"]) == polls, "the holder does not poll while paused"
            assert leased(standby).progress() == {}, "the standby does not take the paused source over"
            assert leased(holder).standing_by is False, "the holder keeps the lease"
            assert len(await ids(holder, "Customer")) == 10

            # The holder stops while the source is paused: the standby takes the lease, and does not read.
            await holder.stop()
            await until(lambda: leased(standby).standing_by is False, "the standby takes the lease", timeout=15)
            await asyncio.sleep(1)
            assert leased(standby).progress() == {}, "a paused source taken over is not read"
            # A process started while paused obeys the pause before it can take the lease.
            async with build_hub(path, role="inbound") as third:
                await until_state(third, "contacts", "paused")

                async with api(standby) as admin:
                    assert (await admin.post("/inbound/contacts/resume")).status_code == 202
                seen = await until_published(standby, 15)
                assert max(seen.values()) == 1, seen
                # Only the holder reads it once resumed: the standby that took over, unless a loop held
                # up past the session timeout (a loaded machine) handed the lease on to the third.
                replicas = {"standby": standby, "third": third}
                readers = {name for name, hub in replicas.items() if leased(hub).progress()}
                holders = {name for name, hub in replicas.items() if not leased(hub).standing_by}
                assert len(readers) == 1 and readers == holders, (readers, holders)
    finally:
        await crm.stop()


async def until_published(hub: Hub, count: int, timeout: float = 30) -> Counter[str]:
    deadline = asyncio.get_running_loop().time() + timeout
    while len(seen := await ids(hub, "Customer")) < count:
        assert asyncio.get_running_loop().time() < deadline, f"{len(seen)} of {count} records published"
        await asyncio.sleep(0.2)
    return seen
