"""A broker whose own record limit is lower than the hub's refuses an event with
MESSAGE_TOO_LARGE: the hub says so as it does for its own limit (a webhook's 413), and does not
tell the sender to retry what the broker will never take. The broker is librdkafka's mock cluster
(tests/support/mock_cluster.py), answering one produce request with the error."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bus.app.setup import topic_specs
from bus.kafka.topics import TopicNames
from tests.support.hub import build_hub, load, payment, payment_hub_config, write_config
from tests.support.mock_cluster import ApiKey, ErrorCode, MockCluster

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def cluster() -> Iterator[MockCluster]:
    with MockCluster(brokers=1) as mock:
        yield mock
    gc.collect()


@pytest.mark.timeout(120)
async def test_an_event_the_broker_refuses_as_too_large_is_413_not_503(tmp_path: Path, cluster: MockCluster) -> None:
    config = payment_hub_config(cluster.bootstrap, "http://127.0.0.1:9", produce_timeout_s=5)
    path = write_config(tmp_path / "bus.yaml", config)
    loaded, _, _ = load(path)
    cluster.create_topics(topic_specs(loaded, TopicNames(config["kafka"]["topic_prefix"])), replication_factor=1)
    async with build_hub(path, role="inbound") as hub:
        assert hub.web is not None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}", headers={"X-API-Key": "k1"}, timeout=30) as client:
            assert (await client.post("/hooks/payments", json=payment(1))).status_code == 202
            cluster.inject(ApiKey.PRODUCE, [ErrorCode.MESSAGE_TOO_LARGE])
            refused = await client.post("/hooks/payments", json=payment(2))
            assert cluster.answered(ApiKey.PRODUCE, 1) == 1  # the broker's refusal is what answered it
            assert refused.status_code == 413, refused.text
            assert "the hub takes events of at most" in refused.json()["error"] and "Retry-After" not in refused.headers
            assert (await client.post("/hooks/payments", json=payment(3))).status_code == 202  # and it goes on


@pytest.mark.timeout(120)
async def test_a_queue_message_the_broker_refuses_as_too_large_is_parked_not_handed_back(tmp_path: Path, cluster: MockCluster) -> None:
    import asyncio
    import json
    import uuid

    import aio_pika

    from bus.kafka.reader import read_topic
    from tests.conftest import require_service

    require_service("RabbitMQ", "127.0.0.1", 5672)
    url = "amqp://guest:guest@127.0.0.1:5672/"
    queue = f"t.brokerlimit.{uuid.uuid4().hex[:8]}"
    config = {
        "kafka": {"bootstrap": cluster.bootstrap, "topic_prefix": f"bl{uuid.uuid4().hex[:8]}", "partitions": 1, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "inbound": [
            {
                "name": "orders",
                "type": "amqp",
                "url": url,
                "queue": queue,
                "prefetch": 1,
                "emit": {"schema": "Payment", "id": "id", "key": "ref", "map": {"payment_id": "ref", "amount": "1", "currency": '"eur"'}},
            }
        ],
    }
    path = write_config(tmp_path / "bus.yaml", config)
    loaded, _, _ = load(path)
    cluster.create_topics(topic_specs(loaded, TopicNames(config["kafka"]["topic_prefix"])), replication_factor=1)
    connection = await aio_pika.connect_robust(url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True)
        async with build_hub(path, role="inbound") as hub:
            cluster.inject(ApiKey.PRODUCE, [ErrorCode.MESSAGE_TOO_LARGE])
            for i in (1, 2):
                body = json.dumps({"id": f"m{i}", "ref": f"r{i}"}).encode()
                await channel.default_exchange.publish(aio_pika.Message(body, message_id=f"m{i}"), routing_key=queue)
            async with asyncio.timeout(60):
                while True:
                    parked = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("orders"))
                    stored = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Payment"))
                    if parked and stored:
                        break
                    await asyncio.sleep(0.2)
            assert cluster.answered(ApiKey.PRODUCE, 1) == 1
            assert [dict(r.headers)["amqp_message_id"] for r in parked] == [b"m1"]
            assert "the hub takes events of at most" in dict(parked[0].headers)["bus_error"].decode()
            assert [r.key for r in stored] == [b"r2"]  # the next message went on
            left = await channel.declare_queue(queue, durable=True)
            assert left.declaration_result.message_count == 0  # nothing handed back to be refused again
    finally:
        await connection.close()
