"""Nothing stops silently, and one buggy part does not stop the rest.

- An outbound adapter with a bug (it raises neither RetryableError nor PermanentError) does not
  take the hub down: the error is logged once with its traceback, the event is retried like an
  outage and dead-lettered by the policy, and the other subscriber's events flow.
- An inbound adapter whose background task dies (a third-party adapter's bug) is restarted by the
  supervisor with backoff, and that shows: the log, `bus_component_restarts_total`, `/readyz`'s
  detail; one that keeps dying fails readiness with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import ClassVar, Literal

import httpx
import pytest
from pydantic import Field

from adapters.http.config import HttpOutboundConfig
from bus.adapter_api import AdapterConfig, AdapterRegistry, EmitSpec, Event, Inbound, Outbound
from bus.app.hub import Hub
from bus.config.loader import load_config
from schemas.catalog import SchemaCatalog
from tests.faults.test_delivery_faults import hub_config, post_all
from tests.integration.test_delivery import dead_letters
from tests.support.hub import write_config
from tests.support.target import Target


class BuggyConfig(HttpOutboundConfig):
    type: Literal["buggy"] = "buggy"  # type: ignore[assignment]


class BuggyOutbound(Outbound[BuggyConfig]):
    """An adapter with a bug: it raises something that is neither retryable nor permanent."""

    Config: ClassVar[type[BuggyConfig]] = BuggyConfig
    summary: ClassVar[str] = "always crashes"

    async def deliver(self, event: Event) -> None:
        raise RuntimeError(f"bug while delivering {event.id}")


class DyingConfig(AdapterConfig):
    type: Literal["dying"] = "dying"
    dies_after: int = Field(default=0, description="Restarts after which it stops dying (0: never).")
    emit: EmitSpec


class DyingInbound(Inbound[DyingConfig]):
    """A consume loop that raises shortly after each start (its source handed it something it did not expect)."""

    Config: ClassVar[type[DyingConfig]] = DyingConfig
    summary: ClassVar[str] = "dies"
    starts = 0

    async def start(self) -> None:
        DyingInbound.starts += 1
        self._task = self.ctx.spawn(self._consume(), name=f"dying:{self.config.name}")

    async def _consume(self) -> None:
        await asyncio.sleep(0.1)
        if self.config.dies_after == 0 or DyingInbound.starts <= self.config.dies_after:
            raise KeyError("field the adapter assumed is always there")
        await asyncio.Event().wait()

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def _hub(tmp_path: Path, config: dict, registry: AdapterRegistry) -> Hub:  # type: ignore[type-arg]
    catalog = SchemaCatalog.load()
    return Hub(
        load_config(write_config(tmp_path / "bus.yaml", config), registry, known_schemas=lambda h: catalog.parsed()), registry, catalog
    )


async def test_a_buggy_outbound_is_retried_and_dead_lettered_while_the_rest_flows(
    tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = AdapterRegistry.from_entry_points().clone()  # the clone: the global registry is untouched
    registry.register("buggy", BuggyOutbound)
    target = await Target().start()
    config = hub_config(bootstrap, {"good": {"url": f"{target.url}/good"}, "bad": {"url": "http://127.0.0.1:9"}})
    config["outbound"][1].update(type="buggy", delivery={"max_attempts": 2, "backoff_initial": "50ms"})
    caplog.set_level(logging.INFO)
    try:
        async with _hub(tmp_path, config, registry) as hub:
            await post_all(hub, [{"id": f"e{i}", "key": f"k{i}", "seq": i} for i in range(5)])
            await target.wait_for(lambda: len(target.accepted) == 5)
            letters = await dead_letters(hub, "bad", 5)
            reasons = {dict(r.headers)["bus_error"].decode() for r in letters}
            assert all("adapter error: RuntimeError('bug while delivering" in r for r in reasons), reasons
            assert all(w.task is not None and not w.task.done() for w in hub.workers)  # nothing died
    finally:
        await target.stop()
    bugs = [r for r in caplog.records if "neither retryable nor permanent" in r.getMessage()]
    # Once, with the traceback (kept as exc_text once the log's redactor has masked it): not once per event.
    assert len(bugs) == 1 and (bugs[0].exc_info is not None or bugs[0].exc_text)


async def test_a_dying_inbound_task_is_restarted_and_reported_and_one_that_keeps_dying_fails_readiness(
    tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = AdapterRegistry.from_entry_points().clone()
    registry.register("dying", DyingInbound)
    config = hub_config(bootstrap, {"good": {"url": "http://127.0.0.1:9"}})
    emit = {"schema": "Payment", "map": {"payment_id": "id", "amount": "seq", "currency": '"usd"'}}
    config["inbound"] = [{"name": "once", "type": "dying", "dies_after": 1, "emit": emit}]
    DyingInbound.starts = 0
    async with _hub(tmp_path, config, registry) as hub, httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.ops.port}") as ops:
        deadline = asyncio.get_running_loop().time() + 30
        while not hub.supervisor.detail().get("inbound:once", {}).get("up"):
            assert asyncio.get_running_loop().time() < deadline, hub.supervisor.detail()
            await asyncio.sleep(0.1)
        ready = (await ops.get("/readyz")).json()
        assert ready["ready"] is True  # restarted once, running again
        detail = ready["components"]["inbound:once"]
        assert detail["restarts"] == 1 and "KeyError" in detail["last_error"]
        metrics = (await ops.get("/metrics")).text
        assert 'bus_component_restarts_total{component="inbound:once"} 1.0' in metrics
    died = [r for r in caplog.records if r.levelno == logging.ERROR and "inbound:once" in r.getMessage()]
    assert died and (died[0].exc_info is not None or died[0].exc_text)

    config["inbound"] = [{"name": "always", "type": "dying", "emit": emit}]
    DyingInbound.starts = 0
    async with _hub(tmp_path, config, registry) as hub, httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.ops.port}") as ops:
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            answer = await ops.get("/readyz")
            if answer.status_code == 503 and "keeps failing" in answer.json()["problems"].get("inbound:always", ""):
                break
            assert asyncio.get_running_loop().time() < deadline, answer.json()
            await asyncio.sleep(0.2)
        assert DyingInbound.starts >= 3


async def test_the_faust_engine_is_watched_a_failed_produce_restarts_it_and_nothing_is_lost(
    tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The faust engine acknowledges in order from a task of its own: when a produce fails there
    (here: faust's producer is stopped under it), the router is restarted like the default
    engine's loop, the restart shows in /readyz and the metrics, and the events of the failed
    batch are routed again rather than lost."""
    target = await Target().start()
    config = hub_config(bootstrap, {"good": {"url": f"{target.url}/good"}})
    config["router"] = {"engine": "faust"}
    caplog.set_level(logging.INFO)
    try:
        hub = Hub(*_loaded(tmp_path, config))
        async with hub, httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.ops.port}") as ops:
            await post_all(hub, [{"id": f"a{i}", "key": f"k{i}", "seq": i} for i in range(5)])
            await target.wait_for(lambda: len(target.accepted) == 5, timeout=60)
            first = hub.router
            assert first is not None and first.task is not None and not first.task.done()
            await first.app.producer.stop()  # type: ignore[union-attr]  # the faust engine: its producer fails under it
            await post_all(hub, [{"id": f"b{i}", "key": f"k{i}", "seq": i} for i in range(5)])
            deadline = asyncio.get_running_loop().time() + 60
            while hub.router is first or hub.supervisor.detail().get("router", {}).get("restarts", 0) < 1:
                assert asyncio.get_running_loop().time() < deadline, hub.supervisor.detail()
                await asyncio.sleep(0.2)
            await target.wait_for(
                lambda: {c.headers["Idempotency-Key"] for c in target.accepted} >= {f"b{i}" for i in range(5)}, timeout=90
            )
            ready = (await ops.get("/readyz")).json()
            assert ready["components"]["router"]["restarts"] == 1, ready
            assert 'bus_component_restarts_total{component="router"} 1.0' in (await ops.get("/metrics")).text
    finally:
        await target.stop()
    died = [r for r in caplog.records if r.levelno == logging.ERROR and r.getMessage().startswith("router:")]
    assert died, [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _loaded(tmp_path: Path, config: dict) -> tuple:  # type: ignore[type-arg]
    registry = AdapterRegistry.from_entry_points()
    catalog = SchemaCatalog.load()
    loaded = load_config(write_config(tmp_path / "bus.yaml", config), registry, known_schemas=lambda h: catalog.parsed())
    return loaded, registry, catalog
