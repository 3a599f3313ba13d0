"""Destinations built from an event's values: a value is one level of an MQTT topic or a NATS
subject, and a Kafka topic or an AMQP routing key the broker takes, or the event is refused with
the reason (a dead letter), before anything is sent. A value holding the separator published one
level deeper, where another account's subscribers listen; one holding a wildcard, a control
character, or too long, was refused by the broker on every try: retried for a day, as if the
broker were down, its key's later events held behind it."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import pytest

from bus.adapter_api import Event, PermanentError
from tests.conftest import require_service
from tests.support.outbounds import outbound


def event(account: str, i: int = 0) -> Event:
    return Event(schema="UsageMetric", data={"account": account, "value": 1.0}, source="/t", id=f"e{i}")


async def test_an_mqtt_topic_value_is_one_level_and_cannot_reach_another_accounts_topic() -> None:
    require_service("Mosquitto", "127.0.0.1", 1883)
    import aiomqtt

    run = uuid.uuid4().hex[:8]
    out = outbound("mqtt", {"host": "127.0.0.1", "topic": f"t{run}/accounts/${{account}}/alerts"})
    received: list[str] = []
    async with aiomqtt.Client("127.0.0.1", 1883) as listener:
        await listener.subscribe(f"t{run}/accounts/victim/#", qos=1)  # what the victim account's devices listen to

        async def listen() -> None:
            async for message in listener.messages:
                received.append(str(message.topic))

        task = asyncio.create_task(listen())
        await out.start()
        try:
            for value, refused in (("victim/alerts/forged", "'/'"), ("a+b", "'+'"), ("a#", "'#'"), ("a\x00b", "'\\x00'")):
                with pytest.raises(PermanentError, match=r"the MQTT topic: the value .* holds " + re.escape(refused)):
                    await out.deliver(event(value))
            await out.deliver(event("victim"))  # its own account: delivered
            for _ in range(50):
                if received:
                    break
                await asyncio.sleep(0.1)
        finally:
            await out.stop()
            task.cancel()
    assert received == [f"t{run}/accounts/victim/alerts"]


async def test_a_nats_subject_value_is_one_token() -> None:
    require_service("NATS", "127.0.0.1", 4222)
    import nats

    run = uuid.uuid4().hex[:8]
    connection = await nats.connect("nats://127.0.0.1:4222")
    stream = connection.jetstream()
    await stream.add_stream(name=f"DEST_{run}", subjects=[f"d{run}.>"])
    out = outbound("nats", {"url": "nats://127.0.0.1:4222", "subject": f"d{run}.accounts.${{account}}.alerts"})
    await out.start()
    try:
        for value, refused in (
            ("victim.alerts.forged", "holds '.'"),
            ("a*", "holds '\\*'"),
            ("a>", "holds '>'"),
            ("a b", "holds ' '"),
            ("", "is empty"),
        ):
            with pytest.raises(PermanentError, match=rf"the NATS subject: .*{refused}"):
                await out.deliver(event(value))
        await out.deliver(event("victim"))
        assert (await stream.stream_info(f"DEST_{run}")).state.messages == 1
    finally:
        await out.stop()
        await stream.delete_stream(f"DEST_{run}")
        await connection.close()


async def test_a_kafka_topic_or_an_amqp_routing_key_the_broker_would_refuse_is_refused_first(bootstrap: str) -> None:
    out = outbound("kafka", {"bootstrap": bootstrap, "topic": "sites.${account}"})
    await out.start()
    try:
        for value in ("a b", "a/b", "x" * 300):
            with pytest.raises(PermanentError, match="is not a Kafka topic name"):
                await out.deliver(event(value))
        await out.deliver(event(f"site-{uuid.uuid4().hex[:6]}.eu_1"))  # dots, dashes and underscores are topic characters
    finally:
        await out.stop()

    require_service("RabbitMQ", "127.0.0.1", 5672)
    amqp = outbound("amqp", {"url": "amqp://guest:guest@127.0.0.1:5672/", "routing_key": "alerts.${account}"})
    await amqp.start()
    try:
        with pytest.raises(PermanentError, match="over AMQP's 255"):
            await amqp.deliver(event("x" * 300))
    finally:
        await amqp.stop()


def test_a_literal_part_of_the_template_is_not_checked(tmp_path: Path) -> None:
    """Only the values from the event are one level each; the config's own text keeps its separators."""
    from bus.expr import compile_template, one_level

    template = compile_template("a/b/${account}/c", escape=one_level("the MQTT topic", "/+#"))
    assert template({"account": "x"}) == "a/b/x/c"
