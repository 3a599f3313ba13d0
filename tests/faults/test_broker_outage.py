"""The broker unreachable for 10 s (a TCP proxy the test controls) while events flow: the webhook
answers 503 with Retry-After meanwhile, nothing is lost, and the flow resumes by itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from bus.kafka.broker import EmbeddedBroker
from bus.ports import free_port
from tests.support.hub import build_hub, payment, payment_hub_config, write_config
from tests.support.proxy import TcpProxy
from tests.support.target import Target


async def test_ten_second_broker_outage_loses_nothing(tmp_path: Path) -> None:
    proxy_port = free_port()
    target = await Target().start()
    async with EmbeddedBroker(advertised_port=proxy_port) as broker:
        proxy = TcpProxy(proxy_port, broker.port)
        await proxy.start()
        try:
            config = payment_hub_config(broker.bootstrap, target.url, produce_timeout_s=2)
            async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
                assert hub.web is not None
                accepted: set[str] = set()
                answers: list[int] = []

                async def sender(client: httpx.AsyncClient, first: int) -> None:
                    for i in range(first, 400, 4):
                        while True:  # a webhook sender: retries until it gets a 202
                            try:
                                r = await client.post("/hooks/payments", json=payment(i))
                                answers.append(r.status_code)
                                if r.status_code == 202:
                                    accepted.add(f"evt_{i}")
                                    break
                                assert r.status_code == 503 and r.headers["Retry-After"]
                            except httpx.TransportError:
                                pass
                            await asyncio.sleep(0.2)
                        await asyncio.sleep(0.02)

                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{hub.web.port}", headers={"X-API-Key": "k1"}, timeout=30
                ) as client:
                    senders = asyncio.gather(*(sender(client, k) for k in range(4)))
                    while len(accepted) < 100:
                        await asyncio.sleep(0.05)
                    proxy.cut = True
                    proxy.sever()
                    await asyncio.sleep(10)
                    during = len(accepted)
                    proxy.cut = False
                    await asyncio.wait_for(senders, timeout=180)

                assert 503 in answers  # the webhook said "try later" while Kafka could not acknowledge
                assert during < 400  # the outage really happened mid-flow
                await target.wait_for(
                    lambda: {c.headers["Idempotency-Key"] for c in target.accepted if c.path == "/erp"} >= accepted, timeout=120
                )
        finally:
            await proxy.stop()
    await target.stop()
