"""The embedded schema registry: Confluent REST API, backed by a Kafka topic, stable across restarts."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from schemas.registry_client import RegistryClient
from tests.support.hub import build_hub, payment_hub_config, unique_prefix, write_config

V1 = {"type": "record", "name": "Thing", "namespace": "test", "fields": [{"name": "a", "type": "string"}]}
V2 = {**V1, "fields": [*V1["fields"], {"name": "b", "type": "int", "default": 0}]}


async def test_rest_api_and_persistence_across_hub_restarts(tmp_path: Path, bootstrap: str) -> None:
    config = write_config(tmp_path / "bus.yaml", payment_hub_config(bootstrap, "http://127.0.0.1:9", prefix=unique_prefix()))

    async with build_hub(config, role="inbound") as hub:
        base = f"http://127.0.0.1:{hub.ops.port}/registry"
        first_ids = {name: hub.codec.schema_id(name) for name in ("Payment", "Order", "Customer")}
        client = RegistryClient(base)
        try:
            id1 = await client.register("thing-value", json.dumps(V1))
            id2 = await client.register("thing-value", json.dumps(V2, indent=2))
            assert id1 != id2
            assert await client.register("thing-value", json.dumps(V1)) == id1  # idempotent
            assert json.loads(await client.schema_by_id(id2)) == V2
            assert "bus.canonical.Payment-value" in await client.subjects()
        finally:
            await client.close()
        async with httpx.AsyncClient(base_url=base) as http:
            assert (await http.get("/subjects/thing-value/versions")).json() == [1, 2]
            latest = (await http.get("/subjects/thing-value/versions/latest")).json()
            assert (latest["version"], latest["id"]) == (2, id2)
            lookup = await http.post("/subjects/thing-value", json={"schema": json.dumps(V1)})
            assert lookup.json()["version"] == 1
            missing = await http.get("/subjects/nope/versions")
            assert (missing.status_code, missing.json()["error_code"]) == (404, 40401)
            assert (await http.get("/schemas/ids/12345")).json()["error_code"] == 40403
            bad = await http.post("/subjects/thing-value/versions", json={"schema": "{not json"})
            assert (bad.status_code, bad.json()["error_code"]) == (422, 42201)

    # A new hub process reads the subjects back from Kafka: same versions, same ids.
    async with build_hub(config, role="inbound") as hub:
        assert {name: hub.codec.schema_id(name) for name in first_ids} == first_ids
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.ops.port}/registry") as http:
            assert (await http.get("/subjects/thing-value/versions")).json() == [1, 2]
            assert (await http.get(f"/schemas/ids/{id2}")).status_code == 200


async def test_health_and_readiness(tmp_path: Path, bootstrap: str) -> None:
    config = write_config(tmp_path / "bus.yaml", payment_hub_config(bootstrap, "http://127.0.0.1:9"))
    async with build_hub(config, role="inbound") as hub, httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.ops.port}") as http:
        assert (await http.get("/healthz")).json() == {"status": "alive"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"ready": True, "checks": {"kafka": True, "schemas": True, "inbound": True, "inbound:payments": True}}
        metrics = (await http.get("/metrics")).text
        assert "bus_inbound_events_total" in metrics
        await hub.inbound[0].stop()  # a webhook that stopped accepting makes the hub unready
        unready = await http.get("/readyz")
        assert unready.status_code == 503
        assert unready.json()["checks"]["inbound:payments"] is False
