"""The mqtt adapters against the real Mosquitto on this machine and the real embedded broker:
sensor readings in, alerts out; a bad payload is kept with its reason; a hub restarted mid-stream
picks up what its persistent session held."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from bus.kafka.reader import read_topic
from tests.conftest import require_service
from tests.support.hub import build_hub, unique_prefix, write_config
from tests.support.target import Target


@pytest.fixture(autouse=True)
def mosquitto() -> None:
    require_service("Mosquitto", "127.0.0.1", 1883)


def config(bootstrap: str, target: Target, run: str, prefix: str) -> dict[str, Any]:
    return {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": prefix, "partitions": 3, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "inbound": [
            {
                "name": "sensors",
                "type": "mqtt",
                "host": "127.0.0.1",
                "topics": [f"t{run}/sensors/+/usage"],
                "client_id": f"bus-test-{run}",
                "emit": {
                    "schema": "Payment",
                    "id": "id",
                    "key": "device",
                    "map": {"payment_id": "id", "amount": "value", "currency": '"usd"', "customer_id": "device"},
                },
            }
        ],
        "routes": [{"name": "all", "from": "Payment", "to": ["erp", "alerts"]}],
        "outbound": [
            {"name": "erp", "type": "http", "url": f"{target.url}/erp"},
            {
                "name": "alerts",
                "type": "mqtt",
                "host": "127.0.0.1",
                "topic": f"t{run}/alerts/$${{customer_id}}",
                "body": {"id": "$id", "v": "amount"},
            },
        ],
    }


async def test_sensors_in_alerts_out_bad_payload_kept_and_restart_resumes(tmp_path: Path, bootstrap: str) -> None:
    run = uuid.uuid4().hex[:8]
    target = await Target().start()
    path = write_config(tmp_path / "bus.yaml", config(bootstrap, target, run, unique_prefix()))
    alerts: list[tuple[str, dict[str, Any]]] = []
    async with aiomqtt.Client("127.0.0.1", 1883) as listener, aiomqtt.Client("127.0.0.1", 1883) as sensor:
        await listener.subscribe(f"t{run}/alerts/#", qos=1)

        async def listen() -> None:
            async for message in listener.messages:
                alerts.append((str(message.topic), json.loads(message.payload)))  # type: ignore[arg-type]

        listening = asyncio.create_task(listen())
        try:
            async with build_hub(path) as hub:
                for i in range(50):
                    payload = b"not json" if i == 7 else json.dumps({"id": f"r{i}", "device": f"d{i % 4}", "value": i}).encode()
                    await sensor.publish(f"t{run}/sensors/d{i % 4}/usage", payload, qos=1)
                await target.wait_for(lambda: len(target.accepted) == 49)
                parked = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("sensors"))
                assert [r.value for r in parked] == [b"not json"]
                headers = dict(parked[0].headers)
                assert (
                    headers["bus_error"].startswith(b"invalid JSON") and headers["bus_origin"] == f"mqtt:t{run}/sensors/d3/usage".encode()
                )

            # Published while the hub is down: the persistent session keeps them for it.
            for i in range(50, 60):
                await sensor.publish(
                    f"t{run}/sensors/d{i % 4}/usage", json.dumps({"id": f"r{i}", "device": f"d{i % 4}", "value": i}), qos=1
                )
            async with build_hub(path):
                await target.wait_for(lambda: len({c.body["payment_id"] for c in target.accepted}) == 59)
                for _ in range(100):
                    if len({a[1]["id"] for a in alerts}) >= 59:
                        break
                    await asyncio.sleep(0.1)
        finally:
            listening.cancel()
            await target.stop()

    assert {c.body["payment_id"] for c in target.accepted} == {f"r{i}" for i in range(60) if i != 7}
    by_id = {body["id"]: (topic, body) for topic, body in alerts}
    assert len(by_id) == 59
    topic, body = next(iter(by_id.values()))
    assert topic == f"t{run}/alerts/d{body['v'] % 4}"
