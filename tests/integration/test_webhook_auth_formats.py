"""http_webhook over the real broker: JWT bearer tokens (a shared secret, and a sender's JWKS served
by a local key server that rotates its keys and goes down), form and XML bodies (and an XML entity
bomb), and repeated deliveries dropped by their delivery id."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from bus.app.hub import Hub
from bus.kafka.reader import read_topic
from examples.kit.standin import serve
from tests.support.hub import build_hub, unique_prefix, write_config

SECRET = "a-shared-secret-of-32-bytes-at-least!"
EMIT_JSON = {
    "schema": "Payment",
    "id": "id",
    "key": "data.id",
    "map": {"payment_id": "data.id", "amount": "data.amount", "currency": '"eur"'},
}


class KeyServer:
    """A sender's JWKS endpoint (as Auth0, Okta or Entra ID serve one) with keys it can rotate."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {"k1": rsa.generate_private_key(public_exponent=65537, key_size=2048)}
        self.requests = 0
        self.down = False
        self.deep = False  # answer JSON nested 100,000 deep
        self.port = 0
        self._runner: web.AppRunner | None = None

    def rotate(self, kid: str) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def token(self, kid: str, **claims: Any) -> str:
        body = {"iss": "https://login.example.com/", "aud": "bus-hooks", "exp": int(time.time()) + 300, **claims}
        return jwt.encode(body, self.keys[kid], algorithm="RS256", headers={"kid": kid})

    async def _jwks(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.down:
            return web.Response(status=503)
        if self.deep:
            return web.Response(body=b"[" * 100_000 + b"]" * 100_000, content_type="application/json")
        keys = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return web.json_response({"keys": keys})

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._jwks)
        self._runner, self.port = await serve(app)
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def hub_config(bootstrap: str, inbound: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 1, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "inbound": inbound,
    }


async def payment_ids(hub: Hub) -> Counter[str]:
    records = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Payment"))
    return Counter(dict(r.headers)["ce_id"].decode() for r in records)


def body(i: int) -> dict[str, Any]:
    return {"id": f"evt_{i}", "data": {"id": f"pi_{i}", "amount": 100 + i}}


def signed(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """An HS256 token with any header, as a sender may write one (PyJWT writes only what it would accept)."""
    part = lambda data: base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()  # noqa: E731
    head = f"{part(header)}.{part(claims)}"
    signature = base64.urlsafe_b64encode(hmac.new(SECRET.encode(), head.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    return f"{head}.{signature}"


async def test_jwt_with_a_shared_secret_and_with_a_rotating_jwks(tmp_path: Path, bootstrap: str) -> None:
    keys = KeyServer()
    jwks_url = await keys.start()
    inbound = [
        {
            "name": "partner",
            "type": "http_webhook",
            "path": "/hooks/partner",
            "auth": {"type": "jwt", "secret": SECRET, "audience": "bus-hooks"},
            "emit": EMIT_JSON,
        },
        {
            "name": "idp",
            "type": "http_webhook",
            "path": "/hooks/idp",
            "auth": {
                "type": "jwt",
                "jwks_url": jwks_url,
                "issuer": "https://login.example.com/",
                "audience": "bus-hooks",
                "jwks_refresh_s": 0,
            },
            "emit": EMIT_JSON,
        },
    ]
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", hub_config(bootstrap, inbound))) as hub:
            assert hub.web is not None
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}") as client:

                async def post(path: str, token: str | None, i: int) -> httpx.Response:
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    return await client.post(path, json=body(i), headers=headers)

                now = int(time.time())
                good = jwt.encode({"aud": "bus-hooks", "exp": now + 60}, SECRET, algorithm="HS256")
                assert (await post("/hooks/partner", good, 1)).status_code == 202
                refusals = {
                    "token expired": jwt.encode({"aud": "bus-hooks", "exp": now - 120}, SECRET, algorithm="HS256"),
                    "another audience": jwt.encode({"aud": "someone-else", "exp": now + 60}, SECRET, algorithm="HS256"),
                    "does not verify": jwt.encode(
                        {"aud": "bus-hooks", "exp": now + 60}, "not-the-secret-but-long-enough-too!", algorithm="HS256"
                    ),
                    "lacks the 'exp' claim": jwt.encode({"aud": "bus-hooks"}, SECRET, algorithm="HS256"),
                    "'none' is not accepted": jwt.encode({"aud": "bus-hooks", "exp": now + 60}, None, algorithm="none"),
                    "missing bearer token": None,
                    # a kid that is not text: PyJWT refuses the header, which was answered 500, not 401
                    "malformed token (Key ID header parameter must be a string)": signed(
                        {"alg": "HS256", "kid": ["k1"]}, {"aud": "bus-hooks", "exp": now + 60}
                    ),
                }
                for reason, token in refusals.items():
                    answer = await post("/hooks/partner", token, 2)
                    assert answer.status_code == 401 and reason in answer.json()["error"], (reason, answer.text)
                    assert answer.headers["WWW-Authenticate"].startswith("Bearer")

                assert (await post("/hooks/idp", keys.token("k1"), 3)).status_code == 202
                keys.rotate("k2")  # the sender starts signing with a new key: the hub refetches the set
                assert (await post("/hooks/idp", keys.token("k2"), 4)).status_code == 202
                assert keys.requests == 2
                answer = await post("/hooks/idp", keys.token("k2", iss="https://evil.example.com/"), 5)
                assert answer.status_code == 401 and "another issuer" in answer.json()["error"]
                keys.down = True
                keys.rotate("k3")
                answer = await post("/hooks/idp", keys.token("k3"), 6)
                assert answer.status_code == 503 and answer.headers["Retry-After"]  # not the sender's fault: send again
                assert (await post("/hooks/idp", keys.token("k1"), 7)).status_code == 202  # known keys still work
                keys.down, keys.deep = False, True  # a key set nested 100,000 deep: RecursionError, a 500, before
                answer = await post("/hooks/idp", keys.token("k3"), 6)
                assert answer.status_code == 503 and answer.headers["Retry-After"], answer.text
                keys.deep = False
                assert (await post("/hooks/idp", keys.token("k3"), 6)).status_code == 202  # the retry gets through
            ids = await payment_ids(hub)
            assert set(ids) == {"evt_1", "evt_3", "evt_4", "evt_6", "evt_7"} and all(n == 1 for n in ids.values())
    finally:
        await keys.stop()


async def test_form_and_xml_bodies_and_repeated_deliveries(tmp_path: Path, bootstrap: str) -> None:
    inbound = [
        {
            "name": "sms",  # Twilio-like: form fields
            "type": "http_webhook",
            "path": "/hooks/sms",
            "accept": ["form"],
            "emit": {
                "schema": "Payment",
                "id": "MessageSid",
                "key": "From",
                "map": {"payment_id": "MessageSid", "amount": "int(Body)", "currency": '"usd"'},
            },
        },
        {
            "name": "erp",  # a legacy ERP posting XML
            "type": "http_webhook",
            "path": "/hooks/erp",
            "accept": ["xml", "json"],
            "dedupe": {"header": "X-Delivery-Id"},
            "emit": {
                "schema": "Payment",
                "id": "payment.id",
                "key": "payment.id",
                "map": {"payment_id": "payment.id", "amount": "int(payment.amount._text)", "currency": "lower(payment.amount.currency)"},
            },
        },
    ]
    async with build_hub(write_config(tmp_path / "bus.yaml", hub_config(bootstrap, inbound))) as hub:
        assert hub.web is not None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}") as client:
            answer = await client.post("/hooks/sms", data={"MessageSid": "SM1", "From": "+15550001", "Body": "250"})
            assert answer.status_code == 202, answer.text
            answer = await client.post("/hooks/sms", json={"MessageSid": "SM2"})
            assert answer.status_code == 415 and "send form" in answer.json()["error"]

            xml = '<?xml version="1.0"?><payment id="PAY-7"><amount currency="EUR">1250</amount></payment>'
            headers = {"Content-Type": "application/xml", "X-Delivery-Id": "d-1"}
            first = await client.post("/hooks/erp", content=xml, headers=headers)
            assert first.status_code == 202, first.text
            again = await client.post("/hooks/erp", content=xml, headers=headers)  # the sender retries after a lost answer
            assert again.status_code == 200 and again.json() == {"id": "PAY-7", "duplicate": True}
            other = xml.replace("PAY-7", "PAY-8")
            assert (await client.post("/hooks/erp", content=other, headers={**headers, "X-Delivery-Id": "d-2"})).status_code == 202
            bomb = '<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]><payment id="&b;"/>'
            answer = await client.post("/hooks/erp", content=bomb, headers={"Content-Type": "text/xml", "X-Delivery-Id": "d-3"})
            assert answer.status_code == 400 and "invalid XML" in answer.json()["error"] and "entit" in answer.json()["error"]
            answer = await client.post("/hooks/erp", content="<payment id='x'><amount>", headers={"Content-Type": "application/xml"})
            assert answer.status_code == 400 and "invalid XML" in answer.json()["error"]
            # A refused delivery is not remembered: the sender's fixed retry with the same id is taken.
            broken = '<payment id="PAY-9"><amount currency="EUR">lots</amount></payment>'
            assert (await client.post("/hooks/erp", content=broken, headers={**headers, "X-Delivery-Id": "d-9"})).status_code == 400
            fixed = broken.replace("lots", "900")
            assert (await client.post("/hooks/erp", content=fixed, headers={**headers, "X-Delivery-Id": "d-9"})).status_code == 202
        ids = await payment_ids(hub)
        assert ids == Counter({"SM1": 1, "PAY-7": 1, "PAY-8": 1, "PAY-9": 1})
        assert hub.inbound[1].progress()["duplicates"] == 1
