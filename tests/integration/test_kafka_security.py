"""`kafka.security` by handshake, not by rendering: the whole hub (webhook, router, delivery)
talks to Kafka through a broker security layer that really checks (tests/support/kafka_gateway.py,
in front of the embedded broker): mutual TLS with the broker's CA, SASL/PLAIN over TLS, and
SASL/OAUTHBEARER with tokens from an OIDC provider (the client credentials grant, a signed JWT the
broker verifies). Wrong credentials, a foreign CA and a refused client secret fail with the reason."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from aiohttp import web
from aiokafka.errors import KafkaConnectionError, KafkaError
from cryptography.hazmat.primitives.asymmetric import ec

from bus.config.models import KafkaConfig, KafkaOAuth
from bus.errors import RetryableError
from bus.kafka.broker import EmbeddedBroker
from bus.kafka.clients import make_producer
from bus.kafka.oauth import ClientCredentialsTokens
from bus.ports import free_port
from examples.kit.standin import serve
from tests.support.certs import Authority
from tests.support.hub import build_hub, payment, payment_hub_config, write_config
from tests.support.kafka_gateway import KafkaGateway
from tests.support.target import Target


@pytest.fixture
async def ca(tmp_path: Path) -> Authority:
    return Authority(tmp_path / "ca", "Kafka CA")


def broker_tls(ca: Authority, *, client_ca: Authority | None = None) -> ssl.SSLContext:
    issued = ca.issue("broker", server=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(issued.cert, issued.key)
    if client_ca is not None:  # mutual TLS: only clients with a certificate from this CA
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca.cert)
    return context


@contextlib.asynccontextmanager
async def behind_gateway(**gateway: Any) -> AsyncIterator[tuple[EmbeddedBroker, KafkaGateway]]:
    port = free_port()
    async with EmbeddedBroker(advertised_port=port) as broker:
        gate = await KafkaGateway(port, broker.port, **gateway).start()
        try:
            yield broker, gate
        finally:
            await gate.stop()


async def flows(tmp_path: Path, bootstrap: str, security: dict[str, Any], events: int = 20) -> None:
    """The whole hub on this security: every webhook event reaches the target."""
    target = await Target().start()
    try:
        config = payment_hub_config(bootstrap, target.url)
        config["kafka"]["security"] = security
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            assert hub.web is not None
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}", headers={"X-API-Key": "k1"}) as client:
                for i in range(events):
                    assert (await client.post("/hooks/payments", json=payment(i))).status_code == 202
            await target.wait_for(lambda: len({c.headers["Idempotency-Key"] for c in target.accepted if c.path == "/erp"}) == events)
    finally:
        await target.stop()


async def cannot_connect(bootstrap: str, security: dict[str, Any]) -> KafkaError:
    producer = make_producer(KafkaConfig(bootstrap=bootstrap, security=security), bootstrap, request_timeout_ms=3000)
    with pytest.raises(KafkaError) as refused:
        await asyncio.wait_for(producer.start(), 20)
    await producer.stop()
    return refused.value


async def test_mutual_tls_to_the_broker(tmp_path: Path, ca: Authority) -> None:
    clients = Authority(tmp_path / "clients", "Client CA")
    hub_cert = clients.issue("hub")
    async with behind_gateway(tls=broker_tls(ca, client_ca=clients)) as (_broker, gate):
        bootstrap = f"127.0.0.1:{gate.port}"
        good = {"protocol": "SSL", "ssl_cafile": str(ca.cert), "ssl_certfile": str(hub_cert.cert), "ssl_keyfile": str(hub_cert.key)}
        await flows(tmp_path, bootstrap, good)
        # No client certificate: the broker ends the handshake.
        assert isinstance(await cannot_connect(bootstrap, {"protocol": "SSL", "ssl_cafile": str(ca.cert)}), KafkaConnectionError)
        # A broker whose certificate is not from the CA the hub trusts: the hub ends it.
        other = Authority(tmp_path / "other", "Other CA")
        assert isinstance(await cannot_connect(bootstrap, {**good, "ssl_cafile": str(other.cert)}), KafkaConnectionError)


async def test_sasl_plain_over_tls(tmp_path: Path, ca: Authority, caplog: pytest.LogCaptureFixture) -> None:
    def check(mechanism: str, payload: bytes) -> str | None:
        _authzid, user, password = payload.split(b"\0")
        return None if (user, password) == (b"hub", b"s3cret-pw") else f"bad credentials for {user.decode()}"

    async with behind_gateway(tls=broker_tls(ca), mechanisms=("PLAIN",), check=check) as (_broker, gate):
        bootstrap = f"127.0.0.1:{gate.port}"
        good = {
            "protocol": "SASL_SSL",
            "sasl_mechanism": "PLAIN",
            "sasl_username": "hub",
            "sasl_password": "s3cret-pw",
            "ssl_cafile": str(ca.cert),
        }
        await flows(tmp_path, bootstrap, good)
        assert gate.logins and set(gate.logins) == {"PLAIN"}
        # Refused: aiokafka raises "Unable to bootstrap"; the broker's reason is in its ERROR line.
        caplog.clear()
        await cannot_connect(bootstrap, {**good, "sasl_password": "wrong"})
        assert "bad credentials for hub" in caplog.text and gate.refusals == ["bad credentials for hub"]
        # A mechanism the broker does not offer.
        caplog.clear()
        await cannot_connect(bootstrap, {**good, "sasl_mechanism": "SCRAM-SHA-512"})
        assert "UnsupportedSaslMechanismError" in caplog.text and gate.refusals[-1] == "mechanism SCRAM-SHA-512 not enabled"


class OidcProvider:
    """A token endpoint of the client credentials grant, issuing ES256 JWTs for the Kafka audience."""

    def __init__(self, lifetime_s: int = 300) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.lifetime_s = lifetime_s
        self.issued = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        basic = request.headers.get("Authorization", "").removeprefix("Basic ")
        client = base64.b64decode(basic).decode() if basic else ""
        if form.get("grant_type") != "client_credentials" or client != "bus-hub:oidc-secret":
            return web.json_response({"error": "invalid_client", "error_description": "client authentication failed"}, status=401)
        self.issued += 1
        now = int(time.time())
        claims = {
            "sub": "bus-hub",
            "aud": "kafka",
            "iss": "test-oidc",
            "iat": now,
            "exp": now + self.lifetime_s,
            "scope": form.get("scope"),
        }
        token = jwt.encode(claims, self.key, algorithm="ES256")
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime_s})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/oauth2/token"

    async def start(self) -> OidcProvider:
        app = web.Application()
        app.router.add_post("/oauth2/token", self._token)
        self._runner, self.port = await serve(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def verifier(self, seen: list[dict[str, Any]]) -> Callable[[str, bytes], str | None]:
        """The broker's side: RFC 7628's client first message, the JWT checked with the provider's key."""

        def check(mechanism: str, payload: bytes) -> str | None:
            fields = dict(kv.split("=", 1) for kv in payload.decode().split("\x01") if "=" in kv)
            token = fields.get("auth", "").removeprefix("Bearer ")
            try:
                claims = jwt.decode(token, self.key.public_key(), algorithms=["ES256"], audience="kafka", issuer="test-oidc")
            except jwt.PyJWTError as exc:
                return f"invalid token: {exc}"
            seen.append({**claims, "extensions": {k: v for k, v in fields.items() if k != "auth"}})
            return None

        return check


async def test_oauthbearer_with_tokens_from_an_oidc_provider(tmp_path: Path, ca: Authority) -> None:
    provider = await OidcProvider().start()
    seen: list[dict[str, Any]] = []
    oauth = {
        "token_url": provider.url,
        "client_id": "bus-hub",
        "client_secret": "oidc-secret",
        "scope": "kafka.produce kafka.consume",
        "extensions": {"logicalCluster": "lkc-test"},
    }
    try:
        async with behind_gateway(tls=broker_tls(ca), mechanisms=("OAUTHBEARER",), check=provider.verifier(seen)) as (_broker, gate):
            bootstrap = f"127.0.0.1:{gate.port}"
            security = {"protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER", "oauth": oauth, "ssl_cafile": str(ca.cert)}
            await flows(tmp_path, bootstrap, security)
            # Every connection of the hub logged in with a verified token, and they shared one.
            assert len(gate.logins) >= 3 and set(gate.logins) == {"OAUTHBEARER"}
            assert provider.issued == 1, provider.issued
            assert seen[0]["sub"] == "bus-hub" and seen[0]["scope"] == "kafka.produce kafka.consume"
            assert seen[0]["extensions"] == {"logicalCluster": "lkc-test"}
            # A refused client secret: the reason is the provider's, and nothing connects.
            refused = KafkaOAuth.model_validate({**oauth, "client_secret": "nope"})
            with pytest.raises(RetryableError, match=r"refused the client credentials: 401 invalid_client client authentication failed"):
                await ClientCredentialsTokens(refused).token()
    finally:
        await provider.stop()


def test_incomplete_sasl_settings_are_config_errors() -> None:
    with pytest.raises(ValueError, match="OAUTHBEARER needs `oauth`"):
        KafkaConfig.model_validate({"security": {"protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"}})
    with pytest.raises(ValueError, match="needs sasl_username and sasl_password"):
        KafkaConfig.model_validate({"security": {"protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "x"}})
    with pytest.raises(ValueError, match="need a SASL_PLAINTEXT or SASL_SSL protocol"):
        KafkaConfig.model_validate({"security": {"protocol": "SSL", "sasl_mechanism": "PLAIN"}})
