"""The router process: a faust app that reads canonical topics and fans events out to delivery topics.

Faust stays behind this one class (STYLE.md: use faust inside routing/ only). Safety settings,
because routing must never lose an event:

- agent concurrency 1 (faust-streaming #606 commits past in-flight events with concurrency > 1);
- the stream runs with acks disabled and this module acks each event itself, in order, only after
  Kafka acknowledged every produce it caused (a delivery copy or a dead letter). ``take_events``
  is not used: it acks a batch in a ``finally`` even when processing of the batch failed;
- topics are created by the hub, never declared by faust; offsets start at the earliest record,
  so events produced before the router's group first existed are routed too.

The value bytes are forwarded untouched (no re-encoding): the router decodes only to evaluate
conditions. Each copy gains a ``bus_route`` header naming the route that sent it.
"""

from __future__ import annotations

__all__ = ["RouterService"]

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import Awaitable
from typing import Any

import faust
from faust.types import EventT, StreamT

from bus.codec import Codec
from bus.config.models import KafkaConfig
from bus.errors import BusError, PermanentError
from bus.expr import Compiled, compile_expression
from bus.kafka.topics import TopicNames
from bus.metrics import ROUTER_EVENTS, ROUTER_UNMATCHED
from routing.metrics import ROUTE_COLLECTOR
from routing.router import Router
from routing.state import TokenBucket
from routing.tables import TableStore, encode_row

log = logging.getLogger("routing.app")
_PENDING_LIMIT = 5000  # events sent but not yet acknowledged by Kafka: bounds router memory


def _rewrite_headers(headers: list[tuple[str, bytes]], route: str, schema: str, id_suffix: str | None) -> list[tuple[str, bytes]]:
    """Headers of a transformed copy: its own ce_type, and for split elements an id of its own."""
    out: list[tuple[str, bytes]] = []
    for name, value in headers:
        if name == "ce_type":
            out.append((name, schema.encode()))
        elif name == "ce_id" and id_suffix is not None:
            out.append((name, value + b"/" + id_suffix.encode()))
        else:
            out.append((name, value))
    out.append(("bus_route", route.encode()))
    return out


def _faust_credentials(kafka: KafkaConfig) -> Any:
    sec = kafka.security
    ssl_context = None
    if sec.protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        ssl_context = create_ssl_context(
            cafile=str(sec.ssl_cafile) if sec.ssl_cafile else None,
            certfile=str(sec.ssl_certfile) if sec.ssl_certfile else None,
            keyfile=str(sec.ssl_keyfile) if sec.ssl_keyfile else None,
        )
    if sec.protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=sec.sasl_username,
            password=sec.sasl_password.get_secret_value() if sec.sasl_password else None,
            mechanism=sec.sasl_mechanism or "PLAIN",
            ssl_context=ssl_context,
        )
    return faust.SSLCredentials(ssl_context) if ssl_context else None


class RouterService:
    def __init__(
        self,
        router: Router,
        *,
        kafka: KafkaConfig,
        bootstrap: str,
        topics: TopicNames,
        codec: Codec,
        tables: TableStore | None = None,
    ) -> None:
        self.router = router
        self._codec = codec
        self._names = topics
        self.tables = tables
        ROUTE_COLLECTOR.watch(router)
        self._buckets = {
            r.name: TokenBucket(r.config.throttle.rate, r.config.throttle.burst) for r in router.routes if r.config.throttle is not None
        }
        self._feeds: dict[str, list[tuple[str, Compiled]]] = {}
        for table in tables.configs if tables else []:
            if table.from_ is not None and table.key is not None:
                self._feeds.setdefault(table.from_, []).append((table.name, compile_expression(table.key)))
        self._events_children: dict[str, Any] = {}
        self._unmatched_children: dict[str, Any] = {}
        self._datadir = tempfile.TemporaryDirectory(prefix="bus-router-")
        session_s = kafka.session_timeout_ms / 1000
        self.app = faust.App(
            f"{topics.prefix}-router",
            broker=[f"kafka://{host}" for host in bootstrap.split(",")],
            broker_credentials=_faust_credentials(kafka),
            datadir=self._datadir.name,
            web_enabled=False,
            value_serializer="raw",
            key_serializer="raw",
            topic_partitions=kafka.partitions,
            topic_allow_declare=False,
            topic_disable_leader=True,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            broker_session_timeout=session_s,
            broker_heartbeat_interval=max(0.3, session_s / 5),
            broker_rebalance_timeout=session_s,
            broker_commit_interval=1.0,
        )
        self._sources = [topics.canonical(schema) for schema in sorted({*router.schemas, *self._feeds})]
        self._targets = {
            name: self.app.topic(topics.delivery(name), key_type=bytes, value_type=bytes, partitions=kafka.partitions)
            for name in router.subscribers()
        }
        self._table_topics = {
            name: self.app.topic(topics.table(name), key_type=bytes, value_type=bytes, partitions=kafka.partitions)
            for feeds in self._feeds.values()
            for name, _ in feeds
        }
        self._dead = self.app.topic(topics.router_dead_letter, key_type=bytes, value_type=bytes, partitions=kafka.partitions)
        self._started = False
        if self._sources:
            source = self.app.topic(*self._sources, key_type=bytes, value_type=bytes, partitions=kafka.partitions)
            self.app.agent(source, name="route", concurrency=1)(self._agent)

    def _events_for(self, schema: str) -> Any:
        child = self._events_children.get(schema)
        if child is None:
            child = self._events_children[schema] = ROUTER_EVENTS.labels(schema)
        return child

    def _unmatched_for(self, schema: str) -> Any:
        child = self._unmatched_children.get(schema)
        if child is None:
            child = self._unmatched_children[schema] = ROUTER_UNMATCHED.labels(schema)
        return child

    @property
    def assigned(self) -> bool:
        return bool(self._started and self.app.consumer.assignment())

    async def start(self) -> None:
        if self._started:
            raise BusError("router already started")
        if not self._sources:
            log.info("router: no routes, nothing to consume")
            self._started = True
            return
        if self.tables is not None:
            await self.tables.start()
        self.app.finalize()
        await self.app.start()
        self._started = True
        log.info("router consuming %s", ", ".join(self._sources))

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self.tables is not None:
            await self.tables.stop()
        if self._sources:
            await self.app.stop()
            # faust leaves its producer's client open on stop; close it so nothing leaks.
            with contextlib.suppress(Exception):
                await self.app.producer.stop()
        self._datadir.cleanup()
        log.info("router stopped")

    async def _agent(self, stream: StreamT[Any]) -> None:
        manual: Any = stream.noack()  # type: ignore[attr-defined]  # faust's StreamT stub lacks noack
        pending: asyncio.Queue[tuple[EventT[Any], list[Awaitable[Any]]]] = asyncio.Queue(_PENDING_LIMIT)
        acker = asyncio.create_task(self._ack_in_order(manual, pending), name="router-acker")
        try:
            async for event in manual.events():
                await pending.put((event, await self._dispatch(event.message)))
        finally:
            # Let what was already sent be acknowledged (bounded); the rest is redelivered.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(pending.join(), timeout=5)
            acker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acker

    @staticmethod
    async def _ack_in_order(stream: StreamT[Any], pending: asyncio.Queue[tuple[EventT[Any], list[Awaitable[Any]]]]) -> None:
        while True:
            event, futures = await pending.get()
            try:
                if futures:
                    await asyncio.gather(*futures)
                await stream.ack(event)
            except Exception:
                log.exception("router: a produce failed; stopping acks so the event is routed again")
                raise
            finally:
                pending.task_done()

    async def _dispatch(self, message: Any) -> list[Awaitable[Any]]:
        """Send one canonical event where its routes say; return the produce futures to await."""
        value: bytes = message.value
        headers = list(message.headers or ())
        try:
            schema, data = self._codec.decode(value)
        except PermanentError as exc:
            return [await self._dead_letter(message, headers, "_router", exc)]
        meta = {name[3:]: v.decode() for name, v in headers if name.startswith("ce_") and v is not None}
        meta["key"] = message.key.decode() if message.key is not None else None
        self._events_for(schema).inc()
        futures: list[Awaitable[Any]] = []
        for table, key_expr in self._feeds.get(schema, ()):
            row_key = key_expr(data, meta)
            if row_key is not None:
                futures.append(await self._table_topics[table].send(key=str(row_key).encode(), value=encode_row(data)))
        decision = self.router.decide(schema, data, meta)
        if not decision.outcomes:
            self._unmatched_for(schema).inc()
        # Encode every transformed output first: a route sends all of its outputs or none.
        encoded: dict[int, bytes] = {}
        failed_routes: set[str] = set()
        for outcome in decision.outcomes:
            error = outcome.error
            if outcome.status == "emitted":
                try:
                    for out in outcome.outputs:
                        if out.data is not None:
                            self._codec.validate(out.schema, out.data)
                            encoded[id(out)] = self._codec.encode(out.schema, out.data)
                except PermanentError as exc:  # the transform's output does not fit its schema
                    outcome.route.stats.failed += 1
                    error = exc
            if error is not None:
                failed_routes.add(outcome.route.name)
                futures.append(await self._dead_letter(message, headers, outcome.route.name, error))
        for outcome, out, targets in decision.deliveries():
            route = outcome.route
            if route.name in failed_routes:
                continue
            bucket = self._buckets.get(route.name)
            if bucket is not None:
                await bucket.take()
            if out.data is None:
                payload, key, out_headers = value, message.key, [*headers, ("bus_route", route.name.encode())]
            else:
                payload = encoded[id(out)]
                key = out.key.encode() if out.key is not None else message.key
                out_headers = _rewrite_headers(headers, route.name, out.schema, out.id_suffix)
            for target in targets:
                futures.append(await self._targets[target].send(key=key, value=payload, headers=out_headers))
        return futures

    async def _dead_letter(self, message: Any, headers: list[tuple[str, bytes]], route: str, error: BusError) -> Awaitable[Any]:
        log.warning("router dead-lettered %s/%s/%s (route %s): %s", message.topic, message.partition, message.offset, route, error)
        return await self._dead.send(
            key=message.key,
            value=message.value,
            headers=[
                *headers,
                ("bus_error", str(error).encode()),
                ("bus_error_class", type(error).__name__.encode()),
                ("bus_route", route.encode()),
                ("bus_origin", f"{message.topic}/{message.partition}/{message.offset}".encode()),
            ],
        )
