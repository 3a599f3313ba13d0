"""The hub describes itself to the systems around it: an OpenAPI 3.1 document of its webhook
endpoints and an AsyncAPI 3.0 document of its topics, from `bus docs` and from a running hub's
management API. Each passes a validator library (openapi-spec-validator; the AsyncAPI
Initiative's own JSON Schema of 3.0.0, from npm), and says what the hub really does: a body
built from the document is accepted by the running hub, one that breaks it is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import fastavro
import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate as validate_openapi

from bus.app.cli import main
from tests.integration.test_openapi_contracts import GITHUB, LEDGER
from tests.support.hub import build_hub, payment, payment_hub_config, write_config
from tests.support.target import Target
from tests.support.tools import tool

READ = "read-token-docs-1234"


def hub_config(tmp_path: Path, bootstrap: str, target_url: str) -> Path:
    """The payment hub with more kinds of webhook: JWT, a Stripe signature, a batch, an OpenAPI contract."""
    (tmp_path / "ledger.openapi.yaml").write_text(LEDGER)
    shutil.copy(GITHUB, tmp_path / "github.openapi.json")
    config = payment_hub_config(bootstrap, target_url)
    base = config["inbound"][0]
    config["inbound"] += [
        {**base, "name": "stripe", "path": "/hooks/stripe", "auth": None, "signature": {"type": "stripe", "secrets": ["whsec_x"]}},
        {
            **base,
            "name": "jwt",
            "path": "/hooks/jwt",
            "auth": {"type": "jwt", "secret": "a-shared-secret-of-32-bytes-or-more!"},
            "emit": {**base["emit"], "payload": {"sample": payment(1)}},  # a declared shape: typed in the document
        },
        {**base, "name": "many", "path": "/hooks/many", "batch": True},
        {
            "name": "ledger",
            "type": "http_webhook",
            "path": "/hooks/ledger",
            "openapi": {"document": "ledger.openapi.yaml", "operation": "postPayment"},
            "emit": {
                "schema": "Payment",
                "id": "reference",
                "key": "reference",
                "map": {"payment_id": "reference", "amount": "amount", "currency": "currency", "status": '"succeeded"'},
            },
        },
    ]
    config["ops"]["tokens"] = [{"name": "viewer", "token": READ, "scope": "read"}]
    return write_config(tmp_path / "bus.yaml", config)


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    assert main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


def test_bus_docs_openapi_describes_every_webhook_and_passes_a_validator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = hub_config(tmp_path, "127.0.0.1:9", "http://unused")
    document = cli_json(capsys, "docs", "openapi", "-c", str(path), "--server", "https://hooks.example.com")
    validate_openapi(document)  # raises on anything OpenAPI 3.1 does not allow
    assert document["servers"] == [{"url": "https://hooks.example.com"}]
    assert set(document["paths"]) == {"/hooks/payments", "/hooks/stripe", "/hooks/jwt", "/hooks/many", "/hooks/ledger"}
    schemes = document["components"]["securitySchemes"]
    assert schemes["payments-api-key"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["jwt-jwt"]["scheme"] == "bearer" and schemes["stripe-signature"]["name"] == "Stripe-Signature"
    bodies = document["components"]["schemas"]
    assert bodies["many-body"]["type"] == "array"  # a batch: one event per element
    # The contract the senders follow, inlined (3.0's nullable read); the mapping's fields otherwise.
    assert bodies["ledger-body"]["properties"]["currency"] == {"type": "string", "enum": ["EUR", "USD"]}
    assert bodies["ledger-body"]["properties"]["note"]["type"] == ["string", "null"]
    # No declared shape: the fields the mapping reads, in an open object (what the hub needs, not all a sender sends).
    data = bodies["payments-body"]["properties"]["data"]
    assert set(data["properties"]) == {"id", "amount", "currency", "customer", "status"} and data["additionalProperties"] is True
    validator = jsonschema.Draft202012Validator(bodies["jwt-body"])  # from its sample: typed
    assert not list(validator.iter_errors(payment(7))) and list(validator.iter_errors({"data": {"amount": "ten"}}))


def test_bus_docs_asyncapi_passes_the_specifications_own_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    official = json.loads(Path(tool("asyncapi-specs")).read_text())
    path = hub_config(tmp_path, "127.0.0.1:9", "http://unused")
    document = cli_json(capsys, "docs", "asyncapi", "-c", str(path))
    errors = [f"{e.json_path}: {e.message[:200]}" for e in jsonschema.Draft7Validator(official).iter_errors(document)]
    assert errors == []
    channels, prefix = document["channels"], json.loads(json.dumps(document))["channels"]["canonical-Payment"]["address"].split(".")[0]
    assert channels["canonical-Payment"]["address"] == f"{prefix}.canonical.Payment"
    assert channels["deliver-erp"]["address"] == f"{prefix}.deliver.erp"
    assert channels["dead-letters-erp"]["address"] == f"{prefix}.dlq.erp"
    assert channels["refused-ledger"]["address"] == f"{prefix}.dlq._in.ledger"
    message = document["components"]["messages"]["Payment"]
    assert message["payload"]["schemaFormat"].startswith("application/vnd.apache.avro")
    fastavro.parse_schema(message["payload"]["schema"])  # the Avro schema itself, usable as is
    assert message["bindings"]["kafka"]["schemaIdPayloadEncoding"] == "confluent"
    actions = {name: op["action"] for name, op in document["operations"].items()}
    assert actions["payments-publishes-Payment"] == "send" and actions["erp-delivers"] == "receive"
    # A document that breaks the specification is caught by the same check (it can fail).
    broken = {**document, "channels": {"x": {"address": 5}}}
    assert list(jsonschema.Draft7Validator(official).iter_errors(broken))


async def test_a_running_hub_serves_both_documents_to_a_reader_and_means_them(tmp_path: Path, bootstrap: str) -> None:
    target = await Target().start()
    path = hub_config(tmp_path, bootstrap, target.url)
    try:
        async with build_hub(path) as hub, httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.ops.port}/api/v1", timeout=60) as api:
            assert (await api.get("/webhooks.openapi.json")).status_code == 401
            headers = {"Authorization": f"Bearer {READ}"}
            webhooks = (await api.get("/webhooks.openapi.json", headers=headers)).json()
            topics = (await api.get("/asyncapi.json", headers=headers)).json()
            validate_openapi(webhooks)
            assert topics["channels"]["canonical-Payment"]["address"] == hub.topics.canonical("Payment")
            # What the document says of /hooks/payments holds on the running hub.
            operation = webhooks["paths"]["/hooks/payments"]["post"]
            scheme = webhooks["components"]["securitySchemes"][next(iter(operation["security"][0]))]
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}") as client:  # type: ignore[union-attr]
                answer = await client.post("/hooks/payments", json=payment(1), headers={scheme["name"]: "k1"})
                assert answer.status_code == 202 and "id" in answer.json()
                assert (await client.post("/hooks/payments", json=payment(2))).status_code == 401
    finally:
        await target.stop()
