"""Signed webhooks as Stripe, Shopify, GitHub and HubSpot send them (signatures computed here from their
documented schemes), and a generic HMAC: good ones are taken, forged, tampered, stale and
unsigned ones get 401 with the reason, and nothing of those reaches Kafka."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bus.app.hub import Hub
from bus.kafka.reader import read_topic
from tests.support.hub import build_hub, unique_prefix, write_config

EMIT = {"schema": "Payment", "id": "id", "key": "data.id", "map": {"payment_id": "data.id", "amount": "data.amount", "currency": '"usd"'}}


def inbound(name: str, signature: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "type": "http_webhook", "path": f"/hooks/{name}", "signature": signature, "emit": EMIT}


@pytest.fixture
async def hub(tmp_path: Path, bootstrap: str) -> AsyncIterator[Hub]:
    config = {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 1, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "inbound": [
            inbound("stripe", {"type": "stripe", "secrets": ["whsec_old", "whsec_new"], "tolerance_s": 300}),
            inbound("shopify", {"type": "shopify", "secrets": ["shpss_1"]}),
            inbound("github", {"type": "github", "secrets": ["gh-secret"]}),
            inbound("hubspot", {"type": "hubspot", "secrets": ["hs-client-secret"]}),
            inbound(
                "acme",
                {"type": "hmac", "secrets": ["k"], "header": "X-Acme-Sig", "algorithm": "sha512", "encoding": "base64", "prefix": "v2:"},
            ),
        ],
        "routes": [],
        "outbound": [],
    }
    async with build_hub(write_config(tmp_path / "bus.yaml", config)) as running:
        yield running


def body(n: int) -> bytes:
    return json.dumps({"id": f"evt_{n}", "data": {"id": f"pi_{n}", "amount": 100 + n}}).encode()


def hubspot_headers(url: str, payload: bytes, secret: str, at_ms: int) -> dict[str, str]:
    # HubSpot's v3: base64 HMAC-SHA256 over method + URL + body + the millisecond timestamp.
    signed = b"POST" + url.encode() + payload + str(at_ms).encode()
    digest = base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()
    return {"X-HubSpot-Signature-v3": digest, "X-HubSpot-Request-Timestamp": str(at_ms)}


def stripe_header(payload: bytes, secret: str, at: int) -> str:
    v1 = hmac.new(secret.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={at},v1={v1}"


async def test_each_scheme_takes_good_signatures_and_refuses_the_rest(hub: Hub) -> None:
    now = int(time.time())
    shopify = base64.b64encode(hmac.new(b"shpss_1", body(3), hashlib.sha256).digest()).decode()
    github = "sha256=" + hmac.new(b"gh-secret", body(4), hashlib.sha256).hexdigest()
    acme = "v2:" + base64.b64encode(hmac.new(b"k", body(5), hashlib.sha512).digest()).decode()
    assert hub.web is not None
    hubspot_url = f"http://127.0.0.1:{hub.web.port}/hooks/hubspot"
    good = [
        ("stripe", body(1), {"Stripe-Signature": stripe_header(body(1), "whsec_new", now)}),
        ("stripe", body(2), {"Stripe-Signature": f"t={now},v1=deadbeef,v1={stripe_header(body(2), 'whsec_old', now).split('v1=')[1]}"}),
        ("shopify", body(3), {"X-Shopify-Hmac-Sha256": shopify}),
        ("github", body(4), {"X-Hub-Signature-256": github}),
        ("acme", body(5), {"X-Acme-Sig": acme}),
        ("hubspot", body(13), hubspot_headers(hubspot_url, body(13), "hs-client-secret", now * 1000)),
    ]
    bad = [
        ("stripe", body(6), {"Stripe-Signature": stripe_header(body(6), "whsec_wrong", now)}, "no v1 signature"),
        ("stripe", body(7), {"Stripe-Signature": stripe_header(body(7), "whsec_new", now - 600)}, "from now (tolerance 300s)"),
        ("stripe", body(8), {}, "missing signature header Stripe-Signature"),
        ("stripe", body(9), {"Stripe-Signature": "v1=abc"}, "no valid timestamp"),
        ("shopify", body(10), {"X-Shopify-Hmac-Sha256": shopify}, "does not match the body"),  # signature of another body
        ("github", body(11), {"X-Hub-Signature-256": github.removeprefix("sha256=")}, "does not start with 'sha256='"),
        ("acme", body(12), {"X-Acme-Sig": acme}, "does not match the body"),
        ("hubspot", body(14), hubspot_headers(hubspot_url, body(14), "hs-client-secret", (now - 600) * 1000), "(tolerance 300s)"),
        (
            "hubspot",
            body(15),
            hubspot_headers(hubspot_url.replace("http:", "https:"), body(15), "hs-client-secret", now * 1000),
            "does not match",
        ),
        ("hubspot", body(16), hubspot_headers(hubspot_url, body(16), "other", now * 1000), "does not match method, URL, body"),
        ("hubspot", body(17), {}, "missing signature header X-HubSpot-Signature-v3"),
        # Timestamps no clock could give (a number past what a float holds broke the check itself: 500, not 401)
        ("stripe", body(18), {"Stripe-Signature": f"t={'9' * 400},v1=abc"}, "no valid timestamp"),
        ("stripe", body(19), {"Stripe-Signature": "t=1e9,v1=abc"}, "no valid timestamp"),
        (
            "hubspot",
            body(20),
            {**hubspot_headers(hubspot_url, body(20), "hs-client-secret", now * 1000), "X-HubSpot-Request-Timestamp": "9" * 400},
            "not milliseconds",
        ),
        (
            "hubspot",
            body(21),
            {**hubspot_headers(hubspot_url, body(21), "hs-client-secret", now * 1000), "X-HubSpot-Request-Timestamp": "-5"},
            "not milliseconds",
        ),
    ]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}") as client:
        for name, payload, headers in good:
            answer = await client.post(f"/hooks/{name}", content=payload, headers={"Content-Type": "application/json", **headers})
            assert answer.status_code == 202, (name, answer.text)
        for name, payload, headers, reason in bad:
            answer = await client.post(f"/hooks/{name}", content=payload, headers={"Content-Type": "application/json", **headers})
            assert answer.status_code == 401, (name, answer.text)
            assert reason in answer.json()["error"], (name, answer.text)
            assert "whsec" not in answer.text and "secret" not in answer.text

    stored = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Payment"))
    assert sorted(dict(r.headers)["ce_id"].decode() for r in stored) == sorted(f"evt_{n}" for n in [1, 2, 3, 4, 5, 13])
