"""The nats adapters against the real NATS JetStream on this machine and the real embedded broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from bus.kafka.reader import read_topic
from tests.conftest import require_service
from tests.support.hub import build_hub, unique_prefix, write_config
from tests.support.target import Target

URL = "nats://127.0.0.1:4222"


@pytest.fixture(autouse=True)
def jetstream() -> None:
    require_service("NATS", "127.0.0.1", 4222)


def config(bootstrap: str, target: Target, run: str) -> dict[str, Any]:
    return {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 3, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "inbound": [
            {
                "name": "orders",
                "type": "nats",
                "url": URL,
                "stream": f"IN_{run}",
                "subject": f"t{run}.orders.>",
                "emit": {
                    "schema": "Payment",
                    "id": "id",
                    "key": "account",
                    "map": {"payment_id": "id", "amount": "seq", "currency": '"eur"', "customer_id": "account"},
                },
            }
        ],
        "routes": [{"name": "all", "from": "Payment", "to": ["erp", "ledger", "nowhere"]}],
        "outbound": [
            {"name": "erp", "type": "http", "url": f"{target.url}/erp"},
            {
                "name": "ledger",
                "type": "nats",
                "url": URL,
                "subject": f"t{run}.out.$${{customer_id}}",
                "body": {"id": "$id", "seq": "amount"},
            },
            {"name": "nowhere", "type": "nats", "url": URL, "subject": f"t{run}.unstreamed", "delivery": {"max_attempts": 2}},
        ],
    }


async def publish_orders(js: Any, run: str, first: int, last: int) -> None:
    """Orders n<first>..n<last - 1> on the run's inbound subject."""
    for i in range(first, last):
        await js.publish(f"t{run}.orders.created", json.dumps({"id": f"n{i}", "account": f"a{i % 3}", "seq": i}).encode())


def deliveries_by_id(target: Target) -> dict[str, int]:
    """How many times the target took each payment."""
    counts: dict[str, int] = {}
    for call in target.accepted:
        counts[call.body["payment_id"]] = counts.get(call.body["payment_id"], 0) + 1
    return counts


async def test_stream_in_stream_out_with_durable_resume(tmp_path: Path, bootstrap: str) -> None:
    run = uuid.uuid4().hex[:8]
    target = await Target().start()
    connection = await nats.connect(URL)
    js = connection.jetstream()
    await js.add_stream(name=f"OUT_{run}", subjects=[f"t{run}.out.>"])
    path = write_config(tmp_path / "bus.yaml", config(bootstrap, target, run))

    async def publish(first: int, last: int) -> None:
        for i in range(first, last):
            body = b"{broken" if i == 3 else json.dumps({"id": f"n{i}", "account": f"a{i % 3}", "seq": i}).encode()
            await js.publish(f"t{run}.orders.created", body)

    try:
        async with build_hub(path) as hub:
            await publish(0, 30)
            await target.wait_for(lambda: len(target.accepted) == 29)
            parked = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("orders"))
            assert [r.value for r in parked] == [b"{broken"]
            for _ in range(100):  # the stream has no subscriber: its events are dead-lettered, not lost
                letters = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("nowhere"))
                if len(letters) == 29:
                    break
                await asyncio.sleep(0.2)
            assert len(letters) == 29 and b"no JetStream stream takes subject" in dict(letters[0].headers)["bus_error"]

        await publish(30, 40)  # while the hub is down: the durable consumer keeps its place
        async with build_hub(path):
            await target.wait_for(lambda: len({c.body["payment_id"] for c in target.accepted}) == 39)
            info = await js.stream_info(f"OUT_{run}")
            for _ in range(100):
                if info.state.messages >= 39:
                    break
                await asyncio.sleep(0.1)
                info = await js.stream_info(f"OUT_{run}")

        assert {c.body["payment_id"] for c in target.accepted} == {f"n{i}" for i in range(40) if i != 3}
        out = await js.pull_subscribe(f"t{run}.out.>", durable=f"check{run}", stream=f"OUT_{run}")
        messages = await out.fetch(100, timeout=2)
        # One message per event (a redelivery would be dropped by Nats-Msg-Id), on the templated subject.
        assert sorted(m.headers["Nats-Msg-Id"] for m in messages) == sorted(f"n{i}" for i in range(40) if i != 3)
        sample = messages[0]
        assert sample.subject == f"t{run}.out.a{json.loads(sample.data)['seq'] % 3}"
    finally:
        for stream in (f"IN_{run}", f"OUT_{run}"):
            await js.delete_stream(stream)
        await connection.close()
        await target.stop()


async def test_a_subject_changed_in_the_config_is_the_one_read(tmp_path: Path, bootstrap: str) -> None:
    """JetStream binds to an existing durable consumer whatever subject it filters: with the
    config's `subject` changed, the old subject's messages went on becoming events and the new
    one's never did. The consumer is made again for the new subject, from after what it acknowledged."""
    run = uuid.uuid4().hex[:8]
    target = await Target().start()
    connection = await nats.connect(URL)
    js = connection.jetstream()
    await js.add_stream(name=f"IN_{run}", subjects=[f"t{run}.>"])
    cfg = config(bootstrap, target, run)
    cfg["routes"][0]["to"] = ["erp"]
    cfg["outbound"] = cfg["outbound"][:1]

    async def publish(ident: str, subject: str) -> None:
        await js.publish(f"t{run}.{subject}", json.dumps({"id": ident, "account": "a1", "seq": 1}).encode())

    def read() -> list[str]:
        return sorted(c.body["payment_id"] for c in target.accepted)

    try:
        async with build_hub(write_config(tmp_path / "orders.yaml", cfg)):
            await publish("r0", "refunds.created")  # before the change, and before what was acknowledged: not read
            await publish("o1", "orders.created")
            await target.wait_for(lambda: read() == ["o1"])
        await publish("o2", "orders.created")  # while the hub is down
        await publish("r1", "refunds.created")
        cfg["inbound"][0]["subject"] = f"t{run}.refunds.>"
        async with build_hub(write_config(tmp_path / "refunds.yaml", cfg)):
            await target.wait_for(lambda: "r1" in read())
            await publish("o3", "orders.created")
            await publish("r2", "refunds.created")
            await target.wait_for(lambda: "r2" in read())
            await asyncio.sleep(0.5)
        assert read() == ["o1", "r1", "r2"], read()  # from after o1, the last acknowledged: r1 on
    finally:
        await js.delete_stream(f"IN_{run}")
        await connection.close()
        await target.stop()


async def test_a_durable_consumer_that_takes_no_acknowledgements_is_refused_saying_why(tmp_path: Path, bootstrap: str) -> None:
    """An operator made the hub's durable consumer with ack_policy none: every message counted as
    delivered once sent, so one in flight when the hub stopped (or held while Kafka was down) was
    gone, unsaid. The inbound now refuses it, saying why in its health, and reads nothing."""
    from nats.js.api import AckPolicy, ConsumerConfig

    run = uuid.uuid4().hex[:8]
    target = await Target().start()
    connection = await nats.connect(URL)
    js = connection.jetstream()
    await js.add_stream(name=f"IN_{run}", subjects=[f"t{run}.>"])
    await js.add_consumer(
        f"IN_{run}", config=ConsumerConfig(durable_name="bus-orders", ack_policy=AckPolicy.NONE, filter_subject=f"t{run}.orders.>")
    )
    cfg = config(bootstrap, target, run)
    cfg["routes"][0]["to"] = ["erp"]
    cfg["outbound"] = cfg["outbound"][:1]
    try:
        await js.publish(f"t{run}.orders.created", json.dumps({"id": "o1", "account": "a1", "seq": 1}).encode())
        async with build_hub(write_config(tmp_path / "bus.yaml", cfg)) as hub:
            problems: dict[str, str] = {}

            async def said() -> bool:
                nonlocal problems
                async with httpx.AsyncClient() as client:
                    problems = (await client.get(f"http://127.0.0.1:{hub.ops.port}/readyz")).json().get("problems", {})
                return "takes no acknowledgements (ack_policy none)" in problems.get("inbound:orders", "")

            for _ in range(100):
                if await said():
                    break
                await asyncio.sleep(0.2)
            assert "takes no acknowledgements (ack_policy none)" in problems.get("inbound:orders", ""), problems
            assert problems["inbound:orders"].startswith("not started:"), problems
            info = await js.consumer_info(f"IN_{run}", "bus-orders")
            assert info.num_pending == 1 and info.delivered.stream_seq == 0  # nothing taken from it
    finally:
        await js.delete_stream(f"IN_{run}")
        await connection.close()
        await target.stop()


@dataclass
class OrdersFlow:
    """A run's orders stream to one HTTP target through a hub config written at ``path``."""

    run: str
    target: Target
    spec: dict[str, Any]
    path: Path
    js: Any

    def publish(self, first: int, last: int) -> Awaitable[None]:
        return publish_orders(self.js, self.run, first, last)

    def delivered(self) -> dict[str, int]:
        return deliveries_by_id(self.target)


@asynccontextmanager
async def orders_to_one_target(tmp_path: Path, bootstrap: str) -> AsyncIterator[OrdersFlow]:
    """The inbound ``orders`` routed to ``erp`` alone; the stream, the connection and the target
    are gone after."""
    run = uuid.uuid4().hex[:8]
    target = await Target().start()
    spec = config(bootstrap, target, run)
    spec["routes"], spec["outbound"] = [{"name": "all", "from": "Payment", "to": ["erp"]}], spec["outbound"][:1]
    connection = await nats.connect(URL)
    js = connection.jetstream()
    try:
        yield OrdersFlow(run, target, spec, write_config(tmp_path / "bus.yaml", spec), js)
    finally:
        await js.delete_stream(f"IN_{run}")
        await connection.close()
        await target.stop()


async def test_a_durable_consumer_deleted_while_read_is_made_again_from_where_the_hub_was(
    tmp_path: Path, bootstrap: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Deleted by an operator, or with its stream, the consumer's fetches timed out for good: the
    adapter looked connected and read nothing. Now the hub notices within a quiet while, restarts
    the adapter saying why, and reads on from after the last message it acknowledged (not the
    stream's start again); a stream made again is read from its start."""
    monkeypatch.setattr("adapters.nats.inbound.CHECK_IDLE_S", 0.5)
    async with orders_to_one_target(tmp_path, bootstrap) as flow:
        run, target, path, js = flow.run, flow.target, flow.path, flow.js
        publish, delivered = flow.publish, flow.delivered
        async with build_hub(path):
            await publish(0, 10)
            await target.wait_for(lambda: len(delivered()) == 10)
            await js.delete_consumer(f"IN_{run}", "bus-orders")
            await publish(10, 15)
            await target.wait_for(lambda: len(delivered()) == 15, timeout=30)
            assert delivered() == {f"n{i}": 1 for i in range(15)}  # nothing read twice, nothing passed over
            said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
            assert any("durable consumer bus-orders" in m and "is gone" in m for m in said), said
            assert any("made again from stream sequence 11, after the last message the hub acknowledged" in m for m in said), said

            await js.delete_stream(f"IN_{run}")  # and the stream made again, as by a redeploy of NATS's config
            await js.add_stream(name=f"IN_{run}", subjects=[f"t{run}.orders.>"])
            await publish(15, 18)
            await target.wait_for(lambda: len(delivered()) == 18, timeout=30)
            assert delivered() == {f"n{i}": 1 for i in range(18)}
            assert any(f"stream IN_{run} was made again" in r.getMessage() for r in caplog.records)


async def test_a_durable_consumer_deleted_while_the_hub_is_down_or_renamed_with_its_adapter_reads_on_from_the_hubs_place(
    tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The durable consumer keeps the hub's place in the stream. Deleted while the hub was down, or
    never there under a renamed adapter's name (bus-<name>), it was made again from the stream's
    start, and every message the stream held came again. The hub's own saved place is used now."""
    async with orders_to_one_target(tmp_path, bootstrap) as flow:
        run, target, spec, path, js = flow.run, flow.target, flow.spec, flow.path, flow.js
        publish, delivered = flow.publish, flow.delivered
        async with build_hub(path):
            await publish(0, 10)
            await target.wait_for(lambda: len(delivered()) == 10)
        await js.delete_consumer(f"IN_{run}", "bus-orders")  # while the hub is down
        await publish(10, 13)
        async with build_hub(path):
            await target.wait_for(lambda: len(delivered()) == 13, timeout=30)
            await asyncio.sleep(1)  # anything read twice would have come by now
        assert delivered() == {f"n{i}": 1 for i in range(13)}, delivered()
        said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert any("made again from stream sequence 11, after the last message the hub acknowledged" in m for m in said), said

        spec["inbound"][0]["name"] = "orders-v2"  # renamed: its durable consumer is bus-orders-v2, which does not exist
        write_config(tmp_path / "bus.yaml", spec)
        await publish(13, 15)
        async with build_hub(path):
            await target.wait_for(lambda: len(delivered()) == 15, timeout=30)
            await asyncio.sleep(1)
        assert delivered() == {f"n{i}": 1 for i in range(15)}, delivered()
        said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert any("orders-v2: no saved position under this name, but orders" in m for m in said), said


async def test_a_url_naming_several_servers_reaches_the_cluster_through_any_that_answers() -> None:
    """The url lists servers comma-separated, as the nats CLI takes them: with the first one
    down the outbound connects to the next and publishes; with all down the start fails naming
    every one (and no password)."""
    import logging

    from adapters.nats.config import NatsOutboundConfig
    from adapters.nats.outbound import NatsOutbound
    from bus.adapter_api import Context, RetryableError
    from bus.event import Event
    from bus.ports import free_port

    run = uuid.uuid4().hex[:8]
    down, other = free_port(), free_port()
    client = await nats.connect(URL)
    js = client.jetstream()
    await js.add_stream(name=f"SRV_{run}", subjects=[f"t{run}.srv"])

    def outbound(url: str) -> NatsOutbound:
        config = NatsOutboundConfig.model_validate({"name": "out", "type": "nats", "url": url, "subject": f"t{run}.srv"})
        return NatsOutbound(config, Context(name="out", logger=logging.getLogger("test.nats")))

    try:
        adapter = outbound(f"nats://127.0.0.1:{down}, {URL}")
        await adapter.start()
        try:
            await adapter.deliver(Event(schema="Customer", data={"id": "c1"}, source="/crm", id=f"e-{run}", type="Customer"))
        finally:
            await adapter.stop()
        assert (await js.stream_info(f"SRV_{run}")).state.messages == 1

        nowhere = outbound(f"nats://hub:s3cret@127.0.0.1:{down},nats://hub:s3cret@127.0.0.1:{other}")
        with pytest.raises(RetryableError, match=rf"cannot connect to NATS at 127\.0\.0\.1:{down}, 127\.0\.0\.1:{other}: ") as refused:
            await nowhere.start()
        assert "s3cret" not in str(refused.value)
    finally:
        await js.delete_stream(f"SRV_{run}")
        await client.close()


async def test_a_key_value_buckets_delete_marker_is_parked_saying_so_or_passed_over(tmp_path: Path, bootstrap: str) -> None:
    """A JetStream key-value bucket read as the stream of its changes (``KV_<bucket>``): deleting a
    key writes a marker with no payload, which was parked as "invalid JSON". It is parked naming
    the marker and the key, or with ``empty: skip`` acknowledged, counted and passed over; the
    changes after it flow either way."""
    run = uuid.uuid4().hex[:8]
    emit = {"schema": "Payment", "id": "id", "key": "account", "map": {"payment_id": "id", "amount": "seq", "currency": '"eur"'}}
    inbound = [
        {"name": name, "type": "nats", "url": URL, "stream": f"KV_{name}{run}", "subject": f"$KV.{name}{run}.>", "emit": emit}
        for name in ("parks", "skips")
    ]
    inbound[1]["empty"] = "skip"
    cfg = {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 1, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "inbound": inbound,
    }
    client = await nats.connect(URL)
    js = client.jetstream()
    try:
        buckets = {name: await js.create_key_value(bucket=f"{name}{run}", history=5) for name in ("parks", "skips")}
        for name, bucket in buckets.items():
            await bucket.put("acc-1", json.dumps({"id": f"{name}-1", "account": "acc-1", "seq": 1}).encode())
            await bucket.delete("acc-1")  # the account closed: a marker with no payload
            await bucket.put("acc-2", json.dumps({"id": f"{name}-2", "account": "acc-2", "seq": 2}).encode())
        async with build_hub(write_config(tmp_path / "bus.yaml", cfg)) as hub:
            parks, skips = hub.inbound
            for _ in range(150):
                events = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Payment"))
                parked = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("parks"))
                if len(events) == 4 and parked and skips.progress().get("empty_skipped") == 1:
                    break
                await asyncio.sleep(0.2)
            assert sorted(dict(r.headers)["ce_id"].decode() for r in events) == ["parks-1", "parks-2", "skips-1", "skips-2"]
            reason = dict(parked[0].headers)["bus_error"].decode() if len(parked) == 1 else repr(parked)
            assert reason == f"a key-value bucket's DEL marker for $KV.parks{run}.acc-1: nothing to map. Set empty: skip to pass over them"
            assert await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("skips")) == []
            assert skips.progress() == {"empty_skipped": 1} and parks.progress() == {}
    finally:
        for name in ("parks", "skips"):
            with contextlib.suppress(Exception):
                await js.delete_key_value(f"{name}{run}")
        await client.close()
