"""The adapter API: the one module of the core that adapters import.

An adapter is a class with a pydantic ``Config`` (its spec: parses, validates, documents) and a
lifecycle. The runtime owns everything around it: Kafka, retries, dead letters, metrics, commits.

Lifecycle, in order:

1. ``__init__(config, ctx)``: no I/O. Compile templates and expressions here.
2. ``await start()``: connect / mount routes. Raise ``RetryableError`` if the other side is not
   there yet; the runtime backs off and calls ``start()`` again.
3. Inbound: acknowledge the source only after ``await ctx.sink.publish(event)`` returned, which
   is after Kafka acknowledged the event. ``publish`` raises ``EventRejected`` for input that does
   not fit its schema (tell the source it is bad: a 400, a nack without requeue) and
   ``KafkaUnavailable`` when Kafka cannot acknowledge (tell the source to try later: a 503).
   Outbound: ``await deliver(event)`` is called for one event at a time per key; return means
   the target accepted it, ``RetryableError`` means back off and retry, ``PermanentError`` means
   dead-letter. Adapters never retry on their own.
4. ``await stop()``: idempotent; finish or refuse in-flight work, then release resources.

Adapters are found by their ``type:`` through the ``bus.adapters`` entry-point group, the same
path for built-in and third-party adapters (see ``AdapterRegistry``).
"""

from __future__ import annotations

__all__ = [
    "Adapter",
    "AdapterConfig",
    "AdapterRegistry",
    "Body",
    "BodyMap",
    "Checkpoints",
    "ConfigModel",
    "Context",
    "Duration",
    "EmitSpec",
    "Emitter",
    "Event",
    "EventRejected",
    "EventSink",
    "Expression",
    "ExpressionError",
    "GroupCommit",
    "Health",
    "Inbound",
    "Intake",
    "KafkaSecurity",
    "KafkaUnavailable",
    "Kind",
    "Outbound",
    "OutboundConfig",
    "PayloadShape",
    "PermanentError",
    "RetryableError",
    "SecretTemplate",
    "TemplateText",
    "Tracing",
    "WebMount",
    "WireFormat",
    "brief",
    "compile_expression",
    "compile_template",
    "duration",
    "json_dumps",
    "kafka_consumer",
    "kafka_producer",
    "parse_duration",
    "parse_json",
    "parse_xml",
    "paths_of",
    "redact",
    "stop_in_order",
]

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

from pydantic import Field, model_validator

from bus.batching import GroupCommit
from bus.codec import Codec, wire_header
from bus.config.base import ConfigModel
from bus.config.delivery import DeliveryPolicy
from bus.config.fields import BodyMap, Duration, Expression, Kind, SecretTemplate, TemplateText, duration
from bus.config.models import KafkaConfig, KafkaSecurity
from bus.documents import parse_json, parse_xml
from bus.errors import EventRejected, ExpressionError, KafkaUnavailable, PermanentError, RetryableError, brief
from bus.event import Event
from bus.expr import Compiled, compile_expression, compile_template
from bus.expr import tree as t
from bus.expr.functions import parse_duration
from bus.intake import Intake, stop_in_order
from bus.jsontext import dumps as json_dumps
from bus.kafka.clients import make_consumer, make_producer
from bus.logs import REDACTOR
from bus.mapping import Body, Emitter
from bus.tracing import NO_TRACING, Tracing

ENTRY_POINT_GROUP = "bus.adapters"


class WireFormat:
    """The Confluent wire format (magic byte 0, 4-byte schema id, Avro body), as the hub's codec reads it."""

    header = staticmethod(wire_header)
    schema_id = staticmethod(Codec.peek_id)  # raises PermanentError for a value that is not in the format


def kafka_consumer(bootstrap: str, security: KafkaSecurity, *topics: str, group_id: str, session_timeout_ms: int, **overrides: Any) -> Any:
    """A consumer of another Kafka cluster (the ``kafka`` adapters), with the hub's defaults:
    explicit commits, TLS and SASL as configured."""
    cluster = KafkaConfig(bootstrap=bootstrap, security=security, session_timeout_ms=session_timeout_ms)
    return make_consumer(cluster, bootstrap, *topics, group_id=group_id, **overrides)


def kafka_producer(bootstrap: str, security: KafkaSecurity, **overrides: Any) -> Any:
    """A producer to another Kafka cluster, with the hub's defaults (acks=all, TLS and SASL)."""
    return make_producer(KafkaConfig(bootstrap=bootstrap, security=security), bootstrap, **overrides)


def redact(text: str) -> str:
    """``text`` with every secret of the loaded config (and credential-shaped text) masked: for
    anything an adapter sends back to a caller (a 4xx reason) or keeps (a dead-letter reason)."""
    return REDACTOR.redact(text)


class AdapterConfig(ConfigModel):
    """Base of every adapter's config model: strict, immutable, documented."""

    type: str = Field(description="Adapter type, the registry key.")
    name: str = Field(
        description="Instance name, unique among inbound or outbound adapters; used in topics, metrics and logs.",
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        examples=["stripe", "erp"],
    )


class OutboundConfig(AdapterConfig):
    """Base of every outbound adapter's config: adds the runtime's ``delivery`` policy."""

    delivery: DeliveryPolicy = Field(default_factory=DeliveryPolicy, description="Retries, limits and circuit breaker.")


class OpenApiOperation(ConfigModel):
    """An operation of an OpenAPI 3 document whose JSON request body is what the source sends."""

    document: str = Field(description="Path of the OpenAPI document (.yaml or .json), relative to the config file.")
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


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    detail: str = ""


class EventSink(Protocol):
    """Where inbound adapters publish. ``publish`` returns once Kafka has the event.

    ``submit`` hands the event over in call order and returns its acknowledgement to await later,
    for sources with many messages in flight. ``reject`` keeps a message that cannot become an
    event on the adapter's inbound dead-letter topic, with the reason, so the source can be
    acknowledged without losing it. Both raise ``KafkaUnavailable`` like ``publish``.
    ``refused`` only counts: sources that answer their sender (webhooks) call it for a 4xx.
    """

    async def publish(self, event: Event) -> None: ...

    async def submit(self, event: Event) -> Awaitable[None]: ...

    def check(self, event: Event) -> None:
        """Raise EventRejected if ``event`` does not fit its schema; produces nothing. For sources
        that must accept a whole batch or none of it: check every event, then submit them."""

    async def reject(self, payload: bytes, reason: str, *, headers: Mapping[str, str] | None = None) -> None: ...

    def refused(self, outcome: Literal["rejected", "unauthorized"]) -> None:
        """Count a request answered with a refusal at the edge (4xx to its sender), so it shows
        in ``bus_inbound_events_total`` beside the accepted ones. Nothing is produced."""


Handler = Callable[[Any], Awaitable[Any]]


class Checkpoints(Protocol):
    """Positions of polling sources (``http_poll``, ``sql_poll``), kept in Kafka.

    Save a position only after Kafka acknowledged every event before it; ``load`` after a
    restart returns the last one saved. ``save`` raises ``KafkaUnavailable``.
    """

    async def load(self, name: str) -> dict[str, Any] | None: ...

    async def save(self, name: str, position: dict[str, Any]) -> None: ...


class WebMount(Protocol):
    """The hub's shared HTTP server; webhook adapters add their routes to it."""

    def add_route(self, method: str, path: str, handler: Handler) -> None: ...


def _unsupervised(coro: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
    return asyncio.create_task(coro, name=name)


@dataclass(frozen=True, slots=True)
class Context:
    """What the runtime gives an adapter. ``sink`` and ``checkpoints`` are set for inbound
    adapters, ``web`` where served.

    ``spawn(coro, name=...)`` starts an adapter's background task (a consume loop, a poller)
    under the hub's supervisor: if it ever ends on its own (raises, or returns while the adapter
    was not being stopped), the hub logs it, counts it, restarts the adapter (``stop()`` then
    ``start()``) with backoff and reports it in ``/readyz``. Start every long-running task with it.
    """

    name: str
    logger: logging.Logger
    sink: EventSink | None = None
    web: WebMount | None = None
    checkpoints: Checkpoints | None = None
    tracing: Tracing = NO_TRACING  # test ``tracing.enabled`` before making spans: no cost when off
    spawn: Callable[..., asyncio.Task[None]] = _unsupervised


C = TypeVar("C", bound=AdapterConfig)


class Adapter(ABC, Generic[C]):
    """Common lifecycle of inbound and outbound adapters (see the module docstring)."""

    Config: ClassVar[type[AdapterConfig]]
    direction: ClassVar[Literal["inbound", "outbound"]]
    summary: ClassVar[str] = ""

    def __init__(self, config: C, ctx: Context) -> None:
        self.config = config
        self.ctx = ctx

    async def start(self) -> None:
        """Connect. Raise RetryableError if the other side is not reachable yet."""

    async def stop(self) -> None:
        """Release resources. Idempotent."""

    async def health(self) -> Health:
        return Health(ok=True)


class Inbound(Adapter[C]):
    direction: ClassVar[Literal["inbound", "outbound"]] = "inbound"

    @property
    def sink(self) -> EventSink:
        if self.ctx.sink is None:
            raise RuntimeError(f"inbound adapter {self.ctx.name} was built without an event sink")
        return self.ctx.sink


class Outbound(Adapter[C]):
    direction: ClassVar[Literal["inbound", "outbound"]] = "outbound"

    @abstractmethod
    async def deliver(self, event: Event) -> None:
        """Deliver one event. Return = accepted; RetryableError = retry; PermanentError = dead-letter."""


class AdapterRegistry:
    """Adapter classes by direction and ``type:``. Cloneable, so tests can add types without touching the global one.

    An entry point names one adapter class, or a tuple of classes of one family that share the
    type name, one per direction (``amqp`` is both a queue consumer and a publisher).
    """

    def __init__(self, types: dict[tuple[str, str], type[Adapter[Any]]] | None = None) -> None:
        self._types: dict[tuple[str, str], type[Adapter[Any]]] = dict(types or {})

    @classmethod
    def from_entry_points(cls) -> AdapterRegistry:
        registry = cls()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            registry.register(ep.name, ep.load())
        return registry

    def register(self, type_name: str, adapter: type[Adapter[Any]] | tuple[type[Adapter[Any]], ...]) -> None:
        for one in adapter if isinstance(adapter, tuple) else (adapter,):
            key = (one.direction, type_name)
            if key in self._types and self._types[key] is not one:
                raise ValueError(f"{one.direction} adapter type {type_name!r} is registered twice")
            self._types[key] = one

    def clone(self) -> AdapterRegistry:
        return AdapterRegistry(self._types)

    def get(self, type_name: str, direction: str) -> type[Adapter[Any]] | None:
        return self._types.get((direction, type_name))

    def names(self, direction: str | None = None) -> list[str]:
        return sorted({n for (d, n) in self._types if direction is None or d == direction})

    def items(self) -> Iterable[tuple[str, type[Adapter[Any]]]]:
        """(type name, class) pairs, by name, inbound before outbound."""
        return [(n, a) for (d, n), a in sorted(self._types.items(), key=lambda kv: (kv[0][1], kv[0][0]))]


def paths_of(text: str) -> set[str]:
    """The document paths an expression reads (``data.object.id``), for an adapter's config checks."""
    tree = compile_expression(text).tree
    return t.paths(tree) if tree is not None else set()


def compiled(text: str | None) -> Compiled | None:
    """Compile an optional expression (already checked at config load)."""
    return compile_expression(text) if text is not None else None
