"""Config models of the AMQP adapter family (RabbitMQ and other AMQP 0-9-1 brokers)."""

from __future__ import annotations

__all__ = ["AmqpInboundConfig", "AmqpOutboundConfig", "Binding"]

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from adapters.amqp.connection import broker_servers
from bus.adapter_api import AdapterConfig, BodyMap, ConfigModel, EmitSpec, OutboundConfig, TemplateText, TlsConnection


class _Broker(TlsConnection):
    url: SecretStr = Field(
        description="Broker URL (may hold a password: use ${ENV}); amqps:// for TLS. The nodes of a cluster, comma-separated "
        "(`amqp://hub:${RABBIT_PASSWORD}@rabbit-0:5672,rabbit-1:5672,rabbit-2:5672/erp`): a start takes the first that "
        "answers, and after a node is lost the adapter reconnects to the next.",
        examples=["amqp://guest:guest@rabbitmq:5672/", "amqps://hub:${RABBIT_PASSWORD}@rabbit-0:5671,rabbit-1:5671/erp"],
    )

    @model_validator(mode="after")
    def _tls_needs_amqps(self) -> _Broker:
        url = self.url.get_secret_value()
        if "${" in url.partition("://")[0]:  # the whole url from the environment, not resolved at this point
            return self
        if self.tls is not None and not url.startswith("amqps://"):
            raise ValueError("tls is for an amqps:// url (TLS); this url is plain AMQP")
        if "${" not in url:  # a password from the environment, say: checked once resolved, when the adapter connects
            broker_servers(url)  # ValueError saying what is wrong with it, at load
        return self


QueueArguments = dict[str, str | int | bool]
_QUEUE_ARGUMENTS = (
    "Arguments of a queue the hub makes (x-queue-type: quorum, x-message-ttl, x-dead-letter-exchange...). A queue that "
    "exists is used as it is, whatever its type and arguments (an operator's quorum queue): it is not declared again."
)


class Binding(ConfigModel):
    """Bind the queue to an exchange, so messages published there reach it."""

    exchange: str = Field(
        description="Exchange name (declared durable, of `exchange_type`, if missing; one that exists is used as it is).",
        examples=["orders"],
    )
    exchange_type: Literal["direct", "topic", "fanout", "headers"] = Field(default="topic", description="Exchange type.")
    routing_key: str = Field(default="#", description="Binding key.", examples=["order.created"])


class AmqpInboundConfig(_Broker, AdapterConfig):
    """Consume JSON messages from a queue. Each message is acknowledged only after Kafka has its
    event; a message that cannot become one goes to the inbound dead-letter topic with the reason,
    then is acknowledged. While Kafka cannot take an event, its message is held (reading stops behind it)."""

    type: Literal["amqp"] = "amqp"
    queue: str = Field(description="Queue to consume.", examples=["erp.orders"])
    declare: bool = Field(default=True, description="Declare the queue (durable) if it does not exist.")
    queue_arguments: QueueArguments = Field(default_factory=dict, description=_QUEUE_ARGUMENTS, examples=[{"x-queue-type": "quorum"}])
    bindings: list[Binding] = Field(default_factory=list, description="Exchanges to bind the queue to (needs declare).")
    prefetch: int = Field(default=100, ge=1, le=10_000, description="Messages in flight at once (unacknowledged).")
    emit: EmitSpec = Field(description="How the JSON body becomes a canonical event.")

    @model_validator(mode="after")
    def _declaring(self) -> AmqpInboundConfig:
        if not self.declare:
            unused = [name for name in ("bindings", "queue_arguments") if getattr(self, name)]
            if unused:
                raise ValueError(f"{' and '.join(unused)} would do nothing with declare off: the hub declares and binds nothing then")
        return self


class AmqpOutboundConfig(_Broker, OutboundConfig):
    """Publish each event as a persistent JSON message, with publisher confirms: a delivery counts
    only once the broker confirmed it. The event id travels as the AMQP message id."""

    type: Literal["amqp"] = "amqp"
    exchange: str = Field(default="", description="Exchange to publish to; empty: the default exchange (routing key = queue name).")
    routing_key: TemplateText = Field(description="Routing key: a ${} template over the event's fields.", examples=["orders.${status}"])
    declare_queue: str | None = Field(
        default=None,
        description="Declare this durable queue first if it does not exist (handy with the default exchange).",
        examples=["billing.invoices"],
    )
    queue_arguments: QueueArguments = Field(default_factory=dict, description=_QUEUE_ARGUMENTS, examples=[{"x-queue-type": "quorum"}])

    body: BodyMap = Field(
        default=None,
        description=(
            "Body field -> expression over the event's fields ($id, $type... for metadata), or a nested block; "
            "a block with `$each: <list>` (and `$as: name`) gives one object per element (or one value: `$value`). "
            "Default: the event's fields."
        ),
        examples=[{"invoice": "invoice_id", "total": "amount", "event_id": "$id"}],
    )
    timeout_s: float = Field(default=10.0, gt=0, description="How long to wait for the broker's confirm; then retry.")

    @model_validator(mode="after")
    def _arguments_need_a_queue(self) -> AmqpOutboundConfig:
        if self.queue_arguments and not self.declare_queue:
            raise ValueError("queue_arguments would do nothing without declare_queue (the queue they are for)")
        return self
