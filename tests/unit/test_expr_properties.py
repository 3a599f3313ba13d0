"""Property tests: compiled expressions agree with a plain tree-walking reference evaluator.

Hypothesis builds expression trees, renders them to text with the fewest parentheses the
precedence rules allow (so the parser's precedence is tested too), and compares the compiled
result with the reference on generated documents. Both must agree on the value, or both fail.
"""

from __future__ import annotations

import math
import operator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bus.errors import ExpressionError
from bus.expr import compile_expression

FIELDS = ["a", "b", "c"]
PREC = {"or": 1, "and": 2, "not": 3, "cmp": 4, "+": 5, "-": 5, "*": 6, "%": 6, "neg": 7, "atom": 8}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-1000, 1000),
    st.floats(-1000, 1000, allow_nan=False, allow_infinity=False).map(lambda f: round(f, 3)),
    st.text("xyz", max_size=3),
)
documents = st.fixed_dictionaries({}, optional={f: st.one_of(scalars, st.lists(scalars, max_size=3)) for f in FIELDS})


def literal_text(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v + '"'
    return repr(v)


def trees() -> st.SearchStrategy[tuple]:
    leaves = st.one_of(
        scalars.filter(lambda v: not (isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0)).map(lambda v: ("lit", v)),
        st.sampled_from(FIELDS).map(lambda f: ("field", f)),
    )

    def extend(children: st.SearchStrategy[tuple]) -> st.SearchStrategy[tuple]:
        return st.one_of(
            st.tuples(st.just("not"), children),
            st.tuples(st.just("neg"), children),
            st.tuples(st.sampled_from(["and", "or"]), children, children),
            st.tuples(st.just("cmp"), st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), children, children),
            st.tuples(st.sampled_from(["+", "-", "*", "%"]), children, children),
            st.tuples(st.just("in"), children, st.lists(scalars, max_size=3)),
        )

    return st.recursive(leaves, extend, max_leaves=8)


def render(t: tuple) -> tuple[str, int]:
    """Text with minimal parentheses, and the precedence of its top operator."""
    kind = t[0]

    def wrap(sub: tuple, min_prec: int) -> str:
        text, prec = render(sub)
        return text if prec >= min_prec else f"({text})"

    if kind == "lit":
        return literal_text(t[1]), PREC["atom"]
    if kind == "field":
        return t[1], PREC["atom"]
    if kind == "not":
        return "not " + wrap(t[1], PREC["not"]), PREC["not"]
    if kind == "neg":
        return "-" + wrap(t[1], PREC["neg"]), PREC["neg"]
    if kind in ("and", "or"):
        p = PREC[kind]
        return f"{wrap(t[1], p)} {kind} {wrap(t[2], p + 1)}", p
    if kind == "cmp":
        p = PREC["cmp"]
        return f"{wrap(t[2], p + 1)} {t[1]} {wrap(t[3], p + 1)}", p
    if kind == "in":
        p = PREC["cmp"]
        return f"{wrap(t[1], p + 1)} in [{', '.join(literal_text(v) for v in t[2])}]", p
    p = PREC[kind]  # arithmetic, left-associative
    return f"{wrap(t[1], p)} {kind} {wrap(t[2], p + 1)}", p


class Failed(Exception):
    pass


ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def _numbers_only(op: Any) -> Any:
    """``*`` and ``%`` take numbers only: on text or lists they would build what a sender asks for."""

    def apply(a: Any, b: Any) -> Any:
        if isinstance(a, (str, list, dict)) or isinstance(b, (str, list, dict)):
            raise TypeError("numbers only")
        return op(a, b)

    return apply


ARITH = {"+": operator.add, "-": operator.sub, "*": _numbers_only(operator.mul), "%": _numbers_only(operator.mod)}


def reference(t: tuple, doc: dict[str, Any]) -> Any:
    """The documented semantics, written as plainly as possible."""
    kind = t[0]
    try:
        if kind == "lit":
            return t[1]
        if kind == "field":
            return doc.get(t[1])
        if kind == "not":
            return not reference(t[1], doc)
        if kind == "neg":
            return -reference(t[1], doc)
        if kind == "and":
            return bool(reference(t[1], doc)) and bool(reference(t[2], doc))
        if kind == "or":
            return bool(reference(t[1], doc)) or bool(reference(t[2], doc))
        if kind == "cmp":
            a, b = reference(t[2], doc), reference(t[3], doc)
            if t[1] == "==":
                return a == b
            if t[1] == "!=":
                return a != b
            return False if a is None or b is None else ORDER[t[1]](a, b)
        if kind == "in":
            return reference(t[1], doc) in t[2]
        return ARITH[kind](reference(t[1], doc), reference(t[2], doc))
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise Failed from exc


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def typed_trees() -> st.SearchStrategy[tuple]:
    """Well-typed trees (numbers inside comparisons inside logic), so nearly every example has a
    value rather than a type error and precedence mistakes cannot hide behind errors."""
    numbers = st.recursive(
        st.one_of(st.integers(0, 50).map(lambda v: ("lit", v)), st.sampled_from(FIELDS).map(lambda f: ("field", f))),
        lambda kids: st.one_of(st.tuples(st.sampled_from(["+", "-", "*"]), kids, kids), st.tuples(st.just("neg"), kids)),
        max_leaves=6,
    )
    comparisons = st.one_of(
        st.tuples(st.just("cmp"), st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), numbers, numbers),
        st.tuples(st.just("in"), numbers, st.lists(st.integers(-20, 20), max_size=4)),
    )
    logic = st.recursive(
        comparisons,
        lambda kids: st.one_of(st.tuples(st.just("not"), kids), st.tuples(st.sampled_from(["and", "or"]), kids, kids)),
        max_leaves=5,
    )
    return st.one_of(numbers, logic)


numeric_documents = st.fixed_dictionaries({f: st.integers(-30, 30) for f in FIELDS})


@settings(max_examples=600, deadline=None)
@given(typed_trees(), numeric_documents)
def test_well_typed_expressions_evaluate_like_the_reference(tree: tuple, doc: dict[str, Any]) -> None:
    text, _ = render(tree)
    expected = reference(tree, doc)  # well-typed: the reference never fails here
    assert same(compile_expression(text)(doc), expected), f"{text!r} on {doc}"


@settings(max_examples=600, deadline=None)
@given(trees(), documents)
def test_compiled_agrees_with_reference(tree: tuple, doc: dict[str, Any]) -> None:
    text, _ = render(tree)
    compiled = compile_expression(text)
    try:
        expected: Any = reference(tree, doc)
    except Failed:
        expected = Failed
    try:
        got: Any = compiled(doc)
    except ExpressionError:
        got = Failed
    assert got is expected if expected is Failed else same(got, expected), f"{text!r} on {doc}: {got!r} != {expected!r}"


@settings(max_examples=300, deadline=None)
@given(trees(), st.integers(0, 40), st.sampled_from([")", "(", "and", "==", ",", "]", "!", "@", ".", "not"]))
def test_malformed_expressions_are_rejected_with_a_position(tree: tuple, cut: int, junk: str) -> None:
    text, _ = render(tree)
    broken = text[:cut] + " " + junk + " " + text[cut:]
    try:
        compile_expression(broken)
    except ExpressionError as exc:
        assert exc.position is not None and 0 <= exc.position <= len(broken)
        assert f"at position {exc.position + 1}" in str(exc)
