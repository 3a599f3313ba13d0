"""The adapter API: the one module of the core that adapters import.

An adapter is a class with a pydantic ``Config`` (its spec: parses, validates, documents) and a
lifecycle. The runtime owns everything around it: Kafka, retries, dead letters, metrics, commits.

Lifecycle, in order:

1. ``__init__(config, ctx)``: no I/O. Compile templates and expressions here.
2. ``await start()``: connect / mount routes. Raise ``RetryableError`` if the other side is not
   there yet; the runtime backs off and calls ``start()`` again.
3. Inbound: acknowledge the source only after ``await ctx.sink.publish(event)`` returned, which
   is after Kafka acknowledged the event. ``publish`` raises ``EventRejected`` for input that does
   not fit its schema, or is larger than the hub takes (``EventTooLarge``, 960 KiB; tell the source
   it is bad: a 400 or 413, a nack without requeue, ``sink.reject`` to park it) and
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
    "KEPT_OF_TOO_LARGE",
    "MAX_DOCUMENT_FILE_BYTES",
    "MAX_MESSAGE_BYTES",
    "MAX_SCHEMA_FILE_BYTES",
    "Adapter",
    "AdapterConfig",
    "AdapterRegistry",
    "AnswerExpression",
    "ApiOperation",
    "Body",
    "BodyCheck",
    "BodyMap",
    "Checkpoints",
    "ClientTls",
    "ConfigModel",
    "ConfigPath",
    "ConnectionTokens",
    "Context",
    "Contract",
    "ContractError",
    "Duration",
    "EmitSpec",
    "Emitter",
    "Event",
    "EventRejected",
    "EventSink",
    "EventTooLarge",
    "Expression",
    "ExpressionError",
    "FileTooLarge",
    "GroupCommit",
    "Health",
    "Inbound",
    "Intake",
    "KafkaSecurity",
    "KafkaUnavailable",
    "Kind",
    "LineTooLong",
    "OpenApiOperation",
    "Outbound",
    "OutboundConfig",
    "PayloadShape",
    "PermanentError",
    "Request",
    "Response",
    "RetryableError",
    "SecretTemplate",
    "TargetNotReady",
    "TargetOptions",
    "TargetState",
    "TemplateText",
    "TextEncoding",
    "TlsConnection",
    "Tracing",
    "Truncated",
    "WebMount",
    "WireFormat",
    "allow_large_csv_fields",
    "bounded_lines",
    "brief",
    "check_dsn",
    "comparable",
    "compile_expression",
    "compile_template",
    "csv_header_problem",
    "csv_records",
    "dsn_servers",
    "duration",
    "finish_read",
    "finish_task",
    "first_path",
    "http_client",
    "is_loopback",
    "json_dumps",
    "json_response",
    "kafka_consumer",
    "kafka_producer",
    "one_level",
    "operation_in",
    "parse_duration",
    "parse_json",
    "parse_xml",
    "paths_of",
    "proxy_options",
    "read_at_most",
    "redact",
    "stop_in_order",
    "stop_kafka_consumer",
    "target_json",
    "text_cell",
    "text_codec",
    "time_zone",
    "undecodable",
    "whole_number",
]

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

from bus.batching import GroupCommit
from bus.codec import Codec, wire_header
from bus.config.adapters import (
    AdapterConfig,
    ClientTls,
    Contract,
    EmitSpec,
    OpenApiOperation,
    OutboundConfig,
    PayloadShape,
    TlsConnection,
)
from bus.config.base import ConfigModel
from bus.config.fields import (
    AnswerExpression,
    BodyMap,
    ConfigPath,
    Duration,
    Expression,
    Kind,
    SecretTemplate,
    TemplateText,
    TextEncoding,
    duration,
)
from bus.config.models import KafkaConfig, KafkaSecurity
from bus.deadletters import KEPT_OF_TOO_LARGE
from bus.documents import (
    MAX_DOCUMENT_FILE_BYTES,
    MAX_SCHEMA_FILE_BYTES,
    FileTooLarge,
    LineTooLong,
    allow_large_csv_fields,
    bounded_lines,
    csv_header_problem,
    csv_records,
    first_path,
    parse_json,
    parse_xml,
    read_at_most,
    text_codec,
    undecodable,
)
from bus.dsn import check_dsn
from bus.dsn import servers as dsn_servers
from bus.errors import (
    EventRejected,
    EventTooLarge,
    ExpressionError,
    KafkaUnavailable,
    PermanentError,
    RetryableError,
    TargetNotReady,
    brief,
)
from bus.event import Event
from bus.expr import compile_expression, compile_template, one_level, paths_of
from bus.expr.body import Body
from bus.expr.functions import parse_duration, time_zone
from bus.http_clients import async_client as http_client  # the environment's proxies, never for loopback
from bus.http_clients import is_loopback, proxy_options
from bus.intake import MAX_MESSAGE_BYTES, EventSink, Intake, Truncated, stop_in_order
from bus.jsontext import dumps as json_dumps
from bus.jsontext import text_cell
from bus.jsontext import to_target as target_json
from bus.kafka.clients import make_consumer, make_producer
from bus.kafka.clients import stop_consumer as stop_kafka_consumer  # its stop, without aiokafka#647's stray CancelledError
from bus.logs import REDACTOR
from bus.mapping import Emitter
from bus.migrate.canonical import canonical as comparable  # a value as bus migrate compares it
from bus.numbers import whole_number
from bus.openapi import ApiOperation, BodyCheck, ContractError, operation_in
from bus.runtime.ending import finish as finish_task
from bus.runtime.ending import finish_read
from bus.runtime.http1 import Request, Response, json_response
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


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    detail: str = ""


Handler = Callable[[Request], Awaitable[Response]]  # a webhook route: bus.runtime.http1's request and answer


class Checkpoints(Protocol):
    """Positions of polling sources (``http_poll``, ``sql_poll``), kept in Kafka.

    Save a position only after Kafka acknowledged every event before it; ``load`` after a
    restart returns the last one saved. ``save`` raises ``KafkaUnavailable``.
    """

    async def load(self, name: str) -> dict[str, Any] | None: ...

    async def save(self, name: str, position: dict[str, Any]) -> None: ...


class ConnectionTokens(Protocol):
    """The hub's OAuth2 connections (``connections:``), for adapters whose ``auth`` names one."""

    async def token(self, name: str) -> str:
        """A live access token of connection ``name``; RetryableError saying why when there is none."""
        ...

    async def rejected(self, name: str, token: str) -> None:
        """The API answered 401 to ``token``: refresh it (once, however many calls saw it)."""
        ...


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
    credentials: ConnectionTokens | None = None  # set when the config declares connections
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

    def progress(self) -> dict[str, int | str]:
        """What the adapter has done since it started (``{"polls": 12}``, a replication slot's
        position...): shown under ``adapters`` in ``/readyz``'s detail. Cheap: read per request."""
        return {}

    def attention(self) -> str:
        """What an operator should act on while the adapter works on (rows a poll cannot reach,
        an API that repeats its pages), or "": the console lists it beside the parts that fail.
        Cheap: read per request."""
        return ""


class Inbound(Adapter[C]):
    direction: ClassVar[Literal["inbound", "outbound"]] = "inbound"

    @property
    def sink(self) -> EventSink:
        if self.ctx.sink is None:
            raise RuntimeError(f"inbound adapter {self.ctx.name} was built without an event sink")
        return self.ctx.sink

    # Optional, for a migration's hand-over to this inbound (``migrations[].then``).
    handover: ClassVar[bool] = False

    # A source one process must read at a time, however many replicas of the hub run (a poller,
    # a replication slot, a drop folder, an MQTT session): the hub starts the adapter only in the
    # process that holds its lease, and the others stand by (bus.app.leased_inbound). False for
    # sources that share their work out themselves (a webhook behind a Service, a queue's
    # competing consumers, a Kafka consumer group).
    one_reader: ClassVar[bool] = False

    # The position it saves is where reading resumes, and nothing else keeps it (a poller's
    # watermark). False where the source keeps the place itself (a durable consumer, a consumer
    # group, a replication slot) and a saved position is only a fallback or a note. ``bus positions
    # reset`` and ``adopt`` act on the first kind only: on the second they would change nothing.
    position_in_kafka: ClassVar[bool] = False

    # The parts of ``position_of`` that only narrow what is read (a poller's filter: a `where`, an
    # API's fixed query), not its order: ``bus positions adopt`` keeps a position across a change
    # of these alone; across a change of the order (another watermark column) it would be read as
    # what it is not.
    position_filters: ClassVar[frozenset[str]] = frozenset()

    async def hold(self) -> None:
        """Called instead of ``start`` in a process that starts while an operator has this adapter
        paused (bus.app.source_pauses): take nothing, but be there to say so where a sender would
        otherwise get no answer at all (a webhook serves its path and answers 503). ``start``
        follows on resume. Default: nothing."""

    @classmethod
    def position_of(cls, config: Any) -> dict[str, Any] | None:
        """What a position this inbound saves is a position in: the source and the order it is read
        in (a table and its watermark columns, an API and its watermark field). Saved with each
        position; a position saved for another (the config was changed to read another table, by
        another column) is not used, and said: applied to the new source it passed over every
        record before it. None: nothing to check (the adapter's saved state is not a position)."""
        return None

    @classmethod
    async def position_now(cls, config: Any) -> dict[str, Any] | None:
        """The checkpoint from which this inbound reads only what changes from now on (None: the
        source is empty). Taken by ``bus migrate run`` before it reads the history; saved by
        ``bus migrate cutover``. Only inbounds with ``handover = True`` implement it."""
        raise NotImplementedError


class Outbound(Adapter[C]):
    direction: ClassVar[Literal["inbound", "outbound"]] = "outbound"

    @abstractmethod
    async def deliver(self, event: Event) -> None:
        """Deliver one event. Return = accepted; RetryableError = retry; PermanentError = dead-letter."""

    # Whether ``deliver_many`` writes a batch more cheaply than ``deliver`` one by one (a SQL table:
    # one transaction). ``bus migrate`` uses it for its loads.
    delivers_many: ClassVar[bool] = False

    async def deliver_many(self, events: list[Event]) -> None:
        """Deliver every event or none: one transaction. Raises like ``deliver`` for the whole
        batch (a PermanentError may be about one event only: the caller then delivers them one
        by one to find it). Only adapters with ``delivers_many = True`` implement it."""
        raise NotImplementedError

    def target_state(self, options: TargetOptions) -> TargetState | None:
        """What ``bus migrate`` may read back from and put back into this target (optional):
        None when the adapter can do neither (a queue, a topic: sent is sent)."""
        return None


@dataclass(frozen=True, slots=True)
class TargetOptions:
    """A migration's settings for one of its targets (``migrations[].targets.NAME``)."""

    read: str | None = None  # a ${} template: where the target's record for an event is read (HTTP)
    delete: str | None = None  # where it is deleted, to roll back what a run created (default: read)
    restore_method: str = "PUT"  # how a record a run replaced is put back (to ``read``)


class TargetState(Protocol):
    """Optional outbound capability for ``bus migrate``: read what the target holds for an event's
    key (the before-image, and the read-back checksum after the load) and put it back (rollback).

    ``record(event)`` is ``(address, expected)``: where the event's record lives (the key columns'
    values, a URL; it must survive JSON with Decimal, datetime and bytes: the journal keeps it),
    and what ``deliver`` leaves there (the columns or body as rendered; None: it deletes it).
    ``read`` returns, per address, the record's fields as the target holds them (None: absent).
    ``restore`` writes each record back (None: deletes it). Reads and restores may raise
    ``RetryableError`` (tried again) or ``PermanentError``.
    """

    verifiable: bool  # read works: checksums of what the target holds
    rollback: str  # "" when restore works; otherwise why a run cannot be rolled back

    def record(self, event: Event) -> tuple[Any, dict[str, Any] | None]: ...

    async def read(self, addresses: list[Any]) -> list[dict[str, Any] | None]: ...

    async def restore(self, items: list[tuple[Any, dict[str, Any] | None]]) -> None: ...


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
