"""The amqp adapters against the real RabbitMQ on this machine and the real embedded broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from adapters.amqp.config import AmqpInboundConfig
from adapters.amqp.inbound import AmqpInbound
from bus.adapter_api import RetryableError
from bus.app.cli import main
from bus.kafka.reader import read_topic
from bus.ports import free_port
from tests.conftest import require_service
from tests.support.hub import build_hub, unique_prefix, write_config
from tests.support.memory import resident_peak_mb, resident_peak_reset, the_cut_letter
from tests.support.proxy import TcpProxy
from tests.support.silent_server import left_running_after_cancelling, silent_server
from tests.support.sink import bare_context
from tests.support.target import Target

URL = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture(autouse=True)
def rabbitmq() -> None:
    require_service("RabbitMQ", "127.0.0.1", 5672)


def config(bootstrap: str, target: Target, queue: str, exchange: str, out_queue: str) -> dict[str, Any]:
    return {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 3, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "inbound": [
            {
                "name": "orders",
                "type": "amqp",
                "url": URL,
                "queue": queue,
                "bindings": [{"exchange": exchange, "routing_key": "order.#"}],
                "emit": {
                    "schema": "Payment",
                    "id": "id",
                    "key": "account",
                    "map": {"payment_id": "id", "amount": "seq", "currency": '"eur"', "customer_id": "account"},
                },
            }
        ],
        "routes": [{"name": "all", "from": "Payment", "to": ["erp", "billing"]}],
        "outbound": [
            {"name": "erp", "type": "http", "url": f"{target.url}/erp"},
            {
                "name": "billing",
                "type": "amqp",
                "url": URL,
                "routing_key": out_queue,
                "declare_queue": out_queue,
                "body": {"payment": "payment_id", "seq": "amount", "event": "$id"},
            },
        ],
    }


@contextlib.asynccontextmanager
async def topic_exchange(name: str) -> AsyncIterator[Any]:
    """The durable topic exchange ``name``, on a connection of the test's own, closed after."""
    connection = await aio_pika.connect_robust(URL)
    try:
        channel = await connection.channel()
        yield await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
    finally:
        await connection.close()


async def drain(channel: Any, queue_name: str, count: int, timeout: float = 30) -> list[aio_pika.abc.AbstractIncomingMessage]:
    queue = await channel.declare_queue(queue_name, passive=True)  # as it is: a quorum queue refuses a plain declare
    got: list[aio_pika.abc.AbstractIncomingMessage] = []
    async with asyncio.timeout(timeout):
        async with queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                got.append(message)
                if len(got) >= count:
                    break
    return got


async def test_queue_to_kafka_to_queue_in_order_with_bad_messages_kept(
    tmp_path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = uuid.uuid4().hex[:8]
    queue, exchange, out_queue = f"t.in.{run}", f"t.ex.{run}", f"t.out.{run}"
    target = await Target().start()
    connection = await aio_pika.connect_robust(URL)
    try:
        channel = await connection.channel()
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        path = write_config(tmp_path / "bus.yaml", config(bootstrap, target, queue, exchange, out_queue))
        async with build_hub(path) as hub:
            for i in range(200):
                body = json.dumps({"id": f"m{i}", "account": f"acc{i % 10}", "seq": i}).encode()
                if i == 50:
                    body = b"{not json"
                if i == 60:
                    body = json.dumps({"id": "m60", "account": "acc0", "seq": "sixty"}).encode()  # amount must be a long
                await ex.publish(aio_pika.Message(body, message_id=f"m{i}"), routing_key="order.created")

            await target.wait_for(lambda: len(target.accepted) == 198)
            published = await drain(channel, out_queue, 198)

            # Every good message went through, per key in the order it was queued, to both subscribers.
            seqs: dict[str, list[int]] = defaultdict(list)
            for call in target.accepted:
                seqs[call.body["customer_id"]].append(call.body["amount"])
            assert all(s == sorted(s) for s in seqs.values()) and sum(len(s) for s in seqs.values()) == 198
            assert sorted(m.message_id for m in published) == sorted(f"m{i}" for i in range(200) if i not in (50, 60))
            first = json.loads(published[0].body)
            assert set(first) == {"payment", "seq", "event"} and first["event"] == published[0].message_id
            assert published[0].delivery_mode == aio_pika.DeliveryMode.PERSISTENT

            # The two bad ones are kept with their reasons, and nothing is left unacknowledged in the queue.
            parked = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("orders"))
            reasons = {dict(r.headers)["amqp_message_id"].decode(): dict(r.headers)["bus_error"].decode() for r in parked}
            assert set(reasons) == {"m50", "m60"}
            assert reasons["m50"].startswith("invalid JSON")
            assert "amount" in reasons["m60"]
            assert parked[0].value in (b"{not json", json.dumps({"id": "m60", "account": "acc0", "seq": "sixty"}).encode())
            remaining = await channel.declare_queue(queue, durable=True)
            assert remaining.declaration_result.message_count == 0

            # Operators see them with bus dlq, under _in.<adapter>; replay is refused (fix them at the source).
            capsys.readouterr()
            args = ["dlq", "list", "-c", str(path), "--bootstrap", bootstrap, "--subscriber", "_in.orders", "--json"]
            assert await asyncio.to_thread(main, args) == 0
            assert sorted(d["error"][:12] for d in json.loads(capsys.readouterr().out)) == sorted(r[:12] for r in reasons.values())
            args = ["dlq", "replay", "-c", str(path), "--bootstrap", bootstrap, "--subscriber", "_in.orders"]
            assert await asyncio.to_thread(main, args) == 2
    finally:
        await connection.close()
        await target.stop()


async def test_unroutable_messages_are_dead_lettered_with_the_reason(tmp_path: Path, bootstrap: str) -> None:
    run = uuid.uuid4().hex[:8]
    connection = await aio_pika.connect_robust(URL)
    target = await Target().start()
    try:
        channel = await connection.channel()
        await channel.declare_exchange(f"t.nowhere.{run}", aio_pika.ExchangeType.DIRECT, durable=True)
        hub_config = config(bootstrap, target, f"t.in.{run}", f"t.ex.{run}", f"t.out.{run}")
        hub_config["outbound"][1].update(exchange=f"t.nowhere.{run}", routing_key="no.such.queue", declare_queue=None)
        hub_config["outbound"][1]["delivery"] = {"max_attempts": 3, "backoff_initial": "10ms"}
        async with build_hub(write_config(tmp_path / "bus.yaml", hub_config)) as hub:
            ex = await channel.get_exchange(f"t.ex.{run}")
            await ex.publish(aio_pika.Message(json.dumps({"id": "u1", "account": "a", "seq": 1}).encode()), routing_key="order.x")
            await target.wait_for(lambda: len(target.accepted) == 1)
            for _ in range(100):
                letters = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.dead_letter("billing"))
                if letters:
                    break
                await asyncio.sleep(0.2)
            headers = dict(letters[0].headers)
            assert headers["bus_error_class"] == b"PermanentError"
            assert b"unroutable" in headers["bus_error"] and b"no.such.queue" in headers["bus_error"]
    finally:
        await connection.close()
        await target.stop()


async def test_unreachable_broker_is_a_retryable_error_without_the_password() -> None:
    config = AmqpInboundConfig.model_validate(
        {"type": "amqp", "name": "x", "url": "amqp://guest:s3cret@127.0.0.1:1/", "queue": "q", "emit": {"schema": "Payment"}}
    )

    adapter = AmqpInbound(config, bare_context())
    with pytest.raises(RetryableError) as caught:
        await adapter.start()
    assert "127.0.0.1:1" in str(caught.value) and "s3cret" not in str(caught.value)


async def test_restart_mid_stream_loses_nothing(tmp_path: Path, bootstrap: str) -> None:
    run = uuid.uuid4().hex[:8]
    queue, exchange, out_queue = f"t.in.{run}", f"t.ex.{run}", f"t.out.{run}"
    target = await Target(delay=lambda _call: 0.01).start()
    connection = await aio_pika.connect_robust(URL)
    try:
        channel = await connection.channel()
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        path = write_config(tmp_path / "bus.yaml", config(bootstrap, target, queue, exchange, out_queue))

        async def publish(first: int, last: int) -> None:
            for i in range(first, last):
                body = json.dumps({"id": f"m{i}", "account": f"acc{i % 10}", "seq": i}).encode()
                await ex.publish(aio_pika.Message(body, message_id=f"m{i}"), routing_key="order.created")

        async with build_hub(path):
            await publish(0, 300)
            await target.wait_for(lambda: len(target.accepted) >= 50)  # stop while deliveries are still going
        await publish(300, 400)  # while the hub is down: they wait in RabbitMQ
        async with build_hub(path):
            await target.wait_for(lambda: len({c.body["payment_id"] for c in target.accepted}) == 400)
        assert {c.body["payment_id"] for c in target.accepted} == {f"m{i}" for i in range(400)}
        remaining = await channel.declare_queue(queue, durable=True)
        assert remaining.declaration_result.message_count == 0
    finally:
        await connection.close()
        await target.stop()


async def test_a_url_naming_a_clusters_nodes_starts_on_one_that_answers_and_follows_a_lost_node_to_the_next(
    tmp_path: Path, bootstrap: str
) -> None:
    """`url` names three nodes: the first never answers, the next two are this machine's broker
    behind proxies the test controls. The hub starts on the second; when that node is lost
    (every connection through it cut, and no new one taken), the inbound and the outbound
    reconnect to the third and the flow goes on with nothing lost. A message or a publish whose
    acknowledgement the lost node took with it comes again (at least once), with the same id."""
    run = uuid.uuid4().hex[:8]
    queue, exchange, out_queue = f"t.in.{run}", f"t.ex.{run}", f"t.out.{run}"
    target = await Target().start()
    lost, kept = TcpProxy(free_port(), 5672), TcpProxy(free_port(), 5672)
    await lost.start()
    await kept.start()
    connection = await aio_pika.connect_robust(URL)
    try:
        channel = await connection.channel()
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        nodes = f"amqp://guest:guest@127.0.0.1:{free_port()},127.0.0.1:{lost.listen_port},127.0.0.1:{kept.listen_port}/"
        cfg = config(bootstrap, target, queue, exchange, out_queue)
        cfg["inbound"][0]["url"] = cfg["outbound"][1]["url"] = nodes

        async def publish(first: int, last: int) -> None:
            for i in range(first, last):
                body = json.dumps({"id": f"m{i}", "account": f"acc{i % 10}", "seq": i}).encode()
                await ex.publish(aio_pika.Message(body, message_id=f"m{i}"), routing_key="order.created")

        async with build_hub(write_config(tmp_path / "bus.yaml", cfg)) as hub:
            await publish(0, 50)
            await target.wait_for(lambda: len({c.body["payment_id"] for c in target.accepted}) == 50)
            assert lost._writers, "started on the first node that answers"
            lost.cut = True  # the node is lost: its connections cut, new ones refused
            lost.sever()
            await publish(50, 100)
            await target.wait_for(lambda: len({c.body["payment_id"] for c in target.accepted}) == 100, timeout=60)
            published: set[str] = set()
            async with asyncio.timeout(60):
                while len(published) < 100:
                    published.update(json.loads(m.body)["payment"] for m in await drain(channel, out_queue, 1))
            assert published == {f"m{i}" for i in range(100)}
            assert kept._writers, "reconnected through the third node"
            for adapter in (hub.inbound[0], hub.outbound[1]):
                assert (await adapter.health()).ok, adapter.config.name
        assert {c.body["payment_id"] for c in target.accepted if c.path == "/erp"} == {f"m{i}" for i in range(100)}
    finally:
        await connection.close()
        await lost.stop()
        await kept.stop()
        await target.stop()


def test_a_url_whose_nodes_cannot_be_read_is_a_config_error() -> None:
    for url, said in (
        ("amqp://guest:guest@rabbit-0:5672,rabbit-1:oops/", "broker 'rabbit-1:oops'"),
        ("amqp://guest:guest@rabbit-0:5672,/", "names no broker host"),
        ("http://rabbit-0/", "starts with amqp://"),
    ):
        with pytest.raises(ValueError, match=said):
            AmqpInboundConfig.model_validate({"type": "amqp", "name": "x", "url": url, "queue": "q", "emit": {"schema": "Payment"}})


async def test_no_node_answering_is_a_retryable_error_naming_each_without_the_password() -> None:
    first, second = free_port(), free_port()
    config = AmqpInboundConfig.model_validate(
        {
            "type": "amqp",
            "name": "x",
            "url": f"amqp://guest:s3cret@127.0.0.1:{first},127.0.0.1:{second}/",
            "queue": "q",
            "emit": {"schema": "Payment"},
        }
    )
    with pytest.raises(RetryableError) as caught:
        await AmqpInbound(config, bare_context()).start()
    said = str(caught.value)
    assert "no AMQP node answers" in said and f"127.0.0.1:{first}" in said and f"127.0.0.1:{second}" in said, said
    assert "s3cret" not in said


async def test_a_binding_taken_out_of_the_config_is_taken_off_the_queue(tmp_path: Path, bootstrap: str) -> None:
    """RabbitMQ keeps a durable queue's bindings: one taken out of the config stayed, and its
    messages went on arriving and becoming events. The hub now unbinds what it bound itself and
    the config no longer names; a binding an operator made stays."""
    run = uuid.uuid4().hex[:8]
    queue, exchange, out_queue = f"t.in.{run}", f"t.ex.{run}", f"t.out.{run}"
    target = await Target().start()
    connection = await aio_pika.connect_robust(URL)
    try:
        channel = await connection.channel()
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        cfg = config(bootstrap, target, queue, exchange, out_queue)
        cfg["inbound"][0]["bindings"] = [
            {"exchange": exchange, "routing_key": "order.#"},
            {"exchange": exchange, "routing_key": "refund.#"},
        ]

        async def publish(ident: str, key: str) -> None:
            body = json.dumps({"id": ident, "account": "acc1", "seq": 1}).encode()
            await ex.publish(aio_pika.Message(body, message_id=ident), routing_key=key)

        async with build_hub(write_config(tmp_path / "both.yaml", cfg)):
            await publish("o1", "order.created")
            await publish("r1", "refund.created")
            await target.wait_for(lambda: {c.body["payment_id"] for c in target.accepted} == {"o1", "r1"})
        by_hand = await channel.declare_queue(queue, durable=True)
        await by_hand.bind(ex, "audit.#")  # an operator's own binding
        cfg["inbound"][0]["bindings"] = [{"exchange": exchange, "routing_key": "order.#"}]
        async with build_hub(write_config(tmp_path / "orders.yaml", cfg)):
            await publish("r2", "refund.created")  # no longer bound: goes nowhere
            await publish("a1", "audit.created")
            await publish("o2", "order.created")
            await target.wait_for(lambda: {"o2", "a1"} <= {c.body["payment_id"] for c in target.accepted})
            await asyncio.sleep(0.5)
        assert sorted(c.body["payment_id"] for c in target.accepted if c.path == "/erp") == ["a1", "o1", "o2", "r1"]
    finally:
        await connection.close()
        await target.stop()


async def test_a_channel_the_broker_closes_is_opened_again_and_reading_goes_on(tmp_path: Path, bootstrap: str) -> None:
    """RabbitMQ closes a consumer's channel on its own (`consumer_timeout` after a message held
    long while Kafka was down, an acknowledgement it does not know): the connection stays up. The
    inbound must open a channel again and read on, not stop with nothing said. Here the broker
    closes the hub's channel for an acknowledgement of an unknown delivery tag."""
    run = uuid.uuid4().hex[:8]
    queue, exchange, out_queue = f"t.in.{run}", f"t.ex.{run}", f"t.out.{run}"
    target = await Target().start()
    connection = await aio_pika.connect_robust(URL)
    try:
        channel = await connection.channel()
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        path = write_config(tmp_path / "bus.yaml", config(bootstrap, target, queue, exchange, out_queue))

        async def publish(first: int, last: int) -> None:
            for i in range(first, last):
                body = json.dumps({"id": f"m{i}", "account": f"acc{i % 3}", "seq": i}).encode()
                await ex.publish(aio_pika.Message(body, message_id=f"m{i}"), routing_key="order.created")

        def erp() -> set[str]:
            return {c.body["payment_id"] for c in target.accepted}

        async with build_hub(path) as hub:
            await publish(0, 5)
            await target.wait_for(lambda: len(target.accepted) >= 5)
            consuming = await hub.inbound[0]._queue.channel.get_underlay_channel()  # the hub's own channel, for the broker to close
            await consuming.basic_ack(delivery_tag=999_999)  # PRECONDITION_FAILED: the broker closes this channel
            await asyncio.sleep(1)
            assert consuming.is_closed, "the broker did not close the channel: the test proves nothing"
            await publish(5, 10)
            await target.wait_for(lambda: len(erp()) >= 10, timeout=30)
        assert erp() == {f"m{i}" for i in range(10)}, sorted(erp())
    finally:
        await connection.close()
        await target.stop()


async def test_a_message_too_large_to_read_is_parked_from_its_start_also_after_the_channel_is_opened_again(
    tmp_path: Path, bootstrap: str
) -> None:
    """RabbitMQ 3 takes messages of up to 128 MiB (512 configured). aiormq assembled each whole,
    about twice its size in memory, and with `prefetch` of them in flight a pod went past its
    memory limit, the queue giving them again at every start. A message over 16 MiB is now read
    past, its first 64 KiB parked with its size, on the channel the hub opens again after the
    broker closed one too."""
    run = uuid.uuid4().hex[:8]
    queue, exchange, out_queue = f"t.in.{run}", f"t.ex.{run}", f"t.out.{run}"
    target = await Target().start()
    spec = config(bootstrap, target, queue, exchange, out_queue)
    spec["routes"][0]["to"], spec["outbound"] = ["erp"], spec["outbound"][:1]
    path = write_config(tmp_path / "bus.yaml", spec)
    head = json.dumps({"id": "big", "account": "acc1", "seq": 1, "pad": ""}).encode()[:-2]
    connection = await aio_pika.connect_robust(URL)
    try:
        channel = await connection.channel()
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        async with build_hub(path) as hub:
            consuming = await hub.inbound[0]._queue.channel.get_underlay_channel()
            await consuming.basic_ack(delivery_tag=999_999)  # the broker closes the hub's channel; it is opened again
            await asyncio.sleep(1)
            assert consuming.is_closed, "the broker did not close the channel: the test proves nothing"
            resident_peak_reset()
            before = resident_peak_mb()
            # Sent from another process: this one's peak is the hub's alone.
            sender = (
                "import asyncio, sys, aio_pika\n"
                "async def main():\n"
                f"    connection = await aio_pika.connect({URL!r})\n"
                "    channel = await connection.channel()\n"
                f"    exchange = await channel.get_exchange({exchange!r})\n"
                f"    body = {head!r} + b'a' * (100_000_000 - {len(head)} - 2) + b'\"}}'\n"
                "    await exchange.publish(aio_pika.Message(body, message_id='big'), routing_key='order.created')\n"
                "    await connection.close()\n"
                "asyncio.run(main())\n"
            )
            sent = await asyncio.create_subprocess_exec(sys.executable, "-c", sender)
            assert await sent.wait() == 0
            small = json.dumps({"id": "small", "account": "acc2", "seq": 2}).encode()
            await ex.publish(aio_pika.Message(small, message_id="small"), routing_key="order.created")
            await target.wait_for(lambda: len(target.accepted) == 1, timeout=60)
            grown = resident_peak_mb() - before
            headers = await the_cut_letter(hub, "orders", 100_000_000, head)
            assert headers["amqp_message_id"] == b"big"
            assert target.accepted[0].body["payment_id"] == "small"  # the message after it flowed
            # Read whole, the message took about 200 MB; read past, a few frames.
            assert grown < 40, f"the hub's peak resident set grew by {grown:.0f} MB for a 100 MB message"
        async with build_hub(path) as hub:  # acknowledged: not given again
            await ex.publish(
                aio_pika.Message(json.dumps({"id": "after", "account": "acc2", "seq": 3}).encode()), routing_key="order.created"
            )
            await target.wait_for(lambda: len(target.accepted) == 2, timeout=60)
            assert len(await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("orders"))) == 1
    finally:
        await connection.close()
        await target.stop()


async def test_a_connection_cancelled_while_it_is_made_leaves_nothing_running() -> None:
    """A hub that stops while an AMQP adapter is still connecting (a broker slow to answer) cancels
    that start. aio_pika's robust connection went on reconnecting in the background, and took the
    cancellation of its task at the process's end for a failed attempt: the process never ended."""

    async with silent_server() as port:  # accepts and never answers the AMQP greeting: the client waits
        config = AmqpInboundConfig.model_validate(
            {"type": "amqp", "name": "x", "url": f"amqp://guest:guest@127.0.0.1:{port}/", "queue": "q", "emit": {"schema": "Payment"}}
        )
        adapter = AmqpInbound(config, bare_context())
        try:
            left = await left_running_after_cancelling(adapter.start())
            assert left == [], [t.get_coro() for t in left]
        finally:
            await adapter.stop()


async def test_a_queue_and_an_exchange_that_exist_with_settings_of_their_own_are_used_as_they_are(tmp_path: Path, bootstrap: str) -> None:
    """An operator's quorum queue with a TTL, a fanout exchange where the binding's default type
    is topic, and a quorum queue to publish into: declared again by the hub, each was refused
    (PRECONDITION_FAILED, inequivalent arg) and the adapters never started. Now each is used as it
    is: the hub reads the queue, binds it, and publishes into the existing queue; a queue the hub
    makes itself gets `queue_arguments` (a quorum queue: a plain declare of it is refused)."""
    run = uuid.uuid4().hex[:8]
    source, exchange, out, made = f"t.in.{run}", f"t.ex.{run}", f"t.out.{run}", f"t.made.{run}"
    target = await Target().start()
    connection = await aio_pika.connect_robust(URL)
    try:
        channel = await connection.channel()
        await channel.declare_queue(source, durable=True, arguments={"x-queue-type": "quorum", "x-message-ttl": 600_000})
        fanout = await channel.declare_exchange(exchange, aio_pika.ExchangeType.FANOUT, durable=True)
        await channel.declare_queue(out, durable=True, arguments={"x-queue-type": "quorum"})
        hub_config = config(bootstrap, target, source, exchange, out)
        audit = {"name": "audit", "type": "amqp", "url": URL, "routing_key": made, "declare_queue": made}
        hub_config["outbound"].append({**audit, "queue_arguments": {"x-queue-type": "quorum"}})
        hub_config["routes"][0]["to"].append("audit")
        async with build_hub(write_config(tmp_path / "bus.yaml", hub_config)):
            for i in range(5):
                body = json.dumps({"id": f"q{i}", "account": f"a{i % 2}", "seq": i}).encode()
                await fanout.publish(aio_pika.Message(body, message_id=f"q{i}"), routing_key="anything")
            await target.wait_for(lambda: len(target.accepted) == 5)
            assert sorted(m.message_id for m in await drain(channel, out, 5)) == [f"q{i}" for i in range(5)]
            assert len(await drain(channel, made, 5)) == 5
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed, match=r"x-queue-type.*quorum"):
            await (await connection.channel()).declare_queue(made, durable=True)
    finally:
        cleanup = await connection.channel()
        for queue in (source, out, made):
            await cleanup.queue_delete(queue)
        await cleanup.exchange_delete(exchange)
        await connection.close()
        await target.stop()


def test_settings_that_would_do_nothing_are_refused_at_load() -> None:
    """Bindings or queue arguments with declare off were ignored without a word (the hub declares
    and binds nothing then); queue arguments need the outbound's declare_queue."""
    from pydantic import ValidationError

    from adapters.amqp.config import AmqpOutboundConfig

    inbound = {"type": "amqp", "name": "x", "url": URL, "queue": "q", "declare": False, "emit": {"schema": "Payment"}}
    with pytest.raises(ValidationError, match="bindings would do nothing with declare off"):
        AmqpInboundConfig.model_validate({**inbound, "bindings": [{"exchange": "orders"}]})
    with pytest.raises(ValidationError, match="queue_arguments would do nothing with declare off"):
        AmqpInboundConfig.model_validate({**inbound, "queue_arguments": {"x-queue-type": "quorum"}})
    with pytest.raises(ValidationError, match="queue_arguments would do nothing without declare_queue"):
        AmqpOutboundConfig.model_validate(
            {"type": "amqp", "name": "x", "url": URL, "routing_key": "k", "queue_arguments": {"x-queue-type": "quorum"}}
        )


async def test_a_trace_sent_as_text_or_as_a_byte_array_is_continued(tmp_path: Path, bootstrap: str) -> None:
    """AMQP headers are typed: a `traceparent` a client sent as a byte array (field type "x", as
    some clients do for strings) was read as the text of a bytes object, failed the format check,
    and the caller's trace was dropped for a new one. Anything but text is still not a trace."""
    run = uuid.uuid4().hex[:8]
    queue, exchange, out_queue = f"t.in.{run}", f"t.ex.{run}", f"t.out.{run}"
    traces = {f"m{i}": uuid.uuid4().hex for i in range(3)}
    sent: dict[str, Any] = {
        "m0": f"00-{traces['m0']}-00f067aa0ba902b7-01",
        "m1": bytearray(f"00-{traces['m1']}-00f067aa0ba902b7-01".encode()),
        "m2": 7,  # a number is no trace: a new one is started
    }
    target = await Target().start()
    cfg = config(bootstrap, target, queue, exchange, out_queue)
    cfg["routes"][0]["to"] = ["erp"]
    try:
        async with topic_exchange(exchange) as ex, build_hub(write_config(tmp_path / "bus.yaml", cfg)):
            for i, (message_id, traceparent) in enumerate(sent.items()):
                body = json.dumps({"id": message_id, "account": "acc", "seq": i}).encode()
                await ex.publish(aio_pika.Message(body, message_id=message_id, headers={"traceparent": traceparent}), "order.created")
            await target.wait_for(lambda: len(target.accepted) == 3)
    finally:
        await target.stop()
    at_target = {c.body["payment_id"]: c.headers["traceparent"].split("-")[1] for c in target.accepted}
    assert at_target["m0"] == traces["m0"] and at_target["m1"] == traces["m1"], at_target
    assert at_target["m2"] not in traces.values() and len(at_target["m2"]) == 32


async def test_a_compressed_body_is_read_decompressed_and_one_that_cannot_be_is_parked_saying_why(tmp_path: Path, bootstrap: str) -> None:
    """Producers that compress (Spring AMQP's GZip and Deflater post-processors) set
    content_encoding: each such message was parked as "invalid JSON". gzip and deflate (with
    zlib's wrapper or without) are read decompressed; a body that does not decompress, or that
    decompresses past 16 MiB (a few KiB that would be gigabytes), is parked saying so, its bytes
    kept as they came. Spring's content_encoding "UTF-8" (a charset) leaves the body as it is."""
    import gzip
    import zlib

    run = uuid.uuid4().hex[:8]
    queue, exchange, out_queue = f"t.in.{run}", f"t.ex.{run}", f"t.out.{run}"
    target = await Target().start()
    cfg = config(bootstrap, target, queue, exchange, out_queue)
    cfg["routes"][0]["to"] = ["erp"]

    def document(message_id: str) -> bytes:
        return json.dumps({"id": message_id, "account": "acc", "seq": 1}).encode()

    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    bomb = gzip.compress(b"0" * (17 << 20))  # 17 MiB of zeros: about 17 KiB compressed
    sent = {
        "gz": (gzip.compress(document("gz")), "gzip"),
        "zl": (zlib.compress(document("zl")), "deflate"),
        "raw": (raw.compress(document("raw")) + raw.flush(), "deflate"),
        "utf": (document("utf"), "UTF-8"),
        "broken": (gzip.compress(document("broken"))[:-12], "gzip"),
        "bomb": (bomb, "gzip"),
    }
    try:
        async with topic_exchange(exchange) as ex, build_hub(write_config(tmp_path / "bus.yaml", cfg)) as hub:
            for message_id, (body, coding) in sent.items():
                await ex.publish(aio_pika.Message(body, message_id=message_id, content_encoding=coding), "order.created")
            await target.wait_for(lambda: len(target.accepted) == 4)
            parked: list[Any] = []
            for _ in range(100):
                parked = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("orders"))
                if len(parked) == 2:
                    break
                await asyncio.sleep(0.2)
    finally:
        await target.stop()
    assert sorted(c.body["payment_id"] for c in target.accepted) == ["gz", "raw", "utf", "zl"]
    reasons = {dict(r.headers)["amqp_message_id"].decode(): dict(r.headers)["bus_error"].decode() for r in parked}
    assert set(reasons) == {"broken", "bomb"}, reasons
    assert reasons["broken"].startswith("content_encoding gzip: the body does not decompress"), reasons
    assert "decompresses to more than 16,777,216 bytes" in reasons["bomb"], reasons
    assert {dict(r.headers)["amqp_message_id"].decode(): r.value for r in parked}["bomb"] == bomb  # kept as it came
