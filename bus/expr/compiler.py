"""Expression trees to Python functions: the one backend of the expression language.

Each expression becomes one Python function ``(d, m) -> value`` (``d`` the document, a dict;
``m`` the event metadata), built as ``ast`` nodes from the tree (``bus.expr.tree``) and compiled
once: a route condition costs one call per event, not a call per node. Nothing of the user's
text is ever Python source: names, strings and numbers enter the tree as ``ast.Constant``
values and operators come from a fixed table. The parser bounds the nesting depth, so compiling
a parsed tree cannot fail on Python's own limits.

Semantics the helpers hold (the reference evaluator in tests/unit/test_expr_properties.py
checks them): a missing field or index reads ``null``; ordering against ``null`` is false;
``and``/``or`` give booleans; ``* / %`` take numbers only; a result past ``MAX_RESULT``
characters or items is an evaluation error.
"""

from __future__ import annotations

__all__ = ["EVALUATION_ERRORS", "MAX_RESULT", "Compiled", "Conditions", "compile_conditions", "compile_expression", "paths_of"]

import ast
import decimal
import functools
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bus.errors import ExpressionError
from bus.expr import tree as t
from bus.expr.functions import FUNCTIONS
from bus.expr.parser import parse

Doc = Mapping[str, Any]
Meta = Mapping[str, Any]
Evaluator = Callable[[dict[str, Any], Meta], Any]

# Results an expression may build from sender-controlled values: a string or list past this many
# characters or items is an evaluation error, never a MemoryError that takes the process down.
MAX_RESULT = 1_000_000
_SEQUENCES = (str, bytes, list, tuple, dict)

# What evaluating a well-formed expression can raise on unexpected data (a string times a list...).
# MemoryError and RecursionError too: whatever one event's values make an expression do, it is
# that event's failure (a 400, a dead letter), never the process's.
EVALUATION_ERRORS = (TypeError, ValueError, ArithmeticError, re.error, OverflowError, MemoryError, RecursionError)


def _contains(item: Any, container: Any) -> bool:
    return container is not None and item in container


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


# Field reads are the hottest code in routing: try .get() and fall back, rather than paying for
# an isinstance() check against the Mapping ABC on every read.
def _field(value: Any, name: str) -> Any:
    try:
        return value.get(name)
    except AttributeError:  # null, a number, a string, a list: no such field
        return None


def _index(value: Any, i: Any) -> Any:
    if isinstance(value, Mapping):
        return value.get(i)
    if isinstance(value, (list, tuple, str)) and isinstance(i, int) and -len(value) <= i < len(value):
        return value[i]
    return None


# The names generated code may refer to, besides its arguments; builtins are not reachable.
_GLOBALS: dict[str, Any] = {
    "__builtins__": {},
    "_field": _field,
    "_index": _index,
    "_contains": _contains,
    "_add": _add,
    "_mul": _numeric("*", operator.mul),
    "_div": _numeric("/", operator.truediv),
    "_mod": _numeric("%", operator.mod),
    **{f"_fn_{name}": fn for name, fn in FUNCTIONS.items()},
}
_HELPERS = {"+": "_add", "*": "_mul", "/": "_div", "%": "_mod"}
_COMPARE = {"==": ast.Eq, "!=": ast.NotEq, "<": ast.Lt, "<=": ast.LtE, ">": ast.Gt, ">=": ast.GtE}


def _name(name: str) -> ast.Name:
    return ast.Name(name, ast.Load())


def _call(fn: str, *args: ast.expr) -> ast.Call:
    return ast.Call(_name(fn), list(args), [])


def _truth(node: ast.expr) -> ast.expr:
    return ast.UnaryOp(ast.Not(), ast.UnaryOp(ast.Not(), node))


class _Builder:
    """One tree to one ``ast`` expression. ``temps`` numbers the names that hold both sides of an
    ordering (each side is evaluated once, then ``null`` compares false)."""

    def __init__(self) -> None:
        self.temps = 0

    def build(self, node: t.Node) -> ast.expr:
        if isinstance(node, t.Const):
            return ast.Constant(node.value)
        if isinstance(node, t.Meta):
            return ast.Call(ast.Attribute(_name("m"), "get", ast.Load()), [ast.Constant(node.name)], [])
        if isinstance(node, t.Field):
            if node.base is None:  # documents are dicts (Compiled.__call__ sees to it)
                return ast.Call(ast.Attribute(_name("d"), "get", ast.Load()), [ast.Constant(node.name)], [])
            return _call("_field", self.build(node.base), ast.Constant(node.name))
        if isinstance(node, t.Index):
            return _call("_index", self.build(node.base), self.build(node.index))
        if isinstance(node, t.Call):
            return _call(f"_fn_{node.name}", *(self.build(arg) for arg in node.args))
        if isinstance(node, t.ListOf):
            return ast.List([self.build(item) for item in node.items], ast.Load())
        if isinstance(node, t.Unary):
            operand = self.build(node.operand)
            return ast.UnaryOp(ast.Not() if node.op == "not" else ast.USub(), operand)
        return self._binary(node)

    def _binary(self, node: t.Binary) -> ast.expr:
        left, right, op = self.build(node.left), self.build(node.right), node.op
        if op in ("and", "or"):
            return ast.BoolOp(ast.And() if op == "and" else ast.Or(), [_truth(left), _truth(right)])
        if op in ("==", "!="):
            return ast.Compare(left, [_COMPARE[op]()], [right])
        if op == "-":
            return ast.BinOp(left, ast.Sub(), right)
        if op in _HELPERS:
            return _call(_HELPERS[op], left, right)
        if op in ("in", "not in"):
            test = _call("_contains", left, right)
            return ast.UnaryOp(ast.Not(), test) if op == "not in" else test
        # Ordering: (a := L) is not None & (b := R) is not None and a < b; both sides evaluated.
        self.temps += 2
        a, b = f"_t{self.temps - 1}", f"_t{self.temps}"
        both = ast.BinOp(
            ast.Compare(ast.NamedExpr(ast.Name(a, ast.Store()), left), [ast.IsNot()], [ast.Constant(None)]),
            ast.BitAnd(),
            ast.Compare(ast.NamedExpr(ast.Name(b, ast.Store()), right), [ast.IsNot()], [ast.Constant(None)]),
        )
        return ast.BoolOp(ast.And(), [both, ast.Compare(_name(a), [_COMPARE[op]()], [_name(b)])])


_ARGS = ast.arguments(posonlyargs=[], args=[ast.arg("d"), ast.arg("m")], kwonlyargs=[], kw_defaults=[], defaults=[])


def _function(body: list[ast.stmt], label: str) -> Any:
    """Compile ``def _f(d, m): <body>`` and return ``_f``."""
    module = ast.Module([ast.FunctionDef("_f", _ARGS, body, [], None)], [])
    namespace = dict(_GLOBALS)
    exec(compile(ast.fix_missing_locations(module), label, "exec"), namespace)  # noqa: S102 - our own ast (see module doc)
    return namespace["_f"]


@dataclass(frozen=True, slots=True)
class Compiled:
    """A compiled expression. Call it with the document and the event metadata."""

    text: str
    fn: Evaluator  # for dict documents: hot-path callers call it directly (see ``failure``)
    tree: t.Node  # the syntax tree, for the config checker

    def __call__(self, doc: Doc, meta: Meta | None = None) -> Any:
        if type(doc) is not dict:
            # Root fields are read with dict.get: a mapping is copied, anything else has no fields.
            doc = dict(doc) if isinstance(doc, Mapping) else {}
        try:
            return self.fn(doc, {} if meta is None else meta)
        except ExpressionError:
            raise
        except EVALUATION_ERRORS as exc:
            raise self.failure(exc) from exc

    def failure(self, exc: Exception) -> ExpressionError:
        """What a caller of ``fn`` raises for an ``EVALUATION_ERRORS`` exception."""
        if isinstance(exc, decimal.DecimalException):  # its text is only its class: "[<class 'decimal.Overflow'>]"
            said = "an exponent too large" if isinstance(exc, decimal.Overflow) else "NaN, or more than 28 digits"
            return ExpressionError(f"cannot evaluate {self.text!r}: not defined for these decimals ({said})")
        return ExpressionError(f"cannot evaluate {self.text!r}: {exc}")


@functools.lru_cache(maxsize=16_384)
def compile_expression(text: str) -> Compiled:
    """Parse and compile ``text``; raises ExpressionError with the position of a syntax error.

    Cached: the config models check an expression when the config loads, the checker reads its
    tree, the runtime compiles it again where it is used; all three get the one compiled form.
    (A ``Compiled`` is immutable; only config text reaches here, never event data.)"""
    tree = parse(text)
    fn = _function([ast.Return(_Builder().build(tree))], f"<expression {text!r}>")
    return Compiled(text, fn, tree)


def paths_of(text: str) -> set[str]:
    """The document paths an expression reads (``data.object.id``), for config checks."""
    return t.paths(compile_expression(text).tree)


# Indices of the conditions that held, in order; (index, exception) for one that raised.
Conditions = Callable[[dict[str, Any], Mapping[str, Any]], list[int | tuple[int, Exception]]]


def compile_conditions(texts: list[str | None], *, first_only: bool = False) -> Conditions:
    """Several conditions (None: always true) as one function that tests them in order and
    returns the indices of those that held, and ``(index, exception)`` for one that raised.
    ``first_only`` stops at the first that held or raised (``router.mode: first``)."""
    builder = _Builder()
    held = _name("_held")
    body: list[ast.stmt] = [ast.Assign([ast.Name("_held", ast.Store())], ast.List([], ast.Load()))]
    for i, text in enumerate(texts):
        append = [ast.Expr(ast.Call(ast.Attribute(held, "append", ast.Load()), [ast.Constant(i)], [])), *_stop(first_only)]
        if text is None:
            body += append
            continue
        failed = ast.Tuple([ast.Constant(i), _name("_exc")], ast.Load())
        body.append(
            ast.Try(
                body=[ast.If(builder.build(parse(text)), append, [])],
                handlers=[
                    ast.ExceptHandler(
                        _name("_ERRORS"),
                        "_exc",
                        [ast.Expr(ast.Call(ast.Attribute(held, "append", ast.Load()), [failed], [])), *_stop(first_only)],
                    )
                ],
                orelse=[],
                finalbody=[],
            )
        )
    body.append(ast.Return(held))
    return _function(body, "<route conditions>")  # type: ignore[no-any-return]


def _stop(first_only: bool) -> list[ast.stmt]:
    return [ast.Return(_name("_held"))] if first_only else []


_GLOBALS["_ERRORS"] = (ExpressionError, *EVALUATION_ERRORS)
