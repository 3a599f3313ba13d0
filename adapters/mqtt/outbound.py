"""``mqtt`` outbound: publish each event as JSON with QoS 1; delivered once the broker acknowledged.

A broker that does not answer within ``timeout_s`` or a lost connection is retried (the
connection is made again). MQTT 3.1.1 has no message id field: the event id travels in the
payload when the ``body`` maps ``$id``, so subscribers can drop repeats.
"""

from __future__ import annotations

__all__ = ["MqttOutbound"]

import contextlib
from typing import ClassVar

import aiomqtt

from adapters.mqtt.config import MqttOutboundConfig
from adapters.mqtt.connection import client_for, connect, publish_properties
from bus.adapter_api import Body, Context, Event, Health, Outbound, RetryableError, compile_template, one_level, target_json


class MqttOutbound(Outbound[MqttOutboundConfig]):
    Config: ClassVar[type[MqttOutboundConfig]] = MqttOutboundConfig
    summary: ClassVar[str] = "Publish each event as a JSON message (QoS 1) to an MQTT topic."

    def __init__(self, config: MqttOutboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._body = Body(config.body)
        # A value is one topic level: '/' would publish a level deeper (another account's topic).
        self._topic = compile_template(config.topic, escape=one_level("the MQTT topic", "/+#"))
        self._client: aiomqtt.Client | None = None

    async def start(self) -> None:
        if self._client is None:
            client = client_for(self.config, None, persistent=False)
            await connect(client, self.config)
            self._client = client

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)

    async def health(self) -> Health:
        return Health(self._client is not None, "" if self._client is not None else "not connected to the MQTT broker")

    async def deliver(self, event: Event) -> None:
        if self._client is None:
            await self.start()  # a lost connection is made again here; failing raises RetryableError
        assert self._client is not None
        topic = self._topic(event.data, event.meta())
        payload = target_json(self._body.render(event), "message")
        try:
            # MQTT 5: the trace continues to the subscribers (a user property, as the W3C MQTT draft has it).
            properties = publish_properties(traceparent=event.traceparent) if self.config.protocol == "5" else None
            await self._client.publish(
                topic, payload, qos=1, retain=self.config.retain, timeout=self.config.timeout_s, properties=properties
            )
        except aiomqtt.MqttError as exc:
            await self.stop()
            raise RetryableError(f"mqtt publish to {topic!r} on {self.config.host}:{self.config.port} failed: {exc}") from exc
