"""The broker unreachable for 10 s (a TCP proxy the test controls) while events flow: the webhook
answers 503 with Retry-After meanwhile, nothing is lost, and the flow resumes by itself."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from bus.app.hub import Hub
from bus.kafka.broker import EmbeddedBroker
from bus.kafka.reader import read_topic
from bus.ports import free_port
from tests.support.hub import build_hub, flow_config, payment, payment_hub_config, write_config
from tests.support.proxy import TcpProxy
from tests.support.target import Target
from tests.support.wait import until_true


@asynccontextmanager
async def broker_behind_proxy() -> AsyncIterator[tuple[EmbeddedBroker, TcpProxy]]:
    """An embedded broker whose clients reach it only through a proxy the test can cut."""
    proxy_port = free_port()
    async with EmbeddedBroker(advertised_port=proxy_port) as broker:
        proxy = TcpProxy(proxy_port, broker.port)
        await proxy.start()
        try:
            yield broker, proxy
        finally:
            await proxy.stop()


def queue_hub(bootstrap: str, inbound: dict[str, Any]) -> dict[str, Any]:
    """A hub of one queue inbound making payments, that gives Kafka 2 s to acknowledge."""
    config = flow_config(bootstrap, [inbound])
    config["kafka"].update(partitions=1, produce_timeout_s=2)
    return config


async def canonical_ids(hub: Hub) -> list[str]:
    records = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Payment"))
    return sorted(dict(r.headers)["ce_id"].decode() for r in records)


async def ids_arrive(hub: Hub, wanted: list[str], *, timeout: float) -> None:
    """Every one of ``wanted`` on the canonical topic (once or more: at least once)."""

    async def arrived() -> bool:
        return sorted(set(await canonical_ids(hub))) == wanted

    await until_true(arrived, f"events {wanted} on the canonical topic", timeout=timeout)


async def test_ten_second_broker_outage_loses_nothing(tmp_path: Path) -> None:
    proxy_port = free_port()
    target = await Target().start()
    async with EmbeddedBroker(advertised_port=proxy_port) as broker:
        proxy = TcpProxy(proxy_port, broker.port)
        await proxy.start()
        try:
            config = payment_hub_config(broker.bootstrap, target.url, produce_timeout_s=2)
            async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
                assert hub.web is not None
                accepted: set[str] = set()
                answers: list[int] = []

                async def sender(client: httpx.AsyncClient, first: int) -> None:
                    for i in range(first, 400, 4):
                        while True:  # a webhook sender: retries until it gets a 202
                            try:
                                r = await client.post("/hooks/payments", json=payment(i))
                                answers.append(r.status_code)
                                if r.status_code == 202:
                                    accepted.add(f"evt_{i}")
                                    break
                                assert r.status_code == 503 and r.headers["Retry-After"]
                            except httpx.TransportError:
                                pass
                            await asyncio.sleep(0.2)
                        await asyncio.sleep(0.02)

                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{hub.web.port}", headers={"X-API-Key": "k1"}, timeout=30
                ) as client:
                    senders = asyncio.gather(*(sender(client, k) for k in range(4)))
                    while len(accepted) < 100:
                        await asyncio.sleep(0.05)
                    proxy.cut = True
                    proxy.sever()
                    await asyncio.sleep(10)
                    during = len(accepted)
                    proxy.cut = False
                    await asyncio.wait_for(senders, timeout=180)

                assert 503 in answers  # the webhook said "try later" while Kafka could not acknowledge
                assert during < 400  # the outage really happened mid-flow
                await target.wait_for(
                    lambda: {c.headers["Idempotency-Key"] for c in target.accepted if c.path == "/erp"} >= accepted, timeout=120
                )
        finally:
            await proxy.stop()
    await target.stop()


async def test_queue_messages_wait_out_a_kafka_outage_a_delivery_limit_does_not_drop_them(tmp_path: Path) -> None:
    """A RabbitMQ quorum queue with a delivery limit (20 by default from RabbitMQ 4; 2 here). While
    Kafka could not take events the amqp inbound gave each message back every second, each
    give-back counted as a delivery, and the queue dropped the messages after two: lost in a
    seconds-long outage, unsaid. Now the message is held until Kafka takes it, and every one
    arrives."""
    import uuid

    import aio_pika

    from tests.conftest import require_service

    require_service("RabbitMQ", "127.0.0.1", 5672)
    url, queue_name = "amqp://guest:guest@127.0.0.1:5672/", f"limited-{uuid.uuid4().hex[:8]}"
    rabbit = await aio_pika.connect_robust(url)
    channel = await rabbit.channel()
    await channel.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum", "x-delivery-limit": 2})

    async def send(first: int, last: int) -> None:
        for i in range(first, last):
            body = json.dumps({"id": f"m{i}", "seq": i, "account": f"a{i % 3}"}).encode()
            await channel.default_exchange.publish(aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), queue_name)

    inbound = {
        "name": "orders",
        "type": "amqp",
        "url": url,
        "queue": queue_name,
        "declare": False,  # a platform team's quorum queue
        "emit": {"schema": "Payment", "id": "id", "key": "account", "map": {"payment_id": "id", "amount": "seq", "currency": '"eur"'}},
    }
    try:
        async with (
            broker_behind_proxy() as (broker, proxy),
            build_hub(write_config(tmp_path / "bus.yaml", queue_hub(broker.bootstrap, inbound))) as hub,
        ):
            await send(0, 1)
            await ids_arrive(hub, ["m0"], timeout=10)
            assert await canonical_ids(hub) == ["m0"]
            proxy.cut = True
            proxy.sever()
            await send(1, 6)
            await asyncio.sleep(8)  # four times the delivery limit, at one give-back a second
            proxy.cut = False
            # Every one arrives; one whose write Kafka made but whose acknowledgement the
            # outage lost is sent again under its id (at least once: a target drops repeats).
            await ids_arrive(hub, sorted(f"m{i}" for i in range(6)), timeout=60)
    finally:
        await channel.queue_delete(queue_name)
        await rabbit.close()


async def test_redis_entries_held_through_a_kafka_outage_are_not_taken_over(tmp_path: Path) -> None:
    """A Redis Stream read through a consumer group: while Kafka cannot take events the inbound
    holds the entries it read, unacknowledged. Another process's XAUTOCLAIM takes over any entry
    idle for claim_after (meant for consumers that died), so a hold longer than that would hand
    the entries to a second reader while this one still works on them. The entries held are
    claimed afresh every third of claim_after: a competitor claiming with claim_after (1 s here)
    through a 6 s outage takes none, and every entry arrives once Kafka is back."""
    import uuid

    import redis.asyncio as aioredis

    from tests.conftest import require_service

    require_service("Redis", "127.0.0.1", 6379)
    stream = f"t{uuid.uuid4().hex[:8]}.orders"
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    inbound = {
        "name": "orders",
        "type": "redis",
        "url": "redis://127.0.0.1:6379/0",
        "stream": stream,
        "claim_after": "1s",
        "emit": {"schema": "Payment", "id": "id", "map": {"payment_id": "id", "amount": "int(seq)", "currency": '"eur"'}},
    }
    try:
        async with broker_behind_proxy() as (broker, proxy):
            async with build_hub(write_config(tmp_path / "bus.yaml", queue_hub(broker.bootstrap, inbound))) as hub:
                await client.xadd(stream, {"id": "m0", "seq": "0"})
                await ids_arrive(hub, ["m0"], timeout=10)
                assert await canonical_ids(hub) == ["m0"]
                proxy.cut = True
                proxy.sever()
                for i in range(1, 6):
                    await client.xadd(stream, {"id": f"m{i}", "seq": str(i)})
                taken: list[object] = []
                for _ in range(20):  # 6 s: six times claim_after
                    _, entries, _ = await client.xautoclaim(stream, "bus-orders", "competitor", 1000, "0-0", count=100)
                    taken += entries
                    await asyncio.sleep(0.3)
                held = (await client.xpending(stream, "bus-orders"))["pending"]
                proxy.cut = False
                await ids_arrive(hub, sorted(f"m{i}" for i in range(6)), timeout=60)
            assert taken == [], taken
            assert held == 5  # the outage was real: the five entries waited, unacknowledged
            assert (await client.xpending(stream, "bus-orders"))["pending"] == 0
    finally:
        await client.delete(stream)
        await client.aclose()


async def test_the_management_api_says_503_when_the_hubs_kafka_does_not_answer(tmp_path: Path) -> None:
    """A redelivery or a dead-letter replay asked while the hub is cut off from Kafka: 503 with
    Retry-After and the reason (it was a 500, "the hub failed", with a traceback in the log)."""
    target = await Target().start()
    try:
        async with broker_behind_proxy() as (broker, proxy):
            config = payment_hub_config(broker.bootstrap, target.url)
            config["ops"]["tokens"] = [{"name": "admin", "token": "outage-admin-token", "scope": "write"}]
            async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
                proxy.cut = True
                proxy.sever()
                admin = {"Authorization": "Bearer outage-admin-token"}
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.ops.port}/api/v1", timeout=60) as api:
                    for path, body in (
                        ("/subscribers/erp/redeliver", {"since": "2026-01-01T00:00:00Z", "dry_run": True}),
                        ("/dead-letters/replay", {"subscriber": "erp", "dry_run": True}),
                    ):
                        answer = await api.post(path, json=body, headers=admin)
                        assert answer.status_code == 503 and answer.headers["Retry-After"] == "5", (path, answer.text)
                        assert "Kafka did not answer" in answer.json()["detail"], answer.text
                proxy.cut = False
    finally:
        await target.stop()
