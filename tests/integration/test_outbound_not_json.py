"""JSON has no NaN and no infinity. An event holding one (a source's double precision, an average
of nothing) was written by every outbound but HTTP as the bare word ``NaN``: a message, record or
line its consumer's JSON parser refuses, or takes for a broken one, far from where it came from.
Each outbound now refuses it with PermanentError naming the field (a dead letter), sends nothing
of it, and goes on: on the real brokers of this machine, and a folder."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from bus.adapter_api import Context, Event, PermanentError
from bus.kafka.reader import read_topic
from tests.conftest import require_service

SERVICES = {"amqp": ("RabbitMQ", 5672), "nats": ("NATS", 4222), "mqtt": ("Mosquitto", 1883)}


def adapter(kind: str, run: str, tmp_path: Path, bootstrap: str) -> Any:
    body = {"id": "$id", "reading": "value", "tags": "tags"}
    if kind == "amqp":
        from adapters.amqp.config import AmqpOutboundConfig as Config
        from adapters.amqp.outbound import AmqpOutbound as Adapter

        spec: dict[str, Any] = {"url": "amqp://guest:guest@127.0.0.1:5672/", "routing_key": f"nan.{run}", "declare_queue": f"nan.{run}"}
    elif kind == "nats":
        from adapters.nats.config import NatsOutboundConfig as Config  # type: ignore[assignment]
        from adapters.nats.outbound import NatsOutbound as Adapter  # type: ignore[assignment]

        spec = {"url": "nats://127.0.0.1:4222", "subject": f"nan{run}.out"}
    elif kind == "mqtt":
        from adapters.mqtt.config import MqttOutboundConfig as Config  # type: ignore[assignment]
        from adapters.mqtt.outbound import MqttOutbound as Adapter  # type: ignore[assignment]

        spec = {"host": "127.0.0.1", "topic": f"nan/{run}"}
    elif kind == "kafka":
        from adapters.kafka.config import KafkaOutboundConfig as Config  # type: ignore[assignment]
        from adapters.kafka.outbound import KafkaOutbound as Adapter  # type: ignore[assignment]

        spec = {"bootstrap": bootstrap, "topic": f"nan.{run}"}
    else:
        from adapters.file.config import FileOutboundConfig as Config  # type: ignore[assignment]
        from adapters.file.outbound import FileOutbound as Adapter  # type: ignore[assignment]

        spec = {"path": str(tmp_path / "out"), "roll_every": "1s"}
    config = Config.model_validate({"name": "metrics", "type": kind, "body": body, **spec})
    return Adapter(config, Context("metrics", logging.getLogger("test")))  # type: ignore[arg-type]


def reading(i: int, value: float, tags: list[float]) -> Event:
    return Event(schema="UsageMetric", data={"value": value, "tags": tags}, source="/t", id=f"m{i}")


@pytest.mark.parametrize("kind", ["amqp", "nats", "mqtt", "kafka", "file"])
async def test_a_nan_or_an_infinity_is_refused_naming_its_field_and_nothing_of_it_is_sent(
    kind: str, tmp_path: Path, bootstrap: str
) -> None:
    if kind in SERVICES:
        require_service(SERVICES[kind][0], "127.0.0.1", SERVICES[kind][1])
    if kind == "nats":
        import nats

        connection = await nats.connect("nats://127.0.0.1:4222")
    run = uuid.uuid4().hex[:8]
    if kind == "nats":
        await connection.jetstream().add_stream(name=f"NAN_{run}", subjects=[f"nan{run}.>"])
    out = adapter(kind, run, tmp_path, bootstrap)
    await out.start()
    try:
        await out.deliver(reading(1, 1.5, [0.25]))
        with pytest.raises(PermanentError, match=r"'s reading is not a number JSON can carry"):
            await out.deliver(reading(2, float("nan"), []))
        with pytest.raises(PermanentError, match=r"'s tags\[1\] is not a number JSON can carry"):
            await out.deliver(reading(3, 1.0, [1.0, float("-inf")]))
        await out.deliver(reading(4, 2.5, []))  # and it goes on
    finally:
        await out.stop()

    sent: list[bytes]
    if kind == "amqp":
        connection = await aio_pika.connect_robust("amqp://guest:guest@127.0.0.1:5672/")
        async with connection:
            queue = await (await connection.channel()).get_queue(f"nan.{run}")
            sent = []
            while (message := await queue.get(fail=False)) is not None:
                sent.append(message.body)
                await message.ack()
            await queue.delete(if_unused=False, if_empty=False)
    elif kind == "nats":
        info = await connection.jetstream().stream_info(f"NAN_{run}")
        assert info.state.messages == 2
        messages = await (await connection.jetstream().pull_subscribe(f"nan{run}.>", stream=f"NAN_{run}")).fetch(10, timeout=2)
        sent = [m.data for m in messages]
        await connection.jetstream().delete_stream(f"NAN_{run}")
        await connection.close()
    elif kind == "kafka":
        from bus.config.models import KafkaConfig

        sent = [r.value or b"" for r in await read_topic(KafkaConfig(bootstrap=bootstrap, topic_prefix="x"), bootstrap, f"nan.{run}")]
    elif kind == "file":
        sent = [line for f in sorted((tmp_path / "out").iterdir()) for line in f.read_bytes().splitlines()]
    else:
        return  # MQTT keeps nothing for a topic without a subscriber: the refusals above are the proof
    assert sorted((json.loads(m) for m in sent), key=lambda m: m["id"]) == [
        {"id": "m1", "reading": 1.5, "tags": [0.25]},
        {"id": "m4", "reading": 2.5, "tags": []},
    ]
