"""The checker's core: where findings are reported (file, line, dotted field), and how one
expression, template or block is checked against the type in scope. The sections of a config
are checked by ``payloads`` (inbound ``emit``), ``routes`` and the package's ``check_config``."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bus.config.adapters import Contract
from bus.errors import ConfigIssue, ExpressionError
from bus.expr import compile_expression, compile_template
from bus.expr import tree as t
from bus.expr.tree import facts
from bus.expr.typecheck import Problem, Scope, closest, infer
from bus.expr.types import (
    ANY,
    BOOL,
    DECIMAL,
    DURATION,
    FLOAT,
    INT,
    NULL,
    Array,
    Record,
    Type,
    Union,
    assignable,
    describe,
    is_nullable,
    non_null,
)

Loc = tuple[str | int, ...]
Locate = Callable[[Loc], tuple[str, int | None]]
KEYWORDS = ("$each", "$as", "$value")


@dataclass
class Findings:
    errors: list[ConfigIssue] = field(default_factory=list)
    warnings: list[ConfigIssue] = field(default_factory=list)
    unchecked: list[ConfigIssue] = field(default_factory=list)  # what could not be checked (reported with --strict)


def dotted_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class Checker:
    def __init__(self, locate: Locate, schemas: Mapping[str, Type], base_dir: Path) -> None:
        self.locate = locate
        self.schemas = schemas
        self.base_dir = base_dir
        self.found = Findings()

    def issue(self, into: list[ConfigIssue], loc: Loc, message: str) -> None:
        file, line = self.locate(loc)
        into.append(ConfigIssue(file, line, dotted_loc(loc), message))

    def error(self, loc: Loc, message: str) -> None:
        self.issue(self.found.errors, loc, message)

    def warn(self, loc: Loc, message: str) -> None:
        self.issue(self.found.warnings, loc, message)

    def contract(self, config: Any, loc: Loc) -> Contract | None:
        """The adapter's ``contract(base_dir)`` (a WSDL, GraphQL schema or OpenAPI document it
        names), its errors reported at their fields; None when the adapter has none."""
        offer = getattr(config, "contract", None)
        if not callable(offer):
            return None
        try:
            found = offer(self.base_dir)
        except Exception as exc:  # noqa: BLE001 - a third-party adapter's check that breaks is its bug, said as such
            self.error(loc, f"the {getattr(config, 'type', '')} adapter's contract check failed: {exc!r}")
            return None
        if not isinstance(found, Contract):
            return None
        for where, message in found.errors:
            self.error((*loc, *where), message)
        return found

    # -- expressions ----------------------------------------------------------------------------
    def expression(self, text: str, scope: Scope, loc: Loc, *, want: Type | None = None, where: str = "") -> Type:
        """Check one expression; ``want`` is BOOL for conditions. Returns its type (ANY if it does not compile)."""
        node = tree_of(text)
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
        record = record_of(target)
        for name, value in spec.items():
            if name in KEYWORDS:
                continue
            here = (*loc, name)
            field_type: Type | None = None
            if record is not None:
                if name not in record.fields:
                    if not record.open:
                        listed = ", ".join(record.fields)
                        self.error(here, f"{record_name(record)} has no field {name!r}{closest(name, record.fields)} (fields: {listed})")
                    field_type = None
                else:
                    field_type = record.fields[name].type
            if isinstance(value, Mapping):
                self.nested(value, scope, here, field_type, where)
            elif isinstance(value, str) or value is None or isinstance(value, bool | int | float):
                text = value if isinstance(value, str) else json.dumps(value)
                node = tree_of(text)
                if node is None:
                    continue
                found = self.expression(text, scope, here, where=where)
                if field_type is not None:
                    reason = assignable(found, field_type, node)
                    if reason is not None:
                        self.error(here, f"{text!r} {reason}{where}")
        if record is not None and not record.open:
            set_here = {k for k in spec if k not in KEYWORDS}
            for name, f in record.fields.items():
                if name not in set_here and not f.has_default and not is_nullable(f.type):
                    self.error(loc, f"{record_name(record)}.{name} has no default and is not mapped: every event would be refused")
        return {k for k in spec if k not in KEYWORDS}

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

    def schema(self, name: str) -> Type:
        return self.schemas.get(name, ANY)

    def field_write(self, record: Record | None, name: str, text: str | None, scope: Scope, loc: Loc, *, defaulted: bool) -> None:
        if record is None:
            return
        if name not in record.fields:
            self.error(
                loc, f"{record_name(record)} has no field {name!r}{closest(name, record.fields)} (fields: {', '.join(record.fields)})"
            )
            return
        if text is None:
            return
        node = tree_of(text)
        if node is None:
            return
        found, problems = infer(node, scope)
        if problems:
            return  # reported by block()
        target = record.fields[name].type
        reason = assignable(non_null(found) if defaulted else found, target, node)
        if reason is not None:
            self.error(loc, f"{text!r} {reason}")


def is_numeric(x: Type) -> bool:
    return all(o in (INT, FLOAT, DECIMAL, DURATION) for o in (x.options if isinstance(x, Union) else (x,)))


def facts_of(condition: str | None) -> frozenset[str]:
    if condition is None:
        return frozenset()
    tree = tree_of(condition)
    return facts(tree) if tree is not None else frozenset()


def tree_of(text: str) -> t.Node | None:
    """The syntax tree of an expression, None if it does not parse. The models compiled every
    expression when the config loaded (``compile_expression`` is cached): this reuses that."""
    try:
        return compile_expression(text).tree
    except ExpressionError:
        return None


def record_of(x: Type | None) -> Record | None:
    if x is None:
        return None
    plain = non_null(x)
    return plain if isinstance(plain, Record) else None


def record_name(record: Record) -> str:
    """How a message names the record: an Avro schema by its name; a contract's type (its title
    has words: "the variables of mutation createInvoice") as it says."""
    if not record.name:
        return "the output"
    return record.name if " " in record.name else f"schema {record.name}"


def texts_of(spec: Mapping[str, Any]) -> Iterator[str]:
    for value in spec.values():
        if isinstance(value, str):
            yield value
        elif isinstance(value, Mapping):
            yield from texts_of(value)


def is_constant(node: t.Node) -> bool:
    """True when ``node`` reads nothing of the event (and not the clock): it always gives the same value."""
    if isinstance(node, t.Field | t.Meta | t.Index):
        return False
    if isinstance(node, t.Call) and node.name == "now":
        return False
    return all(is_constant(c) for c in t.children(node))
