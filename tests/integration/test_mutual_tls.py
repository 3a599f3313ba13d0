"""Mutual TLS for http outbounds, against a local target that asks every client for a certificate
signed by its CA (as banks and B2B gateways do), through the real embedded broker: with the hub's
client certificate the events arrive and the target sees who called; without one, or with one
from another CA, the handshake fails, the events wait (retried, never dead-lettered) and the
subscriber's state says why; `bus validate` refuses files that cannot be used."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from bus.app.cli import main
from bus.kafka.reader import read_topic
from tests.integration.test_delivery import post
from tests.support.certs import Authority
from tests.support.hub import build_hub, payment, payment_hub_config, write_config
from tests.support.wait import until


class Gateway:
    """An HTTPS target that requires a client certificate signed by ``client_ca``."""

    def __init__(self, server_ca: Authority, client_ca: Authority) -> None:
        issued = server_ca.issue("gateway", server=True)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(issued.cert, issued.key)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.load_verify_locations(client_ca.cert)
        self.received: list[tuple[str, dict[str, Any]]] = []  # (the client certificate's CN, body)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        common_name = next(v for rdn in peer["subject"] for k, v in rdn if k == "commonName") if peer else ""
        self.received.append((common_name, await request.json()))
        return web.json_response({}, status=201)

    async def start(self) -> Gateway:
        app = web.Application()
        app.router.add_post("/payments", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.context)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def subscriber_state(ops_port: int, name: str, wanted: str) -> dict[str, Any]:
    """The subscriber's state in /readyz, once it is ``wanted`` (or after 10 s)."""
    state: dict[str, Any] = {}
    async with httpx.AsyncClient() as client:
        for _ in range(100):
            state = (await client.get(f"http://127.0.0.1:{ops_port}/readyz")).json()["subscribers"][name]
            if state["state"] == wanted:
                break
            await asyncio.sleep(0.1)
    return state


def config(tmp_path: Path, bootstrap: str, url: str, tls: dict[str, Any] | None) -> Path:
    found = payment_hub_config(bootstrap, url)
    found["outbound"][0].update(url=f"{url}/payments", delivery={"backoff_initial": "100ms", "backoff_max": "500ms"})
    if tls is not None:
        found["outbound"][0]["tls"] = tls
    return write_config(tmp_path / "bus.yaml", found)


async def test_the_hubs_client_certificate_opens_the_gateway_and_none_waits(tmp_path: Path, bootstrap: str) -> None:
    server_ca, client_ca = Authority(tmp_path / "server-ca", "Bank CA"), Authority(tmp_path / "client-ca", "Client CA")
    other_ca = Authority(tmp_path / "other", "Other CA")
    hub_cert = client_ca.issue("hub-prod", password=b"k3y-pass")
    stranger = other_ca.issue("stranger")
    gateway = await Gateway(server_ca, client_ca).start()
    url = f"https://127.0.0.1:{gateway.port}"
    try:
        good = {"ca": str(server_ca.cert), "cert": str(hub_cert.cert), "key": str(hub_cert.key), "key_password": "k3y-pass"}
        async with build_hub(config(tmp_path, bootstrap, url, good)) as hub:
            await post(hub, payment(1), payment(2))
            await until(lambda: len(gateway.received) == 2, "two deliveries over mutual TLS", timeout=30)
        assert {name for name, _ in gateway.received} == {"hub-prod"}  # the gateway saw the hub's certificate

        for tls in ({"ca": str(server_ca.cert)}, {"ca": str(server_ca.cert), "cert": str(stranger.cert), "key": str(stranger.key)}):
            before = len(gateway.received)
            async with build_hub(config(tmp_path, bootstrap, url, tls)) as hub:
                await post(hub, payment(3))
                state = await subscriber_state(hub.ops.port, "erp", "retrying")
                assert state["state"] == "retrying" and "unreachable" in state["last_error"], state
                assert await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("erp")) == []
            assert len(gateway.received) == before  # the handshake failed: nothing reached the gateway
    finally:
        await gateway.stop()


def test_bus_validate_refuses_tls_files_that_cannot_be_used(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = Authority(tmp_path / "ca")
    issued = ca.issue("hub", password=b"right")
    wrong_password = {"cert": str(issued.cert), "key": str(issued.key), "key_password": "wrong"}
    path = config(tmp_path, "127.0.0.1:9", "https://gateway.example.com", wrong_password)
    assert main(["validate", "--json", "-c", str(path)]) == 2
    errors = {e["field"]: e["message"] for e in json.loads(capsys.readouterr().out)["errors"]}
    assert "the TLS files cannot be used" in errors["outbound[0].tls"], errors
    path = config(tmp_path, "127.0.0.1:9", "https://gateway.example.com", {"cert": str(issued.cert)})  # no key
    assert main(["validate", "-c", str(path)]) == 2
    assert "give both cert and key" in capsys.readouterr().err
    good = {"cert": "ca/hub.pem", "key": "ca/hub.key", "key_password": "right", "ca": str(ca.cert)}  # relative to the config
    assert main(["validate", "-c", str(config(tmp_path, "127.0.0.1:9", "https://gateway.example.com", good))]) == 0
