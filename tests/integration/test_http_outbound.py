"""Outbound ``http`` with OAuth2 client credentials and signed ``webhook`` deliveries, over real
HTTP to local stand-ins, through the real embedded broker. Signatures are verified with the
Standard Webhooks project's own library, not with the hub's code."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
from pathlib import Path
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bus.app.cli import main
from bus.kafka.reader import read_topic
from examples.kit.standin import serve
from tests.support.accounting import AccountingApi
from tests.support.hub import build_hub, payment, unique_prefix, write_config
from tests.support.private_server import binaries_missing
from tests.support.source import Source
from tests.support.wait import until

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HMAC_SECRET = "partner-secret"


class Receiver:
    """A subscriber's endpoint that verifies each delivery's signature and answers 401 when it fails."""

    def __init__(self, verify: Any) -> None:
        self.verify = verify
        self.verified: list[dict[str, Any]] = []
        self.refused = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            self.verified.append(self.verify(body, dict(request.headers)))
        except (WebhookVerificationError, ValueError) as exc:
            self.refused += 1
            return web.json_response({"error": str(exc)}, status=401)
        return web.json_response({}, status=204)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner, self.port = await serve(app)
        return f"http://127.0.0.1:{self.port}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def github_style(body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    expected = "sha256=" + hmac.new(HMAC_SECRET.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(headers.get("X-Hub-Signature-256", ""), expected):
        raise ValueError("bad signature")
    return json.loads(body)


async def test_oauth2_tokens_and_signed_webhooks(tmp_path: Path, bootstrap: str) -> None:
    # The first token lives long, so the revocation below is met with it and a 401 whatever the
    # machine's load (a loop held up 2.7 s let a 2 s token lapse first: refetched, no 401 seen);
    # the ones after it live 2 s, to see one lapse and be refetched before use.
    api = await AccountingApi(token_ttl=60.0).start()
    standard = Receiver(lambda body, headers: Webhook(SECRET).verify(body, headers))
    hmac_receiver = Receiver(github_style)
    wrong = Receiver(lambda body, headers: Webhook(SECRET).verify(body, headers))
    standard_url, hmac_url, wrong_url = await standard.start(), await hmac_receiver.start(), await wrong.start()
    prefix = unique_prefix()
    token = {"type": "oauth2", "token_url": f"{api.url}/oauth2/token", "client_id": "hub", "refresh_before_s": 0.5}
    outbound = [
        {
            "name": "accounting",
            "type": "http",
            "url": f"{api.url}/v3/invoices",
            "auth": {**token, "client_secret": "s3cret", "client_auth": "body"},
            "body": {"CustomerRef": "customer_id", "TotalAmt": "amount"},
        },
        {"name": "partner", "type": "webhook", "url": standard_url, "signing": {"secret": SECRET}},
        {"name": "github", "type": "webhook", "url": hmac_url, "signing": {"scheme": "hmac", "secret": HMAC_SECRET}},
        {"name": "stale", "type": "webhook", "url": wrong_url, "signing": {"secret": "whsec_" + "QUFBQUFBQUFBQUFBQUFBQQ=="}},
        {
            "name": "locked-out",
            "type": "http",
            "url": f"{api.url}/v3/invoices",
            "auth": {**token, "client_secret": "wrong"},
            "delivery": {"backoff_initial": "200ms", "backoff_max": "500ms"},
        },
    ]
    base = {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": prefix, "partitions": 2, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "inbound": [
            {
                "name": "payments",
                "type": "http_webhook",
                "path": "/hooks/payments",
                "emit": {
                    "schema": "Payment",
                    "id": "id",
                    "key": "data.id",
                    "map": {"payment_id": "data.id", "amount": "data.amount", "currency": '"usd"', "customer_id": "data.customer"},
                },
            }
        ],
        "routes": [{"name": "all", "from": "Payment", "to": [o["name"] for o in outbound]}],
        "outbound": outbound,
    }
    path = write_config(tmp_path / "bus.yaml", base)
    try:
        async with build_hub(path) as hub:
            assert hub.web is not None
            source = Source([f"http://127.0.0.1:{hub.web.port}/hooks/payments"])
            await source.send_all(payment(i) for i in range(20))
            await until(lambda: len({key for key, _ in api.invoices}) == 20, "the first 20 invoices")
            api.token_ttl = 2.0
            api.revoke_all()  # credentials rotated by an administrator: the next calls get 401
            await source.send_all(payment(i) for i in range(20, 40))
            await until(lambda: len({key for key, _ in api.invoices}) == 40, "invoices after the revocation")
            issued = api.tokens_issued
            await asyncio.sleep(2.0)  # the token lapses on its own: refetched before use, no 401 needed
            await source.send_all(payment(i) for i in range(40, 50))
            await until(
                lambda: len({key for key, _ in api.invoices}) == 50 and len(standard.verified) >= 50 and len(hmac_receiver.verified) >= 50,
                "all 50 invoices and signed webhooks",
            )
            assert api.tokens_issued > issued
            letters = []
            for _ in range(200):
                letters = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("stale"))
                if len(letters) == 50:
                    break
                await asyncio.sleep(0.1)
            assert len(letters) == 50 and b"answered 401" in dict(letters[0].headers)["bus_error"]
            locked_out = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("locked-out"))
            assert locked_out == []  # refused credentials are retried, never dead-lettered: fixing the secret resumes delivery
        assert {key for key, _ in api.invoices} == {f"evt_{i}" for i in range(50)}
        assert dict(api.invoices)["evt_0"] == {"CustomerRef": "cus_0", "TotalAmt": 150000}
        assert api.tokens_issued >= 3 and api.unauthorised >= 1  # refetched after the revocation and after expiry
        assert {p["payment_id"] for p in standard.verified} == {f"pi_{i}" for i in range(50)} and standard.refused == 0
        assert len(hmac_receiver.verified) >= 50 and hmac_receiver.refused == 0
        assert wrong.refused >= 50 and wrong.verified == []
    finally:
        for server in (standard, hmac_receiver, wrong):
            await server.stop()
        await api.stop()


class Recorder:
    """A REST API that records every call: method, raw path, headers and body."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, str], bytes]] = []
        self._runner: web.AppRunner | None = None

    async def _any(self, request: web.Request) -> web.Response:
        self.calls.append((request.method, request.raw_path, dict(request.headers), await request.read()))
        return web.json_response({}, status=204 if request.method == "DELETE" else 200)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._any)
        self._runner, port = await serve(app)
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def test_templated_url_method_and_headers(tmp_path: Path, bootstrap: str) -> None:
    api = Recorder()
    url = await api.start()
    config = {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 1, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "inbound": [
            {
                "name": "payments",
                "type": "http_webhook",
                "path": "/hooks/payments",
                "emit": {
                    "schema": "Payment",
                    "id": "id",
                    "key": "data.id",
                    "map": {"payment_id": "data.id", "amount": "data.amount", "currency": '"usd"', "status": "data.status"},
                },
            }
        ],
        "routes": [{"name": "all", "from": "Payment", "to": ["erp"]}],
        "outbound": [
            {
                "name": "erp",
                "type": "http",
                "url": url + "/api/payments/$${payment_id}?source=bus",  # $${}: an event field, not an env variable
                "method": "PUT",
                "method_when": {"DELETE": 'status == "failed"'},
                "headers": {"X-Tenant": "acme", "X-Payment-Status": "$${upper(status)}"},
                "body": {"amount": "amount"},
            }
        ],
    }
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            assert hub.web is not None
            sender = Source([f"http://127.0.0.1:{hub.web.port}/hooks/payments"])
            odd = payment(3)
            odd["data"]["id"] = "pi/../../admin?x=1"  # a value must not escape its path segment
            await sender.send_all([payment(1), payment(2, status="failed"), odd])
            await until(lambda: len(api.calls) == 3, "three calls")
        calls = {path: (method, headers, body) for method, path, headers, body in api.calls}
        method, headers, body = calls["/api/payments/pi_1?source=bus"]
        assert method == "PUT" and json.loads(body) == {"amount": 150000}
        assert headers["X-Tenant"] == "acme" and headers["X-Payment-Status"] == "SUCCEEDED" and headers["Idempotency-Key"] == "evt_1"
        method, headers, body = calls["/api/payments/pi_2?source=bus"]
        assert method == "DELETE" and body == b"" and headers["X-Payment-Status"] == "FAILED"
        assert "/api/payments/pi%2F..%2F..%2Fadmin%3Fx%3D1?source=bus" in calls
    finally:
        await api.stop()


async def test_deliveries_go_through_the_proxy_the_environment_names(tmp_path: Path, bootstrap: str, monkeypatch: Any) -> None:
    """Where a company's network lets only its proxy out, every HTTP client honours HTTPS_PROXY,
    HTTP_PROXY and NO_PROXY. The pollers did (httpx); deliveries went straight to the target and
    failed. Now an https target is reached through a CONNECT tunnel and an http one with its
    absolute URL, with the proxy's credentials; NO_PROXY names what goes straight."""
    import ssl

    from tests.support.certs import Authority
    from tests.support.http_proxy import ForwardProxy

    # The targets by the machine's own name, not 127.0.0.1: a loopback address never goes through a
    # proxy (a proxy's loopback is not the hub's), as Go's HTTP clients have it.
    here = socket.gethostname()
    if socket.gethostbyname(here) != "127.0.0.1":
        binaries_missing(f"the machine's name {here} does not resolve to 127.0.0.1, where the targets listen")
    authority = Authority(tmp_path / "pki")
    issued = authority.issue("target", server=True, dns=(here,))
    received: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(f"{request.scheme} {request.path} {(await request.json())['id']}")
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/{name}", hook)
    plain_runner, plain_port = await serve(app)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(issued.cert), str(issued.key))
    secure_runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await secure_runner.setup()
    await web.TCPSite(secure_runner, "127.0.0.1", 0, ssl_context=context).start()
    secure_port = int(secure_runner.addresses[0][1])
    proxy = await ForwardProxy(user="hub", password="s3cr=t").start()

    config = {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 1, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0, "tokens": [{"name": "ops", "token": "proxy-test-token", "scope": "read"}]},
        "inbound": [{"name": "in", "type": "http_webhook", "path": "/in", "emit": {"schema": "Payment", "id": "id", "map": {
            "payment_id": "id", "amount": "amount", "currency": '"eur"'}}}],
        "routes": [{"name": "all", "from": "Payment", "to": ["secure", "plain", "local"]}],
        "outbound": [
            {"name": "secure", "type": "http", "url": f"https://{here}:{secure_port}/secure", "body": {"id": "payment_id"},
             "tls": {"ca": str(authority.cert)}},
            {"name": "plain", "type": "http", "url": f"http://{here}:{plain_port}/plain", "body": {"id": "payment_id"}},
            {"name": "local", "type": "http", "url": f"http://127.0.0.1:{plain_port}/local", "body": {"id": "payment_id"}},
        ],
    }  # fmt: skip
    path = write_config(tmp_path / "bus.yaml", config)

    def through_proxy() -> list[tuple[str, str, str | None]]:
        ports = (f":{secure_port}", f":{plain_port}/")
        return [(a.method, a.target, a.authorization) for a in proxy.asked if any(p in a.target for p in ports)]

    try:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url())
        monkeypatch.setenv("HTTP_PROXY", proxy.url())
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with build_hub(path) as hub:
            assert hub.web is not None
            await Source([f"http://127.0.0.1:{hub.web.port}/in"]).send_all({"id": f"p{i}", "amount": i} for i in range(3))
            await until(lambda: len(received) == 9, "the deliveries", timeout=30)
            # The hub's calls to itself (its schemas registered with the embedded registry on its ops port) and
            # the CLI's to a local hub go straight: a proxy elsewhere cannot reach this machine's loopback.
            monkeypatch.setenv("BUS_OPS_TOKEN", "proxy-test-token")
            assert await asyncio.to_thread(main, ["status", "--hub", f"http://127.0.0.1:{hub.ops.port}"]) == 0
            assert not [a.target for a in proxy.asked if f":{hub.ops.port}" in a.target], proxy.asked
        expected = [
            f"{scheme} /{name} p{i}" for scheme, name in (("https", "secure"), ("http", "plain"), ("http", "local")) for i in range(3)
        ]
        assert sorted(received) == sorted(expected)
        credentials = "Basic " + base64.b64encode(b"hub:s3cr=t").decode()
        seen = through_proxy()
        assert ("CONNECT", f"{here}:{secure_port}", credentials) in seen  # one tunnel, kept alive
        # An http target's requests name its whole URL (the stand-in reads a connection's first, then relays it).
        assert [s for s in seen if s[0] == "POST"][:1] == [("POST", f"http://{here}:{plain_port}/plain", credentials)]
        assert not [s for s in proxy.asked if s.target.endswith("/local")]  # a loopback target: straight to it

        monkeypatch.setenv("NO_PROXY", here)  # straight to them: the proxy sees nothing more
        before = len(through_proxy())
        async with build_hub(path) as hub:
            assert hub.web is not None
            await Source([f"http://127.0.0.1:{hub.web.port}/in"]).send_all({"id": f"q{i}", "amount": i} for i in range(2))
            await until(lambda: len(received) == 15, "the deliveries", timeout=30)
        assert len(through_proxy()) == before
    finally:
        await proxy.stop()
        await plain_runner.cleanup()
        await secure_runner.cleanup()
