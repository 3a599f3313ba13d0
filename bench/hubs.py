"""Start `bus run` processes for the benchmarks and feed canonical events straight into Kafka."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.common import wait_ready
from bus.codec import Codec
from bus.config.models import KafkaConfig
from bus.event import Event
from bus.kafka.clients import make_producer
from bus.ports import free_port
from schemas.catalog import SchemaCatalog


class HubProcess:
    def __init__(self, config: dict[str, Any], role: str = "all") -> None:
        self.ops_port = free_port()
        self.config = {**config, "ops": {"host": "127.0.0.1", "port": self.ops_port}, "http": {"host": "127.0.0.1", "port": free_port()}}
        self.role = role
        self.proc: asyncio.subprocess.Process | None = None
        self._folder = tempfile.TemporaryDirectory()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        path = Path(self._folder.name) / "bus.yaml"
        path.write_text(yaml.safe_dump(self.config))
        bus = Path(sys.executable).with_name("bus")
        self.proc = await asyncio.create_subprocess_exec(
            str(bus), "--log-level", "WARNING", "run", "-c", str(path), "--role", self.role, env={**os.environ}
        )
        await wait_ready(self.proc, f"http://127.0.0.1:{self.ops_port}/readyz", "the hub", seconds=120)

    async def metrics(self, client: httpx.AsyncClient) -> str:
        return (await client.get(f"http://127.0.0.1:{self.ops_port}/metrics")).text

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        self._folder.cleanup()


async def schema_id(hub: HubProcess, name: str = "Payment") -> int:
    """The id the hub registered for a canonical schema (its embedded registry)."""
    subject = SchemaCatalog.load().get(name).subject
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"http://127.0.0.1:{hub.ops_port}/registry/subjects/{subject}/versions/latest")
        answer.raise_for_status()
        return int(answer.json()["id"])


def payment_records(codec: Codec, n: int, *, keys: int = 997) -> Iterator[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """n canonical Payment events as (key, Avro value, headers), the same n every time (seeded)."""
    rng = random.Random(3)
    for i in range(n):
        data = {
            "payment_id": f"pi_{i}",
            "amount": rng.randint(100, 200_000),
            "currency": rng.choice(["usd", "eur", "gbp"]),
            "customer_id": f"cus_{rng.randint(0, 99)}",
            "status": rng.choice(["succeeded", "failed", "pending"]),
            "description": "bench",
        }
        key = f"pi_{i % keys}"
        event = Event(schema="Payment", source="/bench", key=key, type="Payment", data=data)
        yield key.encode(), codec.encode("Payment", data), event.headers()


async def feed_payments(bootstrap: str, topic: str, schema: int, n: int, *, keys: int = 997) -> None:
    """n canonical Payment events, produced as fast as the broker takes them."""
    codec = Codec()
    codec.add("Payment", schema, SchemaCatalog.load().get("Payment").parsed)
    producer = make_producer(KafkaConfig(bootstrap=bootstrap), bootstrap, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    try:
        pending = []
        for key, value, headers in payment_records(codec, n, keys=keys):
            pending.append(await producer.send(topic, value, key=key, headers=headers))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
