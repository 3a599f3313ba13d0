"""The whole hub (webhook in, router, delivery out, with the ledger) on a three-broker cluster
while the cluster misbehaves: partition leaders moved under load, errors injected into produce,
fetch, commit and join requests, a slow broker, and one broker lost for 10 s.

The cluster is librdkafka's mock cluster (tests/support/mock_cluster.py): a test double that
speaks the Kafka protocol on three real ports, not a Kafka. What it does not model is listed in
docs/embedded-broker.md; these tests prove the hub's side of each fault, not Kafka's.

Each test checks the promises: every event the webhook acknowledged reaches the target; a
repeat carries the same idempotency key as the first call; `bus reconcile` balances the ledger;
the hub carried on by itself; and what happened shows in the log and in
``bus_kafka_errors_total`` where it reached the hub's code.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from bus.app.cli import main
from bus.app.setup import topic_specs
from bus.kafka.reader import read_topic
from bus.kafka.topics import TopicNames
from tests.support.hub import build_hub, load, payment, payment_hub_config, write_config
from tests.support.mock_cluster import ApiKey, ErrorCode, MockCluster
from tests.support.target import Target

EVENTS = 1000  # at about 40 a second: the flow lasts through every fault


# aiokafka drops its connection objects to a broker that vanished without closing their sockets;
# the collector finds them later, in whichever test runs then. Collected here, in the test that
# made them (a few sockets per broker loss, no lasting leak: nothing refers to them).
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def cluster() -> Iterator[MockCluster]:
    with MockCluster(brokers=3) as mock:
        yield mock
    gc.collect()


def prepared_config(tmp_path: Path, cluster: MockCluster, target: Target, **kafka: Any) -> tuple[Path, dict[str, Any]]:
    config = payment_hub_config(cluster.bootstrap, target.url, produce_timeout_s=3, replication_factor=3)
    config["kafka"].update(kafka)
    path = write_config(tmp_path / "bus.yaml", config)
    loaded, _, _ = load(path)
    # As on a cluster where a platform team creates topics (the mock has no CreateTopics).
    cluster.create_topics(topic_specs(loaded, TopicNames(config["kafka"]["topic_prefix"])))
    return path, config


class Senders:
    """Four webhook senders that retry until they get a 202, as Stripe-like sources do."""

    def __init__(self, port: int) -> None:
        self.accepted: set[str] = set()
        self.answers: list[int] = []
        self._client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": "k1"}, timeout=30)
        self.task = asyncio.gather(*(self._send(k) for k in range(4)))

    async def _send(self, first: int) -> None:
        for i in range(first, EVENTS, 4):
            while True:
                try:
                    r = await self._client.post("/hooks/payments", json=payment(i))
                    self.answers.append(r.status_code)
                    if r.status_code == 202:
                        self.accepted.add(f"evt_{i}")
                        break
                    assert r.status_code == 503 and r.headers["Retry-After"], r.text
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.1)

    async def at_least(self, n: int) -> None:
        while len(self.accepted) < min(n, EVENTS):
            if self.task.done():
                self.task.result()  # a sender's failure is the test's
            await asyncio.sleep(0.05)

    async def finish(self) -> None:
        await asyncio.wait_for(self.task, timeout=180)
        await self._client.aclose()


async def promises_kept(path: Path, cluster: MockCluster, target: Target, accepted: set[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing acknowledged lost, repeats only under the same key, the ledger balanced."""
    assert len(accepted) == EVENTS

    def delivered() -> set[str]:
        return {c.headers["Idempotency-Key"] for c in target.accepted if c.path == "/erp"}

    await target.wait_for(lambda: delivered() >= accepted, timeout=120)
    for call in (c for c in target.accepted if c.path == "/erp"):
        body = call.body
        # A repeat is the same event with the same key: the target can drop it.
        assert call.headers["Idempotency-Key"] == body["event"] and body["external_id"] == "pi_" + body["event"].removeprefix("evt_")
    assert delivered() == accepted
    deadline = time.monotonic() + 60
    while True:
        capsys.readouterr()
        code = await asyncio.to_thread(main, ["reconcile", "-c", str(path), "--bootstrap", cluster.bootstrap, "--subscriber", "erp"])
        out = capsys.readouterr().out
        if code == 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)  # the last batch's commit may trail the target's answer
    assert code == 0 and "subscriber erp: balanced" in out and re.search(rf"delivered +{EVENTS}\b", out), out


def counted(name: str) -> float:
    """The sum of a counter over its labels (the hub runs in this process)."""
    return sum(sample.value for metric in REGISTRY.collect() for sample in metric.samples if sample.name == f"{name}_total")


@pytest.mark.timeout(300)
async def test_leader_moves_injected_errors_and_a_slow_broker_lose_nothing(
    tmp_path: Path, cluster: MockCluster, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    target = await Target().start()
    path, _ = prepared_config(tmp_path, cluster, target)
    # Joins fail first: the hub's groups form through COORDINATOR_NOT_AVAILABLE, REQUEST_TIMED_OUT
    # and NOT_COORDINATOR answers, as when a cluster is rolling while the hub starts.
    joins = [ErrorCode.COORDINATOR_NOT_AVAILABLE, ErrorCode.REQUEST_TIMED_OUT, ErrorCode.NOT_COORDINATOR]
    cluster.inject(ApiKey.JOIN_GROUP, joins)
    warnings_before, restarts_before = counted("bus_kafka_client_warnings"), counted("bus_component_restarts")
    try:
        async with build_hub(path) as hub:
            assert hub.web is not None
            senders = Senders(hub.web.port)
            await senders.at_least(60)
            answered: dict[str, int] = {}
            assert cluster.move_leaders(shift=1) > 0
            await senders.at_least(120)
            three = [ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.REQUEST_TIMED_OUT, ErrorCode.COORDINATOR_NOT_AVAILABLE]
            for api in (ApiKey.PRODUCE, ApiKey.FETCH, ApiKey.OFFSET_COMMIT):
                cluster.inject(api, three)
                answered[api.name] = await cluster.wait_answered(api, len(three), at_least=len(three), timeout=30)
                await senders.at_least(len(senders.accepted) + 40)  # the flow goes on between faults
            cluster.set_rtt(2, 400)  # a slow broker for 5 s: every answer of broker 2 takes 400 ms
            await asyncio.sleep(5)
            cluster.set_rtt(2, 0)
            assert cluster.move_leaders(shift=1) > 0
            await senders.finish()
            answered["JOIN_GROUP"] = cluster.answered(ApiKey.JOIN_GROUP, len(joins))
            await promises_kept(path, cluster, target, senders.accepted, capsys)
    finally:
        await target.stop()
    # Every kind of request really met its errors (a fault that never hit proves nothing).
    assert all(n >= 3 for n in answered.values()), answered
    # What happened is in the log and in the metrics: aiokafka retried most of it inside (counted
    # by bus_kafka_client_warnings_total), and a join answered REQUEST_TIMED_OUT killed a consumer
    # that the supervisor restarted (bus_component_restarts_total).
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    for error in ("NotLeaderForPartitionError", "RequestTimedOutError", "CoordinatorNotAvailable"):
        assert any(error in w for w in warnings), (error, warnings)
    assert counted("bus_kafka_client_warnings") >= warnings_before + 9
    assert counted("bus_component_restarts") > restarts_before


@pytest.mark.timeout(300)
async def test_a_broker_lost_for_ten_seconds_loses_nothing(
    tmp_path: Path, cluster: MockCluster, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    target = await Target().start()
    path, config = prepared_config(tmp_path, cluster, target)
    prefix = config["kafka"]["topic_prefix"]
    groups = [f"{prefix}-router", *(TopicNames(prefix).delivery_group(s) for s in ("erp", "support"))]
    lost = 2
    for group in groups:  # broker 2 coordinates every group: losing it loses the coordinator too
        cluster.set_coordinator(group, lost)
    try:
        async with build_hub(path) as hub:
            assert hub.web is not None
            senders = Senders(hub.web.port)
            await senders.at_least(100)
            # Mid-flow: the groups have formed and deliveries run. (A loss while the groups were
            # still forming, on a loaded CI machine, once delivered nothing at all: see
            # docs/embedded-broker.md; not yet explained.)
            await target.wait_for(lambda: len(target.accepted) >= 50, timeout=60)
            cluster.broker_down(lost)
            down_at = time.monotonic()
            accepted_at_loss = len(senders.accepted)
            # A real cluster's controller elects new leaders and coordinators within seconds.
            await asyncio.sleep(3)
            assert cluster.move_leaders(away_from=lost) > 0
            for group in groups:
                cluster.set_coordinator(group, 1)
            await asyncio.sleep(max(0.0, 10 - (time.monotonic() - down_at)))
            accepted_while_down = len(senders.accepted) - accepted_at_loss
            cluster.broker_up(lost)
            await senders.finish()
            await promises_kept(path, cluster, target, senders.accepted, capsys)
    finally:
        await target.stop()
    assert accepted_while_down > 0  # after the election the webhook took events again, with a broker still down
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(f"node with id {lost}" in w or "NodeNotReady" in w for w in warnings), warnings


@pytest.mark.timeout(300)
async def test_a_join_that_never_completes_is_said_and_started_again(
    tmp_path: Path, cluster: MockCluster, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A subscriber whose group coordinator cannot be reached never completes its join: aiokafka
    goes on trying in the background while getmany returns nothing. The hub must not wait for
    ever in silence: after kafka.join_timeout_s the delivery loop ends with the reason, the
    supervisor logs it, counts it and starts the subscriber again, and once the coordinator is
    back the flow completes with nothing lost."""
    caplog.set_level(logging.WARNING)
    target = await Target().start()
    path, config = prepared_config(tmp_path, cluster, target, join_timeout_s=5)
    erp = TopicNames(config["kafka"]["topic_prefix"]).delivery_group("erp")
    unreachable = 2
    assert cluster.move_leaders(away_from=unreachable) > 0  # produce and fetch go on without it
    cluster.set_coordinator(erp, unreachable)  # ...but erp's group can only join through it
    cluster.broker_down(unreachable)
    restarts_before = counted("bus_component_restarts")
    started = time.monotonic()
    try:
        async with build_hub(path) as hub:
            assert hub.web is not None
            senders = Senders(hub.web.port)
            while counted("bus_component_restarts") == restarts_before and time.monotonic() < started + 60:
                await asyncio.sleep(0.2)
            stuck_for = time.monotonic() - started
            assert not [c for c in target.accepted if c.path == "/erp"]  # nothing could be delivered meanwhile
            cluster.broker_up(unreachable)
            await senders.finish()
            await promises_kept(path, cluster, target, senders.accepted, capsys)
    finally:
        await target.stop()
    assert 5 <= stuck_for < 30, stuck_for  # said after the join timeout (from the hub's start), not at once and not never
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(f"consumer group {erp} has not completed a join" in w for w in said), said


def remove_older_half(cluster: MockCluster, topic: str, records: list[Any]) -> tuple[set[str], int]:
    """What a topic's retention does: the older half of each partition's ``records`` removed.
    The ids of the events kept, and how many were removed."""
    ends = {p: 1 + max(r.offset for r in records if r.partition == p) for p in {r.partition for r in records}}
    cut = {p: end // 2 for p, end in ends.items()}
    for p, before in cut.items():
        cluster.delete_records(topic, p, before)
    kept = {dict(r.headers)["ce_id"].decode() for r in records if r.offset >= cut[r.partition]}
    return kept, sum(cut.values())


@pytest.mark.timeout(180)
async def test_events_removed_by_retention_before_delivery_are_said_and_the_commit_goes_on(
    tmp_path: Path, cluster: MockCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A subscriber behind for longer than its delivery topic's retention (down, paused, its target
    failing): Kafka removes records it has not read. The consumer starts again at the first record
    left, and the hub waited for the removed offsets to be settled before committing: the commit
    stood still for ever, everything after it delivered again at every restart, with nothing said.
    Now the removed events are named as lost (WARNING, bus_delivery_lost_total, /readyz) and the
    commit goes on past them."""
    caplog.set_level(logging.WARNING)
    target = await Target().start()
    path, config = prepared_config(tmp_path, cluster, target)
    names = TopicNames(config["kafka"]["topic_prefix"])
    topic = names.delivery("erp")
    lost_before = counted("bus_delivery_lost")
    try:
        async with build_hub(path) as hub:
            erp = next(w for w in hub.workers if w.name == "erp")
            erp.pause("the test: behind, as a subscriber down for days is")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}", headers={"X-API-Key": "k1"}) as client:  # type: ignore[union-attr]
                for i in range(30):
                    assert (await client.post("/hooks/payments", json=payment(i))).status_code == 202
            waiting: list[Any] = []
            for _ in range(200):
                waiting = await read_topic(hub.config.kafka, hub.bootstrap, topic)
                if len(waiting) == 30:
                    break
                await asyncio.sleep(0.1)
            assert len(waiting) == 30, len(waiting)
            ends = {p: 1 + max(r.offset for r in waiting if r.partition == p) for p in {r.partition for r in waiting}}
            kept, removed = remove_older_half(cluster, topic, waiting)
            assert removed > 0 and len(kept) == 30 - removed

            erp.resume()
            await target.wait_for(lambda: {c.headers["Idempotency-Key"] for c in target.accepted} == kept, timeout=60)
            assert "were removed by the topic's retention before they were delivered or dead-lettered: lost" in caplog.text
            assert counted("bus_delivery_lost") - lost_before == removed
            assert erp.status()["lost_to_retention"] == removed
            # The commit went past them: every partition committed to its end.
            consumer = AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap, group_id=names.delivery_group("erp"), enable_auto_commit=False)
            await consumer.start()
            try:
                for _ in range(100):
                    committed = {p: await consumer.committed(TopicPartition(topic, p)) for p in ends}
                    if committed == ends:
                        break
                    await asyncio.sleep(0.1)
                assert committed == ends, (committed, ends)
            finally:
                await consumer.stop()
    finally:
        await target.stop()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("engine", ["default", "faust"])
async def test_events_removed_by_retention_before_routing_are_said(
    tmp_path: Path, cluster: MockCluster, caplog: pytest.LogCaptureFixture, engine: str
) -> None:
    """The same for the router: stopped for longer than a canonical topic's retention, it went on
    from the first record left with nothing said. The removed events are named and counted."""
    caplog.set_level(logging.WARNING)
    target = await Target().start()
    path, config = prepared_config(tmp_path, cluster, target)
    if engine == "faust":
        config["router"] = {"engine": "faust"}
        write_config(path, config)
    topic = TopicNames(config["kafka"]["topic_prefix"]).canonical("Payment")
    lost_before = counted("bus_router_lost")
    try:
        async with build_hub(path, role="inbound") as inbound:  # no router running: the canonical topic fills
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{inbound.web.port}", headers={"X-API-Key": "k1"}) as client:  # type: ignore[union-attr]
                for i in range(30):
                    assert (await client.post("/hooks/payments", json=payment(i))).status_code == 202
            waiting = await read_topic(inbound.config.kafka, inbound.bootstrap, topic)
        assert len(waiting) == 30
        kept, removed = remove_older_half(cluster, topic, waiting)
        assert removed > 0

        async with build_hub(path):
            await target.wait_for(lambda: {c.headers["Idempotency-Key"] for c in target.accepted if c.path == "/erp"} == kept, timeout=60)
            assert "were removed by the topic's retention before they were routed: lost" in caplog.text
            assert counted("bus_router_lost") - lost_before == removed
    finally:
        await target.stop()
