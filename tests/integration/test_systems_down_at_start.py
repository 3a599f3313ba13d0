"""A system that is down when the hub starts must not keep the hub down: RabbitMQ (an inbound
queue) and NATS (an outbound stream) behind proxies that refuse connections. The hub starts, its
webhook takes events, /readyz names what is missing and why, the events for NATS wait in Kafka;
when both come back the adapters start on their own and nothing is lost."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import nats

from bus.ports import free_port
from tests.conftest import require_service
from tests.support.hub import build_hub, payment, unique_prefix, write_config
from tests.support.proxy import TcpProxy
from tests.support.silent_server import silent_server
from tests.support.source import Source
from tests.support.wait import until


async def test_hub_starts_without_them_and_they_join_when_back(tmp_path: Path, bootstrap: str) -> None:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    require_service("NATS", "127.0.0.1", 4222)
    run = uuid.uuid4().hex[:8]
    rabbit, gnatsd = TcpProxy(free_port(), 5672), TcpProxy(free_port(), 4222)
    rabbit.cut = gnatsd.cut = True
    await rabbit.start()
    await gnatsd.start()
    js_connection = await nats.connect("nats://127.0.0.1:4222")
    js = js_connection.jetstream()
    await js.add_stream(name=f"OUT_{run}", subjects=[f"t{run}.out.>"])
    ops_port = free_port()
    config = {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 2, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": ops_port},
        "inbound": [
            {
                "name": "payments",
                "type": "http_webhook",
                "path": "/hooks/payments",
                "emit": {
                    "schema": "Payment",
                    "id": "id",
                    "key": "data.id",
                    "map": {"payment_id": "data.id", "amount": "data.amount", "currency": '"eur"'},
                },
            },
            {
                "name": "orders",
                "type": "amqp",
                "url": f"amqp://guest:guest@127.0.0.1:{rabbit.listen_port}/",
                "queue": f"q{run}",
                "emit": {"schema": "Payment", "id": "id", "key": "id", "map": {"payment_id": "id", "amount": "seq", "currency": '"eur"'}},
            },
        ],
        "routes": [{"name": "all", "from": "Payment", "to": ["ledger"]}],
        "outbound": [
            {
                "name": "ledger",
                "type": "nats",
                "url": f"nats://127.0.0.1:{gnatsd.listen_port}",
                "subject": f"t{run}.out.$${{payment_id}}",
                "body": {"id": "$id"},
                "delivery": {"backoff_max": "1s"},
            }
        ],
    }
    try:
        started = time.monotonic()
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            assert time.monotonic() - started < 20, "the hub waited for systems that are down"
            assert hub.web is not None
            await Source([f"http://127.0.0.1:{hub.web.port}/hooks/payments"]).send_all(payment(i) for i in range(5))
            async with httpx.AsyncClient() as client:
                ready = await client.get(f"http://127.0.0.1:{ops_port}/readyz")
            assert ready.status_code == 503
            problems = ready.json()["problems"]
            assert problems["inbound:orders"].startswith("not started:") and f":{rabbit.listen_port}" in problems["inbound:orders"]
            assert "guest:guest" not in json.dumps(problems)  # never a password
            assert problems["outbound:ledger"].startswith("not started:")
            assert ready.json()["checks"]["inbound:payments"] is True

            # RabbitMQ gets messages while the hub cannot reach it; then both systems come back.
            amqp = await aio_pika.connect_robust("amqp://guest:guest@127.0.0.1:5672/")
            channel = await amqp.channel()
            await channel.declare_queue(f"q{run}", durable=True)
            for i in range(5):
                body = json.dumps({"id": f"amqp_{i}", "seq": i}).encode()
                await channel.default_exchange.publish(aio_pika.Message(body, delivery_mode=2), routing_key=f"q{run}")
            await amqp.close()
            rabbit.cut = gnatsd.cut = False
            await until(lambda: not hub.starting, "the adapters to start in the background", timeout=60)

            subscription = await js.pull_subscribe(f"t{run}.out.>", durable=f"check{run}", stream=f"OUT_{run}")
            got: set[str] = set()

            async def fetch() -> bool:
                try:
                    for message in await subscription.fetch(50, timeout=1):
                        got.add(message.subject.rsplit(".", 1)[-1])
                        await message.ack()
                except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either, by where the wait ran out
                    pass
                return len(got) == 10

            for _ in range(60):
                if await fetch():
                    break
            assert got == {f"pi_{i}" for i in range(5)} | {f"amqp_{i}" for i in range(5)}
            ready_now: dict[str, Any] = await hub.readiness()  # type: ignore[assignment]
            assert ready_now["inbound:orders"] and ready_now["outbound:ledger"]
    finally:
        await js.delete_stream(f"OUT_{run}")
        await js_connection.close()
        await rabbit.stop()
        await gnatsd.stop()


async def test_sources_that_never_answer_hold_the_stop_once_not_once_each(tmp_path: Path, bootstrap: str) -> None:
    """Each poller stuck on a source that takes the connection and never answers waits for its poll
    at a stop (up to 10 s). The hub stopped its inbound adapters one after another: five such
    sources outlasted the pod's grace period, and Kubernetes killed the hub before its deliveries
    drained. They stop side by side now: three take about as long as one (a ratio within the run)."""

    def poller(name: str, port: int) -> dict[str, Any]:
        return {
            "name": name,
            "type": "http_poll",
            "url": f"http://127.0.0.1:{port}/customers",
            "since": {"param": "updated_since", "field": "updated_at", "id": "id"},
            "emit": {"schema": "Customer", "key": "id", "map": {"customer_id": "id", "email": "email", "name": "name"}},
        }

    async def stop_seconds(count: int) -> float:
        config = {
            "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 1, "session_timeout_ms": 3000},
            "http": {"host": "127.0.0.1", "port": 0},
            "ops": {"host": "127.0.0.1", "port": 0},
            "inbound": [poller(f"crm{i}", port) for i in range(count)],
        }
        accepted.clear()
        hub = build_hub(write_config(tmp_path / "bus.yaml", config))
        await hub.start()
        await until(lambda: len(accepted) >= count, f"{count} polls under way")
        began = time.monotonic()
        await hub.stop()
        return time.monotonic() - began

    accepted: list[object] = []
    async with silent_server(accepted) as port:
        one = await stop_seconds(1)
        three = await stop_seconds(3)
    assert one > 5, one  # a poll under way was waited for: the case this test is about
    assert three < 1.7 * one, (one, three)  # in turn it took three times as long
