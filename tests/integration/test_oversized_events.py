"""An event larger than a Kafka record can be is refused where it came in, on the real embedded
broker: a webhook's sender gets 413 with the reason (it used to get 503 "retry later", and a
retrying sender retried for ever), and a queue's message is parked on the inbound dead letters
with its start, size and digest (it used to go back to the queue, be handed back and fail again,
for ever, in front of the messages behind it). A record too large that a producer outside the hub
wrote on a canonical topic is the router's dead letter, cut to what Kafka takes, and not replayed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from bus.deadletters import KEPT_OF_TOO_LARGE, DeadLetters
from bus.intake import MAX_MESSAGE_BYTES
from bus.kafka.clients import MAX_EVENT_BYTES
from bus.kafka.reader import read_topic
from tests.conftest import require_service
from tests.support.hub import build_hub, payment, payment_hub_config, unique_prefix, write_config
from tests.support.target import Target

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def big_payment(i: int) -> dict[str, Any]:
    body = payment(i)
    body["data"]["customer"] = "x" * (MAX_EVENT_BYTES + 1000)  # a document pasted into a field
    return body


async def test_a_webhook_event_too_large_for_kafka_is_413_and_a_batch_holding_one_is_refused_whole(tmp_path: Path, bootstrap: str) -> None:
    config = payment_hub_config(bootstrap, "http://127.0.0.1:9")
    config["inbound"][0]["max_body_bytes"] = 4 * MAX_EVENT_BYTES  # the body limit lets it in: Kafka's cannot
    batched = json.loads(json.dumps(config["inbound"][0]))
    batched.update({"name": "batched", "path": "/hooks/batch", "batch": True, "max_batch_events": 50})
    config["inbound"].append(batched)
    async with build_hub(write_config(tmp_path / "bus.yaml", config), role="inbound") as hub:
        assert hub.web is not None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}", headers={"X-API-Key": "k1"}, timeout=30) as client:
            too_large = await client.post("/hooks/payments", json=big_payment(1))
            assert too_large.status_code == 413, too_large.text
            reason = too_large.json()["error"]
            assert "bytes as a Kafka record" in reason and f"the hub takes events of at most {MAX_EVENT_BYTES:,} bytes" in reason
            assert "retry" not in reason.lower() and "Retry-After" not in too_large.headers

            # More elements than max_batch_events: 413 before any is mapped (a million small ones held
            # the server, and its probes, for seconds).
            many = await client.post("/hooks/batch", json=[payment(100 + i) for i in range(batched["max_batch_events"] + 1)])
            assert many.status_code == 413 and "at most 50 are taken (max_batch_events)" in many.json()["error"], many.text
            whole = await client.post("/hooks/batch", json=[payment(2), big_payment(3), payment(4)])
            assert whole.status_code == 413 and whole.json()["error"].startswith("element 1: the event is"), whole.text

            # The hub goes on taking events, and only these reached Kafka.
            assert (await client.post("/hooks/payments", json=payment(5))).status_code == 202
            assert (await client.post("/hooks/batch", json=[payment(6), payment(7)])).status_code == 202
            full = await client.post("/hooks/batch", json=[payment(200 + i) for i in range(50)])
            assert full.status_code == 202 and len(full.json()["ids"]) == 50  # at the limit: taken
        stored = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Payment"))
        assert sorted(r.key for r in stored) == sorted([b"pi_5", b"pi_6", b"pi_7", *(f"pi_{200 + i}".encode() for i in range(50))])


async def test_a_queue_message_too_large_for_kafka_is_parked_with_its_start_size_and_digest(tmp_path: Path, bootstrap: str) -> None:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    queue = f"t.big.{uuid.uuid4().hex[:8]}"
    config = {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 1, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "inbound": [
            {
                "name": "orders",
                "type": "amqp",
                "url": AMQP_URL,
                "queue": queue,
                "prefetch": 1,  # one message at a time: one that went back to the queue would hold up the rest
                "emit": {"schema": "Payment", "id": "id", "key": "ref", "map": {"payment_id": "ref", "amount": "1", "currency": "note"}},
            }
        ],
    }
    big = json.dumps({"id": "m2", "ref": "r2", "note": "x" * (2 * MAX_EVENT_BYTES)}).encode()
    huge = b'{"id": "m4", "ref": "r4", "note": "' + b"y" * MAX_MESSAGE_BYTES + b'"}'  # not even parsed: ten times its size in memory
    connection = await aio_pika.connect_robust(AMQP_URL)
    try:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True)
        for i, body in enumerate(
            [
                json.dumps({"id": "m1", "ref": "r1", "note": "eur"}).encode(),
                big,
                json.dumps({"id": "m3", "ref": "r3", "note": "eur"}).encode(),
                huge,
            ]
        ):
            await channel.default_exchange.publish(aio_pika.Message(body, message_id=f"m{i + 1}"), routing_key=queue)
        async with build_hub(write_config(tmp_path / "bus.yaml", config), role="inbound") as hub:
            stored: list[Any] = []
            async with asyncio.timeout(60):
                while len(stored) < 2:
                    stored = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Payment"))
                    await asyncio.sleep(0.2)
            assert sorted(r.key for r in stored) == [b"r1", b"r3"]  # the one behind the large one went through

            parked: list[Any] = []
            async with asyncio.timeout(60):
                while len(parked) < 2:
                    parked = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("orders"))
                    await asyncio.sleep(0.2)
            assert len(parked) == 2
            last = {k: v.decode() for k, v in parked[1].headers}
            assert last["amqp_message_id"] == "m4" and f"at most {MAX_MESSAGE_BYTES:,} are read" in last["bus_error"]
            assert last["bus_truncated_from_bytes"] == str(len(huge)) and parked[1].value == huge[:KEPT_OF_TOO_LARGE]
            headers = {k: v.decode() for k, v in parked[0].headers}
            assert headers["amqp_message_id"] == "m2" and headers["ce_id"] == "m2"
            assert "bytes as a Kafka record" in headers["bus_error"]
            assert parked[0].value == big[:KEPT_OF_TOO_LARGE]
            assert headers["bus_truncated_from_bytes"] == str(len(big))
            assert headers["bus_payload_sha256"] == hashlib.sha256(big).hexdigest()
            left = await channel.declare_queue(queue, durable=True)
            assert left.declaration_result.message_count == 0  # acknowledged, not handed back again and again
    finally:
        await connection.close()


@pytest.mark.parametrize("engine", ["aiokafka", "faust"])
async def test_a_record_too_large_written_by_a_foreign_producer_is_a_cut_router_dead_letter(
    tmp_path: Path, bootstrap: str, engine: str
) -> None:
    target = await Target().start()
    config = payment_hub_config(bootstrap, target.url)
    config["router"] = {"engine": engine}
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            canonical = hub.topics.canonical("Payment")
            # Another team's producer writes straight onto the canonical topic, with a larger limit
            # than the hub's: a value too large (not even an event), and a key as large as a document.
            foreign = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024)
            await foreign.start()
            try:
                await foreign.send_and_wait(canonical, b"\x00" + b"z" * (MAX_EVENT_BYTES + 60_000), key=b"big-value")
                await foreign.send_and_wait(canonical, b"\x00small", key=b"big-key" + b"k" * MAX_EVENT_BYTES)
                # Headers are measured once Kafka (here the hub's own producer) refused a copy.
                await foreign.send_and_wait(canonical, b"\x00small", key=b"big-hdr", headers=[("notes", b"n" * (2 * MAX_EVENT_BYTES))])
            finally:
                await foreign.stop()
            assert hub.web is not None
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}", headers={"X-API-Key": "k1"}) as client:
                assert (await client.post("/hooks/payments", json=payment(1))).status_code == 202
            # The records behind them are routed: the flow did not stop on them.
            await target.wait_for(lambda: len(target.accepted) == 1, timeout=60)
            letters = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.router_dead_letter)
            by_key = {(letter.key or b"")[:7]: letter for letter in letters}
            assert sorted(by_key) == [b"big-hdr", b"big-key", b"big-val"], sorted(by_key)
            value_cut = dict(by_key[b"big-val"].headers)
            assert by_key[b"big-val"].value == (b"\x00" + b"z" * (MAX_EVENT_BYTES + 60_000))[:KEPT_OF_TOO_LARGE]
            assert value_cut["bus_truncated_from_bytes"] == str(MAX_EVENT_BYTES + 60_001).encode()
            assert b"the hub routes records of at most" in value_cut["bus_error"] and value_cut["bus_error_class"] == b"EventTooLarge"
            key_cut = dict(by_key[b"big-key"].headers)
            assert by_key[b"big-key"].value == b"\x00small" and len(by_key[b"big-key"].key or b"") == KEPT_OF_TOO_LARGE
            assert key_cut["bus_key_truncated_from_bytes"] == str(7 + MAX_EVENT_BYTES).encode()
            headers_cut = dict(by_key[b"big-hdr"].headers)
            assert by_key[b"big-hdr"].value == b"\x00small" and "notes" not in headers_cut and headers_cut["bus_headers_dropped"] == b"1"
            # A replay would route a broken event: each is left out, and said.
            store = DeadLetters(hub.config.kafka, hub.bootstrap, hub.topics)
            found = await store.find("_router")
            assert len(found) == 3 and all(letter.cut for letter in found)
            assert await store.replay(found) == 0
    finally:
        await target.stop()


async def test_a_record_too_large_on_a_delivery_topic_is_a_cut_dead_letter_and_the_subscriber_goes_on(
    tmp_path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its dead letter, the record with the reasons added, was more than Kafka takes: the delivery
    worker tried to write it for ever, and the subscriber delivered nothing more."""
    from bus.app.cli import main

    target = await Target().start()
    path = write_config(tmp_path / "bus.yaml", payment_hub_config(bootstrap, target.url))
    try:
        async with build_hub(path) as hub:
            foreign = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024)
            await foreign.start()
            try:
                await foreign.send_and_wait(hub.topics.delivery("erp"), b"\x00" + b"q" * (1024 * 1024), key=b"pi_1", partition=0)
            finally:
                await foreign.stop()
            assert hub.web is not None
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}", headers={"X-API-Key": "k1"}) as client:
                for i in range(6):
                    assert (await client.post("/hooks/payments", json=payment(i))).status_code == 202
            await target.wait_for(lambda: len(target.accepted) == 6, timeout=60)  # every partition delivers
            (letter,) = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("erp"))
            marks = dict(letter.headers)
            assert letter.value == (b"\x00" + b"q" * (1024 * 1024))[:KEPT_OF_TOO_LARGE]
            assert marks["bus_truncated_from_bytes"] == str(1024 * 1024 + 1).encode() and marks["bus_subscriber"] == b"erp"
            capsys.readouterr()
            replayed = await asyncio.to_thread(main, ["dlq", "replay", "-c", str(path), "--bootstrap", bootstrap, "--subscriber", "erp"])
            out, err = capsys.readouterr()
            assert "replayed 0 dead letter(s)" in out and "1 cannot be replayed: " in err and "only a part of it was kept" in err, err
            assert replayed == 1  # not all that was asked for was done: a script must not take it for done
    finally:
        await target.stop()
