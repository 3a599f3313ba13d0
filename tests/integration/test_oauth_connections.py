"""OAuth2 authorization-code connections against a strict local provider (tests/support/oauth_provider.py),
with `bus run` and `bus auth login` as real processes on the real embedded broker:

- the hub starts with no consent (its connection says so; deliveries wait, nothing is lost);
- `bus auth login` prints the consent URL, receives the provider's redirect, exchanges the code
  (PKCE) and stores the tokens encrypted; the running hub picks them up by itself;
- with 5 s access tokens, the hub refreshes and rotates them through a run of deliveries;
- kill -9 of the hub while the provider is answering a rotation: the restarted hub refreshes
  with the stored refresh token (inside the provider's grace period), no reuse, no lost consent;
- the company revokes its consent: within one refresh the connection is "consent lost" in
  /readyz and in the metric, deliveries wait (none dead-lettered), and a new login resumes them.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.fernet import Fernet

from bus.app.setup import create_topics
from bus.config.connections import ConnectionConfig, CredentialsConfig
from bus.config.models import KafkaConfig
from bus.credentials.grant import Grant, pkce_pair
from bus.credentials.store import CredentialStore
from bus.kafka.clients import make_producer
from bus.kafka.reader import read_topic
from bus.kafka.topics import TopicNames, TopicSpec
from bus.ports import free_port
from tests.support.hub import HubProcess, build_hub, payment, payment_hub_config, unique_prefix, write_config
from tests.support.oauth_provider import OAuthProvider
from tests.support.wait import healthy


async def readyz(ops_port: int) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        found: dict[str, Any] = (await client.get(f"http://127.0.0.1:{ops_port}/readyz")).json()
        return found


async def connection_state(ops_port: int, wanted: str, within: float = 20) -> dict[str, Any]:
    """The connection's entry in /readyz once its state is ``wanted``; AssertionError with the last seen otherwise."""
    seen: dict[str, Any] = {}
    for _ in range(int(within * 10)):
        seen = (await readyz(ops_port)).get("connections", {}).get("ledger", {})
        if seen.get("state") == wanted:
            return seen
        await asyncio.sleep(0.1)
    raise AssertionError(f"connection ledger not {wanted!r} within {within}s: {seen}")


async def post(webhook_port: int, *payments: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{webhook_port}", headers={"X-API-Key": "k1"}) as client:
        for body in payments:
            assert (await client.post("/hooks/payments", json=body)).status_code == 202


async def until(condition: Any, what: str, within: float = 30) -> None:
    for _ in range(int(within * 10)):
        if condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {within:g}s waiting for {what}")


async def login(config: Path, bootstrap: str) -> str:
    """`bus auth login ledger` as a person would run it; the test's browser approves the consent."""
    bus = Path(sys.executable).with_name("bus")
    proc = await asyncio.create_subprocess_exec(
        str(bus), "auth", "login", "ledger", "-c", str(config), "--bootstrap", bootstrap,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=dict(os.environ),
    )  # fmt: skip
    assert proc.stdout is not None
    url = ""
    while not url.startswith("http"):
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line, "bus auth login ended before printing the consent URL"
        url = line.strip()
    await asyncio.sleep(0.5)  # its redirect listener is up by the time it says it waits
    async with httpx.AsyncClient(follow_redirects=True) as browser:
        page = await browser.get(url)  # the provider's consent, approved; redirected to the hub's listener
        assert page.status_code == 200 and "connected" in page.text, page.text
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return out.decode()


@pytest.mark.timeout(240)
async def test_consent_once_rotation_through_a_kill_and_revocation_said_loudly(tmp_path: Path, bootstrap: str) -> None:
    provider = await OAuthProvider(access_ttl=5.0, grace=30.0).start()
    redirect, webhook_port, ops_port = free_port(), free_port(), free_port()
    config = payment_hub_config(bootstrap, provider.url)
    config["http"]["port"], config["ops"]["port"] = webhook_port, ops_port
    config["routes"] = [{"name": "all", "from": "Payment", "to": ["erp"]}]
    config["outbound"] = config["outbound"][:1]
    config["outbound"][0].update(
        url=f"{provider.url}/api/invoices",
        auth={"type": "oauth2_connection", "connection": "ledger"},
        delivery={"backoff_initial": "200ms", "backoff_max": "1s"},
    )
    key = Fernet.generate_key().decode()
    config["credentials"] = {"key": key}
    config["connections"] = [
        {
            "name": "ledger",
            "authorize_url": f"{provider.url}/authorize",
            "token_url": f"{provider.url}/token",
            "client_id": "hub-app",
            "client_secret": "app-s3cret",
            "scopes": ["accounting"],
            "redirect_uri": f"http://127.0.0.1:{redirect}/callback",
        }
    ]
    path = write_config(tmp_path / "bus.yaml", config)
    hub = HubProcess(path, ops_port)
    delivered = lambda: {i["external_id"] for i in provider.invoices}  # noqa: E731
    try:
        await hub.start()
        state = await connection_state(ops_port, "no consent")
        assert "bus auth login ledger" in state["detail"]
        await post(webhook_port, payment(0))  # waits for the consent, in Kafka

        said = await login(path, bootstrap)
        assert "connection ledger: logged in" in said and provider.count("login") == 1
        await connection_state(ops_port, "connected")
        await until(lambda: "pi_0" in delivered(), "the event that waited for the consent")

        # Deliveries over several access-token lives: refreshed and rotated before expiry.
        for i in range(1, 13):
            await post(webhook_port, payment(i))
            await asyncio.sleep(1)
        await until(lambda: {f"pi_{i}" for i in range(13)} <= delivered(), "thirteen deliveries")
        assert provider.count("refresh") >= 2, provider.events
        assert provider.count("api 401") <= 1  # tokens are refreshed before they lapse, not after a refusal

        # kill -9 while the provider answers a rotation: it has rotated, the hub never hears the new pair.
        provider.refresh_delay = 3.0
        await until(lambda: provider.refreshing > 0, "a rotation in progress", within=15)
        await hub.kill()
        provider.refresh_delay = 0.0
        await hub.start()
        await connection_state(ops_port, "connected")
        await post(webhook_port, payment(20))
        await until(lambda: "pi_20" in delivered(), "a delivery after the restart", within=30)
        await asyncio.sleep(6)  # past the next refresh too
        await post(webhook_port, payment(21))
        await until(lambda: "pi_21" in delivered(), "a delivery one refresh later", within=30)
        assert provider.count("reuse") == 0 and provider.count("refused") == 0, provider.events
        assert provider.count("refresh in grace") >= 1, provider.events  # the stored token, within the grace period

        # The company withdraws its consent: said within one refresh (access tokens live 5 s).
        async with httpx.AsyncClient() as client:
            await client.post(f"{provider.url}/admin/revoke")
        lost = await connection_state(ops_port, "consent lost", within=12)
        assert "invalid_grant" in lost["detail"] and "bus auth login ledger" in lost["detail"]
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{ops_port}/metrics")).text
        assert 'bus_connection_state{connection="ledger",state="consent lost"} 1.0' in metrics
        await post(webhook_port, payment(30))
        await asyncio.sleep(2)
        assert "pi_30" not in delivered()
        kafka = KafkaConfig(bootstrap=bootstrap, topic_prefix=config["kafka"]["topic_prefix"])
        dead = await read_topic(kafka, bootstrap, f"{config['kafka']['topic_prefix']}.dlq.erp")
        assert dead == []  # waiting, not dead-lettered

        # A new consent: the hub picks it up by itself, and what waited is delivered.
        await login(path, bootstrap)
        await connection_state(ops_port, "connected")
        await until(lambda: "pi_30" in delivered(), "the event that waited through the revocation")
        assert await hub.terminate() == 0
    finally:
        await hub.kill()
        await provider.stop()


async def test_a_polling_inbound_calls_through_a_connection(tmp_path: Path, bootstrap: str) -> None:
    """http_poll with `auth: oauth2_connection`: a consent given once serves sources too, its short
    tokens refreshed while the poller reads on."""
    provider = await OAuthProvider(access_ttl=3.0).start()
    for i in range(5):
        provider.contacts.append({"id": f"c{i}", "updated_at": f"2026-01-01T00:00:0{i}Z", "email": f"c{i}@example.com", "name": f"C{i}"})
    prefix = unique_prefix()
    connection = {
        "name": "ledger",
        "authorize_url": f"{provider.url}/authorize",
        "token_url": f"{provider.url}/token",
        "client_id": "hub-app",
        "client_secret": "app-s3cret",
        "redirect_uri": "http://127.0.0.1:9/callback",
    }
    key = Fernet.generate_key().decode()
    config = {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": prefix, "partitions": 2, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "credentials": {"key": key},
        "connections": [connection],
        "inbound": [
            {
                "name": "contacts",
                "type": "http_poll",
                "url": f"{provider.url}/api/contacts",
                "interval": "500ms",
                "auth": {"type": "oauth2_connection", "connection": "ledger"},
                "since": {"param": "updated_since", "field": "updated_at", "id": "id"},
                "emit": {
                    "schema": "Customer",
                    "id": 'id + "@" + updated_at',
                    "key": "id",
                    "map": {"customer_id": "id", "email": "email", "name": "name"},
                },
            }
        ],
    }
    path = write_config(tmp_path / "bus.yaml", config)
    # The consent, as `bus auth login` gets it (that command is tested above): approve, exchange, store.
    async with httpx.AsyncClient() as client:
        grant = Grant(ConnectionConfig.model_validate(connection), client)
        verifier, challenge = pkce_pair()
        approved = await client.get(grant.consent_url("s", challenge))
        code = parse_qs(urlsplit(approved.headers["Location"]).query)["code"][0]
        tokens = await grant.exchange(code, verifier)
    kafka = KafkaConfig(bootstrap=bootstrap, topic_prefix=prefix)
    topic = TopicNames(prefix).credentials
    await create_topics(kafka, bootstrap, [TopicSpec(topic, 1, 1, {"cleanup.policy": "compact"})])
    producer = make_producer(kafka, bootstrap)
    await producer.start()
    try:
        await CredentialStore(CredentialsConfig(key=key), producer, kafka, bootstrap, topic).save("ledger", tokens)
    finally:
        await producer.stop()
    try:
        async with build_hub(path) as hub:

            async def published() -> int:
                return len(await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Customer")))

            for _ in range(200):
                if await published() >= 5:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(4)  # past the first token's life: the poller goes on with a refreshed one
            provider.contacts.append({"id": "c9", "updated_at": "2026-01-02T00:00:00Z", "email": "c9@example.com", "name": "C9"})
            for _ in range(200):
                if await published() >= 6:
                    break
                await asyncio.sleep(0.1)
            assert await published() == 6
            assert (await healthy(hub.inbound[0])).ok
        assert provider.count("refresh") >= 1 and provider.count("reuse") == 0, provider.events
    finally:
        await provider.stop()
