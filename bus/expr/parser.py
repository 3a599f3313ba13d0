"""The hub's small expression language, compiled once at start-up into Python closures.

Used wherever config needs a value from an event: route conditions (``when:``), inbound
mappings (``emit.map``, ``emit.key``), outbound bodies. User text is never given to ``eval``.

Syntax (lowest precedence first)::

    a or b          a and b          not a
    ==  !=  <  <=  >  >=  in  not in
    +  -            *  /  %          -x
    data.object.id  lines[0].sku     lower(name)   $id  $type  $key
    literals: 12  3.5  "text"  'text'  true  false  null  ["a", "b"]

A bare name reads a field of the document (nested with ``.``, indexed with ``[i]``); a missing
field reads as ``null``. ``$name`` reads event metadata (``$id``, ``$type``, ``$source``,
``$subject``, ``$time``, ``$key``). Comparing ``null`` with ``<`` and friends is false rather than
an error, so ``amount >= 100`` simply does not match an event without an amount.
"""

from __future__ import annotations

__all__ = ["EVALUATION_ERRORS", "Compiled", "Conditions", "compile_conditions", "compile_expression"]

import functools
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bus.errors import ExpressionError
from bus.expr import tree as t
from bus.expr.functions import FUNCTIONS

Doc = Mapping[str, Any]
Meta = Mapping[str, Any]
Evaluator = Callable[[Doc, Meta], Any]


@dataclass(frozen=True, slots=True)
class _Node:
    """A compiled sub-expression twice over: a closure (the reference, for any document) and
    Python source for the fast path (see ``_generate``). The source names constants and helpers
    only through ``_Names``; no text of the user's reaches it."""

    fn: Evaluator
    src: str
    tree: t.Node  # for the config checker (bus.expr.typecheck); never read per event


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>\d+\.\d+|\d+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<meta>\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|<|>|\+|-|\*|/|%|\(|\)|\[|\]|,|\.)
    """,
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # number, string, meta, name, op, kw, end
    value: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ExpressionError(f"unexpected character {text[pos]!r}", expression=text, position=pos)
        kind = match.lastgroup or ""
        value = match.group()
        if kind != "ws":
            if kind == "name" and value in _KEYWORDS:
                kind = "kw"
            tokens.append(_Tok(kind, value, pos))
        pos = match.end()
    tokens.append(_Tok("end", "", len(text)))
    return tokens


def _unquote(raw: str) -> str:
    body = raw[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


def _compare(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    # Ordering against null is false, not an error: a missing field never matches a threshold.
    def cmp(a: Any, b: Any) -> bool:
        if a is None or b is None:
            return False
        return op(a, b)

    return cmp


def _contains(item: Any, container: Any) -> bool:
    return container is not None and item in container


# Results an expression may build from sender-controlled values: a string or list past this many
# characters or items is an evaluation error, never a MemoryError that takes the process down.
MAX_RESULT = 1_000_000
_SEQUENCES = (str, bytes, list, tuple, dict)


def _numeric(name: str, op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """``*``, ``/`` and ``%`` are arithmetic only: ``"ab" * 10**9`` or ``"%999999999d" % 1`` would
    build a value as large as the sender asks for."""

    def apply(a: Any, b: Any) -> Any:
        if isinstance(a, _SEQUENCES) or isinstance(b, _SEQUENCES):
            raise TypeError(f"{name} takes numbers, not {type(a).__name__} and {type(b).__name__}")
        return op(a, b)

    return apply


def _add(a: Any, b: Any) -> Any:
    result = a + b
    if isinstance(result, _SEQUENCES) and len(result) > MAX_RESULT:
        raise ValueError(f"+ made a value of {len(result)} characters or items (limit {MAX_RESULT})")
    return result


_MUL, _DIV, _MOD = _numeric("*", operator.mul), _numeric("/", operator.truediv), _numeric("%", operator.mod)

_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": _compare(operator.lt),
    "<=": _compare(operator.le),
    ">": _compare(operator.gt),
    ">=": _compare(operator.ge),
    "in": _contains,
    "not in": lambda a, b: not _contains(a, b),
    "+": _add,
    "-": operator.sub,
    "*": _MUL,
    "/": _DIV,
    "%": _MOD,
}
_PRECEDENCE = {
    "or": 1, "and": 2,
    "==": 4, "!=": 4, "<": 4, "<=": 4, ">": 4, ">=": 4, "in": 4, "not in": 4,
    "+": 5, "-": 5, "*": 6, "/": 6, "%": 6,
}  # fmt: skip
_NOT_PRECEDENCE = 3


class _Names:
    """Constants and helpers the generated source refers to, by generated names."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {
            "_field": _get_field,
            "_index": _get_index,
            "_contains": _contains,
            "_add": _add,
            "_mul": _MUL,
            "_div": _DIV,
            "_mod": _MOD,
        }
        self._temps = 0

    def const(self, value: Any) -> str:
        if value is None or isinstance(value, bool | int):
            return repr(value)  # exact Python literals
        name = f"_c{len(self.values)}"
        self.values[name] = value
        return name

    def temp(self) -> str:
        self._temps += 1
        return f"_t{self._temps}"


class _Parser:
    """Pratt parser producing closures and source directly: parsing is compiling."""

    def __init__(self, text: str, names: _Names | None = None) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.names = names if names is not None else _Names()  # shared when several are generated as one

    def error(self, message: str, tok: _Tok) -> ExpressionError:
        return ExpressionError(message, expression=self.text, position=tok.pos)

    @property
    def tok(self) -> _Tok:
        return self.tokens[self.i]

    def advance(self) -> _Tok:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, value: str) -> _Tok:
        if self.tok.value != value or self.tok.kind not in ("op", "kw"):
            found = repr(self.tok.value) if self.tok.kind != "end" else "end of expression"
            raise self.error(f"expected {value!r}, found {found}", self.tok)
        return self.advance()

    def parse(self) -> _Node:
        if self.tok.kind == "end":
            raise self.error("empty expression", self.tok)
        fn = self.expression(0)
        if self.tok.kind != "end":
            raise self.error(f"unexpected {self.tok.value!r}", self.tok)
        return fn

    def _binary_op(self) -> str | None:
        tok = self.tok
        if tok.kind == "op" and tok.value in _PRECEDENCE:
            return tok.value
        if tok.kind == "kw" and tok.value in ("and", "or", "in"):
            return tok.value
        if tok.kind == "kw" and tok.value == "not" and self.tokens[self.i + 1].value == "in":
            return "not in"
        return None

    def expression(self, min_prec: int) -> _Node:
        left = self.unary()
        while True:
            op = self._binary_op()
            if op is None or _PRECEDENCE[op] <= min_prec:
                return left
            self.advance()
            if op == "not in":
                self.advance()
            op_pos = self.tokens[self.i - (2 if op == "not in" else 1)].pos
            right = self.expression(_PRECEDENCE[op])
            left = self._combine(op, left, right, op_pos)

    def _combine(self, op: str, left: _Node, right: _Node, pos: int) -> _Node:
        lf, rf = left.fn, right.fn
        node = t.Binary(op, left.tree, right.tree, pos)
        if op == "and":
            return _Node(lambda d, m: bool(lf(d, m)) and bool(rf(d, m)), f"((not not {left.src}) and (not not {right.src}))", node)
        if op == "or":
            return _Node(lambda d, m: bool(lf(d, m)) or bool(rf(d, m)), f"((not not {left.src}) or (not not {right.src}))", node)
        fn = _BINARY[op]
        closure: Evaluator = lambda d, m: fn(lf(d, m), rf(d, m))  # noqa: E731
        if op in ("==", "!=", "-"):
            return _Node(closure, f"({left.src} {op} {right.src})", node)
        if op in ("+", "*", "/", "%"):  # through the guarded helpers, as the closure does
            helper = {"+": "_add", "*": "_mul", "/": "_div", "%": "_mod"}[op]
            return _Node(closure, f"{helper}({left.src}, {right.src})", node)
        if op in ("<", "<=", ">", ">="):
            # Both sides evaluated (as the closure does), then null compares false.
            a, b = self.names.temp(), self.names.temp()
            return _Node(closure, f"((((({a} := {left.src}) is not None) & (({b} := {right.src}) is not None))) and {a} {op} {b})", node)
        negate = "not " if op == "not in" else ""
        return _Node(closure, f"({negate}_contains({left.src}, {right.src}))", node)

    def unary(self) -> _Node:
        tok = self.tok
        if tok.kind == "kw" and tok.value == "not":
            self.advance()
            inner = self.expression(_NOT_PRECEDENCE)
            fn = inner.fn
            return _Node(lambda d, m: not fn(d, m), f"(not {inner.src})", t.Unary("not", inner.tree, tok.pos))
        if tok.kind == "op" and tok.value == "-":
            self.advance()
            inner = self.unary()
            fn = inner.fn
            return _Node(lambda d, m: -fn(d, m), f"(-{inner.src})", t.Unary("-", inner.tree, tok.pos))
        return self.postfix(self.primary())

    def _constant(self, value: Any, pos: int) -> _Node:
        return _Node(lambda d, m: value, self.names.const(value), t.Const(value, pos))

    def primary(self) -> _Node:
        tok = self.advance()
        if tok.kind == "number":
            return self._constant(float(tok.value) if "." in tok.value else int(tok.value), tok.pos)
        if tok.kind == "string":
            return self._constant(_unquote(tok.value), tok.pos)
        if tok.kind == "kw" and tok.value in ("true", "false", "null"):
            return self._constant({"true": True, "false": False, "null": None}[tok.value], tok.pos)
        if tok.kind == "meta":
            key = tok.value[1:]
            return _Node(lambda d, m: m.get(key), f"m.get({self.names.const(key)})", t.Meta(key, tok.pos))
        if tok.kind == "name":
            if self.tok.value == "(" and self.tok.kind == "op":
                return self.call(tok)
            # The fast path runs only for dict documents (Compiled.__call__), so .get() is safe there.
            return _Node(_root_field(tok.value), f"d.get({self.names.const(tok.value)})", t.Field(None, tok.value, tok.pos))
        if tok.kind == "op" and tok.value == "(":
            inner = self.expression(0)
            self.expect(")")
            return inner
        if tok.kind == "op" and tok.value == "[":
            items = self.arguments("]")
            fns = [item.fn for item in items]
            src = "[" + ", ".join(item.src for item in items) + "]"
            return _Node(lambda d, m: [fn(d, m) for fn in fns], src, t.ListOf(tuple(item.tree for item in items), tok.pos))
        found = repr(tok.value) if tok.kind != "end" else "end of expression"
        raise self.error(f"unexpected {found}", tok)

    def arguments(self, closer: str) -> list[_Node]:
        items: list[_Node] = []
        if self.tok.value == closer and self.tok.kind == "op":
            self.advance()
            return items
        while True:
            items.append(self.expression(0))
            if self.tok.value == "," and self.tok.kind == "op":
                self.advance()
                continue
            self.expect(closer)
            return items

    def call(self, name_tok: _Tok) -> _Node:
        fn = FUNCTIONS.get(name_tok.value)
        if fn is None:
            known = ", ".join(sorted(FUNCTIONS))
            raise self.error(f"unknown function {name_tok.value!r} (known: {known})", name_tok)
        self.expect("(")
        args = self.arguments(")")
        fns = [arg.fn for arg in args]
        src = f"{self.names.const(fn)}(" + ", ".join(arg.src for arg in args) + ")"
        node = t.Call(name_tok.value, tuple(arg.tree for arg in args), name_tok.pos)
        return _Node(lambda d, m: fn(*(a(d, m) for a in fns)), src, node)

    def postfix(self, base: _Node) -> _Node:
        while self.tok.kind == "op" and self.tok.value in (".", "["):
            if self.advance().value == ".":
                tok = self.advance()
                if tok.kind not in ("name", "kw"):
                    raise self.error("expected a field name after '.'", tok)
                node = t.Field(base.tree, tok.value, tok.pos)
                base = _Node(_field(base.fn, tok.value), f"_field({base.src}, {self.names.const(tok.value)})", node)
            else:
                index = self.expression(0)
                self.expect("]")
                node2 = t.Index(base.tree, index.tree, index.tree.pos)
                base = _Node(_index(base.fn, index.fn), f"_index({base.src}, {index.src})", node2)
        return base


# Field reads are the hottest code in routing: try .get() and fall back, rather than paying for
# an isinstance() check against the Mapping ABC on every read.
def _root_field(name: str) -> Evaluator:
    def get(d: Doc, m: Meta) -> Any:
        try:
            return d.get(name)
        except AttributeError:  # the document is not a mapping
            return None

    return get


def _get_field(value: Any, name: str) -> Any:
    try:
        return value.get(name)
    except AttributeError:  # null, a number, a string, a list: no such field
        return None


def _get_index(value: Any, i: Any) -> Any:
    if isinstance(value, Mapping):
        return value.get(i)
    if isinstance(value, (list, tuple, str)) and isinstance(i, int) and -len(value) <= i < len(value):
        return value[i]
    return None


def _field(base: Evaluator, name: str) -> Evaluator:
    return lambda d, m: _get_field(base(d, m), name)


def _index(base: Evaluator, index: Evaluator) -> Evaluator:
    return lambda d, m: _get_index(base(d, m), index(d, m))


def _generate(node: _Node, names: _Names, text: str) -> Evaluator | None:
    """One Python function for the whole expression, from the source the parser built: a route
    condition then costs one call instead of a call per node. The source is ours (operators,
    generated names, int/bool/None literals); strings, floats and functions are passed by name.
    None when Python refuses it (very deep nesting): the closures serve then."""
    try:
        code = compile(f"lambda d, m: {node.src}", f"<expression {text!r}>", "eval")
        return eval(code, {"__builtins__": {}, **names.values})  # type: ignore[no-any-return]  # noqa: S307
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return None


# What evaluating a well-formed expression can raise on unexpected data (a string times a list...).
# MemoryError and RecursionError too: whatever one event's values make an expression do, it is
# that event's failure (a 400, a dead letter), never the process's.
EVALUATION_ERRORS = (TypeError, ValueError, ArithmeticError, re.error, OverflowError, MemoryError, RecursionError)


@dataclass(frozen=True, slots=True)
class Compiled:
    """A compiled expression. Call it with the document and the event metadata."""

    text: str
    _fn: Evaluator
    _fast: Evaluator | None = None  # for dict documents (events always are); _fn for anything else
    tree: t.Node | None = None  # the syntax tree, for the config checker

    def __call__(self, doc: Doc, meta: Meta | None = None) -> Any:
        try:
            if meta is None:
                meta = {}
            if self._fast is not None and type(doc) is dict:
                return self._fast(doc, meta)
            return self._fn(doc, meta)
        except ExpressionError:
            raise
        except EVALUATION_ERRORS as exc:
            raise self.failure(exc) from exc

    @property
    def fast(self) -> Evaluator | None:
        """The generated function, for callers on the hot path that hold a dict document and a
        metadata mapping: call it directly and turn ``EVALUATION_ERRORS`` into ``failure(exc)``."""
        return self._fast

    def failure(self, exc: Exception) -> ExpressionError:
        return ExpressionError(f"cannot evaluate {self.text!r}: {exc}")


@functools.lru_cache(maxsize=16_384)
def compile_expression(text: str) -> Compiled:
    """Parse and compile ``text``; raises ExpressionError with the position of a syntax error.

    Cached: the config models check an expression when the config loads, the checker reads its
    tree, the runtime compiles it again where it is used; all three get the one compiled form.
    (A ``Compiled`` is immutable; only config text reaches here, never event data.)"""
    parser = _Parser(text)
    node = parser.parse()
    return Compiled(text, node.fn, _generate(node, parser.names, text), node.tree)


# Indices of the conditions that held, in order; (index, exception) for one that raised.
Conditions = Callable[[dict[str, Any], Mapping[str, Any]], list[int | tuple[int, Exception]]]


def compile_conditions(texts: list[str | None]) -> Conditions | None:
    """Several conditions (None: always true) as one generated function that tests them all and
    returns the indices of those that held. For a schema's routes in ``router.mode: all``: one call
    per event instead of a call, a lookup and a try per route. None when Python refuses the source."""
    names = _Names()
    lines = ["def _conditions(d, m):", "    _held = []"]
    for i, text in enumerate(texts):
        if text is None:
            lines.append(f"    _held.append({i})")
            continue
        src = _Parser(text, names).parse().src
        lines += [
            "    try:",
            f"        if {src}:",
            f"            _held.append({i})",
            "    except _ERRORS as _exc:",
            f"        _held.append(({i}, _exc))",
        ]
    lines.append("    return _held")
    namespace: dict[str, Any] = {"__builtins__": {}, "_ERRORS": (ExpressionError, *EVALUATION_ERRORS), **names.values}
    try:
        exec(compile("\n".join(lines), "<route conditions>", "exec"), namespace)  # noqa: S102 - our own source, as in _generate
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return None
    return namespace["_conditions"]  # type: ignore[no-any-return]
