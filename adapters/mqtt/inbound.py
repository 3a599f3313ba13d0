"""``mqtt`` inbound: subscribe with QoS 1; acknowledge (PUBACK) each message once Kafka has its event.

paho-mqtt acknowledges on receipt unless told otherwise; its ``manual_ack`` mode, which aiomqtt
does not expose, is switched on here so a message the hub has not stored is never acknowledged:
with a persistent session the broker delivers it again after a restart. Messages are handed to
Kafka in arrival order and acknowledged in that order.
"""

from __future__ import annotations

__all__ = ["MqttInbound"]

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, ClassVar

import aiomqtt

from adapters.mqtt.config import MqttInboundConfig
from bus.adapter_api import Context, Health, Inbound, Intake, KafkaUnavailable, RetryableError, stop_in_order


def client_for(config: Any, identifier: str | None, *, persistent: bool) -> aiomqtt.Client:
    return aiomqtt.Client(
        config.host,
        config.port,
        username=config.username,
        password=config.password.get_secret_value() if config.password else None,
        identifier=identifier,
        clean_session=not persistent,
        timeout=10,
    )


async def connect(client: aiomqtt.Client, config: Any) -> None:
    try:
        await client.__aenter__()
    except aiomqtt.MqttError as exc:
        raise RetryableError(f"mqtt {config.name}: cannot connect to {config.host}:{config.port}: {exc}") from exc


class MqttInbound(Inbound[MqttInboundConfig]):
    Config: ClassVar[type[MqttInboundConfig]] = MqttInboundConfig
    summary: ClassVar[str] = "Subscribe to MQTT topics (QoS 1); acknowledge only after Kafka acknowledged."

    def __init__(self, config: MqttInboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._intake = Intake(self.sink, config.emit, source=f"/inbound/{config.name}")
        self._client: aiomqtt.Client | None = None
        self._pending: asyncio.Queue[tuple[Any, Awaitable[None] | None]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if self._client is not None:
            return
        client = client_for(self.config, self.config.client_id or f"bus-{self.config.name}", persistent=self.config.persistent_session)
        client._client._manual_ack = True  # acknowledge after Kafka's ack, not on receipt (see the module docstring)
        await connect(client, self.config)
        try:
            for topic in self.config.topics:
                await client.subscribe(topic, qos=1)
        except aiomqtt.MqttError as exc:
            await client.__aexit__(None, None, None)
            raise RetryableError(f"mqtt {self.config.name}: cannot subscribe to {self.config.topics}: {exc}") from exc
        self._client = client
        self._tasks = [
            self.ctx.spawn(self._consume(client), name=f"mqtt-consume:{self.config.name}"),
            self.ctx.spawn(self._acknowledge(client), name=f"mqtt-ack:{self.config.name}"),
        ]
        self.ctx.logger.info("mqtt %s subscribed to %s on %s:%d", self.config.name, self.config.topics, self.config.host, self.config.port)

    async def _consume(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            origin = {"bus_origin": f"mqtt:{message.topic}"}
            while True:
                try:
                    ack = await self._intake.submit(payload, origin=origin)
                    break
                except KafkaUnavailable as exc:
                    # MQTT has no negative ack: hold the message (and the ones behind it) and try again.
                    self.ctx.logger.warning("mqtt %s: %s; retrying", self.config.name, exc)
                    await asyncio.sleep(1)
            await self._pending.put((message, ack))

    async def _acknowledge(self, client: aiomqtt.Client) -> None:
        while True:
            message, ack = await self._pending.get()
            try:
                while ack is not None:
                    try:
                        await ack
                        break
                    except KafkaUnavailable as exc:
                        self.ctx.logger.warning("mqtt %s: %s; not acknowledged, the broker will redeliver", self.config.name, exc)
                        ack = None
                        message = None
                if message is not None and message.qos > 0:
                    client._client.ack(message.mid, message.qos)
            finally:
                self._pending.task_done()

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        if tasks:
            consume, acknowledge = tasks
            await stop_in_order(consume, self._pending, acknowledge)
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)

    async def health(self) -> Health:
        return Health(self._client is not None, "" if self._client is not None else "not connected to the MQTT broker")
