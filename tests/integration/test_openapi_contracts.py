"""OpenAPI documents as contracts. At validate time, against an excerpt of GitHub's own REST API
description (tests/data): an ``http`` outbound's body, method, URL path and query parameters.
At run time, against a vendor document with constraints no type check sees (a minimum, an enum, a
length): a body that breaks it is dead-lettered with the schema's reason and never sent, and an
``http_webhook`` answers 400 to a sender that breaks the document it follows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from bus.app.cli import main
from bus.kafka.reader import read_topic
from tests.integration.test_delivery import post
from tests.support.hub import build_hub, payment, payment_hub_config, write_config
from tests.support.target import Target

GITHUB = Path(__file__).resolve().parents[1] / "data" / "github-issues.openapi.json"
LEDGER = """\
openapi: 3.0.3
info: {title: Ledger, version: "2"}
paths:
  /v2/payments:
    post:
      operationId: postPayment
      parameters:
        - {name: dry_run, in: query, schema: {type: boolean}}
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Payment"}
      responses: {"201": {description: posted}}
components:
  schemas:
    Payment:
      type: object
      required: [reference, amount, currency]
      properties:
        reference: {type: string, maxLength: 12}
        amount: {type: integer, minimum: 1}
        currency: {type: string, enum: [EUR, USD]}
        note: {type: string, nullable: true}
"""


def issue_config(tmp_path: Path, **outbound: Any) -> Path:
    shutil.copy(GITHUB, tmp_path / "github.openapi.json")
    config = payment_hub_config("127.0.0.1:9", "http://unused")
    config["outbound"] = [
        {
            "name": "issues",
            "type": "http",
            "url": "https://api.github.com/repos/acme/payments/issues",
            "openapi": {"document": "github.openapi.json", "operation": "issues/create"},
            "body": {"title": '"Payment " + payment_id + " failed"', "body": 'coalesce(description, "")', "labels": '["payments"]'},
            **outbound,
        }
    ]
    config["routes"] = [{"name": "failed", "from": "Payment", "when": 'status == "failed"', "to": ["issues"]}]
    return write_config(tmp_path / "bus.yaml", config)


def errors_of(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    code = main(["validate", "--json", "-c", str(path)])
    found: dict[str, str] = {}
    for error in json.loads(capsys.readouterr().out)["errors"]:
        found[error["field"]] = (found.get(error["field"], "") + " | " + error["message"]).lstrip(" |")
    assert (code == 0) == (not found)
    return found


def test_a_body_that_breaks_githubs_own_description_is_refused_at_validate_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert errors_of(issue_config(tmp_path), capsys) == {}  # the document is GitHub's, unchanged: a good body passes
    broken = {"body": {"body": "description", "labels": "currency"}}  # no title (required); labels must be a list
    found = errors_of(issue_config(tmp_path, **broken), capsys)
    assert "the request body of issues/create.title has no default and is not mapped" in found["outbound[0].body"], found
    assert "'currency' is a string, and the field is a list" in found["outbound[0].body.labels"], found
    found = errors_of(issue_config(tmp_path, method="PUT", url="https://api.github.com/repos/acme/payments/isues?per_page=5"), capsys)
    assert "issues/create is POST /repos/{owner}/{repo}/issues, and this outbound sends PUT" in found["outbound[0].method"]
    assert "does not match the operation's path" in found["outbound[0].url"]
    # A templated path fits the operation's parameters; an unknown operation is named with a suggestion.
    assert errors_of(issue_config(tmp_path, url="https://api.github.com/repos/acme/$${customer_id}/issues"), capsys) == {}
    found = errors_of(issue_config(tmp_path, openapi={"document": "github.openapi.json", "operation": "issues/creat"}), capsys)
    assert "has no operation 'issues/creat'; did you mean 'issues/create'?" in found["outbound[0].openapi.operation"]


def ledger_config(tmp_path: Path, target: Target, bootstrap: str) -> Path:
    (tmp_path / "ledger.openapi.yaml").write_text(LEDGER)
    config = payment_hub_config(bootstrap, target.url)
    config["outbound"][0].update(
        url=f"{target.url}/v2/payments?dry_run=false",
        openapi={"document": "ledger.openapi.yaml", "operation": "postPayment"},
        body={"reference": "payment_id", "amount": "amount", "currency": "upper(currency)", "note": "description"},
    )
    config["routes"] = [{"name": "all", "from": "Payment", "to": ["erp"]}]
    return write_config(tmp_path / "bus.yaml", config)


async def test_a_body_that_breaks_the_contract_is_dead_lettered_not_sent(tmp_path: Path, bootstrap: str) -> None:
    target = await Target().start()
    path = ledger_config(tmp_path, target, bootstrap)
    try:
        async with build_hub(path) as hub:
            good = [payment(1), payment(2, currency="EUR")]
            bad = [payment(3, currency="GBP"), payment(4, amount=0)]
            await post(hub, *good, *bad)
            await target.wait_for(lambda: len(target.accepted) == 2)
            letters: list[Any] = []
            for _ in range(100):
                letters = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("erp"))
                if len(letters) >= 2:
                    break
                await target.wait_for(lambda: True, timeout=0.1)
            reasons = {dict(r.headers)["ce_id"].decode(): dict(r.headers)["bus_error"].decode() for r in letters}
        assert sorted(c.body["reference"] for c in target.accepted) == ["pi_1", "pi_2"]  # the others never reached it
        assert "'GBP' is not one of ['EUR', 'USD'] (at $.currency)" in reasons["evt_3"], reasons
        assert "0 is less than the minimum of 1 (at $.amount)" in reasons["evt_4"], reasons
        assert "not sent" in reasons["evt_4"]
    finally:
        await target.stop()


async def test_a_webhook_refuses_a_sender_that_breaks_the_document_it_follows(tmp_path: Path, bootstrap: str) -> None:
    target = await Target().start()
    (tmp_path / "ledger.openapi.yaml").write_text(LEDGER)
    config = payment_hub_config(bootstrap, target.url)
    inbound = config["inbound"][0]
    inbound["openapi"] = {"document": "ledger.openapi.yaml", "operation": "postPayment"}
    inbound["emit"] = {
        "schema": "Payment",
        "id": "reference",
        "key": "reference",
        "map": {"payment_id": "reference", "amount": "amount", "currency": "currency", "description": "note", "status": '"succeeded"'},
    }
    config["routes"] = [{"name": "all", "from": "Payment", "to": ["erp"]}]
    path = write_config(tmp_path / "bus.yaml", config)
    try:
        async with build_hub(path) as hub, httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}") as client:  # type: ignore[union-attr]
            headers = {"X-API-Key": "k1"}
            refused = await client.post("/hooks/payments", json={"reference": "r-1", "amount": 5, "currency": "JPY"}, headers=headers)
            assert refused.status_code == 400
            assert (
                "the body breaks the contract (postPayment): 'JPY' is not one of ['EUR', 'USD'] (at $.currency)" in refused.json()["error"]
            )
            missing = await client.post("/hooks/payments", json={"reference": "r-2", "amount": 5}, headers=headers)
            assert missing.status_code == 400 and "'currency' is a required property" in missing.json()["error"]
            accepted = await client.post(
                "/hooks/payments", json={"reference": "r-3", "amount": 5, "currency": "EUR", "note": None}, headers=headers
            )
            assert accepted.status_code == 202
            await target.wait_for(lambda: len(target.accepted) == 1)
        assert target.accepted[0].headers["Idempotency-Key"] == "r-3"  # only the good one was published
    finally:
        await target.stop()


def test_a_webhook_emit_is_checked_against_the_document_it_follows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ledger.openapi.yaml").write_text(LEDGER)
    config = payment_hub_config("127.0.0.1:9", "http://unused")
    inbound = config["inbound"][0]
    inbound["openapi"] = {"document": "ledger.openapi.yaml", "operation": "postPayment"}
    inbound["emit"] = {
        "schema": "Payment",
        "id": "reference",
        "map": {"payment_id": "referense", "amount": "amount", "currency": "currency", "status": '"succeeded"'},
    }
    found = errors_of(write_config(tmp_path / "bus.yaml", config), capsys)
    assert "has no field 'referense'; did you mean 'reference'?" in found["inbound[0].emit.map.payment_id"], found
