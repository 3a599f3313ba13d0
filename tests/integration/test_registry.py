"""The embedded schema registry: Confluent REST API, backed by a Kafka topic, stable across restarts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from bus.app.cli import main
from bus.kafka.registry_client import RegistryClient
from tests.support.hub import build_hub, payment_hub_config, unique_prefix, write_config

WRITE = {"Authorization": "Bearer tok-write"}


def config_with_tokens(bootstrap: str, tmp_path: Path) -> Path:
    config = payment_hub_config(bootstrap, "http://127.0.0.1:9", prefix=unique_prefix())
    config["ops"]["tokens"] = [
        {"name": "ci", "token": "tok-write", "scope": "write"},
        {"name": "dashboards", "token": "tok-read", "scope": "read"},
    ]
    return write_config(tmp_path / "bus.yaml", config)


V1 = {"type": "record", "name": "Thing", "namespace": "test", "fields": [{"name": "a", "type": "string"}]}
V2 = {**V1, "fields": [*V1["fields"], {"name": "b", "type": "int", "default": 0}]}


async def test_rest_api_and_persistence_across_hub_restarts(tmp_path: Path, bootstrap: str) -> None:
    config = config_with_tokens(bootstrap, tmp_path)

    async with build_hub(config, role="inbound") as hub:
        base = f"http://127.0.0.1:{hub.ops.port}/registry"
        first_ids = {name: hub.codec.schema_id(name) for name in ("Payment", "Order", "Customer")}
        client = RegistryClient(base, token="tok-write")
        try:
            id1 = await client.register("thing-value", json.dumps(V1))
            id2 = await client.register("thing-value", json.dumps(V2, indent=2))
            assert id1 != id2
            assert await client.register("thing-value", json.dumps(V1)) == id1  # idempotent
            assert json.loads(await client.schema_by_id(id2)) == V2
            assert "bus.canonical.Payment-value" in await client.subjects()
        finally:
            await client.close()
        async with httpx.AsyncClient(base_url=base, headers=WRITE) as http:
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
            # Nested past any schema, in the schema's text or in the body itself: refused, not a 500 (RecursionError).
            for body in (json.dumps({"schema": "[" * 50_000 + "]" * 50_000}).encode(), b'{"schema": ' + b"[" * 50_000):
                deep = await http.post("/subjects/thing-value/versions", content=body, headers={"Content-Type": "application/json"})
                assert (deep.status_code, deep.json()["error_code"]) == (422, 42201), deep.text
                assert "nested more than 256 levels deep" in deep.json()["message"], deep.text  # why, not "the body must be"

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
        assert ready.json() == {
            "ready": True,
            "checks": {"kafka": True, "schemas": True, "control": True, "inbound": True, "inbound:payments": True},
            "kafka": {"bootstrap": hub.bootstrap},  # where `bus dlq --hub` finds the hub's Kafka
        }
        metrics = (await http.get("/metrics")).text
        assert "bus_inbound_events_total" in metrics
        await hub.inbound[0].stop()  # a webhook that stopped accepting makes the hub unready
        unready = await http.get("/readyz")
        assert unready.status_code == 503
        assert unready.json()["checks"]["inbound:payments"] is False


NOT_AVRO = {"type": "record", "name": "X", "fields": [{"name": "a", "type": "no_such_type"}]}


async def test_compatibility_levels_checks_and_deletes_survive_a_restart(tmp_path: Path, bootstrap: str) -> None:
    config = config_with_tokens(bootstrap, tmp_path)
    v3 = {**V1, "fields": [*V1["fields"], {"name": "c", "type": "long"}]}  # added without a default
    async with (
        build_hub(config, role="inbound") as hub,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.ops.port}/registry", headers=WRITE) as http,
    ):
        assert (await http.get("/config")).json() == {"compatibilityLevel": "BACKWARD"}
        assert (await http.post("/subjects/thing-value/versions", json={"schema": json.dumps(V1)})).status_code == 200
        assert (await http.post("/subjects/thing-value/versions", json={"schema": json.dumps(V2)})).status_code == 200
        check = await http.post("/compatibility/subjects/thing-value/versions/latest", json={"schema": json.dumps(v3)})
        assert check.json() == {
            "is_compatible": False,
            "messages": [
                "reading data of version 1 with the new schema: Thing.c: field added without a default: "
                "data written before it cannot be read"
            ],
        }
        refused = await http.post("/subjects/thing-value/versions", json={"schema": json.dumps(v3)})
        assert refused.status_code == 409 and "Thing.c: field added without a default" in refused.json()["message"]
        not_avro = await http.post("/subjects/thing-value/versions", json={"schema": json.dumps(NOT_AVRO)})
        assert not_avro.status_code == 422 and "not a valid Avro schema" in not_avro.json()["message"]
        # FORWARD for this subject: the old schema must read new data; v3 (a new field) is fine that way.
        put = await http.put("/config/thing-value", json={"compatibility": "forward"})
        assert put.json() == {"compatibility": "FORWARD"}
        assert (await http.get("/config/thing-value")).json() == {"compatibilityLevel": "FORWARD"}
        assert (await http.get("/config/other")).status_code == 404
        bad_level = await http.put("/config/thing-value", json={"compatibility": "SIDEWAYS"})
        assert bad_level.status_code == 422 and "BACKWARD_TRANSITIVE" in bad_level.json()["message"]
        deep = await http.put("/config/thing-value", content=b"[" * 50_000, headers={"Content-Type": "application/json"})
        assert (deep.status_code, deep.json()["error_code"]) == (422, 42203), deep.text  # a RecursionError: a 500
        assert (await http.post("/subjects/thing-value/versions", json={"schema": json.dumps(v3)})).status_code == 200
        assert (await http.delete("/subjects/thing-value/versions/1")).json() == 1
        assert (await http.get("/subjects/thing-value/versions")).json() == [2, 3]

    async with (
        build_hub(config, role="inbound") as hub,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.ops.port}/registry", headers=WRITE) as http,
    ):
        assert (await http.get("/subjects/thing-value/versions")).json() == [2, 3]  # the delete was kept
        assert (await http.get("/config/thing-value")).json() == {"compatibilityLevel": "FORWARD"}
        assert (await http.delete("/config/thing-value")).json() == {"compatibilityLevel": "FORWARD"}
        assert (await http.get("/config/thing-value?defaultToGlobal=true")).json() == {"compatibilityLevel": "BACKWARD"}
        assert (await http.delete("/subjects/thing-value")).json() == [2, 3]
        assert "thing-value" not in (await http.get("/subjects")).json()
        assert (await http.get("/subjects/thing-value/versions")).status_code == 404


async def test_schemas_cli_against_the_embedded_registry(
    tmp_path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bus schemas check --registry` and `register` with an extra schema folder: a compatible
    change passes, a breaking one is refused with the field and the reason, nothing is written by check."""
    config = config_with_tokens(bootstrap, tmp_path)
    monkeypatch.setenv("BUS_OPS_TOKEN", "tok-write")
    extra = tmp_path / "schemas"
    extra.mkdir()
    thing = {**V1, "name": "Thing", "namespace": f"t{unique_prefix()}"}
    (extra / "Thing.avsc").write_text(json.dumps(thing))
    async with build_hub(config, role="inbound") as hub:
        registry = f"http://127.0.0.1:{hub.ops.port}/registry"
        argv = ["--log-level", "WARNING", "schemas"]
        assert await asyncio.to_thread(main, [*argv, "register", "--registry", registry, "--schema-dir", str(extra)]) == 0
        assert f"{thing['namespace']}.Thing-value: id " in capsys.readouterr().out
        (extra / "Thing.avsc").write_text(json.dumps({**thing, "fields": [{"name": "a", "type": "int"}]}))
        assert await asyncio.to_thread(main, [*argv, "check", "--registry", registry, "--schema-dir", str(extra)]) == 1
        out = capsys.readouterr().out
        assert "bus.canonical.Payment-value: ok" in out and "Thing-value: INCOMPATIBLE" in out
        assert "Thing.a: type changed from string to int" in out
        assert await asyncio.to_thread(main, [*argv, "register", "--registry", registry, "--schema-dir", str(extra)]) == 1
        assert "REFUSED" in capsys.readouterr().out
        async with httpx.AsyncClient(base_url=registry) as http:
            assert (await http.get(f"/subjects/{thing['namespace']}.Thing-value/versions")).json() == [1]
    assert await asyncio.to_thread(main, [*argv, "check", "--registry", "http://127.0.0.1:9/registry"]) == 3


async def test_registry_writes_need_a_write_token_and_reads_stay_open(tmp_path: Path, bootstrap: str) -> None:
    config = config_with_tokens(bootstrap, tmp_path)
    body = {"schema": json.dumps(V1)}
    async with build_hub(config, role="inbound") as hub, httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.ops.port}") as http:
        for method, path, payload in [
            ("POST", "/registry/subjects/thing-value/versions", body),
            ("PUT", "/registry/config/bus.canonical.Payment-value", {"compatibility": "NONE"}),
            ("PUT", "/registry/config", {"compatibility": "NONE"}),
            ("DELETE", "/registry/subjects/bus.canonical.Payment-value", None),
        ]:
            anonymous = await http.request(method, path, json=payload)
            assert anonymous.status_code == 401, (method, path)
            assert "Bearer" in anonymous.headers["WWW-Authenticate"]
            wrong = await http.request(method, path, json=payload, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            reader = await http.request(method, path, json=payload, headers={"Authorization": "Bearer tok-read"})
            assert reader.status_code == 403 and "dashboards" in reader.json()["message"]
        # Nothing was changed by any of them.
        assert (await http.get("/registry/config")).json() == {"compatibilityLevel": "BACKWARD"}
        assert "bus.canonical.Payment-value" in (await http.get("/registry/subjects")).json()
        # Reads, a compatibility test and a lookup stay open; health and metrics too.
        assert (await http.get("/registry/subjects/bus.canonical.Payment-value/versions")).status_code == 200
        check = await http.post("/registry/compatibility/subjects/bus.canonical.Payment-value/versions/latest", json=body)
        assert check.status_code == 200 and check.json()["is_compatible"] is False
        assert (await http.get("/healthz")).status_code == 200 and (await http.get("/metrics")).status_code == 200
        # Basic auth with the token as password (what Confluent clients send) writes.
        basic = await http.post("/registry/subjects/thing-value/versions", json=body, auth=("ci", "tok-write"))
        assert basic.status_code == 200


async def test_the_hub_restarts_cleanly_after_its_subject_was_tampered_with(
    tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = config_with_tokens(bootstrap, tmp_path)
    async with (
        build_hub(config, role="inbound") as hub,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.ops.port}", headers=WRITE) as http,
    ):
        payment_id = hub.codec.schema_id("Payment")
        subject = "bus.canonical.Payment-value"
        # Someone with a token turns the subject's checks off and registers an unrelated schema.
        assert (await http.put(f"/registry/config/{subject}", json={"compatibility": "NONE"})).status_code == 200
        assert (await http.post(f"/registry/subjects/{subject}/versions", json={"schema": json.dumps(V1)})).status_code == 200
        assert (await http.put(f"/registry/config/{subject}", json={"compatibility": "FULL"})).status_code == 200
    with caplog.at_level("WARNING", logger="bus.kafka.registry_client"):
        async with build_hub(config, role="inbound") as hub:
            assert hub.codec.schema_id("Payment") == payment_id  # its own version, found again
    warned = [r.getMessage() for r in caplog.records if "changed outside the hub" in r.getMessage()]
    assert warned and subject in warned[0] and "later version" in warned[0], warned
