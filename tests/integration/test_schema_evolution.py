"""Readers survive new versions: while Order events flow, a producer elsewhere registers Order v2
(a new optional field) and then v3 (another one, and a line field with a default), and writes
with them. The hub, built with v1, learns each new id from the registry on first sight, reads
the values as its own v1 (Avro schema resolution), routes and delivers every one. A v4 that would
break v3's readers is refused by the registry with the reason, so it is never produced."""

from __future__ import annotations

import copy
import io
import json
import struct
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from fastavro import parse_schema, schemaless_writer

from bus.event import Event
from bus.kafka.reader import read_topic
from schemas.catalog import SchemaCatalog
from tests.support.hub import build_hub, payment_hub_config, unique_prefix, write_config
from tests.support.target import Target
from tests.support.wait import until


def order_versions() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    v1 = json.loads(SchemaCatalog.load().get("Order").text)
    v2 = copy.deepcopy(v1)
    v2["fields"].append({"name": "channel", "type": ["null", "string"], "default": None, "doc": "Sales channel."})
    v3 = copy.deepcopy(v2)
    v3["fields"].append({"name": "coupon", "type": ["null", "string"], "default": None, "doc": "Coupon code."})
    line = v3["fields"][4]["type"]["items"]
    line["fields"].append({"name": "discount", "type": "long", "default": 0, "doc": "Discount in minor units."})
    v4 = copy.deepcopy(v3)
    v4["fields"] = [f for f in v4["fields"] if f["name"] != "currency"] + [{"name": "region", "type": "string", "doc": "Region."}]
    return v1, v2, v3, v4


def wire(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id))
    schemaless_writer(out, parse_schema(schema), record)
    return out.getvalue()


def order(i: int, version: int) -> dict[str, Any]:
    record: dict[str, Any] = {
        "order_id": f"o{i}",
        "customer_id": "c1",
        "currency": "eur",
        "total": 1000 + i,
        "lines": [{"sku": "A", "quantity": 1, "unit_price": 1000 + i}],
    }
    if version >= 2:
        record["channel"] = "web"
    if version >= 3:
        record["coupon"] = "SAVE10"
        record["lines"][0]["discount"] = 100
    return record


async def test_order_v1_v2_v3_while_events_flow(tmp_path: Path, bootstrap: str) -> None:
    v1, v2, v3, v4 = order_versions()
    target = await Target().start()
    config = payment_hub_config(bootstrap, target.url, prefix=unique_prefix())
    config["ops"]["tokens"] = [{"name": "evolve", "token": "tok-evolve"}]
    config["routes"] = [{"name": "orders", "from": "Order", "to": ["erp"]}]
    config["outbound"] = [
        {"name": "erp", "type": "http", "url": target.url, "body": {"order": "order_id", "total": "total", "lines": "lines"}}
    ]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            topic = hub.topics.canonical("Order")
            subject = SchemaCatalog.load().get("Order").subject
            registry = f"http://127.0.0.1:{hub.ops.port}/registry"

            async def send(i: int, version: int, schema_id: int, schema: dict[str, Any]) -> None:
                event = Event(
                    schema="Order", data={}, source="/elsewhere", key=f"o{i}", id=f"ord_{i}_v{version}", type="bus.canonical.Order"
                )
                await producer.send_and_wait(
                    topic, wire(schema_id, schema, order(i, version)), key=f"o{i}".encode(), headers=event.headers()
                )

            async with httpx.AsyncClient(base_url=registry, headers={"Authorization": "Bearer tok-evolve"}) as http:
                v1_id = hub.codec.schema_id("Order")
                for i in range(0, 10):
                    await send(i, 1, v1_id, v1)
                v2_id = (await http.post(f"/subjects/{subject}/versions", json={"schema": json.dumps(v2)})).json()["id"]
                for i in range(10, 20):
                    await send(i, 2, v2_id, v2)
                v3_id = (await http.post(f"/subjects/{subject}/versions", json={"schema": json.dumps(v3)})).json()["id"]
                for i in range(20, 30):
                    await send(i, 3, v3_id, v3)
                refused = await http.post(f"/subjects/{subject}/versions", json={"schema": json.dumps(v4)})
                assert refused.status_code == 409
                assert "Order.region: field added without a default" in refused.json()["message"]
                assert len({v1_id, v2_id, v3_id}) == 3

            await until(lambda: len(target.accepted) >= 30, "every order, of every version, delivered", timeout=60)
            bodies = {call.body["order"]: call.body for call in target.accepted}
            assert set(bodies) == {f"o{i}" for i in range(30)}
            assert bodies["o25"] == {
                "order": "o25",
                "total": 1025,
                "lines": [{"sku": "A", "quantity": 1, "unit_price": 1025}],
            }  # read as v1
            assert hub.codec.knows(v2_id) and hub.codec.knows(v3_id)
            assert await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.router_dead_letter) == []
    finally:
        await producer.stop()
        await target.stop()
