"""``mqtt`` outbound: publish each event as JSON with QoS 1; delivered once the broker acknowledged.

A broker that does not answer within ``timeout_s`` or a lost connection is retried (the
connection is made again). MQTT 3.1.1 has no message id field: the event id travels in the
payload when the ``body`` maps ``$id``, so subscribers can drop repeats.

On MQTT 5 the broker's answer is read: a message it refuses for good (its PUBACK says not
authorized, topic name invalid or payload format invalid) is permanent, a dead letter with the
broker's reason; one it refuses for now (quota exceeded, unspecified) is retried. A message
larger than the broker's Maximum Packet Size is permanent before it is sent (sent, the broker
closes the connection, on every try). A broker whose Maximum QoS is 0 fails the start, retried,
with that reason: it would close the connection on every QoS 1 publish. A 3.1.1 broker
acknowledges a message it drops (an ACL's denial, its ``message_size_limit``) as one it stores:
use ``protocol: "5"`` to hear of it.
"""

from __future__ import annotations

__all__ = ["MqttOutbound"]

import contextlib
from typing import ClassVar

import aiomqtt

from adapters.mqtt.config import MqttOutboundConfig
from adapters.mqtt.connection import (
    REFUSED_FOR_GOOD,
    PublishOutcomes,
    Server,
    client_for,
    connect_first,
    publish_packet_size,
    publish_properties,
)
from bus.adapter_api import Body, Context, Event, Health, Outbound, PermanentError, RetryableError, compile_template, one_level, target_json


class MqttOutbound(Outbound[MqttOutboundConfig]):
    Config: ClassVar[type[MqttOutboundConfig]] = MqttOutboundConfig
    summary: ClassVar[str] = "Publish each event as a JSON message (QoS 1) to an MQTT topic."

    def __init__(self, config: MqttOutboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._body = Body(config.body)
        # A value is one topic level: '/' would publish a level deeper (another account's topic).
        self._topic = compile_template(config.topic, escape=one_level("the MQTT topic", "/+#"))
        self._client: aiomqtt.Client | None = None
        self._server: tuple[str, int] | None = None  # the broker node connected to last
        self._outcomes: PublishOutcomes | None = None

    async def start(self) -> None:
        if self._client is not None:
            return

        def make(server: Server) -> tuple[aiomqtt.Client, PublishOutcomes]:
            client = client_for(self.config, None, persistent=False, server=server)
            return client, PublishOutcomes(client)  # before connecting: the CONNACK's limits are read

        client, outcomes, server = await connect_first(self.config, self._server, make)
        if outcomes.maximum_qos == 0:  # every QoS 1 publish would cost the connection: not ready, saying why
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)
            raise RetryableError(
                f"mqtt {self.config.name}: the broker at {server[0]}:{server[1]} takes QoS 0 only (its "
                "Maximum QoS): the hub publishes at QoS 1, so that the broker confirms each message; allow QoS 1 there"
            )
        self._client, self._outcomes, self._server = client, outcomes, server

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
        assert self._client is not None and self._outcomes is not None
        topic = self._topic(event.data, event.meta())
        payload = target_json(self._body.render(event), "message").encode()
        # MQTT 5: the trace continues to the subscribers (a user property, as the W3C MQTT draft has it).
        properties = publish_properties(traceparent=event.traceparent) if self.config.protocol == "5" else None
        where = f"{topic!r} on {self._server[0]}:{self._server[1]}" if self._server else repr(topic)
        largest = self._outcomes.maximum_packet_size
        if largest is not None and (size := publish_packet_size(topic, payload, properties, protocol=self.config.protocol)) > largest:
            raise PermanentError(f"the message is a {size:,}-byte packet, over the {largest:,} bytes the broker takes, for {where}")
        try:
            await self._client.publish(
                topic, payload, qos=1, retain=self.config.retain, timeout=self.config.timeout_s, properties=properties
            )
        except aiomqtt.MqttError as exc:
            await self.stop()
            raise RetryableError(f"mqtt publish to {where} failed: {exc}") from exc
        refused = self._outcomes.refusal()
        if refused is not None:
            said = f"the broker refused the message for {where}: {refused} (reason code 0x{refused.value:02x})"
            raise PermanentError(said) if refused.value in REFUSED_FOR_GOOD else RetryableError(said)
