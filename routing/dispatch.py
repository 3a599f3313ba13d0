"""From one canonical record to the records the router must produce: pure CPU, no I/O.

Both router engines (``routing.worker`` on aiokafka, ``routing.app`` on faust) call ``plan`` and
then produce what it returns, so routing behaves the same whichever engine runs it.
"""

from __future__ import annotations

__all__ = ["Dispatcher", "Send"]

import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from bus.codec import Codec
from bus.config.routes import TableConfig
from bus.deadletters import AGGREGATE_HEADER, KEPT_OF_TOO_LARGE, cut_to_fit, why_headers
from bus.errors import BusError, EventTooLarge, PermanentError
from bus.event import Event
from bus.expr import Compiled, compile_expression
from bus.kafka.clients import MAX_EVENT_BYTES, MEASURE_ABOVE
from bus.kafka.topics import TopicNames
from bus.metrics import ROUTER_EVENTS, ROUTER_UNMATCHED
from bus.ratelimit import TokenBucket
from routing.aggregate import Aggregator, Emission, TooManyKeys
from routing.metrics import ROUTE_COLLECTOR
from routing.router import Decision, Router
from routing.tables import encode_row

log = logging.getLogger("routing.dispatch")
Headers = list[tuple[str, bytes]]
_record_size = DefaultRecordBatchBuilder.estimate_size_in_bytes


@dataclass(slots=True)
class Send:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    throttle: TokenBucket | None = None  # wait for a token before producing this one
    partition: int | None = None  # set for aggregator state: it lives on its source partition
    route: str = ""  # the route that planned this copy ("" for tables and aggregator state): lineage records it
    id_suffix: str | None = None  # a split element's copy: its id is the event's id + "/" + this


class HeaderMeta(Mapping[str, Any]):
    """An event's metadata ($id, $type, $time, $key, $schema...) from its CloudEvents headers, decoded only
    when an expression asks for it: most routes read fields, and decoding every header of every
    event cost more than a route's condition."""

    __slots__ = ("_data", "_headers", "_key", "_schema")

    def __init__(self, headers: Headers, key: bytes | None, schema: str) -> None:
        self._headers = headers
        self._key = key
        self._schema = schema
        self._data: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._data is None:
            data: dict[str, Any] = {name[3:]: v.decode() for name, v in self._headers if name.startswith("ce_") and v is not None}
            data["key"] = self._key.decode() if self._key is not None else None
            data["schema"] = self._schema
            self._data = data
        return self._data

    def get(self, name: str, default: Any = None) -> Any:
        return self._load().get(name, default)

    def __getitem__(self, name: str) -> Any:
        return self._load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


def _rewrite_headers(headers: Headers, route: str, schema: str, id_suffix: str | None, absent: bytes | None = None) -> Headers:
    """Headers of a transformed copy: its own ce_type, for split elements an id of its own, and
    the fields its ``drop:`` removed (``bus_absent``): Avro still carries them (as their default),
    so the subscriber's side leaves them out of what it delivers (``Event.from_kafka``)."""
    out: Headers = []
    for name, value in headers:
        if name == "ce_type":
            out.append((name, schema.encode()))
        elif name == "ce_id" and id_suffix is not None:
            out.append((name, value + b"/" + id_suffix.encode()))
        else:
            out.append((name, value))
    out.append(("bus_route", route.encode()))
    if absent is not None:
        out.append(("bus_absent", absent))
    return out


def _uncounted(schema: str, unmatched: bool) -> None:
    return None


class Dispatcher:
    def __init__(
        self, router: Router, *, codec: Codec, topics: TopicNames, tables: Sequence[TableConfig] = (), metrics: bool = True
    ) -> None:
        self.router = router
        self._codec = codec
        self._names = topics
        if metrics:
            ROUTE_COLLECTOR.watch(router)
        else:  # a second look at past events (a backfill): the hub's routing metrics count the live flow only
            self._count = _uncounted  # type: ignore[method-assign]
        self._buckets = {
            r.name: TokenBucket(r.config.throttle.rate, r.config.throttle.burst) for r in router.routes if r.config.throttle is not None
        }
        self._delivery = {name: topics.delivery(name) for name in router.subscribers()}
        self._feeds: dict[str, list[tuple[str, Compiled]]] = {}
        for table in tables:
            if table.from_ is not None and table.key is not None:
                self._feeds.setdefault(table.from_, []).append((topics.table(table.name), compile_expression(table.key)))
        self._events: dict[str, Any] = {}
        self._unmatched: dict[str, Any] = {}
        self.aggregators = {
            r.name: Aggregator(r.name, r.config.aggregate, r.stats) for r in router.routes if r.config.aggregate is not None
        }
        self._routes = {r.name: r for r in router.routes}
        self.last_decision: Decision | None = None
        # Set by a router engine after Kafka refused a copy as too large: every record is then
        # measured with its headers until a batch goes through (a producer outside the hub can
        # write headers of any size).
        self.exact_sizes = False
        self.last_input: dict[str, Any] | None = None  # the record the last plan() decoded (bus migrate reuses it)
        self._absent = {
            r.name: ",".join(r.config.transform.drop).encode() for r in router.routes if r.config.transform and r.config.transform.drop
        }
        self.state_topics = {topics.aggregate_state(name): agg for name, agg in self.aggregators.items()}
        # The canonical topic whose partitions each aggregator's state follows.
        self.state_sources = {topics.aggregate_state(name): topics.canonical(self._routes[name].schema) for name in self.aggregators}

    @property
    def sources(self) -> list[str]:
        """Canonical topics to consume: schemas with routes or feeding a table."""
        return [self._names.canonical(s) for s in sorted({*self.router.schemas, *self._feeds})]

    @property
    def output_topics(self) -> list[str]:
        return [
            *self._delivery.values(),
            self._names.router_dead_letter,
            *(t for feeds in self._feeds.values() for t, _ in feeds),
            *self.state_topics,
        ]

    def _count(self, schema: str, unmatched: bool) -> None:
        child = self._events.get(schema)
        if child is None:
            child = self._events[schema] = ROUTER_EVENTS.labels(schema)
        child.inc()
        if unmatched:
            child = self._unmatched.get(schema)
            if child is None:
                child = self._unmatched[schema] = ROUTER_UNMATCHED.labels(schema)
            child.inc()

    def dead_letter(self, key: bytes | None, value: bytes | None, headers: Headers, *, route: str, error: BusError, origin: str) -> Send:
        log.warning("router dead-lettered %s (route %s): %s", origin, route, error)
        return Send(
            self._names.router_dead_letter,
            key,
            value,
            [*headers, *why_headers(str(error), type(error).__name__, route=route, origin=origin)],
            route=route,
        )

    def _too_large(self, key: bytes | None, value: bytes | None, headers: Headers, size: int, origin: str) -> Send:
        """The router's dead letter for a record too large to route: as much of it as Kafka takes."""
        error = EventTooLarge(
            f"the record is {size:,} bytes as Kafka holds it; the hub routes records of at most {MAX_EVENT_BYTES:,} "
            "(a producer outside the hub wrote it); the letter keeps what Kafka takes of it"
        )
        return self.dead_letter(*cut_to_fit(key, value, headers), route="_router", error=error, origin=origin)

    def knows_value(self, value: bytes | None) -> bool:
        return self._codec.knows_value(value)

    async def learn_ids(self, values: Iterable[bytes | None]) -> None:
        """Before ``plan``: learn the writer schemas of ids this process has not seen (new versions)."""
        await self._codec.learn_ids(values)

    def plan(
        self, key: bytes | None, value: bytes | None, headers: Headers, origin: str, *, partition: int = 0, offset: int = -1
    ) -> list[Send]:
        """Everything one canonical record causes, in the order it must be produced."""
        # A record the hub produced fits (its producers refuse larger events), but one written by a
        # producer outside the hub may not: Kafka would refuse its copy, or its dead letter, and the
        # router would route the batch again for ever. Measured exactly (headers too) only when the
        # value or key is large, or after Kafka refused a copy as too large (``exact_sizes``): the
        # exact measure on every event cost 1.3 % of plan() under callgrind.
        if (value is not None and len(value) > MEASURE_ABOVE) or (key is not None and len(key) > KEPT_OF_TOO_LARGE) or self.exact_sizes:
            size = _record_size(key, value, headers)
            if size > MAX_EVENT_BYTES:
                self.last_input = None
                return [self._too_large(key, value, headers, size, origin)]
        try:
            schema, data = self._codec.decode(value or b"")
        except PermanentError as exc:
            self.last_input = None
            replayed = self._replayed_emission(key, value, headers, origin, partition)  # looked for only here: off the hot path
            if replayed is not None:
                return replayed
            return [self.dead_letter(key, value, headers, route="_router", error=exc, origin=origin)]
        meta = HeaderMeta(headers, key, schema)
        sends: list[Send] = []
        for table_topic, key_expr in self._feeds.get(schema, ()):
            row_key = key_expr(data, meta)
            if row_key is not None:
                sends.append(Send(table_topic, str(row_key).encode(), encode_row(data), []))
        decision = self.router.decide(schema, data, meta)
        self.last_decision = decision  # for `bus test`, which explains what plan() did
        self.last_input = data
        self._count(schema, unmatched=not decision.outcomes)
        # Encode every transformed output first: a route sends all of its outputs or none.
        encoded: dict[int, bytes] = {}
        failed: set[str] = set()
        for outcome in decision.outcomes:
            error = outcome.error
            if outcome.status == "emitted":
                try:
                    for out in outcome.outputs:
                        if out.data is not None:
                            self._codec.validate(out.schema, out.data)
                            encoded[id(out)] = blob = self._codec.encode(out.schema, out.data)
                            if len(blob) > MAX_EVENT_BYTES:  # Kafka would refuse it for ever, holding up the partition
                                raise EventTooLarge(
                                    f"the transform made an event of {len(blob):,} bytes; at most {MAX_EVENT_BYTES:,} are produced"
                                )
                except PermanentError as exc:  # the transform's output does not fit its schema, or is too large for Kafka
                    outcome.route.stats.failed += 1
                    error = exc
            if error is not None:
                failed.add(outcome.route.name)
                sends.append(self.dead_letter(key, value, headers, route=outcome.route.name, error=error, origin=origin))
            elif outcome.status == "aggregated" and outcome.folds:
                try:
                    sends.extend(self._aggregate(outcome.route.name, key, partition=partition, offset=offset, folds=outcome.folds))
                except (UnicodeDecodeError, TooManyKeys) as exc:
                    # A key a producer outside the hub wrote (raised, it stopped the router at every
                    # start), or one more than the aggregate may hold: this event alone is refused.
                    failed.add(outcome.route.name)
                    outcome.route.stats.failed += 1
                    error = (
                        exc
                        if isinstance(exc, TooManyKeys)
                        else PermanentError("the record's key is not UTF-8 text, and an aggregate groups events by their key as text")
                    )
                    sends.append(self.dead_letter(key, value, headers, route=outcome.route.name, error=error, origin=origin))
        for outcome, out, targets in decision.deliveries():
            route = outcome.route
            if route.name in failed:
                continue
            bucket = self._buckets.get(route.name)
            if out.data is None:
                out_key, payload, out_headers = key, value, [*headers, ("bus_route", route.name.encode())]
                suffix = None
            else:
                payload = encoded[id(out)]
                out_key = out.key.encode() if out.key is not None else key
                out_headers = _rewrite_headers(headers, route.name, out.schema, out.id_suffix, self._absent.get(route.name))
                suffix = out.id_suffix
            for i, target in enumerate(targets):
                # One token per emitted event, however many subscribers it goes to.
                sends.append(
                    Send(
                        self._delivery[target],
                        out_key,
                        payload,
                        out_headers,
                        bucket if i == 0 else None,
                        route=route.name,
                        id_suffix=suffix,
                    )
                )
        return sends

    def _aggregate(
        self, route: str, key: bytes | None, *, partition: int, offset: int, folds: list[tuple[dict[str, Any], Mapping[str, Any]]]
    ) -> list[Send]:
        aggregator = self.aggregators[route]
        group = key.decode() if key is not None else ""
        folded = aggregator.add(group, partition=partition, offset=offset, folds=folds, now=time.time())
        if folded is None:
            return []  # a redelivered event this key's state already holds
        emissions, state = folded
        sends = [Send(self._names.aggregate_state(route), key, state, [], partition=partition)]
        for emission in emissions:
            if aggregator.wanted(emission):
                sends.extend(self._emit_aggregate(route, emission))
            else:
                self._routes[route].stats.dropped += 1
        return sends

    def _replayed_emission(
        self, key: bytes | None, value: bytes | None, headers: Headers, origin: str, partition: int
    ) -> list[Send] | None:
        """An aggregate's result that its route's transform refused, replayed from the router's
        dead letters (``AGGREGATE_HEADER`` names the route): shaped again by the route as it is
        now and sent to its subscribers, or a dead letter again that says why not. None for any
        other record."""
        found = {k: v.decode(errors="replace") for k, v in headers if k in (AGGREGATE_HEADER, "ce_id") and v is not None}
        route_name = found.get(AGGREGATE_HEADER)
        if route_name is None:
            return None
        aggregator = self.aggregators.get(route_name)
        try:
            record = json.loads(value or b"")
            group = key.decode() if key is not None else None
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; nesting past Python's stack the other
            record = group = None
        if aggregator is None:
            why = (
                f"a replayed result of aggregate route {route_name!r}, which the config no longer has as an aggregate route: "
                "purge the dead letter, or bring the route back to replay it"
            )
        elif not isinstance(record, dict) or group is None or not found.get("ce_id"):
            why = "a replayed aggregate result without its record (a JSON object), UTF-8 key or id: not a letter the router wrote"
        else:
            emission = Emission(group, partition, found["ce_id"], record)
            if not aggregator.wanted(emission):  # the route's emit_when, as it is now, leaves it out
                self._routes[route_name].stats.dropped += 1
                return []
            return self._emit_aggregate(route_name, emission)
        return [self.dead_letter(key, value, headers, route=route_name, error=PermanentError(why), origin=origin)]

    def committed(self, topic: str, partition: int, offset: int) -> None:
        """The router committed ``topic``'s ``partition`` up to ``offset``: aggregators of it may forget settled keys."""
        for state_topic, aggregator in self.state_topics.items():
            if self.state_sources[state_topic] == topic:
                aggregator.committed(partition, offset)

    def tick(self, now: float) -> list[Send]:
        """Close ended time windows: their emissions and the keys' new state, to produce now; and
        the tombstones of keys forgotten (closed, their last event committed)."""
        sends: list[Send] = []
        for route, aggregator in self.aggregators.items():
            for key, partition in aggregator.forget_settled():
                sends.append(Send(self._names.aggregate_state(route), key.encode(), None, [], partition=partition))
            for emission, state in aggregator.tick(now):
                sends.append(Send(self._names.aggregate_state(route), emission.key.encode(), state, [], partition=emission.partition))
                if aggregator.wanted(emission):
                    sends.extend(self._emit_aggregate(route, emission))
                else:
                    self._routes[route].stats.dropped += 1
        return sends

    def _emit_aggregate(self, route_name: str, emission: Emission) -> list[Send]:
        route = self._routes[route_name]
        meta = {"key": emission.key, "id": emission.id}
        try:
            out = route.emit_aggregate(emission.record, meta)
            assert out.data is not None
            self._codec.validate(out.schema, out.data)
            payload = self._codec.encode(out.schema, out.data)
        except PermanentError as exc:
            route.stats.failed += 1
            # The result as JSON, sent back by `bus dlq replay` to the route's canonical topic, where
            # the router shapes it again with the route's (fixed) transform (_replayed_emission).
            body = json.dumps(emission.record, default=str).encode()
            headers = [("content-type", b"application/json"), ("ce_id", emission.id.encode()), (AGGREGATE_HEADER, route_name.encode())]
            return [
                self.dead_letter(
                    emission.key.encode(), body, headers, route=route_name, error=exc, origin=self._names.canonical(route.schema)
                )
            ]
        route.stats.emitted += 1
        event = Event(
            schema=out.schema, data={}, source=f"/route/{route_name}", key=out.key or emission.key, id=emission.id, type=out.schema
        )
        headers = [*event.headers(), ("bus_route", route_name.encode())]
        bucket = self._buckets.get(route_name)
        return [
            Send(self._delivery[t], (out.key or emission.key).encode(), payload, headers, bucket if i == 0 else None, route=route_name)
            for i, t in enumerate(route.targets)
        ]
