"""The config models every adapter builds on: the base of an adapter's section, the delivery
policy of outbound ones, and ``emit`` (how an inbound turns what it received into an event).

Adapters import them through ``bus.adapter_api``; the loader and the checker read them here.
"""

from __future__ import annotations

__all__ = ["AdapterConfig", "ClientTls", "Contract", "EmitSpec", "OpenApiOperation", "OutboundConfig", "PayloadShape", "TlsConnection"]

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, SecretStr, model_validator

from bus.config.base import ConfigModel
from bus.config.delivery import DeliveryPolicy
from bus.config.fields import BodyMap, ConfigPath, Expression


class AdapterConfig(ConfigModel):
    """Base of every adapter's config model: strict, immutable, documented."""

    type: str = Field(description="Adapter type, the registry key.")
    name: str = Field(
        description="Instance name, unique among inbound or outbound adapters; used in topics, metrics and logs.",
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        examples=["stripe", "erp"],
    )
    # An inbound whose source sends headers with each document, readable as ``$headers[...]`` in
    # ``emit`` (the webhook's request headers). Elsewhere ``$headers`` reads null: the checker says so.
    provides_headers: ClassVar[bool] = False


Where = tuple[str | int, ...]  # a field's path inside the adapter's config block


@dataclass(frozen=True)
class Contract:
    """What an adapter's config says about the system on the other side (a WSDL, a GraphQL
    schema, an OpenAPI document), for ``bus validate``. A config model offers one with a method
    ``contract(base_dir: Path) -> Contract``; the config checker calls it on every load, so it
    reads files, never the network unless the config asks for it.

    ``errors``: what does not fit (an operation the document lacks, a query the schema refuses),
    each at a field of the config block. ``body``: where the outbound's body block is and the JSON
    Schema of what the other side accepts there; the checker then checks each key and value of
    that block against it, as it checks an ``emit.map`` against an Avro schema. ``payload``: the
    JSON Schema of one document an inbound receives, used for its ``emit`` when the config
    declares no ``emit.payload`` of its own."""

    errors: tuple[tuple[Where, str], ...] = ()
    body: tuple[Where, dict[str, Any]] | None = None
    payload: dict[str, Any] | None = None
    name: str = ""  # what messages call the body's type when its schema has no title ("the request body of issues/create")


class OutboundConfig(AdapterConfig):
    """Base of every outbound adapter's config: adds the runtime's ``delivery`` policy."""

    delivery: DeliveryPolicy = Field(default_factory=DeliveryPolicy, description="Retries, limits and circuit breaker.")


class OpenApiOperation(ConfigModel):
    """An operation of an OpenAPI 3 document whose JSON request body is what the source sends."""

    document: ConfigPath = Field(description="Path of the OpenAPI document (.yaml or .json), relative to the config file.")
    operation: str = Field(
        description="Its operationId, or `METHOD /path`; a webhook (OpenAPI 3.1 `webhooks:`) by its name or operationId.",
        examples=["createOrder", "POST /orders", "orderCreated"],
    )


class PayloadShape(ConfigModel):
    """What the source sends, so the checker can check ``emit`` against it: a JSON Schema, or a
    sample payload. Either inline or a path to a .json or .yaml file (relative to the config
    file). Only read at config load."""

    json_schema: dict[str, Any] | str | None = Field(
        default=None,
        description="A JSON Schema of one received document (objects list their properties; a field not listed is an "
        "error unless `additionalProperties: true`).",
        examples=["schemas/stripe-charge.schema.json"],
    )
    sample: dict[str, Any] | str | None = Field(
        default=None,
        description="A sample document, with every field the mapping reads (null where it may be missing).",
        examples=["samples/charge.succeeded.json"],
    )
    openapi: OpenApiOperation | None = Field(
        default=None, description="The JSON request body of an operation (or webhook) of an OpenAPI 3 document."
    )

    @model_validator(mode="after")
    def _one(self) -> PayloadShape:
        if sum(x is not None for x in (self.json_schema, self.sample, self.openapi)) != 1:
            raise ValueError("give exactly one of json_schema, sample or openapi")
        return self


class EmitSpec(ConfigModel):
    """How an inbound adapter turns what it received into a canonical event.

    Every value is an expression (``bus.expr``) over the received document.
    """

    schema_: str = Field(alias="schema", description="Canonical schema name of the event.", examples=["Payment"])
    key: Expression | None = Field(default=None, description="Expression for the business key.", examples=["data.object.id"])
    id: Expression | None = Field(
        default=None,
        description="Expression for the event id; default a fresh UUID. Use the source's own id so redeliveries keep theirs.",
        examples=["id"],
    )
    subject: Expression | None = Field(default=None, description="Expression for ce_subject.")
    map: BodyMap = Field(
        default=None,
        description=(
            "Canonical field -> expression, or a nested block (`$each: <list>` and `$as: name` for a list of records, "
            "as in an outbound body). Without it, the document is taken as the event's fields. A field you map is what "
            "the expression gives (null stays null, and is refused where the schema does not allow null); a field you "
            "do not map takes the schema's default; a field with neither is a config error."
        ),
        examples=[{"payment_id": "data.object.id", "amount": "data.object.amount"}],
    )
    payload: PayloadShape | None = Field(
        default=None,
        description="The shape of what the source sends (a JSON Schema or a sample): the paths `map`, `key`, `id` and "
        "`subject` read are then checked against it at load, with suggestions for typos.",
    )


class ClientTls(ConfigModel):
    """TLS to a target or a broker: the CA that signs its certificate, and the hub's own client
    certificate for mutual TLS (banks, payment networks, B2B gateways, AWS IoT Core ask for one)."""

    ca: ConfigPath | None = Field(
        default=None, description="PEM file of the CA(s) that sign the target's certificate (default: the system's trusted CAs)."
    )
    cert: ConfigPath | None = Field(default=None, description="PEM file of the hub's client certificate (and its chain), for mutual TLS.")
    key: ConfigPath | None = Field(default=None, description="PEM file of the client certificate's private key.")
    key_password: SecretStr | None = Field(default=None, description="The key's password, if it is encrypted.")

    @model_validator(mode="after")
    def _pair(self) -> ClientTls:
        if (self.cert is None) != (self.key is None):
            raise ValueError("give both cert and key for a client certificate, or neither")
        return self

    def checked(self) -> Contract:
        """For a config's ``contract()``: an error at ``tls`` when the files cannot be used (``bus validate``)."""
        try:
            self.context()
        except (OSError, ssl.SSLError) as exc:
            return Contract(errors=((("tls",), f"the TLS files cannot be used: {exc}"),))
        return Contract()

    def context(self) -> ssl.SSLContext:
        """The SSL context (reads the files: at start, or in bus validate); ssl.SSLError or OSError if they do not fit."""
        found = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
        if self.cert is not None and self.key is not None:
            password = self.key_password.get_secret_value() if self.key_password else None
            found.load_cert_chain(str(self.cert), str(self.key), password=password)
        return found


class TlsConnection(ConfigModel):
    """A config whose connection to a broker or server may be made over TLS (``tls:``); ``bus
    validate`` checks its files. The queue families (mqtt, amqp, nats) share it."""

    tls: ClientTls | None = Field(
        default=None,
        description="TLS to the broker or server: the CA that signs its certificate (default: the system's), and the hub's "
        "client certificate for mutual TLS (AWS IoT Core, Azure IoT Hub, a RabbitMQ with fail_if_no_peer_cert, a NATS "
        "server with verify: true). `{}` is TLS with the system's CAs.",
        examples=[{}, {"ca": "certs/broker-ca.pem", "cert": "certs/hub.pem", "key": "certs/hub.key"}],
    )

    def contract(self, base_dir: Path) -> Contract:
        return self.tls.checked() if self.tls is not None else Contract()
