"""A broker that answers "no" is heard, and told apart from one that is down.

Each broker has ways to refuse one message, or one client, while it stays up: an MQTT 5 PUBACK
with a failure reason code (a topic its ACL denies), a SUBACK that refuses a filter or grants QoS 0
only, a largest packet or a Maximum QoS in its CONNACK; a JetStream error (a stream full for now,
a message over the stream's largest); a RabbitMQ nack (a queue at its length limit with
``x-overflow: reject-publish``) or a channel closed for a message over its ``max_message_size``;
a TLS handshake that asks for a client certificate. The hub took an MQTT refusal for a delivery
(the event was gone, unsaid), dead-lettered every event while a RabbitMQ queue was briefly full,
and retried for a day a message that would never fit, as if the broker were down, reconnecting on
every try. Against real brokers: the machine's NATS and RabbitMQ, and Mosquitto, RabbitMQ and NATS
servers of the test's own (an ACL, a largest packet, a small max_message_size, mutual TLS).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from adapters.mqtt.connection import publish_packet_size, publish_properties
from bus.adapter_api import Event, PermanentError, RetryableError, target_json
from tests.conftest import require_service
from tests.support.mosquitto_private import private_mosquitto
from tests.support.outbounds import outbound
from tests.support.rabbitmq_private import private_rabbitmq
from tests.support.sink import bare_context
from tests.support.tcp import tcp_server


def event(text: str, i: int = 0) -> Event:
    return Event(schema="UsageMetric", data={"account": text, "value": 1.0}, source="/t", id=f"e{i}")


async def received(client: aiomqtt.Client, count: int, timeout: float = 10) -> list[bytes]:
    got: list[bytes] = []

    async def take() -> None:
        async for message in client.messages:
            got.append(bytes(message.payload))
            if len(got) == count:
                return

    await asyncio.wait_for(take(), timeout)
    return got


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_an_mqtt_topic_the_brokers_acl_denies_is_a_refusal_on_mqtt_5(protocol: str) -> None:
    with private_mosquitto(allowed="open/#") as port:
        out = outbound("mqtt", {"host": "127.0.0.1", "port": port, "topic": "${account}/x", "protocol": protocol, "timeout_s": 5})
        async with aiomqtt.Client("127.0.0.1", port) as listener:
            await listener.subscribe("open/#", qos=1)
            await out.start()
            try:
                if protocol == "5":
                    with pytest.raises(PermanentError, match=r"refused the message for 'closed/x' .*Not authorized \(reason code 0x87\)"):
                        await out.deliver(event("closed"))
                else:  # 3.1.1 has no way to say it: the broker acknowledges the message it drops
                    await out.deliver(event("closed"))
                await out.deliver(event("open", 1))  # the same connection goes on: allowed topics are delivered
                assert [b'"open"' in payload for payload in await received(listener, 1)] == [True]
            finally:
                await out.stop()


async def test_an_mqtt_message_over_the_brokers_largest_packet_is_refused_before_it_is_sent() -> None:
    """Sent, the broker closes the connection (every try, and the other events' publishes with it):
    the broker's Maximum Packet Size from its CONNACK is checked first, to the byte."""
    largest = 1000
    with private_mosquitto(f"max_packet_size {largest}") as port:
        out = outbound("mqtt", {"host": "127.0.0.1", "port": port, "topic": "big/x", "protocol": "5", "timeout_s": 5})

        def packet(e: Event) -> tuple[bytes, int]:
            body = target_json(out._body.render(e), "message").encode()  # what deliver sends
            return body, publish_packet_size("big/x", body, publish_properties(traceparent=e.traceparent), protocol="5")

        at_limit = event("a" * 900)
        while (size := packet(at_limit)[1]) != largest:
            at_limit.data["account"] = "a" * (len(at_limit.data["account"]) + largest - size)
        over = event("a" * (len(at_limit.data["account"]) + 1), 1)
        over.traceparent = at_limit.traceparent
        assert (packet(at_limit)[1], packet(over)[1]) == (largest, largest + 1)

        async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as listener:
            await listener.subscribe("big/#", qos=1)
            await out.start()
            try:
                with pytest.raises(PermanentError, match=r"a 1,001-byte packet, over the 1,000 bytes the broker takes"):
                    await out.deliver(over)
                await out.deliver(at_limit)  # the largest packet the broker takes is delivered, on the same connection
                assert [len(p) for p in await received(listener, 1)] == [len(packet(at_limit)[0])]
            finally:
                await out.stop()

        # Sent anyway, a larger packet costs the connection. (Mosquitto counts a packet's size without
        # its length's own bytes, so it takes up to 2 bytes more than MQTT 5's total packet size,
        # which is what the hub measures and what other brokers count.)
        bigger = event("a" * (len(over.data["account"]) + 10), 2)
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5, timeout=3) as plain:
                await plain.publish("big/x", packet(bigger)[0], qos=1, properties=publish_properties(traceparent=bigger.traceparent))


async def test_jetstream_refusals_are_told_apart_full_for_now_or_never_fits() -> None:
    require_service("NATS", "127.0.0.1", 4222)
    import nats
    from nats.js.api import DiscardPolicy, StreamConfig

    run = uuid.uuid4().hex[:8]
    connection = await nats.connect("nats://127.0.0.1:4222")
    js = connection.jetstream()
    await js.add_stream(StreamConfig(name=f"R_{run}", subjects=[f"r{run}.>"], max_msgs=2, discard=DiscardPolicy.NEW, max_msg_size=2000))
    out = outbound("nats", {"url": "nats://127.0.0.1:4222", "subject": f"r{run}.x"})
    await out.start()
    try:
        with pytest.raises(PermanentError, match=r"stream refused the message .*message size exceeds maximum allowed \(status 400"):
            await out.deliver(event("a" * 3000))
        max_payload = connection.max_payload
        with pytest.raises(PermanentError, match=rf"over the NATS server's max_payload of {max_payload:,}"):
            await out.deliver(event("a" * max_payload))
        await out.deliver(event("one", 1))
        await out.deliver(event("two", 2))
        with pytest.raises(RetryableError, match=r"did not take the message .*maximum messages exceeded \(status 503"):
            await out.deliver(event("three", 3))
        await js.purge_stream(f"R_{run}")  # the stream's consumer caught up: the same event goes in when tried again
        await out.deliver(event("three", 3))
        assert (await js.stream_info(f"R_{run}")).state.messages == 1
    finally:
        await out.stop()
        await js.delete_stream(f"R_{run}")
        await connection.close()


async def test_a_rabbitmq_queue_at_its_length_limit_is_busy_not_a_dead_letter() -> None:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    import aio_pika

    queue_name = f"full-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
    channel = await connection.channel()
    arguments: dict[str, Any] = {"x-max-length": 2, "x-overflow": "reject-publish"}
    queue = await channel.declare_queue(queue_name, arguments=arguments, auto_delete=True)
    out = outbound("amqp", {"url": "amqp://guest:guest@127.0.0.1:5672/", "routing_key": queue_name})
    await out.start()
    try:
        await out.deliver(event("one", 1))
        await out.deliver(event("two", 2))
        with pytest.raises(RetryableError, match=r"the broker did not take the message .*a queue at its length limit"):
            await out.deliver(event("three", 3))
        message = await queue.get(timeout=5)  # a consumer takes one: there is room again
        await message.ack()
        await out.deliver(event("three", 3))
        assert (await channel.declare_queue(queue_name, arguments=arguments, auto_delete=True)).declaration_result.message_count == 2
    finally:
        await out.stop()
        await connection.close()


def mqtt_inbound(port: int, topics: list[str], protocol: str = "3.1.1") -> Any:
    from adapters.mqtt.config import MqttInboundConfig
    from adapters.mqtt.inbound import MqttInbound

    spec = {"type": "mqtt", "name": "sensors", "host": "127.0.0.1", "port": port, "topics": topics, "protocol": protocol}
    config = MqttInboundConfig.model_validate({**spec, "persistent_session": False, "emit": {"schema": "Payment"}})
    return MqttInbound(config, bare_context("sensors", "bus.adapter.sensors"))  # the subscription is looked at; no message read


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_an_mqtt_subscription_granted_at_qos_0_only_is_said(protocol: str, caplog: pytest.LogCaptureFixture) -> None:
    """Such messages come without an acknowledgement: one in flight when the hub stops is lost."""
    with private_mosquitto("max_qos 0") as port:
        inbound = mqtt_inbound(port, ["plant/+/temp"], protocol)
        with caplog.at_level(logging.WARNING):
            await inbound.open()
        try:
            said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert len(said) == 1 and "granted 'plant/+/temp' at QoS 0 only" in said[0]
            assert "in flight when the hub stops" in inbound.attention()
        finally:
            await inbound.close()
    with private_mosquitto() as port:  # a broker that allows QoS 1 says nothing
        inbound = mqtt_inbound(port, ["plant/+/temp"], protocol)
        caplog.clear()
        await inbound.open()
        await inbound.close()
        assert inbound.attention() == "" and not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_an_mqtt_subscription_the_broker_refuses_fails_the_start_saying_so() -> None:
    """Mosquitto grants any subscription and filters by its ACL later; brokers such as HiveMQ, EMQX
    or AWS IoT refuse a denied filter in the SUBACK (0x80). A stand-in broker answers as they do:
    the adapter looked subscribed, and nothing ever came."""
    refused_filter = "plant/secret/#"

    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readexactly(1)
            length, shift = 0, 0
            while True:  # the remaining length, a variable byte integer
                byte = (await reader.readexactly(1))[0]
                length += (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    break
            body = await reader.readexactly(length)
            kind = head[0] & 0xF0
            if kind == 0x10:  # CONNECT: accepted
                writer.write(bytes([0x20, 2, 0, 0]))
            elif kind == 0x80:  # SUBSCRIBE (one filter per packet, as paho sends them): 0x80 for the denied one
                packet_id, name_length = body[:2], int.from_bytes(body[2:4], "big")
                name = body[4 : 4 + name_length].decode()
                writer.write(bytes([0x90, 3]) + packet_id + bytes([0x80 if name == refused_filter else 1]))
            elif kind == 0xC0:  # PINGREQ
                writer.write(bytes([0xD0, 0]))
            elif kind == 0xE0:  # DISCONNECT
                break
            await writer.drain()

    async with tcp_server(broker) as port:
        inbound = mqtt_inbound(port, ["plant/+/temp", refused_filter])
        with pytest.raises(RetryableError, match=r"the broker refused the subscription to 'plant/secret/#': .*\(0x80\)"):
            await inbound.open()
        assert not inbound.connected()
        inbound = mqtt_inbound(port, ["plant/+/temp"])  # the filters it grants: started
        await inbound.open()
        assert inbound.connected()
        await inbound.close()


async def test_an_mqtt_5_broker_that_takes_qos_0_only_keeps_the_outbound_from_starting_saying_why() -> None:
    """Every QoS 1 publish cost the connection and was retried, for a day, as "Operation timed out"."""
    with private_mosquitto("max_qos 0") as port:
        out = outbound("mqtt", {"host": "127.0.0.1", "port": port, "topic": "x", "protocol": "5", "timeout_s": 5})
        with pytest.raises(RetryableError, match=r"takes QoS 0 only \(its Maximum QoS\)"):
            await out.start()
        assert not (await out.health()).ok


async def test_a_message_over_rabbitmqs_max_message_size_is_refused_and_does_not_take_the_channel_down_again() -> None:
    """RabbitMQ answers a message over its max_message_size by closing the channel: every other
    publish on it failed for seconds, on every try of that one event (retried for a day as a
    broker fault). It is now a dead letter with the broker's limit, learnt from that answer, and a
    larger message after it is refused before it is sent. A node of the test's own, set to 2,000 bytes."""
    with private_rabbitmq("max_message_size = 2000") as node:
        url = node.url
        import aio_pika

        queue_name = f"sized-{uuid.uuid4().hex[:8]}"
        connection = await aio_pika.connect(url)
        queue = await (await connection.channel()).declare_queue(queue_name, durable=True)
        out = outbound("amqp", {"url": url, "routing_key": queue_name, "timeout_s": 5})
        await out.start()
        try:
            await out.deliver(event("small", 1))
            with pytest.raises(PermanentError, match=r"over the 2,000 the broker takes \(its max_message_size\)"):
                await out.deliver(event("a" * 3000, 2))
            for _ in range(100):  # the broker closed the channel; aio-pika opens it again within seconds
                try:
                    await out.deliver(event("small", 3))
                    break
                except RetryableError:
                    await asyncio.sleep(0.2)
            else:
                pytest.fail("the channel was not opened again")
            with pytest.raises(PermanentError, match=r"over the 2,000 the broker takes"):
                await out.deliver(event("a" * 3000, 4))
            await out.deliver(event("small", 5))  # at once: the larger one was not sent, the channel stayed open
            assert (await queue.channel.declare_queue(queue_name, durable=True)).declaration_result.message_count == 3
        finally:
            await out.stop()
            await connection.close()


async def test_nats_and_rabbitmq_over_mutual_tls(tmp_path: Path) -> None:
    """Production NATS and RabbitMQ servers take TLS, often asking every client for a certificate:
    the hub had no way to give one (nor a CA of the server's own). Servers of the test's own ask
    for a certificate signed by the test's CA: with the hub's, events are delivered; without one,
    the outbound cannot start, saying why; a tls block on a plain amqp:// url is a config error."""
    from pydantic import ValidationError

    from adapters.amqp.config import AmqpOutboundConfig
    from tests.support.certs import Authority
    from tests.support.nats_private import private_nats

    authority = Authority(tmp_path / "pki")
    server, hub = authority.issue("server", server=True), authority.issue("hub")
    files = {"ca.pem": authority.cert, "server.pem": server.cert, "server.key": server.key}
    with_cert = {"ca": str(authority.cert), "cert": str(hub.cert), "key": str(hub.key)}
    without = {"ca": str(authority.cert)}

    tls = 'tls { cert_file: "{dir}/server.pem", key_file: "{dir}/server.key", ca_file: "{dir}/ca.pem", verify: true }'
    with private_nats(tls, files=files) as port:
        url = f"tls://127.0.0.1:{port}"
        out = outbound("nats", {"url": url, "subject": "secure.x", "tls": with_cert})
        await out.start()
        try:
            js = out._connection.jetstream()
            await js.add_stream(name="SECURE", subjects=["secure.>"])
            await out.deliver(event("one", 1))
            assert (await js.stream_info("SECURE")).state.messages == 1
        finally:
            await out.stop()
        refused = outbound("nats", {"url": url, "subject": "secure.x", "tls": without})
        # The refusal the client meets is a TLS alert or, under load, a broken pipe: either way it is said what to check.
        with pytest.raises(
            RetryableError, match=rf"cannot connect to NATS at tls://127.0.0.1:{port}: .*last: .*it may want a client certificate"
        ):
            await refused.start()

    ssl_listener = (
        "listeners.ssl.default = 127.0.0.1:{tls_port}",
        "ssl_options.cacertfile = {dir}/ca.pem",
        "ssl_options.certfile = {dir}/server.pem",
        "ssl_options.keyfile = {dir}/server.key",
        "ssl_options.verify = verify_peer",
        "ssl_options.fail_if_no_peer_cert = true",
    )
    with private_rabbitmq(*ssl_listener, files=files) as node:
        plain_url, tls_port = node.url, node.tls_port
        url = f"amqps://guest:guest@127.0.0.1:{tls_port}/"
        queue_name = f"secure-{uuid.uuid4().hex[:8]}"
        out = outbound("amqp", {"url": url, "routing_key": queue_name, "declare_queue": queue_name, "tls": with_cert})
        await out.start()
        try:
            await out.deliver(event("one", 1))
        finally:
            await out.stop()
        import aio_pika

        connection = await aio_pika.connect(plain_url)
        try:
            queue = await (await connection.channel()).declare_queue(queue_name, durable=True, passive=True)
            assert queue.declaration_result.message_count == 1
        finally:
            await connection.close()
        refused = outbound("amqp", {"url": url, "routing_key": queue_name, "tls": without})
        with pytest.raises(RetryableError, match=rf"cannot connect to AMQP broker 127.0.0.1:{tls_port}"):
            await refused.start()

    with pytest.raises(ValidationError, match="tls is for an amqps:// url"):
        AmqpOutboundConfig.model_validate({"name": "o", "type": "amqp", "url": "amqp://h/", "routing_key": "k", "tls": with_cert})
