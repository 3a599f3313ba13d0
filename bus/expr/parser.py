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

__all__ = ["Compiled", "compile_expression"]

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bus.errors import ExpressionError
from bus.expr.functions import FUNCTIONS

Doc = Mapping[str, Any]
Meta = Mapping[str, Any]
Evaluator = Callable[[Doc, Meta], Any]


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


_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": _compare(operator.lt),
    "<=": _compare(operator.le),
    ">": _compare(operator.gt),
    ">=": _compare(operator.ge),
    "in": _contains,
    "not in": lambda a, b: not _contains(a, b),
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "%": operator.mod,
}
_PRECEDENCE = {
    "or": 1, "and": 2,
    "==": 4, "!=": 4, "<": 4, "<=": 4, ">": 4, ">=": 4, "in": 4, "not in": 4,
    "+": 5, "-": 5, "*": 6, "/": 6, "%": 6,
}  # fmt: skip
_NOT_PRECEDENCE = 3


class _Parser:
    """Pratt parser producing closures directly: parsing is compiling."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

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

    def parse(self) -> Evaluator:
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

    def expression(self, min_prec: int) -> Evaluator:
        left = self.unary()
        while True:
            op = self._binary_op()
            if op is None or _PRECEDENCE[op] <= min_prec:
                return left
            self.advance()
            if op == "not in":
                self.advance()
            right = self.expression(_PRECEDENCE[op])
            left = self._combine(op, left, right)

    @staticmethod
    def _combine(op: str, left: Evaluator, right: Evaluator) -> Evaluator:
        if op == "and":
            return lambda d, m: bool(left(d, m)) and bool(right(d, m))
        if op == "or":
            return lambda d, m: bool(left(d, m)) or bool(right(d, m))
        fn = _BINARY[op]
        return lambda d, m: fn(left(d, m), right(d, m))

    def unary(self) -> Evaluator:
        tok = self.tok
        if tok.kind == "kw" and tok.value == "not":
            self.advance()
            inner = self.expression(_NOT_PRECEDENCE)
            return lambda d, m: not inner(d, m)
        if tok.kind == "op" and tok.value == "-":
            self.advance()
            inner = self.unary()
            return lambda d, m: -inner(d, m)
        return self.postfix(self.primary())

    def primary(self) -> Evaluator:
        tok = self.advance()
        if tok.kind == "number":
            number: int | float = float(tok.value) if "." in tok.value else int(tok.value)
            return lambda d, m: number
        if tok.kind == "string":
            text = _unquote(tok.value)
            return lambda d, m: text
        if tok.kind == "kw" and tok.value in ("true", "false", "null"):
            const = {"true": True, "false": False, "null": None}[tok.value]
            return lambda d, m: const
        if tok.kind == "meta":
            key = tok.value[1:]
            return lambda d, m: m.get(key)
        if tok.kind == "name":
            if self.tok.value == "(" and self.tok.kind == "op":
                return self.call(tok)
            return _root_field(tok.value)
        if tok.kind == "op" and tok.value == "(":
            inner = self.expression(0)
            self.expect(")")
            return inner
        if tok.kind == "op" and tok.value == "[":
            items = self.arguments("]")
            return lambda d, m: [item(d, m) for item in items]
        found = repr(tok.value) if tok.kind != "end" else "end of expression"
        raise self.error(f"unexpected {found}", tok)

    def arguments(self, closer: str) -> list[Evaluator]:
        items: list[Evaluator] = []
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

    def call(self, name_tok: _Tok) -> Evaluator:
        fn = FUNCTIONS.get(name_tok.value)
        if fn is None:
            known = ", ".join(sorted(FUNCTIONS))
            raise self.error(f"unknown function {name_tok.value!r} (known: {known})", name_tok)
        self.expect("(")
        args = self.arguments(")")
        return lambda d, m: fn(*(arg(d, m) for arg in args))

    def postfix(self, base: Evaluator) -> Evaluator:
        while self.tok.kind == "op" and self.tok.value in (".", "["):
            if self.advance().value == ".":
                tok = self.advance()
                if tok.kind not in ("name", "kw"):
                    raise self.error("expected a field name after '.'", tok)
                base = _field(base, tok.value)
            else:
                index = self.expression(0)
                self.expect("]")
                base = _index(base, index)
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


def _field(base: Evaluator, name: str) -> Evaluator:
    def get(d: Doc, m: Meta) -> Any:
        value = base(d, m)
        try:
            return value.get(name)
        except AttributeError:  # null, a number, a string, a list: no such field
            return None

    return get


def _index(base: Evaluator, index: Evaluator) -> Evaluator:
    def get(d: Doc, m: Meta) -> Any:
        value, i = base(d, m), index(d, m)
        if isinstance(value, Mapping):
            return value.get(i)
        if isinstance(value, (list, tuple, str)) and isinstance(i, int) and -len(value) <= i < len(value):
            return value[i]
        return None

    return get


@dataclass(frozen=True, slots=True)
class Compiled:
    """A compiled expression. Call it with the document and the event metadata."""

    text: str
    _fn: Evaluator

    def __call__(self, doc: Doc, meta: Meta | None = None) -> Any:
        try:
            return self._fn(doc, meta or {})
        except ExpressionError:
            raise
        except (TypeError, ValueError, ArithmeticError, re.error, OverflowError) as exc:
            raise ExpressionError(f"cannot evaluate {self.text!r}: {exc}") from exc


def compile_expression(text: str) -> Compiled:
    """Parse and compile ``text``; raises ExpressionError with the position of a syntax error."""
    return Compiled(text, _Parser(text).parse())
