"""Type checking of expressions against the schema in scope, at config load (never per event).

``infer(tree, scope)`` gives an expression's type and every problem in it: a field that does
not exist (with the closest names), a comparison that can never hold (a string field against
a number, an enum against a symbol it does not have), arithmetic on text, money mixed with
floats, a function given the wrong kind of value, and a value that may be null where null
fails at run time (arithmetic, ``+`` on text) unless the expression rules it out first
(``x != null and ...``, ``exists(x) and ...``, ``coalesce(x, ...)``).

The rules follow what evaluation does (``bus.expr.compiler``): reading a missing field is null,
ordering against null is false, most functions pass null through.
"""

from __future__ import annotations

__all__ = ["META_FIELDS", "Problem", "Scope", "closest", "infer"]

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bus.expr import tree as t
from bus.expr.signatures import SIGNATURES
from bus.expr.tree import facts, show
from bus.expr.types import (
    ANY,
    BOOL,
    DECIMAL,
    DURATION,
    FLOAT,
    INT,
    NULL,
    STRING,
    TIMESTAMP,
    Array,
    Enum,
    MapOf,
    Prim,
    Record,
    Type,
    Union,
    describe,
    from_sample,
    is_nullable,
    join,
    non_null,
)

# What ``$name`` reads (bus.event.Event.meta); all text except $time.
META_FIELDS: dict[str, Type] = {
    "id": STRING,
    "type": STRING,
    "source": STRING,
    "subject": join(STRING, NULL),
    "time": TIMESTAMP,
    "key": join(STRING, NULL),
    "schema": STRING,
    "index": join(INT, NULL),  # a split element's position (from 0); null elsewhere
}


@dataclass(frozen=True, slots=True)
class Problem:
    message: str
    pos: int
    reference: str | None = None  # the field path it is about, when it is about one


@dataclass(frozen=True)
class Scope:
    """What an expression can read: the fields of ``document`` (ANY: unknown shape), extra
    names bound around it (a split element, an enrichment, an aggregate's ``previous``), and
    event metadata when ``meta`` (inbound mappings run before there is an event)."""

    document: Type
    names: Mapping[str, Type] = field(default_factory=dict)
    meta: bool = True
    what: str = ""  # how the document is named in messages: "schema Payment", "the payload"
    narrowed: frozenset[str] = frozenset()  # paths known not to be null here (a condition that held before)
    metadata: Mapping[str, Type] = field(default_factory=dict)  # $names typed more precisely here ($index in a split)


def closest(name: str, known: Iterable[str]) -> str:
    """ "; did you mean 'x'?" when one known name is close, else ""."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def _kind(x: Type) -> str:
    """The family a non-null type belongs to, for the checks below."""
    if isinstance(x, Enum):
        return "string"
    if isinstance(x, Record):
        return "record"
    if isinstance(x, Array):
        return "list"
    if isinstance(x, MapOf):
        return "map"
    if isinstance(x, Union):
        kinds = {_kind(o) for o in x.options if o != NULL}
        return kinds.pop() if len(kinds) == 1 else "mixed"
    assert isinstance(x, Prim)
    return {"int": "number", "float": "number", "decimal": "number", "timestamp": "time", "date": "time", "time": "clock"}.get(
        x.kind, x.kind
    )


def _options(x: Type) -> tuple[Type, ...]:
    return x.options if isinstance(x, Union) else (x,)


class _Checker:
    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.problems: list[Problem] = []

    def problem(self, message: str, node: t.Node, reference: str | None = None) -> None:
        self.problems.append(Problem(message, node.pos, reference))

    # -- reads ------------------------------------------------------------------------------
    def field(self, node: t.Field, narrowed: frozenset[str]) -> Type:
        path = t.dotted(node)
        if node.base is None:
            if node.name in self.scope.names:
                found = self.scope.names[node.name]
            else:
                found = self.member(self.scope.document, node.name, node, path, self.scope.what)
        else:
            base = self.infer(node.base, narrowed)
            found = self.member(base, node.name, node, path, None)
        if path is not None and path in narrowed:
            return non_null(found)
        return found

    def member(self, base: Type, name: str, node: t.Node, path: str | None, what: str | None) -> Type:
        if base == ANY:
            return ANY
        records = [o for o in _options(base) if isinstance(o, Record)]
        maps = [o for o in _options(base) if isinstance(o, MapOf)]
        others = [o for o in _options(base) if o != NULL and not isinstance(o, Record | MapOf)]
        found: list[Type] = []
        for record in records:
            if name in record.fields:
                found.append(record.fields[name].type)
            elif record.open:
                found.append(ANY)
        found += [join(m.value, NULL) for m in maps]
        if found:
            return join(*found, *((NULL,) if is_nullable(base) or others else ()))
        if records:
            names = sorted({n for r in records for n in r.fields})
            where = what or (f"record {records[0].name}" if records[0].name else "this object")
            listed = ", ".join(names) if len(names) <= 30 else ", ".join(names[:30]) + ", ..."
            self.problem(f"{where} has no field {name!r}{closest(name, names)} (fields: {listed})", node, path)
            return ANY  # reported once; do not cascade
        if others:
            self.problem(f"{name!r} is read from {describe(non_null(base))}, which has no fields", node, path)
            return ANY
        return NULL  # reading from null is null

    def index(self, node: t.Index, narrowed: frozenset[str]) -> Type:
        base = self.infer(node.base, narrowed)
        index = self.infer(node.index, narrowed)
        if base == ANY:
            return ANY
        found: list[Type] = []
        for option in _options(base):
            if isinstance(option, Array):
                if index != ANY and _kind(non_null(index)) not in ("number",) and non_null(index) != NULL:
                    self.problem(f"a list is indexed by a number, not {describe(index)}", node.index)
                found.append(option.item)
            elif isinstance(option, MapOf):
                found.append(option.value)
            elif option == STRING or isinstance(option, Enum):
                found.append(STRING)
            elif isinstance(option, Record):
                found.append(ANY)  # record["field"]: reads a field by a computed name
            elif option != NULL:
                self.problem(f"{describe(option)} cannot be indexed", node)
                return ANY
        return join(*found, NULL)  # out of range reads null

    # -- the rest ---------------------------------------------------------------------------
    def infer(self, node: t.Node, narrowed: frozenset[str] = frozenset()) -> Type:
        if isinstance(node, t.Const):
            return from_sample(node.value)  # a literal is typed as a sample's value is
        if isinstance(node, t.Field):
            return self.field(node, narrowed)
        if isinstance(node, t.Index):
            return self.index(node, narrowed)
        if isinstance(node, t.Meta):
            if not self.scope.meta:
                if node.name == "headers":  # what came with the document (a webhook's request headers)
                    return MapOf(STRING)
                self.problem(
                    f"${node.name}: there is no event yet where this expression runs (only $headers is: what came with the document)",
                    node,
                )
                return NULL
            if node.name in self.scope.metadata:
                return self.scope.metadata[node.name]
            if node.name not in META_FIELDS:
                hint = closest(node.name, META_FIELDS).replace(" '", " $").replace("'?", "?")
                self.problem(f"unknown metadata ${node.name}{hint} (known: ${', $'.join(META_FIELDS)})", node)
                return ANY
            return META_FIELDS[node.name]
        if isinstance(node, t.ListOf):
            return Array(join(*(self.infer(i, narrowed) for i in node.items)) if node.items else ANY)
        if isinstance(node, t.Unary):
            inner = self.infer(node.operand, narrowed)
            if node.op == "not":
                return BOOL
            self.need_value(inner, node.operand, "-")
            if _kind(non_null(inner)) not in ("number", "duration", "any"):
                self.problem(f"- needs a number, not {describe(inner)}", node)
                return ANY
            return non_null(inner)
        if isinstance(node, t.Call):
            return self.call(node, narrowed)
        assert isinstance(node, t.Binary)
        return self.binary(node, narrowed)

    def need_value(self, x: Type, node: t.Node, what: str) -> None:
        if is_nullable(x) and x != NULL:
            path = show(node)
            self.problem(
                f"{path} may be null ({describe(x)}) and {what} fails on null: use coalesce({path}, ...) or test {path} != null first",
                node,
                t.dotted(node),
            )

    def binary(self, node: t.Binary, narrowed: frozenset[str]) -> Type:
        op = node.op
        left = self.infer(node.left, narrowed)
        if op == "and":
            self.infer(node.right, narrowed | facts(node.left))
            return BOOL
        if op == "or":
            self.infer(node.right, narrowed)
            return BOOL
        right = self.infer(node.right, narrowed)
        if op in ("==", "!="):
            self.comparable(node, left, right, ordering=False)
            return BOOL
        if op in ("<", "<=", ">", ">="):
            self.comparable(node, left, right, ordering=True)
            return BOOL
        if op in ("in", "not in"):
            self.membership(node, left, right)
            return BOOL
        return self.arithmetic(node, left, right)

    def comparable(self, node: t.Binary, left: Type, right: Type, *, ordering: bool) -> None:
        a, b = non_null(left), non_null(right)
        if ANY in (a, b) or NULL in (a, b):
            return
        for enum, other in ((a, node.right), (b, node.left)):
            if isinstance(enum, Enum) and isinstance(other, t.Const) and isinstance(other.value, str) and not ordering:
                if other.value not in enum.symbols:
                    self.problem(
                        f"{other.value!r} is not a symbol of {enum.name}{closest(other.value, enum.symbols)} "
                        f"(symbols: {', '.join(enum.symbols)}): this comparison is never true",
                        other,
                    )
                return
        ka, kb = _kind(a), _kind(b)
        if "mixed" in (ka, kb) or ka == kb:
            if ordering and ka in ("record", "list", "map", "bool"):
                self.problem(f"{describe(a)} cannot be ordered with {node.op}", node)
            return
        reference = t.dotted(node.left) or t.dotted(node.right)
        outcome = "is never true" if node.op == "==" else ("is always true" if node.op == "!=" else "fails")
        self.problem(f"compares {describe(a)} with {describe(b)}: {node.op} {outcome}", node, reference)

    def membership(self, node: t.Binary, left: Type, right: Type) -> None:
        container = non_null(right)
        if container in (ANY, NULL):
            return
        kind = _kind(container)
        if kind == "string":
            if _kind(non_null(left)) not in ("string", "any", "null"):
                self.problem(f"`in` a string looks for text, not {describe(left)}", node)
            return
        if kind in ("list", "map"):
            item = container.item if isinstance(container, Array) else STRING
            if isinstance(item, Union) or not isinstance(container, Array):
                return
            a = non_null(left)
            if isinstance(a, Enum) and isinstance(node.right, t.ListOf):
                for element in node.right.items:
                    if isinstance(element, t.Const) and isinstance(element.value, str) and element.value not in a.symbols:
                        self.problem(f"{element.value!r} is not a symbol of {a.name}{closest(element.value, a.symbols)}", element)
                return
            if a not in (ANY, NULL) and item not in (ANY, NULL) and _kind(a) != _kind(item) and "mixed" not in (_kind(a), _kind(item)):
                self.problem(f"looks for {describe(a)} in {describe(container)}: never found", node, t.dotted(node.left))
            return
        self.problem(f"`in` needs a list, a map or a string on its right, not {describe(container)}", node.right)

    def arithmetic(self, node: t.Binary, left: Type, right: Type) -> Type:
        op = node.op
        a, b = non_null(left), non_null(right)
        if ANY in (a, b):
            self.need_value(left, node.left, op)
            self.need_value(right, node.right, op)
            return ANY
        ka, kb = _kind(a), _kind(b)
        result: Type | None = None
        if ka == "number" and kb == "number":
            if DECIMAL in (a, b) and FLOAT in (a, b):
                self.problem(
                    f"{op} mixes a decimal (money) with a float: exact amounts and binary fractions do not mix; "
                    "use decimal(x) on the float side",
                    node,
                )
                return DECIMAL
            result = DECIMAL if DECIMAL in (a, b) else (FLOAT if FLOAT in (a, b) or op == "/" else INT)
        elif op == "+" and ka == kb == "string":
            result = STRING
        elif op == "+" and ka == kb == "list":
            result = join(a, b)
        elif op in ("+", "-") and {ka, kb} == {"time", "duration"} and (op == "+" or ka == "time"):
            result = TIMESTAMP
        elif (
            (op == "-" and ka == kb == "time")
            or (op in ("+", "-") and ka == kb == "duration")
            or (op in ("*", "/") and {ka, kb} == {"duration", "number"})
        ):
            result = DURATION
        if result is None:
            if op == "+" and "string" in (ka, kb):
                hint = ": convert with str(...) first"
            elif op != "+" and "string" in (ka, kb):
                hint = ": it is arithmetic, and text is not a number (int(...) or decimal(...) converts it)"
            else:
                hint = ""
            self.problem(f"{op} cannot combine {describe(a)} and {describe(b)}{hint}", node, t.dotted(node.left) or t.dotted(node.right))
            return ANY
        self.need_value(left, node.left, op)
        self.need_value(right, node.right, op)
        return result

    def call(self, node: t.Call, narrowed: frozenset[str]) -> Type:
        args = [self.infer(a, narrowed) for a in node.args]
        signature = SIGNATURES.get(node.name)
        if signature is None:
            return ANY
        low, high = signature.arity
        if not low <= len(args) <= (high if high >= 0 else len(args)):
            expected = f"{low}" if low == high else (f"{low} or more" if high < 0 else f"{low} to {high}")
            self.problem(f"{node.name}() takes {expected} argument(s), given {len(args)}", node)
            return ANY
        for i, (arg, tree) in enumerate(zip(args, node.args, strict=True)):
            accepted = signature.params[min(i, len(signature.params) - 1)] if signature.params else "any"
            if accepted == "any":
                continue
            kinds, needs_value = accepted.rstrip("!").split("|"), accepted.endswith("!")
            plain = non_null(arg)
            if plain not in (ANY, NULL) and _kind(plain) not in kinds and not (_kind(plain) == "mixed" and _mixed_ok(plain, kinds)):
                self.problem(f"{node.name}() takes {' or '.join(kinds)} as argument {i + 1}, not {describe(plain)}", tree, t.dotted(tree))
            if needs_value:
                self.need_value(arg, tree, f"{node.name}()")
        return signature.result(args)


def _mixed_ok(x: Type, kinds: list[str]) -> bool:
    return all(_kind(o) in kinds for o in _options(x) if o != NULL)


def infer(node: t.Node, scope: Scope) -> tuple[Type, list[Problem]]:
    """The type of ``node`` in ``scope``, and every problem found in it."""
    checker = _Checker(scope)
    found = checker.infer(node, scope.narrowed)
    return found, checker.problems
