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
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from bus.config.fields import expression_fields
from bus.config.models import HubConfig
from bus.config.routes import AggregateConfig, RouteConfig
from bus.errors import ConfigIssue, ExpressionError
from bus.expr import compile_expression, compile_template, paths_of
from bus.expr import tree as t
from bus.expr.typecheck import Problem, Scope, assignable, closest, facts, infer
from bus.expr.types import (
    ANY,
    BOOL,
    DECIMAL,
    DURATION,
    FLOAT,
    INT,
    NULL,
    STRING,
    Array,
    Record,
    RecordField,
    Type,
    Union,
    describe,
    from_avro,
    from_json_schema,
    from_sample,
    is_nullable,
    join,
    non_null,
)

Loc = tuple[str | int, ...]
Locate = Callable[[Loc], tuple[str, int | None]]
_KEYWORDS = ("$each", "$as", "$value")
_AGGREGATE = re.compile(r"^(count)\(\s*\)$|^(sum|min|max|avg|first|last)\((.+)\)$")


@dataclass
class Findings:
    errors: list[ConfigIssue] = field(default_factory=list)
    warnings: list[ConfigIssue] = field(default_factory=list)
    unchecked: list[ConfigIssue] = field(default_factory=list)  # what could not be checked (reported with --strict)


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Check:
    def __init__(self, locate: Locate, schemas: Mapping[str, Type], base_dir: Path) -> None:
        self.locate = locate
        self.schemas = schemas
        self.base_dir = base_dir
        self.found = Findings()

    def issue(self, into: list[ConfigIssue], loc: Loc, message: str) -> None:
        file, line = self.locate(loc)
        into.append(ConfigIssue(file, line, _dotted(loc), message))

    def error(self, loc: Loc, message: str) -> None:
        self.issue(self.found.errors, loc, message)

    def warn(self, loc: Loc, message: str) -> None:
        self.issue(self.found.warnings, loc, message)

    # -- expressions ----------------------------------------------------------------------------
    def expression(self, text: str, scope: Scope, loc: Loc, *, want: Type | None = None, where: str = "") -> Type:
        """Check one expression; ``want`` is BOOL for conditions. Returns its type (ANY if it does not compile)."""
        node = _tree(text)
        if node is None:
            return ANY  # the model's own validation reported it
        found, problems = infer(node, scope)
        for problem in problems:
            self.error(loc, self._say(problem, text, where))
        if want == BOOL and not problems and non_null(found) not in (BOOL, ANY):
            self.error(loc, f"a condition must be true or false, and {text!r} is {describe(found)}{where}")
        return found

    @staticmethod
    def _say(problem: Problem, text: str, where: str) -> str:
        at = f" (at position {problem.pos + 1} of {text!r})" if len(text) > 1 else ""
        return f"{problem.message}{at}{where}"

    def template(self, text: str, scope: Scope, loc: Loc, where: str = "") -> None:
        try:
            template = compile_template(text)
        except ExpressionError:
            return
        for part in template.expressions:
            self.expression(part.text, scope, loc, where=where)

    def block(self, spec: Mapping[str, Any], scope: Scope, loc: Loc, target: Type | None, where: str = "") -> set[str]:
        """A body or ``emit.map`` block: each value read in ``scope`` and, with a ``target``
        record type, each key a field of it, the value fitting its type. Returns the keys set."""
        record = _record(target)
        for name, value in spec.items():
            if name in _KEYWORDS:
                continue
            here = (*loc, name)
            field_type: Type | None = None
            if record is not None:
                if name not in record.fields:
                    if not record.open:
                        listed = ", ".join(record.fields)
                        self.error(here, f"{_record_name(record)} has no field {name!r}{closest(name, record.fields)} (fields: {listed})")
                    field_type = None
                else:
                    field_type = record.fields[name].type
            if isinstance(value, Mapping):
                self.nested(value, scope, here, field_type, where)
            elif isinstance(value, str) or value is None or isinstance(value, bool | int | float):
                text = value if isinstance(value, str) else json.dumps(value)
                node = _tree(text)
                if node is None:
                    continue
                found = self.expression(text, scope, here, where=where)
                if field_type is not None:
                    reason = assignable(found, field_type, node)
                    if reason is not None:
                        self.error(here, f"{text!r} {reason}{where}")
        if record is not None and not record.open:
            set_here = {k for k in spec if k not in _KEYWORDS}
            for name, f in record.fields.items():
                if name not in set_here and not f.has_default and not is_nullable(f.type):
                    self.error(loc, f"{_record_name(record)}.{name} has no default and is not mapped: every event would be refused")
        return {k for k in spec if k not in _KEYWORDS}

    def nested(self, spec: Mapping[str, Any], scope: Scope, loc: Loc, target: Type | None, where: str) -> None:
        if "$each" not in spec:
            self.block(spec, scope, loc, non_null(target) if target is not None else None, where)
            return
        items = self.expression(str(spec["$each"]), scope, (*loc, "$each"), where=where)
        plain = non_null(items)
        item: Type = plain.item if isinstance(plain, Array) else ANY
        if plain not in (ANY, NULL) and not isinstance(plain, Array):
            self.error((*loc, "$each"), f"$each needs a list, and {spec['$each']!r} is {describe(items)}{where}")
        inner = dataclasses.replace(scope, names={**scope.names, str(spec.get("$as", "item")): item})
        goal = non_null(target) if target is not None else None
        element = goal.item if isinstance(goal, Array) else None
        if "$value" in spec:
            found = self.expression(str(spec["$value"]), inner, (*loc, "$value"), where=where)
            if element is not None:
                reason = assignable(found, element)
                if reason is not None:
                    self.error((*loc, "$value"), f"{spec['$value']!r} {reason}{where}")
        else:
            self.block(spec, inner, loc, element, where)

    # -- sections -------------------------------------------------------------------------------
    def schema(self, name: str) -> Type:
        return self.schemas.get(name, ANY)

    def inbound(self, index: int, config: BaseModel) -> tuple[str, set[str] | None] | None:
        """Check an inbound's ``emit``; returns (schema, fields it sets; None: all of them)."""
        emit = getattr(config, "emit", None)
        if emit is None or not hasattr(emit, "schema_"):
            return None
        loc: Loc = ("inbound", index, "emit")
        payload = self.payload(emit.payload, (*loc, "payload")) if getattr(emit, "payload", None) is not None else None
        scope = Scope(payload or ANY, meta=False, what="the payload")
        for name in ("key", "id", "subject"):
            text = getattr(emit, name, None)
            if text is not None:
                self.expression(text, scope, (*loc, name))
        # An adapter's own checks of how its fields fit together (``config_warnings()``).
        for where, message in getattr(config, "config_warnings", lambda: [])():
            self.warn(("inbound", index, *where), message)
        target = self.schema(emit.schema_)
        if emit.map is None:
            return emit.schema_, None
        self.block(emit.map, scope, (*loc, "map"), target)
        if payload is None:
            paths = sorted({p for text in _texts(emit.map) for p in paths_of(text)})
            if paths:
                self.issue(
                    self.found.unchecked,
                    (*loc, "map"),
                    f"{len(paths)} payload path(s) not checked ({', '.join(paths[:8])}{', ...' if len(paths) > 8 else ''}): "
                    "declare the payload's shape in emit.payload (a JSON Schema or a sample)",
                )
        return emit.schema_, set(emit.map)

    def payload(self, shape: Any, loc: Loc) -> Type | None:
        if shape.openapi is not None:
            return self.openapi(shape.openapi, (*loc, "openapi"))
        for what, convert in (("json_schema", from_json_schema), ("sample", from_sample)):
            value = getattr(shape, what)
            if value is None:
                continue
            if isinstance(value, str):
                path = Path(value) if Path(value).is_absolute() else self.base_dir / value
                try:
                    value = yaml.safe_load(path.read_text())  # JSON is YAML
                except (OSError, yaml.YAMLError) as exc:
                    self.error((*loc, what), f"cannot read {path}: {exc}")
                    return None
            return convert(value)
        return None

    def openapi(self, spec: Any, loc: Loc) -> Type | None:
        path = Path(spec.document) if Path(spec.document).is_absolute() else self.base_dir / spec.document
        try:
            document = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            self.error((*loc, "document"), f"cannot read {path}: {exc}")
            return None
        found: dict[str, Any] = {}
        for section in ("paths", "webhooks"):
            for route, methods in (document.get(section) or {}).items() if isinstance(document, Mapping) else ():
                for method, operation in (methods or {}).items():
                    if not isinstance(operation, Mapping):
                        continue
                    for name in (operation.get("operationId"), f"{method.upper()} {route}", route if section == "webhooks" else None):
                        if name:
                            found[str(name)] = operation
        operation = found.get(spec.operation)
        if operation is None:
            self.error((*loc, "operation"), f"{path} has no operation {spec.operation!r}{closest(spec.operation, found)}")
            return None
        body = operation.get("requestBody") or {}
        if "$ref" in body:
            body = from_ref(document, body["$ref"]) or {}
        schema = ((body.get("content") or {}).get("application/json") or {}).get("schema")
        if schema is None:
            self.error((*loc, "operation"), f"operation {spec.operation!r} of {path} has no application/json request body")
            return None
        return from_json_schema(schema, document)

    def route(self, index: int, route: RouteConfig, tables: Mapping[str, Type]) -> tuple[str, Type]:
        """Check a route; returns (output schema, output type) for its subscribers."""
        loc: Loc = ("routes", index)
        source = self.schema(route.from_)
        what = f"schema {route.from_}"
        if route.when is not None:
            self.expression(route.when, Scope(source, what=what), (*loc, "when"), want=BOOL)
        proved = _facts(route.when)  # what the condition proved (x != null and ...) holds in every later step
        scope = Scope(source, what=what, narrowed=proved)
        if route.dedup is not None:
            self.expression(route.dedup.by, scope, (*loc, "dedup", "by"))
        names: dict[str, Type] = {}
        for j, enrich in enumerate(route.enrich):
            # An enrichment may look up by what an earlier one found (customer.country).
            self.expression(enrich.key, dataclasses.replace(scope, names=dict(names)), (*loc, "enrich", j, "key"))
            value = tables.get(enrich.table, ANY)
            names[enrich.into] = value if enrich.on_missing == "drop" else join(value, NULL)
        if route.split is not None:
            items = self.expression(route.split.items, dataclasses.replace(scope, names=dict(names)), (*loc, "split", "items"))
            plain = non_null(items)
            if plain not in (ANY, NULL) and not isinstance(plain, Array):
                self.error((*loc, "split", "items"), f"split needs a list, and {route.split.items!r} is {describe(items)}")
            names[route.split.as_] = plain.item if isinstance(plain, Array) else ANY
        inner = dataclasses.replace(
            scope,
            names=names,
            metadata={"index": INT} if route.split is not None else {},  # each element's position
        )
        if route.aggregate is not None:
            result = self.aggregate(route.aggregate, inner, (*loc, "aggregate"))
            inner = Scope(result, what="the aggregate", narrowed=_facts(route.aggregate.emit_when))
        output = self.schema(route.output_schema)
        if route.transform is not None:
            self.transform(route, inner, output, (*loc, "transform"))
        return route.output_schema, output

    def aggregate(self, config: AggregateConfig, scope: Scope, loc: Loc) -> Type:
        result = Record("aggregate")
        result.fields["key"] = RecordField(STRING)
        result.fields["count"] = RecordField(INT)
        window = STRING if config.window is not None else NULL  # ISO 8601 text; a count window has none
        result.fields["window_start"] = RecordField(window)
        result.fields["window_end"] = RecordField(window)
        for name, text in config.fields.items():
            match = _AGGREGATE.match(text.strip())
            if match is None:
                continue
            fn = match.group(1) or match.group(2)
            value = self.expression(match.group(3), scope, (*loc, "fields", name)) if match.group(3) else INT
            if fn in ("sum", "avg") and non_null(value) not in (ANY, NULL) and not _numeric(non_null(value)):
                self.error((*loc, "fields", name), f"{fn}() adds numbers, and {match.group(3)!r} is {describe(value)}")
            if fn in ("sum", "count"):
                result.fields[name] = RecordField(non_null(value) if fn == "sum" else INT)
            elif fn == "avg":
                result.fields[name] = RecordField(join(non_null(value), NULL))
            else:
                result.fields[name] = RecordField(join(value, NULL))
        if config.previous:
            previous = Record("previous", {k: v for k, v in result.fields.items() if k != "key"})
            result.fields["previous"] = RecordField(join(previous, NULL))
        if config.emit_when is not None:
            self.expression(config.emit_when, Scope(result, what="the aggregate"), (*loc, "emit_when"), want=BOOL)
        return result

    def transform(self, route: RouteConfig, scope: Scope, output: Type, loc: Loc) -> None:
        transform = route.transform
        assert transform is not None
        record = _record(output)
        covered: set[str] = set(transform.templates) | set(transform.defaults)
        if transform.map is not None:
            self.block(transform.map, scope, (*loc, "map"), None)
            for name, text in transform.map.items():
                self.field_write(record, name, text, scope, (*loc, "map", name), defaulted=name in transform.defaults)
            covered |= set(transform.map)
        else:
            source = _record(scope.document)
            for old in transform.rename:
                if source is not None and old not in source.fields and old not in scope.names:
                    self.error((*loc, "rename", old), f"schema {route.from_} has no field {old!r}{closest(old, source.fields)}")
            for j, name in enumerate(transform.drop):
                if source is not None and name not in source.fields and name not in scope.names:
                    self.error((*loc, "drop", j), f"schema {route.from_} has no field {name!r}{closest(name, source.fields)}")
            if source is not None:
                copied = {transform.rename.get(k, k): v.type for k, v in source.fields.items() if k not in transform.drop}
                covered |= set(copied)
                if record is not None and route.output_schema != route.from_:
                    for name, value in copied.items():
                        if name in record.fields and name not in transform.defaults:
                            reason = assignable(value, record.fields[name].type)
                            if reason is not None:
                                self.error(loc, f"the copied field {name!r} {reason}")
            else:
                covered = set(record.fields) if record is not None else covered
        for name, text in transform.templates.items():
            self.template(text, scope, (*loc, "templates", name))
            self.field_write(record, name, None, scope, (*loc, "templates", name), defaulted=True)
        for name in transform.defaults:
            self.field_write(record, name, None, scope, (*loc, "defaults", name), defaulted=True)
        if transform.key is not None:
            self.expression(transform.key, scope, (*loc, "key"))
        if record is not None:
            missing = [n for n, f in record.fields.items() if n not in covered and not f.has_default and not is_nullable(f.type)]
            for name in missing:
                self.error(loc, f"{_record_name(record)}.{name} has no default and the transform does not set it: every event would fail")

    def field_write(self, record: Record | None, name: str, text: str | None, scope: Scope, loc: Loc, *, defaulted: bool) -> None:
        if record is None:
            return
        if name not in record.fields:
            self.error(
                loc, f"{_record_name(record)} has no field {name!r}{closest(name, record.fields)} (fields: {', '.join(record.fields)})"
            )
            return
        if text is None:
            return
        node = _tree(text)
        if node is None:
            return
        found, problems = infer(node, scope)
        if problems:
            return  # reported by block()
        target = record.fields[name].type
        reason = assignable(non_null(found) if defaulted else found, target, node)
        if reason is not None:
            self.error(loc, f"{text!r} {reason}")

    def outbound(self, index: int, config: BaseModel, inputs: Sequence[tuple[str, Type, str]]) -> None:
        """Every expression of an outbound's config, against each schema its routes send it."""
        for schema, document, routes in inputs:
            scope = Scope(document, what=f"schema {schema}")
            where = f" (events of schema {schema}, from {routes})" if len(inputs) > 1 else ""
            for loc, kind, value in expression_fields(config, ("outbound", index)):
                if kind == "expression":
                    self.expression(value, scope, loc, where=where)
                elif kind == "template":
                    self.template(value, scope, loc, where=where)
                elif isinstance(value, Mapping):
                    self.block(value, scope, loc, None, where)


def from_ref(document: Any, ref: str) -> Any:
    """What a local ``$ref`` (``#/components/requestBodies/Order``) points at in ``document``."""
    target = document
    for part in ref.removeprefix("#/").split("/"):
        target = target.get(part) if isinstance(target, Mapping) else None
    return target


def _numeric(x: Type) -> bool:
    return all(o in (INT, FLOAT, DECIMAL, DURATION) for o in (x.options if isinstance(x, Union) else (x,)))


def _facts(condition: str | None) -> frozenset[str]:
    if condition is None:
        return frozenset()
    tree = _tree(condition)
    return facts(tree) if tree is not None else frozenset()


def _tree(text: str) -> t.Node | None:
    """The syntax tree of an expression, None if it does not parse. The models compiled every
    expression when the config loaded (``compile_expression`` is cached): this reuses that."""
    try:
        return compile_expression(text).tree
    except ExpressionError:
        return None


def _record(x: Type | None) -> Record | None:
    if x is None:
        return None
    plain = non_null(x)
    return plain if isinstance(plain, Record) else None


def _record_name(record: Record) -> str:
    return f"schema {record.name}" if record.name else "the output"


def _texts(spec: Mapping[str, Any]) -> Iterator[str]:
    for value in spec.values():
        if isinstance(value, str):
            yield value
        elif isinstance(value, Mapping):
            yield from _texts(value)


def _constant(node: t.Node) -> bool:
    """True when ``node`` reads nothing of the event (and not the clock): it always gives the same value."""
    if isinstance(node, t.Field | t.Meta | t.Index):
        return False
    if isinstance(node, t.Call) and node.name == "now":
        return False
    return all(_constant(c) for c in t.children(node))


def check_config(
    hub: HubConfig,
    *,
    inbound: Sequence[tuple[int, BaseModel]],
    outbound: Sequence[tuple[int, BaseModel]],
    schemas: Mapping[str, Any],
    locate: Locate,
    base_dir: Path,
) -> Findings:
    """Check the meaning of a config whose shape is valid. ``schemas``: name -> parsed Avro schema."""
    types = {name: from_avro(parsed) for name, parsed in schemas.items()}
    check = _Check(locate, types, base_dir)
    produced: dict[str, list[set[str] | None]] = {}
    first_producer: dict[str, Loc] = {}
    for i, config in inbound:
        made = check.inbound(i, config)
        if made is not None:
            produced.setdefault(made[0], []).append(made[1])
            first_producer.setdefault(made[0], ("inbound", i, "emit", "map"))
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
            produced.setdefault(schema, []).append(_transform_sets(route))
            first_producer.setdefault(schema, ("routes", i, "transform", "map"))
        for target in route.to:
            feeds.setdefault(target, [])
            known = next((f for f in feeds[target] if f[0] == schema), None)
            if known is None:
                feeds[target].append((schema, output, route.name))
            else:
                feeds[target][feeds[target].index(known)] = (schema, output, f"{known[2]}, {route.name}")
        if route.when is not None:
            _condition_warnings(check, route, i)
        if inbound and route.from_ not in produced and route.from_ not in {r.output_schema for r in hub.routes if r.transform}:
            check.warn(("routes", i, "from"), f"no inbound adapter or route produces {route.from_} events here, so this route never runs")
    for i, config in outbound:
        name = str(getattr(config, "name", ""))
        inputs = feeds.get(name, [])
        if not inputs:
            check.warn(("outbound", i, "name"), f"no route sends to outbound {name!r}: it never delivers anything")
            continue
        check.outbound(i, config, inputs)
    for schema, setters in produced.items():
        # Only schemas an inbound builds: a transform's output schema is often a shared
        # canonical one whose other fields other integrations set.
        if any(s is None for s in setters) or first_producer[schema][0] != "inbound":
            continue
        record = _record(types.get(schema))
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
    return check.found


def _transform_sets(route: RouteConfig) -> set[str] | None:
    transform = route.transform
    assert transform is not None
    if transform.map is None:
        return None
    return set(transform.map) | set(transform.templates) | set(transform.defaults)


def _condition_warnings(check: _Check, route: RouteConfig, index: int) -> None:
    assert route.when is not None
    tree = _tree(route.when)
    if tree is None or not _constant(tree):
        return
    try:
        value = compile_expression(route.when)({}, {})
    except ExpressionError:
        return
    if value:
        check.warn(("routes", index, "when"), f"{route.when!r} is always true: leave `when` out to match every event")
    else:
        check.warn(("routes", index, "when"), f"{route.when!r} is never true: this route can never match")
