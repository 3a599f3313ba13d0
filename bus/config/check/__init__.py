"""The config checker: does the config mean what it says? Run on every load, never per event.

Types flow through the whole config. An inbound's ``emit`` builds a schema from the payload
(its declared shape, or unknown); a route reads its ``from`` schema, binds a split element, an
enrichment or an aggregate's result, and writes its output schema; a subscriber reads what its
routes send it. Every field path in every expression (conditions, mappings, bodies, headers,
URL and topic templates, keys, split and aggregate fields) is resolved against the schema in
scope, with the types checked (``bus.expr.typecheck``); every mapped field must exist in the
schema it is written to, with a value that fits it, and every field with no default must be
mapped.

The rule for a missing value, a default and null, the same in inbound mappings and transforms:
a field that is mapped is what its expression gives (null stays null, and an event whose null
lands in a field that cannot hold it is refused or dead-lettered); a field that is not mapped
takes the schema's default; a transform's ``defaults:`` replace a null. A field with no
mapping and no default is an error here, so it never reaches run time.

Findings are errors (the config is refused), warnings (it loads; ``--strict`` refuses it) and,
with ``strict``, notes on what could not be checked (a payload with no declared shape).
"""

from __future__ import annotations

__all__ = ["Findings", "check_config"]

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bus.config.check.checker import Findings, Loc, Locate, record_of
from bus.config.check.payloads import PayloadChecks
from bus.config.check.routes import RouteChecks, condition_warnings, transform_sets
from bus.config.delivery import STOP_AFTER_DRAIN_S, STOP_WAITS_BEFORE_DRAIN_S, DeliveryPolicy
from bus.config.fields import expression_fields
from bus.config.models import HubConfig
from bus.expr.typecheck import Scope, closest
from bus.expr.types import ANY, Record, Type, from_avro, from_json_schema
from bus.kafka.topics import TopicNames


class _Check(PayloadChecks, RouteChecks):
    def outbound(self, index: int, config: BaseModel, inputs: Sequence[tuple[str, Type, str]]) -> None:
        """Every expression of an outbound's config, against each schema its routes send it; the
        body block against what the other side accepts, when the adapter's contract says."""
        contract = self.contract(config, ("outbound", index))
        body_at: Loc | None = None
        accepts: Type | None = None
        if contract is not None and contract.body is not None:
            body_at, accepts = ("outbound", index, *contract.body[0]), from_json_schema(contract.body[1])
            if isinstance(accepts, Record) and not accepts.name and contract.name:
                accepts = dataclasses.replace(accepts, name=contract.name)
        for schema, document, routes in inputs:
            scope = Scope(document, what=f"schema {schema}")
            where = f" (events of schema {schema}, from {routes})" if len(inputs) > 1 else ""
            for loc, kind, value in expression_fields(config, ("outbound", index)):
                if kind == "expression":
                    self.expression(value, scope, loc, where=where)
                elif kind == "template":
                    self.template(value, scope, loc, where=where)
                elif isinstance(value, Mapping):
                    self.block(value, scope, loc, accepts if loc == body_at else None, where)


def check_config(
    hub: HubConfig,
    *,
    inbound: Sequence[tuple[int, BaseModel]],
    outbound: Sequence[tuple[int, BaseModel]],
    schemas: Mapping[str, Any],
    locate: Locate,
    base_dir: Path,
    grace_s: float | None = None,
) -> Findings:
    """Check the meaning of a config whose shape is valid. ``schemas``: name -> parsed Avro schema.
    ``grace_s``: how long the pod is given to stop (Kubernetes), when known."""
    types = {name: from_avro(parsed) for name, parsed in schemas.items()}
    check = _Check(locate, types, base_dir)
    produced: dict[str, list[set[str] | None]] = {}
    first_producer: dict[str, Loc] = {}
    for i, config in inbound:
        made = check.inbound(i, config)
        if made is not None:
            produced.setdefault(made[0], []).append(made[1])
            first_producer.setdefault(made[0], ("inbound", i, "emit", "map"))
    for i, migration in enumerate(hub.migrations):
        made = check.migration(i, migration)
        produced.setdefault(made[0], []).append(made[1])
        first_producer.setdefault(made[0], ("migrations", i, "emit", "map"))
    tables: dict[str, Type] = {}
    for j, table in enumerate(hub.tables):
        value: Type = ANY
        if table.from_ is not None and table.key is not None:
            value = types.get(table.from_, ANY)
            check.expression(table.key, Scope(value, what=f"schema {table.from_}"), ("tables", j, "key"))
        tables[table.name] = value
    feeds: dict[str, list[tuple[str, Type, str]]] = {}
    for i, route in enumerate(hub.routes):
        schema, output = check.route(i, route, tables)
        if route.transform is not None:
            produced.setdefault(schema, []).append(transform_sets(route))
            first_producer.setdefault(schema, ("routes", i, "transform", "map"))
        for target in route.to:
            feeds.setdefault(target, [])
            known = next((f for f in feeds[target] if f[0] == schema), None)
            if known is None:
                feeds[target].append((schema, output, route.name))
            else:
                feeds[target][feeds[target].index(known)] = (schema, output, f"{known[2]}, {route.name}")
        if route.when is not None:
            condition_warnings(check, route, i)
        if inbound and route.from_ not in produced and route.from_ not in {r.output_schema for r in hub.routes if r.transform}:
            check.warn(("routes", i, "from"), f"no inbound adapter or route produces {route.from_} events here, so this route never runs")
    for i, config in outbound:
        name = str(getattr(config, "name", ""))
        inputs = feeds.get(name, [])
        if not inputs:
            check.warn(("outbound", i, "name"), f"no route sends to outbound {name!r}: it never delivers anything")
        check.outbound(i, config, inputs)  # with no inputs: its contract alone
        policy = getattr(config, "delivery", None)
        if grace_s is not None and isinstance(policy, DeliveryPolicy):
            drain = policy.drain_at_stop.total_seconds()
            if (stop := STOP_WAITS_BEFORE_DRAIN_S + drain + STOP_AFTER_DRAIN_S) > grace_s:
                check.warn(
                    ("outbound", i, "delivery", "drain_at_stop"),
                    f"a stop may take {stop:g}s (the sources' and the webhook server's waits, {STOP_WAITS_BEFORE_DRAIN_S:g}s, "
                    f"this {drain:g}s drain, then about {STOP_AFTER_DRAIN_S:g}s to commit), longer than the {grace_s:g}s the pod "
                    "is given (terminationGracePeriodSeconds): it would be killed before its deliveries drain; lower "
                    "drain_at_stop or raise terminationGracePeriodSeconds",
                )
    connections = [c.name for c in hub.connections]
    for direction, configs in (("inbound", inbound), ("outbound", outbound)):
        for at, adapter in configs:
            named = getattr(getattr(adapter, "auth", None), "connection", None)
            if isinstance(named, str) and named not in connections:
                listed = f" (connections: {', '.join(connections)})" if connections else "; declare it under connections:"
                check.error((direction, at, "auth", "connection"), f"no connection named {named!r}{closest(named, connections)}{listed}")
    for schema, setters in produced.items():
        # Only schemas an inbound builds: a transform's output schema is often a shared
        # canonical one whose other fields other integrations set.
        if any(s is None for s in setters) or first_producer[schema][0] != "inbound":
            continue
        record = record_of(types.get(schema))
        if record is None:
            continue
        set_anywhere = set().union(*[s for s in setters if s is not None])
        never = [n for n in record.fields if n not in set_anywhere]
        if never:
            check.warn(
                first_producer[schema],
                f"field(s) {', '.join(never)} of schema {schema} set by no inbound mapping or transform: always their "
                'default (map a field to "null" to say it is left empty on purpose)',
            )
    _topic_names(check, hub, inbound, outbound)
    _endpoints(check, inbound)
    return check.found


def _endpoints(check: _Check, inbound: Sequence[tuple[int, BaseModel]]) -> None:
    """One inbound per method and path of the hub's HTTP server: a second one passed `bus
    validate` and was refused only when it started, while the first took its senders' requests."""
    served: dict[tuple[str, str], str] = {}
    for i, config in inbound:
        describe = getattr(config, "http_endpoint", None)
        if not callable(describe):
            continue
        endpoint = describe()
        method, path = str(endpoint.get("method", "post")).upper(), str(endpoint["path"])
        name = str(getattr(config, "name", ""))
        if (first := served.setdefault((method, path), name)) != name:
            check.error(("inbound", i, "path"), f"{method} {path} is served by inbound {first!r} already: give each its own path")


MAX_TOPIC_CHARS = 249  # Kafka refuses a longer topic name when the hub creates it


def _topic_names(
    check: _Check, hub: HubConfig, inbound: Sequence[tuple[int, BaseModel]], outbound: Sequence[tuple[int, BaseModel]]
) -> None:
    """Every topic a name in the config makes fits Kafka's limit: a long prefix, adapter, route,
    table or schema name passed `bus validate` and stopped the hub at its start."""
    topics = TopicNames(hub.kafka.topic_prefix)
    if len(topics.checkpoints) > MAX_TOPIC_CHARS:  # the prefix alone: said once, not at every name
        check.error(
            ("kafka", "topic_prefix"),
            f"makes the topic {topics.checkpoints[:40]}... {len(topics.checkpoints)} characters long, and Kafka takes at most "
            f"{MAX_TOPIC_CHARS}: shorten it",
        )
        return
    named: list[tuple[Loc, str]] = [(("outbound", i, "name"), topics.delivery(str(getattr(c, "name", "")))) for i, c in outbound]
    named += [(("inbound", i, "name"), topics.inbound_dead_letter(str(getattr(c, "name", "")))) for i, c in inbound]
    named += [(("tables", j, "name"), topics.table(t.name)) for j, t in enumerate(hub.tables)]
    for i, route in enumerate(hub.routes):
        named.append((("routes", i, "from"), topics.canonical(route.from_)))
        if route.aggregate:
            named.append((("routes", i, "name"), topics.aggregate_state(route.name)))
    for i, config in inbound:
        if (schema := getattr(getattr(config, "emit", None), "schema_", None)) is not None:
            named.append((("inbound", i, "emit", "schema"), topics.canonical(str(schema))))
    for loc, topic in named:
        if len(topic) > MAX_TOPIC_CHARS:
            check.error(
                loc,
                f"makes the topic {topic[:40]}... {len(topic)} characters long, and Kafka takes at most {MAX_TOPIC_CHARS}: "
                "shorten this name or kafka.topic_prefix",
            )
