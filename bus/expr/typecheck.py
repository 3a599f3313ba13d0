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

__all__ = ["META_FIELDS", "Problem", "Scope", "assignable", "closest", "facts", "infer", "show"]

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from bus.expr import tree as t
from bus.expr.types import (
    ANY,
    BOOL,
    BYTES,
    DATE,
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


def show(node: t.Node) -> str:
    """The expression text of ``node`` (normalised), for messages."""
    if isinstance(node, t.Const):
        return "null" if node.value is None else ("true" if node.value is True else "false" if node.value is False else repr(node.value))
    if isinstance(node, t.Field):
        return node.name if node.base is None else f"{show(node.base)}.{node.name}"
    if isinstance(node, t.Index):
        return f"{show(node.base)}[{show(node.index)}]"
    if isinstance(node, t.Meta):
        return f"${node.name}"
    if isinstance(node, t.Call):
        return f"{node.name}({', '.join(show(a) for a in node.args)})"
    if isinstance(node, t.Unary):
        return f"not {show(node.operand)}" if node.op == "not" else f"-{show(node.operand)}"
    if isinstance(node, t.ListOf):
        return f"[{', '.join(show(i) for i in node.items)}]"
    return f"({show(node.left)} {node.op} {show(node.right)})"


def _mixed_ok(x: Type, kinds: list[str]) -> bool:
    return all(_kind(o) in kinds for o in _options(x) if o != NULL)


def facts(node: t.Node) -> frozenset[str]:
    """Field paths that are not null wherever ``node`` held: what ``and`` may rely on on its right."""
    if isinstance(node, t.Binary):
        if node.op == "and":
            return facts(node.left) | facts(node.right)
        sides = [s for s in (node.left, node.right) if t.dotted(s) is not None]
        other = {id(node.left): node.right, id(node.right): node.left}
        if node.op == "!=" or node.op in ("<", "<=", ">", ">=", "in"):
            if node.op == "!=":
                sides = [s for s in sides if isinstance(other[id(s)], t.Const) and other[id(s)].value is None]  # type: ignore[union-attr]
            return frozenset(p for s in sides if (p := t.dotted(s)) is not None)
        if node.op == "==":
            return frozenset(
                p for s in sides if (p := t.dotted(s)) is not None and isinstance(o := other[id(s)], t.Const) and o.value is not None
            )
    if isinstance(node, t.Call) and node.name == "exists" and len(node.args) == 1:
        path = t.dotted(node.args[0])
        return frozenset({path}) if path is not None else frozenset()
    return frozenset()


# -- function signatures ---------------------------------------------------------------------
# A parameter is "any" or kinds joined by "|" ("string", "number", "list", "map", "time",
# "duration", "bool", "record"); a trailing "!" means null fails there.
@dataclass(frozen=True)
class _Signature:
    arity: tuple[int, int]  # -1: any number
    params: tuple[str, ...]
    result: Callable[[list[Type]], Type]


def _same_nullability(result: Type) -> Callable[[list[Type]], Type]:
    return lambda args: join(result, NULL) if args and is_nullable(args[0]) else result


def _fixed(result: Type) -> Callable[[list[Type]], Type]:
    return lambda args: result


def _coalesce(args: list[Type]) -> Type:
    found: list[Type] = []
    for arg in args:
        found.append(non_null(arg))
        if not is_nullable(arg):
            return join(*found)
    return join(*found, NULL)


def _switch(args: list[Type]) -> Type:
    cases = args[1:]
    results = [cases[i] for i in range(1, len(cases), 2)]
    default = [cases[-1]] if len(cases) % 2 else [NULL]
    return join(*results, *default)


def _first_item(args: list[Type]) -> Type:
    items = non_null(args[0]) if args else ANY
    return join(items.item, NULL) if isinstance(items, Array) else ANY


def _extreme(args: list[Type]) -> Type:
    return join(*(non_null(a) for a in args), *((NULL,) if all(is_nullable(a) for a in args) else ()))


def _rounded(args: list[Type]) -> Type:
    base = INT if len(args) == 1 else non_null(args[0])
    return join(base, NULL) if is_nullable(args[0]) else base


_TEXT = "string|number|bool|time|clock|duration|bytes"
SIGNATURES: dict[str, _Signature] = {
    "lower": _Signature((1, 1), ("string",), _same_nullability(STRING)),
    "upper": _Signature((1, 1), ("string",), _same_nullability(STRING)),
    "trim": _Signature((1, 1), ("string",), _same_nullability(STRING)),
    "startswith": _Signature((2, 2), ("string", "string!"), _same_nullability(BOOL)),
    "endswith": _Signature((2, 2), ("string", "string!"), _same_nullability(BOOL)),
    "contains": _Signature((2, 2), ("string|list|map", "any"), _fixed(BOOL)),
    "matches": _Signature((2, 2), ("string", "string!"), _same_nullability(BOOL)),
    "replace": _Signature((3, 3), ("string", "string!", "string!"), _same_nullability(STRING)),
    "split": _Signature((2, 2), ("string", "string!"), _same_nullability(Array(STRING))),
    "join": _Signature((2, 2), ("list", "any"), _same_nullability(STRING)),
    "substr": _Signature((2, 3), ("string", "number!", "number"), _same_nullability(STRING)),
    "len": _Signature((1, 1), ("string|list|map|bytes",), _same_nullability(INT)),
    "exists": _Signature((1, 1), ("any",), _fixed(BOOL)),
    "coalesce": _Signature((1, -1), ("any",), _coalesce),
    "switch": _Signature((1, -1), ("any",), _switch),
    "find": _Signature((3, 3), ("list", "string!", "any"), _first_item),
    "mask": _Signature((1, 3), ("any", "number!", "string!"), _same_nullability(STRING)),
    "hmac_sha256": _Signature((2, 2), ("any", "string!"), _same_nullability(STRING)),
    "str": _Signature((1, 1), ("any",), _same_nullability(STRING)),
    "int": _Signature((1, 1), ("string|number|bool",), _same_nullability(INT)),
    "float": _Signature((1, 1), ("string|number|bool",), _same_nullability(FLOAT)),
    "bool": _Signature((1, 1), ("any",), _same_nullability(BOOL)),
    "abs": _Signature((1, 1), ("number|duration",), lambda args: args[0]),
    "round": _Signature((1, 2), ("number", "number!"), _rounded),
    "min": _Signature((1, -1), ("number|string|time|duration",), _extreme),
    "max": _Signature((1, -1), ("number|string|time|duration",), _extreme),
    "now": _Signature((0, 0), (), _fixed(TIMESTAMP)),
    "timestamp": _Signature((1, 1), ("string|number|time",), _same_nullability(TIMESTAMP)),
    "duration": _Signature((1, 1), ("string|number|duration",), _same_nullability(DURATION)),
    "millis": _Signature((1, 1), ("string|number|time|duration",), _same_nullability(INT)),
    "iso": _Signature((1, 1), ("string|number|time",), _same_nullability(STRING)),
    "date": _Signature((1, 1), ("string|number|time",), _same_nullability(STRING)),
    "format_time": _Signature((2, 2), ("string|number|time", "string!"), _same_nullability(STRING)),
    "decimal": _Signature((1, 1), ("string|number",), _same_nullability(DECIMAL)),
    "minor_units": _Signature((2, 2), ("string|number", "string!"), _same_nullability(INT)),
    "major_units": _Signature((2, 2), ("string|number", "string!"), _same_nullability(DECIMAL)),
}


def infer(node: t.Node, scope: Scope) -> tuple[Type, list[Problem]]:
    """The type of ``node`` in ``scope``, and every problem found in it."""
    checker = _Checker(scope)
    found = checker.infer(node, scope.narrowed)
    return found, checker.problems


# -- assigning a value to a field of a schema --------------------------------------------------
def assignable(value: Type, target: Type, node: t.Node | None = None) -> str | None:
    """Why a value of type ``value`` cannot be written into a field of type ``target`` (None: it can).

    Null into a field that cannot hold it is refused at run time (the event is refused or
    dead-lettered), so a value that may be null needs coalesce() or the route's ``defaults``.
    """
    if ANY in (value, target):
        return None
    if is_nullable(value) and not is_nullable(target):
        if value == NULL:
            return f"is null, and the field is {describe(target)}, which cannot be null"
        return f"may be null ({describe(value)}), and the field cannot be: use coalesce(..., default) or a `defaults:` entry"
    plain, goal = non_null(value), non_null(target)
    if plain == NULL:
        return None
    for option in _options(plain):
        if not any(_fits(option, g, node) for g in _options(goal) if g != NULL):
            return f"is {describe(option)}, and the field is {describe(goal)}"
    return None


def _fits(value: Type, target: Type, node: t.Node | None) -> bool:
    if ANY in (value, target):
        return True
    if isinstance(target, Enum):
        if isinstance(node, t.Const) and isinstance(node.value, str):
            return node.value in target.symbols
        return isinstance(value, Enum) or value == STRING
    if isinstance(target, Record):
        return isinstance(value, Record | MapOf)
    if isinstance(target, Array):
        return isinstance(value, Array) and (
            value.item == ANY or any(_fits(o, g, None) for o in _options(value.item) for g in _options(target.item))
        )
    if isinstance(target, MapOf):
        return isinstance(value, MapOf | Record)
    accepts: dict[Type, tuple[Type, ...]] = {
        INT: (INT,),
        FLOAT: (INT, FLOAT),
        DECIMAL: (DECIMAL,),
        STRING: (STRING,),
        BYTES: (BYTES, STRING),
        BOOL: (BOOL,),
        TIMESTAMP: (TIMESTAMP, INT),  # epoch milliseconds, or a timestamp
        DATE: (DATE, INT),
    }
    if isinstance(value, Enum):
        value = STRING
    return value in accepts.get(target, (target,))
