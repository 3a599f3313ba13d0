"""Checks of a route: its condition, dedup, enrichments, split, aggregate and transform, each
in the scope the steps before it built; and conditions that are always or never true."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from bus.config.check.checker import Checker, Loc, facts_of, is_constant, is_numeric, record_name, record_of, tree_of
from bus.config.routes import AGGREGATE_FIELD, AggregateConfig, RouteConfig
from bus.errors import ExpressionError
from bus.expr import compile_expression
from bus.expr.typecheck import Scope, closest
from bus.expr.types import (
    ANY,
    BOOL,
    INT,
    NULL,
    STRING,
    Array,
    Record,
    RecordField,
    Type,
    assignable,
    describe,
    is_nullable,
    join,
    non_null,
)


class RouteChecks(Checker):
    def route(self, index: int, route: RouteConfig, tables: Mapping[str, Type]) -> tuple[str, Type]:
        """Check a route; returns (output schema, output type) for its subscribers."""
        loc: Loc = ("routes", index)
        source = self.schema(route.from_)
        what = f"schema {route.from_}"
        if route.when is not None:
            self.expression(route.when, Scope(source, what=what), (*loc, "when"), want=BOOL)
        proved = facts_of(route.when)  # what the condition proved (x != null and ...) holds in every later step
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
            inner = Scope(result, what="the aggregate", narrowed=facts_of(route.aggregate.emit_when))
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
            match = AGGREGATE_FIELD.match(text.strip())
            if match is None:
                continue
            fn = match.group(1) or match.group(2)
            value = self.expression(match.group(3), scope, (*loc, "fields", name)) if match.group(3) else INT
            if fn in ("sum", "avg") and non_null(value) not in (ANY, NULL) and not is_numeric(non_null(value)):
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
        record = record_of(output)
        covered: set[str] = set(transform.templates) | set(transform.defaults)
        if transform.map is not None:
            self.block(transform.map, scope, (*loc, "map"), None)
            for name, text in transform.map.items():
                self.field_write(record, name, text, scope, (*loc, "map", name), defaulted=name in transform.defaults)
            covered |= set(transform.map)
        else:
            source = record_of(scope.document)
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
                self.error(loc, f"{record_name(record)}.{name} has no default and the transform does not set it: every event would fail")


def transform_sets(route: RouteConfig) -> set[str] | None:
    transform = route.transform
    assert transform is not None
    if transform.map is None:
        return None
    return set(transform.map) | set(transform.templates) | set(transform.defaults)


def condition_warnings(check: Checker, route: RouteConfig, index: int) -> None:
    assert route.when is not None
    tree = tree_of(route.when)
    if tree is None or not is_constant(tree):
        return
    try:
        value = compile_expression(route.when)({}, {})
    except ExpressionError:
        return
    if value:
        check.warn(("routes", index, "when"), f"{route.when!r} is always true: leave `when` out to match every event")
    else:
        check.warn(("routes", index, "when"), f"{route.when!r} is never true: this route can never match")
