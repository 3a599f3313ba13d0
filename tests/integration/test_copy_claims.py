"""A redelivery or backfill holds its subscriber across every process of the hub (bus.app.copy_claims):
of claims made at once exactly one goes on and the others are told which and where; a claim is
renewed with its progress and released when its job ends; one left by a killed process lapses; a
holder that cannot renew its claim stops writing; and a hub (its API, its subscriber detail) and
`bus redeliver -c` honour the claim another process holds, on the real embedded broker."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from bus.app import copy_claims
from bus.app.copy_claims import claim_copies
from bus.app.setup import create_topics
from bus.config.models import KafkaConfig
from bus.errors import Busy, ClaimLost
from bus.kafka.broker import EmbeddedBroker
from bus.kafka.reader import read_topic
from bus.kafka.topics import TopicSpec
from bus.ports import free_port
from tests.integration.test_delivery import post
from tests.integration.test_redelivery import a_moment_between, cli, settled
from tests.support.hub import build_hub, payment, payment_hub_config, unique_prefix, write_config
from tests.support.proxy import TcpProxy
from tests.support.target import Target

WRITE = "write-token-claims"
HERE = f"{socket.gethostname()} (pid {os.getpid()})"


async def control_topic(bootstrap: str) -> tuple[KafkaConfig, str]:
    kafka = KafkaConfig(bootstrap=bootstrap, session_timeout_ms=3000)
    topic = f"{unique_prefix()}._control"
    await create_topics(kafka, bootstrap, [TopicSpec(topic, 1, 1, {"cleanup.policy": "compact"})])
    return kafka, topic


async def test_of_claims_made_at_once_exactly_one_holds_the_subscriber_and_the_rest_are_told_which(bootstrap: str) -> None:
    kafka, topic = await control_topic(bootstrap)
    holding: list[int] = []
    most_at_once = 0
    refused: list[str] = []

    async def job(number: int) -> None:
        nonlocal most_at_once
        await asyncio.sleep(max(0, number - 2) * 0.2)  # three at the same moment, then one at a time while the first writes
        try:
            async with claim_copies(kafka, bootstrap, topic, "erp", f"a backfill to erp #{number}"):
                holding.append(number)
                most_at_once = max(most_at_once, len(holding))
                await asyncio.sleep(1.0)  # writing
                holding.remove(number)
        except Busy as exc:
            refused.append(str(exc))

    await asyncio.gather(*(job(n) for n in range(6)))
    assert most_at_once == 1 and len(refused) == 5, (most_at_once, refused)
    assert all("a backfill to erp #" in said and f"in {HERE}" in said and "is under way" in said for said in refused), refused
    # Released when it ended: the next one goes on, and a claim on another subscriber never waited.
    async with (
        claim_copies(kafka, bootstrap, topic, "erp", "a redelivery to erp"),
        claim_copies(kafka, bootstrap, topic, "crm", "a backfill to crm"),
    ):
        pass
    records = await read_topic(kafka, bootstrap, topic)
    latest = {r.key: r.value for r in records}
    assert latest and all(value is None for value in latest.values()), latest  # every claim released


async def test_a_claim_carries_its_progress_and_one_a_killed_process_left_lapses(bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(copy_claims, "RENEW_S", 0.2)
    kafka, topic = await control_topic(bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:

        async def left(key: str, renewed: float) -> None:  # what a process wrote before it was killed
            value = {"what": f"a backfill to erp ({key})", "by": "pod-a (pid 7)", "place": None, "progress": "", "renewed": renewed}
            await producer.send_and_wait(topic, json.dumps(value).encode(), key=f"copy/erp/{key}".encode(), partition=0)

        await left("killed", time.time() - copy_claims.EXPIRES_S - 5)
        async with claim_copies(kafka, bootstrap, topic, "erp", "a redelivery to erp") as holding:  # the dead one holds nothing
            holding.progressed("deliver.erp/0: read 700 of 1,000")
            await asyncio.sleep(0.8)  # renewed meanwhile, with the progress
            with pytest.raises(Busy) as refused:
                async with claim_copies(kafka, bootstrap, topic, "erp", "a backfill to erp"):
                    raise AssertionError("two jobs hold erp")
        assert "a redelivery to erp (deliver.erp/0: read 700 of 1,000)" in str(refused.value), refused.value

        await left("alive", time.time())  # a process that holds it and lives on
        with pytest.raises(Busy, match=r"a backfill to erp \(alive\) in pod-a \(pid 7\) is under way"):
            async with claim_copies(kafka, bootstrap, topic, "erp", "a redelivery to erp"):
                raise AssertionError("two jobs hold erp")
    finally:
        await producer.stop()


async def test_a_holder_that_cannot_renew_its_claim_stops_writing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(copy_claims, "RENEW_S", 0.2)
    monkeypatch.setattr(copy_claims, "GIVE_UP_S", 1.0)
    proxy_port = free_port()
    async with EmbeddedBroker(advertised_port=proxy_port) as broker:  # every client connects through the proxy
        proxy = TcpProxy(proxy_port, broker.port)
        await proxy.start()
        try:
            kafka, topic = await control_topic(f"127.0.0.1:{proxy_port}")
            written = 0
            started = time.monotonic()
            with pytest.raises(ClaimLost) as lost:
                async with claim_copies(kafka, f"127.0.0.1:{proxy_port}", topic, "erp", "a backfill to erp"):
                    proxy.cut = True  # Kafka out of reach: no renewal goes out
                    proxy.sever()
                    for _ in range(300):  # a job writing copies, a chunk at a time, for up to 15 s
                        written += 1
                        await asyncio.sleep(0.05)
            assert time.monotonic() - started < 15, "stopped soon after GIVE_UP_S"
            assert "its claim on erp could not be renewed" in str(lost.value) and "Ask again" in str(lost.value), lost.value
            assert written > 0 and "could not be renewed on the control topic" in caplog.text
            assert not asyncio.current_task().cancelling()  # type: ignore[union-attr]  # the test's task is not left cancelled
        finally:
            proxy.cut = False
            await proxy.stop()


async def test_a_hub_honours_a_claim_another_process_holds_and_shows_it(
    tmp_path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(copy_claims, "RENEW_S", 0.3)
    target = await Target().start()
    config = payment_hub_config(bootstrap, target.url)
    config["ops"]["tokens"] = [{"name": "admin", "token": WRITE, "scope": "write"}]
    path = write_config(tmp_path / "bus.yaml", config)
    direct = ["-c", str(path), "--bootstrap", bootstrap]
    erp: Callable[[], list[Any]] = lambda: [c for c in target.accepted if c.path == "/erp"]  # noqa: E731
    try:
        async with build_hub(path) as hub:
            since = await a_moment_between()
            await post(hub, *(payment(i) for i in range(3)))
            await target.wait_for(lambda: len(erp()) == 3)
            await settled(hub, "erp", since)
            kafka, control = hub.config.kafka, hub.topics.control
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.ops.port}/api/v1", timeout=60) as api:
                admin = {"Authorization": f"Bearer {WRITE}"}
                # Another replica writes a backfill to erp (here: its claim, held by this test).
                async with claim_copies(kafka, bootstrap, control, "erp", "a backfill to erp asked on pod-b") as holding:
                    holding.progressed("canonical.Payment/1: read 40 of 90")
                    for _ in range(50):  # the hub follows the control topic: it shows the claim with its progress
                        copying = (await api.get("/subscribers/erp", headers=admin)).json()["copying"]
                        if copying and "read 40 of 90" in copying:
                            break
                        await asyncio.sleep(0.2)
                    assert copying == f"a backfill to erp asked on pod-b (canonical.Payment/1: read 40 of 90) in {HERE}", copying
                    refused = await api.post("/subscribers/erp/redeliver", json={"since": since.isoformat()}, headers=admin)
                    assert refused.status_code == 409, refused.text
                    assert "a backfill to erp asked on pod-b" in refused.json()["detail"], refused.text
                    code, _, err = await cli(capsys, "redeliver", "erp", "--since", since.isoformat(), *direct)
                    assert code == 1 and "a backfill to erp asked on pod-b" in err and "is under way" in err, err
                    # A dry run writes nothing, so it holds nothing and is not refused.
                    dry = await api.post("/subscribers/erp/redeliver", json={"since": since.isoformat(), "dry_run": True}, headers=admin)
                    assert dry.status_code == 200 and dry.json()["to_send"] == 3, dry.text
                    await asyncio.sleep(0.5)
                    assert len(erp()) == 3, "nothing was sent again while the other job held erp"
                # Released: the hub's own redelivery goes on, under a claim of its own.
                target.accepted.clear()
                done = await api.post("/subscribers/erp/redeliver", json={"since": since.isoformat()}, headers=admin)
                assert done.status_code == 200 and done.json()["sent"] == 3, done.text
                await target.wait_for(lambda: len(erp()) == 3)
                assert (await api.get("/subscribers/erp", headers=admin)).json()["copying"] is None
            records = [r for r in await read_topic(kafka, bootstrap, control) if r.key.startswith(b"copy/erp/")]
            own = [r for r in records if r.value is not None and json.loads(r.value)["what"].startswith("a redelivery to erp asked at")]
            assert own, [r.value for r in records]  # the hub claimed erp for its redelivery
            assert any(r.key == own[0].key and r.value is None and r.offset > own[0].offset for r in records)  # and released it
            # `bus redeliver -c` claims too, and releases when it is done.
            await settled(hub, "erp", since)
            code, _, err = await cli(capsys, "redeliver", "erp", "--since", since.isoformat(), *direct)
            assert code == 0, err
            records = [r for r in await read_topic(kafka, bootstrap, control) if r.key.startswith(b"copy/erp/")]
            by_cli = [r for r in records if r.value is not None and "by `bus redeliver -c`" in json.loads(r.value)["what"]]
            # (the first one's claim was refused above, and released at once)
            assert len({r.key for r in by_cli}) == 2 and records[-1].key == by_cli[-1].key and records[-1].value is None, records
    finally:
        await target.stop()
