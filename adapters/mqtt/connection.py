"""Reaching an MQTT broker, for the ``mqtt`` inbound and outbound alike.

The inbound acknowledges (PUBACK) a message only once Kafka has its event. paho-mqtt, under
aiomqtt, acknowledges on receipt unless its ``manual_ack`` mode is on; aiomqtt does not expose
it, nor the paho client it wraps. ``PahoAcks`` is the one place that reaches it (through
aiomqtt's ``_client``), checked when the adapter starts so a change in aiomqtt fails the start
with a clear error instead of acknowledging messages the hub has not stored.
"""

from __future__ import annotations

__all__ = ["PahoAcks", "client_for", "connect", "publish_properties", "user_property"]

from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bus.adapter_api import RetryableError

# How long an MQTT 5 broker keeps a persistent session (and the messages not yet acknowledged)
# after the hub disconnects; 3.1.1 sessions have no expiry.
SESSION_EXPIRY_S = 7 * 24 * 3600


def client_for(config: Any, identifier: str | None, *, persistent: bool) -> aiomqtt.Client:
    credentials = {"username": config.username, "password": config.password.get_secret_value() if config.password else None}
    if config.protocol == "5":
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = SESSION_EXPIRY_S if persistent else 0
        return aiomqtt.Client(
            config.host,
            config.port,
            **credentials,
            identifier=identifier,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=not persistent,
            properties=properties,
            timeout=10,
        )
    return aiomqtt.Client(config.host, config.port, **credentials, identifier=identifier, clean_session=not persistent, timeout=10)


def user_property(message: aiomqtt.Message, name: str) -> str | None:
    """An MQTT 5 user property of a received message (None on 3.1.1, which has none)."""
    for key, value in getattr(message.properties, "UserProperty", None) or ():
        if key == name:
            return str(value)
    return None


def publish_properties(**user: str) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.UserProperty = list(user.items())
    return properties


async def connect(client: aiomqtt.Client, config: Any) -> None:
    try:
        await client.__aenter__()
    except aiomqtt.MqttError as exc:
        raise RetryableError(f"mqtt {config.name}: cannot connect to {config.host}:{config.port}: {exc}") from exc


class PahoAcks:
    """Manual acknowledgement on an aiomqtt client: set before connecting, ``ack`` per message."""

    def __init__(self, client: aiomqtt.Client) -> None:
        paho = getattr(client, "_client", None)
        if paho is None or not hasattr(paho, "manual_ack_set") or not hasattr(paho, "ack"):
            raise RuntimeError(
                f"aiomqtt {getattr(aiomqtt, '__version__', '?')} no longer wraps a paho client as before: "
                "manual acknowledgement cannot be switched on, so messages would be acknowledged before Kafka has them"
            )
        paho.manual_ack_set(True)  # paho's public switch for what aiomqtt does not expose
        self._paho = paho

    def ack(self, message: aiomqtt.Message) -> None:
        if message.qos > 0:
            self._paho.ack(message.mid, message.qos)
