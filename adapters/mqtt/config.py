"""Config models of the MQTT adapter family (Mosquitto and other MQTT 3.1.1/5 brokers)."""

from __future__ import annotations

__all__ = ["MqttInboundConfig", "MqttOutboundConfig"]

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from bus.adapter_api import AdapterConfig, BodyMap, EmitSpec, OutboundConfig, TemplateText, TlsConnection, whole_number


def _named(hosts: str, port: int) -> list[tuple[str, int]]:
    """(host, port) per comma-separated entry: ``name``, ``name:port``, ``[IPv6]:port`` or a bare IPv6 address."""
    found = []
    for entry in (e.strip() for e in hosts.split(",")):
        if entry.startswith("["):
            name, _, rest = entry[1:].partition("]")
            number = rest.removeprefix(":")
        elif entry.count(":") == 1:
            name, _, number = entry.partition(":")
        else:
            name, number = entry, ""
        given = whole_number(number, 65535) if number else port
        if not given:
            raise ValueError(f"broker {entry!r}: the port must be a number from 1 to 65535")
        found.append((name, given))
    return found


class _Broker(TlsConnection, AdapterConfig):
    host: str = Field(
        description="Broker host; the nodes of a cluster, comma-separated, each with its own port if not `port` "
        "(`emqx-0,emqx-1,emqx-2:8884`): a start takes the first that answers; after a lost connection the node it was on "
        "is tried first, then the others.",
        examples=["mosquitto", "emqx-0.emqx,emqx-1.emqx"],
    )
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port (8883 is MQTT over TLS's, with `tls:`).")
    username: str | None = Field(default=None, description="User, if the broker asks for one.")
    password: SecretStr | None = Field(default=None, description="Password (use ${ENV}).")

    @field_validator("host")
    @classmethod
    def _hosts(cls, host: str) -> str:
        for name, port in _named(host, 1883):  # ValueError naming the entry that cannot be read
            if not name:
                raise ValueError(f"host names an empty broker in {host!r}")
            if not 0 < port < 65536:
                raise ValueError(f"broker {name}:{port}: the port must be from 1 to 65535")
        return host

    def servers(self) -> list[tuple[str, int]]:
        """(host, port) of each node ``host`` names, in order."""
        return _named(self.host, self.port)

    protocol: Literal["3.1.1", "5"] = Field(
        default="3.1.1",
        description='MQTT version. "5" carries the W3C traceparent as a user property both ways (a trace continues '
        "from a device through the hub to a subscriber); a persistent session then lasts a week after a disconnect.",
    )


class MqttInboundConfig(_Broker):
    """Subscribe to topics (QoS 1) and turn each JSON message into an event. A message is
    acknowledged (PUBACK) only after Kafka has its event; with a persistent session (the default),
    the broker redelivers what was not acknowledged after a restart. A message that cannot become
    an event goes to the inbound dead-letter topic with the reason, then is acknowledged."""

    type: Literal["mqtt"] = "mqtt"
    topics: list[str] = Field(min_length=1, description="Topic filters; + and # wildcards.", examples=[["sensors/+/usage"]])
    client_id: str | None = Field(default=None, description="Client id of the persistent session; default bus-<name>.")
    persistent_session: bool = Field(default=True, description="Keep the session (and unacknowledged messages) across restarts.")
    empty: Literal["dead_letter", "skip"] = Field(
        default="dead_letter",
        description="A message with no payload (how MQTT clears a topic's retained message: its subscribers receive one): "
        "dead_letter parks it on the inbound dead letters saying so; skip passes over it, counted as "
        '`bus_inbound_events_total{outcome="skipped"}` and in the adapter\'s progress.',
    )
    emit: EmitSpec = Field(description="How the JSON payload becomes a canonical event.")


class MqttOutboundConfig(OutboundConfig, _Broker):
    """Publish each event as a JSON message with QoS 1: delivered once the broker acknowledged it."""

    type: Literal["mqtt"] = "mqtt"
    topic: TemplateText = Field(description="Topic: a ${} template over the event's fields.", examples=["accounts/${account_id}/alerts"])
    retain: bool = Field(default=False, description="Ask the broker to keep the last message per topic.")
    body: BodyMap = Field(
        default=None,
        description="Payload field -> expression over the event's fields ($id, $type... for metadata). Default: the event's fields.",
    )
    timeout_s: float = Field(default=10.0, gt=0, description="How long to wait for the broker's acknowledgement; then retry.")
