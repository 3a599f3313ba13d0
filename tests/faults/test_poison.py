"""A poison message between good ones, for every queue-like inbound, against the real services:
the good ones all arrive, the poison is a dead letter with its reason, nothing is logged as a
traceback, and the restarted hub does not stop on it again (it reads on past it).

The poison is a JSON document nested 100,000 arrays deep: it once escaped as a RecursionError,
killed the consume task with nothing said, and stopped the same inbound again after a restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import aiomqtt
import httpx
import nats
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bus.kafka.reader import read_topic
from tests.conftest import require_service
from tests.integration.test_delivery import post
from tests.support.hub import build_hub, payment, payment_hub_config, unique_prefix, write_config
from tests.support.target import Target

POISON = b"[" * 100_000 + b"]" * 100_000
EMIT = {
    "schema": "Payment",
    "id": "id",
    "key": "account",
    "map": {"payment_id": "id", "amount": "seq", "currency": '"eur"', "customer_id": "account"},
}
SERVICES = {"amqp": ("RabbitMQ", 5672), "mqtt": ("Mosquitto", 1883), "nats": ("NATS", 4222)}


def good(run: str, i: int) -> bytes:
    return json.dumps({"id": f"{run}-{i}", "account": f"acc-{i % 3}", "seq": i}).encode()


Send = Callable[[list[bytes]], Awaitable[None]]


def hub_config(bootstrap: str, block: dict[str, Any], target: Target) -> dict[str, Any]:
    """The source ``block`` as inbound "orders", every Payment to an HTTP target."""
    return {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 2, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "inbound": [{"name": "orders", **block, "emit": EMIT}],
        "routes": [{"name": "all", "from": "Payment", "to": ["erp"]}],
        "outbound": [{"name": "erp", "type": "http", "url": f"{target.url}/erp"}],
    }


async def source(kind: str, run: str, bootstrap: str, folder: Path) -> tuple[dict[str, Any], Send, Callable[[], Awaitable[None]]]:
    """The inbound block for ``kind`` and a function that puts raw messages on its source, in order."""
    if kind == "amqp":
        connection = await aio_pika.connect_robust("amqp://guest:guest@127.0.0.1:5672/")
        channel = await connection.channel()
        queue = f"poison-{run}"

        async def send_amqp(bodies: list[bytes]) -> None:
            for body in bodies:
                await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue)

        block = {"type": "amqp", "url": "amqp://guest:guest@127.0.0.1:5672/", "queue": queue}
        await channel.declare_queue(queue, durable=True)
        return block, send_amqp, connection.close
    if kind == "mqtt":
        client = aiomqtt.Client("127.0.0.1", 1883)
        await client.__aenter__()

        async def send_mqtt(bodies: list[bytes]) -> None:
            for body in bodies:
                await client.publish(f"t{run}/in", body, qos=1)

        async def close_mqtt() -> None:
            await client.__aexit__(None, None, None)

        return {"type": "mqtt", "host": "127.0.0.1", "topics": [f"t{run}/in"], "client_id": f"bus-poison-{run}"}, send_mqtt, close_mqtt
    if kind == "nats":
        connection = await nats.connect("nats://127.0.0.1:4222")
        js = connection.jetstream()
        await js.add_stream(name=f"POISON_{run}", subjects=[f"t{run}.in"])

        async def send_nats(bodies: list[bytes]) -> None:
            for body in bodies:
                await js.publish(f"t{run}.in", body)

        return (
            {"type": "nats", "url": "nats://127.0.0.1:4222", "stream": f"POISON_{run}", "subject": f"t{run}.in"},
            send_nats,
            connection.close,
        )
    if kind == "kafka":
        topic = f"poison-in-{run}"
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic(topic, 1, 1)])
        await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=2_000_000)
        await producer.start()

        async def send_kafka(bodies: list[bytes]) -> None:
            for body in bodies:
                await producer.send_and_wait(topic, body)

        block = {"type": "kafka", "bootstrap": bootstrap, "topics": [topic], "session_timeout_ms": 3000}
        return block, send_kafka, producer.stop
    assert kind == "file"
    folder.mkdir()
    files = iter(range(1000))

    async def send_file(bodies: list[bytes]) -> None:
        (folder / f"drop-{next(files)}.jsonl").write_bytes(b"\n".join(bodies) + b"\n")

    async def nothing() -> None:
        return None

    return {"type": "file", "path": str(folder), "poll_interval": "200ms", "settle": "0s", "format": "jsonl"}, send_file, nothing


@pytest.mark.parametrize("kind", ["amqp", "mqtt", "nats", "kafka", "file"])
async def test_a_poison_message_is_parked_and_the_flow_goes_on(
    kind: str, tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    if kind in SERVICES:
        require_service(SERVICES[kind][0], "127.0.0.1", SERVICES[kind][1])
    run = uuid.uuid4().hex[:8]
    target = await Target().start()
    block, send, close = await source(kind, run, bootstrap, tmp_path / "drop")
    config = hub_config(bootstrap, block, target)
    path = write_config(tmp_path / "bus.yaml", config)
    caplog.set_level(logging.INFO)
    try:
        async with build_hub(path) as hub:
            await send([good(run, i) for i in range(10)] + [POISON] + [good(run, i) for i in range(10, 20)])
            await target.wait_for(lambda: len({c.body["payment_id"] for c in target.accepted}) == 20)
            parked = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("orders"))
            assert len(parked) == 1
            reason = dict(parked[0].headers)["bus_error"].decode()
            assert "nested more than" in reason, reason
            assert parked[0].value == POISON  # the raw bytes, as they came
            assert hub.supervisor.detail() == {}  # nothing died, so nothing was restarted
        # A restart reads on from where it was: the poison is not met again, new messages arrive.
        async with build_hub(path) as hub:
            await send([good(run, i) for i in range(20, 25)])
            await target.wait_for(lambda: len({c.body["payment_id"] for c in target.accepted}) == 25)
            parked = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("orders"))
            assert len(parked) == 1
    finally:
        await close()
        await target.stop()
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
    assert not [r for r in caplog.records if "RecursionError" in r.getMessage()]


async def test_the_webhook_answers_400_to_a_body_nested_too_deep(tmp_path: Path, bootstrap: str) -> None:
    target = await Target().start()
    config = payment_hub_config(bootstrap, target.url)
    config["inbound"][0]["max_body_bytes"] = 1_000_000
    config["inbound"][0]["accept"] = ["json", "xml"]
    path = write_config(tmp_path / "bus.yaml", config)
    try:
        async with build_hub(path) as hub, httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}") as client:  # type: ignore[union-attr]
            headers = {"X-API-Key": "k1"}
            deep_json = b'{"data":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
            answer = await client.post("/hooks/payments", content=deep_json, headers={**headers, "Content-Type": "application/json"})
            assert answer.status_code == 400 and "nested more than" in answer.json()["error"]
            deep_xml = b"<a>" * 5000 + b"</a>" * 5000
            answer = await client.post("/hooks/payments", content=deep_xml, headers={**headers, "Content-Type": "application/xml"})
            assert answer.status_code == 400 and "nested more than" in answer.json()["error"]
            await post(hub, payment(1))  # and the next good one is taken as ever
            await target.wait_for(lambda: len(target.accepted) == 1)
    finally:
        await target.stop()


async def test_a_refused_message_keeps_its_event_id_and_bus_dlq_shows_all_of_it(
    tmp_path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from bus.app.cli import main

    run = uuid.uuid4().hex[:8]
    target = await Target().start()
    block, send, close = await source("file", run, bootstrap, tmp_path / "drop")
    config = hub_config(bootstrap, block, target)
    path = write_config(tmp_path / "bus.yaml", config)
    refused = json.dumps({"id": f"{run}-bad", "account": "acc-1", "seq": "not a number"}).encode()  # amount must be a long
    try:
        async with build_hub(path) as hub:
            await send([good(run, 1), refused])
            deadline = asyncio.get_running_loop().time() + 30
            while not await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("orders")):
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.1)
            common = ["-c", str(path), "--bootstrap", hub.bootstrap, "--subscriber", "_in.orders"]
            assert await asyncio.to_thread(main, ["dlq", "list", *common, "--json"]) == 0
            [row] = json.loads(capsys.readouterr().out)
            assert row["event_id"] == f"{run}-bad"  # the id emit.id gives, though the event could not be built
            assert row["file_line"] == "2"  # what show has (where in the file), list --json has too
            assert await asyncio.to_thread(main, ["dlq", "show", *common, f"{run}-bad"]) == 0
            assert json.loads(capsys.readouterr().out)["message"] == refused.decode()
            assert await asyncio.to_thread(main, ["dlq", "show", *common, "no-such-event"]) == 1
            assert "no dead letter of _in.orders matches no-such-event" in capsys.readouterr().err
    finally:
        await close()
        await target.stop()
