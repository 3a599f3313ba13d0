"""Kafka cut off by a TCP proxy: the webhook answers 503 with Retry-After, then recovers by itself."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from bus.kafka.broker import EmbeddedBroker
from bus.ports import free_port
from tests.support.hub import build_hub, payment, payment_hub_config, write_config
from tests.support.proxy import TcpProxy


async def test_webhook_answers_503_while_kafka_cannot_acknowledge(tmp_path: Path) -> None:
    proxy_port = free_port()
    # A broker of its own that advertises the proxy, so every client connection goes through it.
    async with EmbeddedBroker(advertised_port=proxy_port) as broker:
        proxy = TcpProxy(proxy_port, broker.port)
        await proxy.start()
        try:
            config = payment_hub_config(broker.bootstrap, "http://127.0.0.1:9", produce_timeout_s=2)
            hub = build_hub(write_config(tmp_path / "bus.yaml", config), role="inbound")
            async with hub:
                assert hub.web is not None
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{hub.web.port}", headers={"X-API-Key": "k1"}, timeout=30
                ) as client:
                    assert (await client.post("/hooks/payments", json=payment(1))).status_code == 202

                    proxy.cut = True
                    proxy.sever()
                    started = time.monotonic()
                    r = await client.post("/hooks/payments", json=payment(2))
                    assert r.status_code == 503
                    assert r.headers["Retry-After"] == "5"
                    assert r.json()["error"] == "the event could not be stored; retry later"
                    assert time.monotonic() - started < 10  # bounded by produce_timeout_s, not hanging

                    proxy.cut = False
                    deadline = time.monotonic() + 60
                    statuses = []
                    while time.monotonic() < deadline:
                        statuses.append((await client.post("/hooks/payments", json=payment(3))).status_code)
                        if statuses[-1] == 202:
                            break
                        await asyncio.sleep(0.5)
                    assert statuses[-1] == 202, f"the flow did not resume by itself: {statuses}"
        finally:
            await proxy.stop()
