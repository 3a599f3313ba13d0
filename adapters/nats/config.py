"""Config models of the NATS JetStream adapter family."""

from __future__ import annotations

__all__ = ["NatsInboundConfig", "NatsOutboundConfig"]

from typing import Literal

from pydantic import Field, SecretStr

from bus.adapter_api import AdapterConfig, BodyMap, EmitSpec, OutboundConfig, TemplateText, TlsConnection


class _Server(TlsConnection, AdapterConfig):
    url: SecretStr = Field(
        description="Server URL (may hold a token or password: use ${ENV}); tls:// for TLS.", examples=["nats://nats:4222"]
    )


class NatsInboundConfig(_Server):
    """Pull messages from a JetStream stream through a durable consumer. Each message is
    acknowledged only after Kafka has its event (a negative ack with a delay while Kafka cannot
    acknowledge); the durable consumer resumes where it stopped after a restart."""

    type: Literal["nats"] = "nats"
    stream: str = Field(description="JetStream stream.", examples=["ORDERS"])
    subject: str = Field(description="Subject filter; * and > wildcards.", examples=["orders.>"])
    durable: str | None = Field(default=None, description="Durable consumer name; default bus-<name>.")
    declare: bool = Field(default=True, description="Create the stream (file storage, the subject) if it does not exist.")
    batch: int = Field(default=100, ge=1, le=10_000, description="Messages fetched at once (and in flight).")
    emit: EmitSpec = Field(description="How the JSON payload becomes a canonical event.")


class NatsOutboundConfig(OutboundConfig, _Server):
    """Publish each event to JetStream: delivered once the stream acknowledged it. The event id is
    the Nats-Msg-Id header, so the stream itself drops a repeat within its duplicate window."""

    type: Literal["nats"] = "nats"
    subject: TemplateText = Field(description="Subject: a ${} template over the event's fields.", examples=["billing.invoices.${currency}"])
    body: BodyMap = Field(
        default=None,
        description="Payload field -> expression over the event's fields ($id, $type... for metadata). Default: the event's fields.",
    )
    timeout_s: float = Field(default=10.0, gt=0, description="How long to wait for the stream's acknowledgement; then retry.")
