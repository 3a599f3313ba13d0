"""Sources read by one hub process at a time, however many replicas of the inbound role run
(bus.kafka.lease, bus.app.leased_inbound): on the embedded broker, with the real pollers.

Before leases, each replica ran every poller: each record was published once per replica, a
second `postgres_cdc` could never start, and MQTT sessions were taken from each other in turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from pydantic import Field

from bus.adapter_api import AdapterConfig, AdapterRegistry, EmitSpec, Inbound
from bus.app.cli import main
from bus.app.hub import Hub
from bus.app.leased_inbound import LeasedInbound
from bus.config.loader import load_config
from bus.config.models import KafkaConfig
from bus.kafka.broker import EmbeddedBroker
from bus.kafka.reader import read_topic
from bus.kafka.topics import TopicNames
from bus.ports import free_port
from schemas.catalog import SchemaCatalog
from tests.conftest import require_service
from tests.support.crm import CrmApi
from tests.support.hub import HubProcess, build_hub, unique_prefix, write_config
from tests.support.proxy import KafkaProxy
from tests.support.wait import until

pytestmark = pytest.mark.timeout(240)

READ = "lease-viewer-token"


def poll_config(bootstrap: str, api: CrmApi, prefix: str) -> dict[str, Any]:
    return {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": prefix, "partitions": 2, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0, "tokens": [{"name": "viewer", "token": READ, "scope": "read"}]},
        "inbound": [
            {
                "name": "contacts",
                "type": "http_poll",
                "interval": "200ms",
                "url": f"{api.url}/api/contacts",
                "records": "data",
                "auth": {"type": "oauth2", "token_url": f"{api.url}/oauth/token", "client_id": "hub", "client_secret": "s3cret"},
                "pagination": {"type": "page", "size_param": "per_page", "size": 10},
                "since": {"param": "updated_since", "field": "updated_at", "id": "id"},
                "emit": {"schema": "Customer", "key": "id", "map": {"customer_id": "id", "email": "email", "name": "name"}},
            }
        ],
    }


async def published(hub: Hub, schema: str = "Customer") -> Counter[str]:
    records = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical(schema))
    return Counter(dict(r.headers)["ce_id"].decode() for r in records)


def leased(hub: Hub) -> LeasedInbound:
    adapter = hub.inbound[0]
    assert isinstance(adapter, LeasedInbound), "a poller runs under a lease"
    return adapter


@contextlib.asynccontextmanager
async def started(*hubs: Hub) -> AsyncIterator[None]:
    try:
        await asyncio.gather(*(hub.start() for hub in hubs))
        yield
    finally:
        await asyncio.gather(*(hub.stop() for hub in hubs))


async def test_two_replicas_poll_once_and_the_standby_takes_over_where_the_holder_stopped(
    tmp_path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = await CrmApi().start()
    for i in range(30):
        api.add(f"c{i:03}", f"2026-01-01T00:00:{i:02d}Z")
    path = write_config(tmp_path / "bus.yaml", poll_config(bootstrap, api, unique_prefix()))
    first, second = build_hub(path, role="inbound"), build_hub(path, role="inbound")
    try:
        async with started(first, second):
            await until(lambda: {leased(first).standing_by, leased(second).standing_by} == {True, False}, "one holder, one standby")
            holder, standby = (first, second) if leased(second).standing_by else (second, first)
            await until(lambda: int(holder.inbound[0].progress().get("polls", 0)) >= 5, "the holder polls", timeout=30)
            assert standby.inbound[0].progress() == {}, "the standby does not poll"
            # Both are ready: standing by is a healthy state, said as such.
            assert all((await standby.readiness()).values()) and all((await holder.readiness()).values())
            health = await standby.inbound[0].health()
            assert health.ok and "standby" in health.detail, health
            seen = await published(holder)
            assert len(seen) == 30 and max(seen.values()) == 1, "each record published once, not once per replica"
            # The management API and `bus status` say which process reads it; standing by is fine.
            for hub, state in ((holder, "running"), (standby, "standby")):
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.ops.port}/api/v1", timeout=60) as client:
                    node = (await client.get("/topology", headers={"Authorization": f"Bearer {READ}"})).json()["inbound"][0]
                assert node["state"] == state, node
                capsys.readouterr()
                monkeypatch.setenv("BUS_OPS_TOKEN", READ)
                assert await asyncio.to_thread(main, ["status", "--hub", f"http://127.0.0.1:{hub.ops.port}"]) == 0
                assert state in capsys.readouterr().out
            assert "another hub process reads the source" in node["detail"]

            # The holder stops (a rolling update, a scale-down): the standby takes over at once,
            # from the position the holder saved, and reads what changed meanwhile.
            await holder.stop()
            for i in range(30, 40):
                api.add(f"c{i:03}", f"2026-01-01T00:01:{i:02d}Z")
            await until(lambda: leased(standby).standing_by is False, "the standby takes over", timeout=20)
            await until(lambda: int(standby.inbound[0].progress().get("polls", 0)) >= 1, "the new holder polls", timeout=20)
            for _ in range(100):
                seen = await published(standby)
                if len(seen) == 40:
                    break
                await asyncio.sleep(0.2)
            assert len(seen) == 40 and max(seen.values()) == 1, seen.most_common(3)
            asked = [r["query"].get("updated_since") for r in api.requests if r.get("query")]
            assert "2026-01-01T00:00:29Z" in asked, "the new holder asked from the saved watermark, not from the start"
    finally:
        await api.stop()


async def test_a_replica_added_or_removed_does_not_move_the_lease(tmp_path: Path, bootstrap: str) -> None:
    api = await CrmApi().start()
    api.add("c000", "2026-01-01T00:00:00Z")
    path = write_config(tmp_path / "bus.yaml", poll_config(bootstrap, api, unique_prefix()))
    first, second, third = (build_hub(path, role="inbound") for _ in range(3))
    try:
        async with started(first):
            await until(lambda: leased(first).standing_by is False, "the only replica holds the lease")
            epoch = leased(first)._lease.epoch
            async with started(second, third):  # two more join: the group rebalances twice or more
                await until(lambda: leased(second).standing_by and leased(third).standing_by, "the new replicas stand by")
                assert leased(first).standing_by is False and leased(first)._lease.epoch == epoch
                polls = int(first.inbound[0].progress()["polls"])
                await until(lambda: int(first.inbound[0].progress()["polls"]) > polls + 2, "the holder polls on, never stopped")
            assert leased(first).standing_by is False
    finally:
        await api.stop()


async def test_a_holder_cut_off_from_the_group_stops_reading_before_another_takes_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The holder's connections to Kafka go silent (a network partition; the holder still
    reaches the API it polls): the group gives the lease to the standby once the holder's
    session times out, and aiokafka, waiting for the coordinator, would never have told the
    holder. It stops reading first, on its own; back in touch, it stands by."""
    api = await CrmApi().start()
    api.add("c000", "2026-01-01T00:00:00Z")
    proxy_port = free_port()
    async with EmbeddedBroker(advertised_port=proxy_port) as broker:  # every client connects through the proxy
        proxy = KafkaProxy(proxy_port, broker.port)
        await proxy.start()
        prefix = unique_prefix()
        hubs = []
        for client_id in ("hub-a", "hub-b"):
            config = poll_config(broker.bootstrap, api, prefix)
            config["kafka"]["client_id"] = client_id
            hubs.append(build_hub(write_config(tmp_path / f"{client_id}.yaml", config), role="inbound"))
        holder, standby = hubs
        lost = REGISTRY.get_sample_value("bus_inbound_lease_changes_total", {"adapter": "contacts", "change": "lost"}) or 0
        try:
            async with started(holder):
                await until(lambda: leased(holder)._running, "the first replica reads the source")
                async with started(standby):
                    await until(lambda: leased(standby).standing_by, "the second stands by")
                    readers: list[tuple[bool, bool]] = []

                    async def sample() -> None:
                        while True:
                            readers.append((leased(holder)._running, leased(standby)._running))
                            await asyncio.sleep(0.02)

                    sampler = asyncio.create_task(sample())
                    try:
                        with caplog.at_level(logging.WARNING):
                            proxy.silence("hub-a")
                            await until(lambda: leased(standby)._running, "the standby takes the source over", timeout=60)
                            assert (True, True) not in readers, "two processes read the source at once"
                            assert (False, False) in readers, "the holder stopped before the standby started"
                            assert any(
                                "nothing from Kafka's group coordinator has confirmed this process's membership" in r.message
                                and r.levelno == logging.WARNING
                                for r in caplog.records
                            ), "the holder says why it stopped"
                            halted = [r for r in caplog.records if r.name == "bus.runtime.supervisor"]
                            assert halted and all(r.levelno == logging.WARNING and r.exc_info is None for r in halted), (
                                "foreseen: said at WARNING without a traceback"
                            )
                            changes = REGISTRY.get_sample_value(
                                "bus_inbound_lease_changes_total", {"adapter": "contacts", "change": "lost"}
                            )
                            assert changes == lost + 1
                            assert not (await holder.readiness())["inbound:contacts"], "cut off, the holder is not ready"

                            proxy.heal("hub-a")
                            await until(lambda: leased(holder).standing_by, "back in touch, the first replica stands by", timeout=90)
                            assert leased(standby)._running and (True, True) not in readers
                            polls = int(standby.inbound[0].progress()["polls"])
                            await until(lambda: int(standby.inbound[0].progress()["polls"]) > polls + 2, "the new holder polls on")
                    finally:
                        sampler.cancel()
        finally:
            await proxy.stop()
            await api.stop()


async def test_a_holder_whose_own_loop_was_held_up_says_so_and_reads_again(
    tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A process starved of CPU (or blocked by a call) sends no heartbeat either, so Kafka may
    count it out as if cut off: the holder stops reading alike, and the warning points at the
    process, not at Kafka. Once the loop runs again the group answers and it reads on."""
    api = await CrmApi().start()
    api.add("c000", "2026-01-01T00:00:00Z")
    hub = build_hub(write_config(tmp_path / "bus.yaml", poll_config(bootstrap, api, unique_prefix())), role="inbound")
    try:
        async with started(hub):
            await until(lambda: leased(hub)._running, "the replica reads the source")
            polls = int(hub.inbound[0].progress()["polls"])
            with caplog.at_level(logging.WARNING):
                time.sleep(2.8)  # the whole loop held up past 80 % of the 3 s session
                await until(
                    lambda: any("event loop was itself held up for" in r.message for r in caplog.records),
                    "the holder says its own loop was held up",
                    timeout=10,
                )
            said = next(r.message for r in caplog.records if "event loop was itself held up for" in r.message)
            assert "nothing from Kafka's group coordinator has confirmed" in said, said
            await until(lambda: leased(hub)._running, "it reads the source again", timeout=60)
            await until(lambda: int(hub.inbound[0].progress().get("polls", 0)) > polls + 2, "it polls on", timeout=30)
    finally:
        await api.stop()


def _lease_gauge(text: str, adapter: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "bus_inbound_lease" and sample.labels.get("adapter") == adapter:
                return sample.value
    return None


async def test_a_killed_holder_is_replaced_within_the_session_timeout_and_no_row_is_lost(tmp_path: Path, bootstrap: str) -> None:
    """Two `bus run --role inbound` processes with one `sql_poll`; the holder is killed (SIGKILL,
    no goodbye to the group): the other takes the lease once its session times out and reads on
    from the saved watermark."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    table = f"lease_{unique_prefix()}"
    dsn = "postgresql://postgres@127.0.0.1:5432/test"
    db = await asyncpg.connect(dsn)
    await db.execute(f"CREATE TABLE {table} (id text PRIMARY KEY, email text, name text, updated_at timestamptz NOT NULL)")
    insert = f"INSERT INTO {table} VALUES ($1, $2, $3, now())"
    ports = [free_port(), free_port()]
    config = {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 2, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "inbound": [
            {
                "name": "customers",
                "type": "sql_poll",
                "dsn": dsn,
                "table": table,
                "columns": ["id", "email", "name"],
                "watermark": {"column": "updated_at", "id": "id"},
                "interval": "200ms",
                "settle": "300ms",
                "emit": {"schema": "Customer", "key": "id", "map": {"customer_id": "id", "email": "email", "name": "name"}},
            }
        ],
    }
    processes = []
    for port in ports:
        path = write_config(tmp_path / f"bus-{port}.yaml", {**config, "ops": {"host": "127.0.0.1", "port": port}})
        processes.append(HubProcess(path, port, role="inbound"))
    try:
        for i in range(20):
            await db.execute(insert, f"r{i:03}", f"r{i}@example.com", f"R{i}")
        await asyncio.gather(*(p.start() for p in processes))
        async with httpx.AsyncClient() as client:

            async def gauges() -> list[float | None]:
                texts = [(await client.get(f"http://127.0.0.1:{port}/metrics")).text for port in ports]
                return [_lease_gauge(text, "customers") for text in texts]

            for _ in range(200):
                if sorted(await gauges(), key=str) == [0.0, 1.0]:
                    break
                await asyncio.sleep(0.1)
            assert sorted(await gauges(), key=str) == [0.0, 1.0], "one process holds the lease, the other stands by"
            holder = (await gauges()).index(1.0)
            topic = TopicNames(config["kafka"]["topic_prefix"]).canonical("Customer")
            kafka = KafkaConfig(bootstrap=bootstrap)

            async def ids() -> Counter[str]:
                records = await read_topic(kafka, bootstrap, topic)
                return Counter(r.key.decode() for r in records if r.key is not None)

            for _ in range(200):
                if len(await ids()) == 20:
                    break
                await asyncio.sleep(0.1)
            assert len(await ids()) == 20 and max((await ids()).values()) == 1, "read once, by the holder"

            killed = processes[holder].proc
            assert killed is not None
            os.kill(killed.pid, signal.SIGKILL)
            await killed.wait()
            for i in range(20, 35):
                await db.execute(insert, f"r{i:03}", f"r{i}@example.com", f"R{i}")
            other = ports[1 - holder]
            for _ in range(300):
                text = (await client.get(f"http://127.0.0.1:{other}/metrics")).text
                if _lease_gauge(text, "customers") == 1.0 and len(await ids()) == 35:
                    break
                await asyncio.sleep(0.1)
            assert _lease_gauge(text, "customers") == 1.0, "the standby took the lease over"
            took_over = [
                s.value
                for f in text_string_to_metric_families(text)
                for s in f.samples
                if s.name == "bus_inbound_lease_changes_total" and s.labels == {"adapter": "customers", "change": "gained"}
            ]
            assert took_over == [1.0]
            seen = await ids()
            assert len(seen) == 35, f"rows lost: {sorted(set(f'r{i:03}' for i in range(35)) - set(seen))}"
            # At least once: rows the killed holder published after its last saved position may come
            # again; those written after the kill come once, read on from the saved watermark.
            assert all(seen[f"r{i:03}"] == 1 for i in range(20, 35)), seen
    finally:
        for process in processes:
            await process.kill()
        await db.execute(f"DROP TABLE IF EXISTS {table}")
        await db.close()


class SourceConfig(AdapterConfig):
    type: Literal["leased_source"] = "leased_source"
    refuse: bool = Field(default=False, description="Its start fails for good (a setting its system refuses).")
    emit: EmitSpec


class LeasedSource(Inbound[SourceConfig]):
    """A source read by one process whose reading task dies once, or whose start fails for good."""

    Config: ClassVar[type[SourceConfig]] = SourceConfig
    summary: ClassVar[str] = "a source of the tests"
    one_reader: ClassVar[bool] = True
    starts = 0

    async def start(self) -> None:
        LeasedSource.starts += 1
        if self.config.refuse:
            raise ValueError("the source refused the settings")
        self._task = self.ctx.spawn(self._read(), name=f"read:{self.config.name}")

    async def _read(self) -> None:
        await asyncio.sleep(0.1)
        if LeasedSource.starts == 1:
            raise KeyError("a field the adapter assumed is always there")
        await asyncio.Event().wait()

    async def stop(self) -> None:
        if task := getattr(self, "_task", None):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_a_leased_source_that_dies_is_restarted_and_one_that_cannot_start_is_said(tmp_path: Path, bootstrap: str) -> None:
    registry = AdapterRegistry.from_entry_points().clone()
    registry.register("leased_source", LeasedSource)
    catalog = SchemaCatalog.load()
    emit = {"schema": "Customer", "map": {"customer_id": "id", "email": "email", "name": "name"}}
    config: dict[str, Any] = {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 2, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "inbound": [{"name": "source", "type": "leased_source", "emit": emit}],
    }

    def hub_of(body: dict[str, Any]) -> Hub:
        loaded = load_config(write_config(tmp_path / "bus.yaml", body), registry, known_schemas=lambda h: catalog.parsed())
        return Hub(loaded, registry, catalog)

    LeasedSource.starts = 0
    async with hub_of(config) as hub:
        # Its task died: the supervisor restarts it through the lease (it still reads here).
        await until(lambda: hub.supervisor.detail().get("inbound:source", {}).get("up") is True, "restarted", timeout=30)
        assert LeasedSource.starts == 2 and hub.supervisor.detail()["inbound:source"]["restarts"] == 1
        assert all((await hub.readiness()).values())

    config["inbound"][0]["refuse"] = True
    async with hub_of(config) as hub:
        assert not (await hub.readiness())["inbound:source"]
        assert "failed to start: ValueError('the source refused the settings')" in (await hub.problems())["inbound:source"]


async def test_a_holder_that_cannot_reach_the_source_hands_it_to_one_that_can(
    tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One replica cannot reach the API (a firewall that lets only some nodes through): holding the
    lease, it would have stalled a source the other replica reaches. After the hand-over time it
    gives the lease up; the other reads everything, and the first is not given it back."""
    api = await CrmApi().start()
    for i in range(12):
        api.add(f"c{i:03}", f"2026-01-01T00:00:{i:02d}Z")
    prefix = unique_prefix()
    cut_off = poll_config(bootstrap, api, prefix)
    cut_off["leases"] = {"hand_over_after": "2s"}  # 60 s by default
    cut_off["inbound"][0]["url"] = "http://127.0.0.1:9/api/contacts"  # nothing listens there
    cut_off["inbound"][0]["auth"]["token_url"] = "http://127.0.0.1:9/oauth/token"
    blocked = build_hub(write_config(tmp_path / "blocked.yaml", cut_off), role="inbound")
    reaching = build_hub(write_config(tmp_path / "bus.yaml", poll_config(bootstrap, api, prefix)), role="inbound")
    caplog.set_level(logging.WARNING)
    try:
        await blocked.start()  # first: it holds the lease
        assert leased(blocked).standing_by is False
        await reaching.start()
        await until(lambda: leased(reaching).standing_by is False, "the lease handed to the replica that reaches the API", timeout=30)
        for _ in range(100):
            seen = await published(reaching)
            if len(seen) == 12:
                break
            await asyncio.sleep(0.2)
        assert len(seen) == 12 and max(seen.values()) == 1
        assert leased(blocked).standing_by and leased(blocked)._lease.unable
        handed = [r.getMessage() for r in caplog.records if "handing it to another hub process" in r.getMessage()]
        assert len(handed) == 1 and "127.0.0.1:9" in handed[0], handed
        await asyncio.sleep(1)
        assert leased(reaching).standing_by is False, "not given back to the replica that cannot read it"
    finally:
        await asyncio.gather(blocked.stop(), reaching.stop())
        await api.stop()


async def test_a_source_down_for_every_replica_is_not_passed_round_and_round(
    tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    api = await CrmApi().start()
    body = poll_config(bootstrap, api, unique_prefix())
    body["leases"] = {"hand_over_after": "1s"}
    body["inbound"][0]["url"] = "http://127.0.0.1:9/api/contacts"  # down for both
    body["inbound"][0]["auth"]["token_url"] = "http://127.0.0.1:9/oauth/token"
    path = write_config(tmp_path / "bus.yaml", body)
    first, second = build_hub(path, role="inbound"), build_hub(path, role="inbound")
    caplog.set_level(logging.WARNING)
    try:
        async with started(first, second):
            await asyncio.sleep(20)  # twenty hand-over times, and room for five rejoins of the group
            handed = [r for r in caplog.records if "handing it to another hub process" in r.getMessage()]
            assert 1 <= len(handed) <= 2, [r.getMessage() for r in handed]  # each replica tried once at most
            assert {leased(first).standing_by, leased(second).standing_by} == {True, False}, "one reader still"
    finally:
        await api.stop()
