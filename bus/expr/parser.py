"""The hub's small expression language: text to syntax tree (``bus.expr.tree``).

Used wherever config needs a value from an event: route conditions (``when:``), inbound
mappings (``emit.map``, ``emit.key``), outbound bodies. User text is never given to ``eval``:
the tree is compiled to Python by ``bus.expr.compiler``, which builds ``ast`` nodes itself.

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

An expression may nest at most ``MAX_DEPTH`` levels (parentheses, operators, calls, chains of
``a or b or ...``): deeper text is refused here, at load time, so compiling a tree that parsed
can never fail later on Python's own limits.
"""

from __future__ import annotations

__all__ = ["MAX_DEPTH", "parse"]

import re
from dataclasses import dataclass

from bus.errors import ExpressionError
from bus.expr import tree as t
from bus.expr.functions import FUNCTIONS, time_zone
from bus.patterns import PatternError, compiled

MAX_DEPTH = 100

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>\d+\.\d+|\d+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<meta>\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<quoted>`(?:[^`\\]|\\.)*`)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|<|>|\+|-|\*|/|%|\(|\)|\[|\]|,|\.)
    """,
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}
_PRECEDENCE = {
    "or": 1, "and": 2,
    "==": 4, "!=": 4, "<": 4, "<=": 4, ">": 4, ">=": 4, "in": 4, "not in": 4,
    "+": 5, "-": 5, "*": 6, "/": 6, "%": 6,
}  # fmt: skip
_NOT_PRECEDENCE = 3
_ZONE_ARGUMENT = {"timestamp": 1, "format_time": 2}  # the functions that take a time zone, and where


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # number, string, meta, name, quoted, op, kw, end
    value: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            if text[pos] in "`\"'":
                what = "field name (`...`)" if text[pos] == "`" else "string"
                raise ExpressionError(f"a quoted {what} is not closed", expression=text, position=pos)
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


def parse(text: str) -> t.Node:
    """The syntax tree of ``text``; ExpressionError with the position of what is wrong."""
    return _Parser(text).parse()


class _Parser:
    """A Pratt parser. ``depth`` counts nesting as it goes, so pathological text stops with a
    clear error long before Python's recursion limit."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

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

    def parse(self) -> t.Node:
        if self.tok.kind == "end":
            raise self.error("empty expression", self.tok)
        node = self.expression(0)
        if self.tok.kind != "end":
            raise self.error(f"unexpected {self.tok.value!r}", self.tok)
        too_deep = _deeper_than(node, MAX_DEPTH)
        if too_deep is not None:
            raise ExpressionError(f"nested more than {MAX_DEPTH} levels deep", expression=self.text, position=too_deep.pos)
        return node

    def _nest(self, tok: _Tok) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"nested more than {MAX_DEPTH} levels deep", tok)

    def _binary_op(self) -> str | None:
        tok = self.tok
        if tok.kind == "op" and tok.value in _PRECEDENCE:
            return tok.value
        if tok.kind == "kw" and tok.value in ("and", "or", "in"):
            return tok.value
        if tok.kind == "kw" and tok.value == "not" and self.tokens[self.i + 1].value == "in":
            return "not in"
        return None

    def expression(self, min_prec: int) -> t.Node:
        self._nest(self.tok)
        left = self.unary()
        while True:
            op = self._binary_op()
            if op is None or _PRECEDENCE[op] <= min_prec:
                self.depth -= 1
                return left
            self.advance()
            if op == "not in":
                self.advance()
            op_pos = self.tokens[self.i - (2 if op == "not in" else 1)].pos
            right = self.expression(_PRECEDENCE[op])
            left = t.Binary(op, left, right, op_pos)

    def unary(self) -> t.Node:
        tok = self.tok
        if tok.kind == "kw" and tok.value == "not":
            self.advance()
            return t.Unary("not", self.expression(_NOT_PRECEDENCE), tok.pos)
        if tok.kind == "op" and tok.value == "-":
            self.advance()
            self._nest(tok)
            operand = self.unary()
            self.depth -= 1
            return t.Unary("-", operand, tok.pos)
        return self.postfix(self.primary())

    def primary(self) -> t.Node:
        tok = self.advance()
        if tok.kind == "number":
            return t.Const(float(tok.value) if "." in tok.value else int(tok.value), tok.pos)
        if tok.kind == "string":
            return t.Const(_unquote(tok.value), tok.pos)
        if tok.kind == "kw" and tok.value in ("true", "false", "null"):
            return t.Const({"true": True, "false": False, "null": None}[tok.value], tok.pos)
        if tok.kind == "meta":
            return t.Meta(tok.value[1:], tok.pos)
        if tok.kind == "name":
            if self.tok.value == "(" and self.tok.kind == "op":
                return self.call(tok)
            return t.Field(None, tok.value, tok.pos)
        if tok.kind == "quoted":  # a field whose name is no identifier: `Order ID`, `Währung`, `first-name`
            return t.Field(None, _unquote(tok.value), tok.pos)
        if tok.kind == "op" and tok.value == "(":
            inner = self.expression(0)
            self.expect(")")
            return inner
        if tok.kind == "op" and tok.value == "[":
            return t.ListOf(tuple(self.arguments("]")), tok.pos)
        found = repr(tok.value) if tok.kind != "end" else "end of expression"
        raise self.error(f"unexpected {found}", tok)

    def arguments(self, closer: str) -> list[t.Node]:
        items: list[t.Node] = []
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

    def call(self, name_tok: _Tok) -> t.Node:
        if name_tok.value not in FUNCTIONS:
            known = ", ".join(sorted(FUNCTIONS))
            raise self.error(f"unknown function {name_tok.value!r} (known: {known})", name_tok)
        self.expect("(")
        args = tuple(self.arguments(")"))
        if name_tok.value == "matches" and len(args) == 2 and isinstance(args[1], t.Const) and isinstance(args[1].value, str):
            try:
                compiled(args[1].value)  # a pattern written in the config: checked when the config is
            except PatternError as exc:
                raise ExpressionError(str(exc), expression=self.text, position=args[1].pos) from None
        zone_at = _ZONE_ARGUMENT.get(name_tok.value)
        zone = args[zone_at] if zone_at is not None and len(args) > zone_at else None
        if isinstance(zone, t.Const) and isinstance(zone.value, str):
            try:
                time_zone(zone.value)  # a zone written in the config: checked when the config is
            except ValueError as exc:
                raise ExpressionError(str(exc), expression=self.text, position=zone.pos) from None
        return t.Call(name_tok.value, args, name_tok.pos)

    def postfix(self, base: t.Node) -> t.Node:
        while self.tok.kind == "op" and self.tok.value in (".", "["):
            if self.advance().value == ".":
                tok = self.advance()
                if tok.kind not in ("name", "kw", "quoted"):
                    raise self.error("expected a field name after '.'", tok)
                base = t.Field(base, _unquote(tok.value) if tok.kind == "quoted" else tok.value, tok.pos)
            else:
                index = self.expression(0)
                self.expect("]")
                base = t.Index(base, index, index.pos)
        return base


def _deeper_than(root: t.Node, limit: int) -> t.Node | None:
    """The first node more than ``limit`` levels below ``root`` (walked without recursion: a long
    chain such as ``a + b + c ...`` is shallow to parse but deep as a tree)."""
    stack: list[tuple[t.Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return node
        stack.extend((child, depth + 1) for child in t.children(node))
    return None
