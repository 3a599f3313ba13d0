"""Helpers to write a hub config for a test and run the hub in-process or as a `bus run` process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

from bus.adapter_api import AdapterRegistry, Inbound
from bus.app.hub import Hub, Role
from bus.app.leased_inbound import LeasedInbound
from bus.config.loader import LoadedConfig, load_config
from schemas.catalog import SchemaCatalog


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def flow_config(
    bootstrap: str, inbound: list[dict[str, Any]], outbound: list[dict[str, Any]] | None = None, *, schema: str = ""
) -> dict[str, Any]:
    """A hub of ``inbound`` adapters on free ports and, with ``outbound``, one route sending every
    ``schema`` event to all of them."""
    config: dict[str, Any] = {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 2, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "inbound": inbound,
    }
    if outbound:
        config["outbound"] = outbound
        config["routes"] = [{"name": f"all-{schema.lower()}", "from": schema, "to": [o["name"] for o in outbound]}]
    return config


def payment_hub_config(
    bootstrap: str,
    target_url: str,
    *,
    prefix: str | None = None,
    api_key: str = "k1",
    webhook_port: int = 0,
    ops_port: int = 0,
    **extra_kafka: Any,
) -> dict[str, Any]:
    """One webhook of Payment events, two routes, two HTTP targets: the shape of the quickstart."""
    return {
        "kafka": {
            "bootstrap": bootstrap,
            "topic_prefix": prefix or unique_prefix(),
            "partitions": 3,
            "session_timeout_ms": 3000,
            **extra_kafka,
        },
        "schema_registry": {"url": "embedded"},
        "http": {"host": "127.0.0.1", "port": webhook_port},
        "ops": {"host": "127.0.0.1", "port": ops_port},
        "inbound": [
            {
                "name": "payments",
                "type": "http_webhook",
                "path": "/hooks/payments",
                "max_body_bytes": 4096,
                "auth": {"type": "api_key", "keys": [api_key]},
                "emit": {
                    "schema": "Payment",
                    "id": "id",
                    "key": "data.id",
                    "map": {
                        "payment_id": "data.id",
                        "amount": "data.amount",
                        "currency": "lower(data.currency)",
                        "customer_id": "data.customer",
                        "status": "data.status",
                    },
                },
            }
        ],
        "routes": [
            {"name": "large-usd", "from": "Payment", "when": 'amount >= 100000 and currency == "usd"', "to": ["erp"]},
            {"name": "failed", "from": "Payment", "when": 'status == "failed"', "to": ["support", "erp"]},
        ],
        "outbound": [
            {
                "name": "erp",
                "type": "http",
                "url": f"{target_url}/erp",
                "body": {"external_id": "payment_id", "amount_cents": "amount", "event": "$id"},
            },
            {"name": "support", "type": "http", "url": f"{target_url}/support"},
        ],
    }


def reading(hub: Hub, index: int = 0) -> Inbound[Any]:
    """The inbound adapter at ``index`` itself, for a test that looks inside it: a source read by
    one process at a time runs inside its lease (bus.app.leased_inbound)."""
    adapter = hub.inbound[index]
    return adapter.inner if isinstance(adapter, LeasedInbound) else adapter


def load(path: Path) -> tuple[LoadedConfig, AdapterRegistry, SchemaCatalog]:
    registry = AdapterRegistry.from_entry_points()
    catalog = SchemaCatalog.load()
    return load_config(path, registry, known_schemas=lambda hub: catalog.parsed()), registry, catalog


def build_hub(path: Path, role: Role = "all") -> Hub:
    loaded, registry, catalog = load(path)
    return Hub(loaded, registry, catalog, role=role)


async def ready_within(ops_port: int, timeout: float = 30) -> None:
    """/readyz answers 200 within ``timeout`` seconds; AssertionError with its last answer otherwise.

    A test asks this rather than one GET where a loaded machine may briefly and rightly make the hub
    unready: a starved event loop misses its lease group's heartbeats, and the source is read
    again only once the group confirms it (the supervisor restarts it, which /readyz shows)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while True:
            answer = await client.get(f"http://127.0.0.1:{ops_port}/readyz")
            if answer.status_code == 200:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not ready within {timeout}s: {answer.status_code} {answer.text[:2000]}")
            await asyncio.sleep(0.2)


def payment(i: int, *, amount: int = 150_000, currency: str = "USD", status: str = "succeeded") -> dict[str, Any]:
    return {
        "id": f"evt_{i}",
        "data": {"id": f"pi_{i}", "amount": amount, "currency": currency, "customer": f"cus_{i % 7}", "status": status},
    }


class HubProcess:
    """`bus run` in a child process, as an operator would start it."""

    def __init__(self, config: Path, ops_port: int, *, role: str = "all", env: dict[str, str] | None = None) -> None:
        self.config = config
        self.ops_port = ops_port
        self.role = role
        self.env = env or {}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 60) -> None:
        bus = Path(sys.executable).with_name("bus")
        self.proc = await asyncio.create_subprocess_exec(
            str(bus), "run", "-c", str(self.config), "--role", self.role, env={**os.environ, **self.env}, stderr=asyncio.subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    err = await self.proc.stderr.read() if self.proc.stderr else b""
                    raise AssertionError(f"hub exited with {self.proc.returncode}: {err.decode()[-2000:]}")
                try:
                    if (await client.get(f"http://127.0.0.1:{self.ops_port}/readyz")).status_code == 200:
                        asyncio.get_running_loop().create_task(self._drain_stderr())
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"hub not ready within {timeout}s")

    async def _drain_stderr(self) -> None:
        # Keep reading so the child never blocks on a full pipe; keep the tail for failures.
        assert self.proc and self.proc.stderr
        self.stderr_tail = b""
        while chunk := await self.proc.stderr.read(65536):
            self.stderr_tail = (self.stderr_tail + chunk)[-20000:]

    async def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
