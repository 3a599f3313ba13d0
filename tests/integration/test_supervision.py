"""A background loop that dies on its own takes the hub down with a non-zero exit, so a supervisor
restarts it; a hub that silently stopped delivering would be worse."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import ClassVar, Literal

import pytest

from adapters.http.config import HttpOutboundConfig
from bus.adapter_api import AdapterRegistry, Event, Outbound
from bus.config.loader import load_config
from bus.errors import BusError
from bus.runtime.hub import Hub
from schemas.catalog import SchemaCatalog
from tests.integration.test_delivery import post
from tests.support.hub import payment, payment_hub_config, write_config


class BuggyConfig(HttpOutboundConfig):
    type: Literal["buggy"] = "buggy"  # type: ignore[assignment]


class BuggyOutbound(Outbound[BuggyConfig]):
    """An adapter with a bug: it raises something that is neither retryable nor permanent."""

    Config: ClassVar[type[BuggyConfig]] = BuggyConfig
    summary: ClassVar[str] = "always crashes"

    async def deliver(self, event: Event) -> None:
        raise RuntimeError(f"bug while delivering {event.id}")


async def test_a_crashed_delivery_loop_stops_the_hub_with_an_error(tmp_path: Path, bootstrap: str) -> None:
    registry = AdapterRegistry.from_entry_points().clone()  # the clone: the global registry is untouched
    registry.register("buggy", BuggyOutbound)
    catalog = SchemaCatalog.load()
    config = payment_hub_config(bootstrap, "http://127.0.0.1:9")
    for block in config["outbound"]:
        block["type"] = "buggy"
    path = write_config(tmp_path / "bus.yaml", config)
    hub = Hub(load_config(path, registry, known_schemas=lambda h: catalog.names()), registry, catalog)
    running = asyncio.create_task(hub.run_until_signalled())
    while hub.web is None or not hub.web.port or not hub.workers:
        assert not running.done(), running.exception()
        await asyncio.sleep(0.05)
    await post(hub, payment(1))
    with pytest.raises(BusError, match=r"deliver:erp stopped unexpectedly: RuntimeError\('bug while delivering evt_1'\)"):
        await asyncio.wait_for(running, timeout=60)
    assert hub.workers == [] and hub.web is None  # everything was stopped on the way out
