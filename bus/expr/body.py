"""An outbound adapter's ``body:`` block (and an inbound's nested ``emit.map``), compiled once:
a block of expressions, with nested objects and ``$each`` lists. See ``Body``."""

from __future__ import annotations

__all__ = ["Body"]

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from bus.errors import ExpressionError
from bus.expr.compiler import compile_expression

if TYPE_CHECKING:
    from bus.event import Event

_NO_META: Mapping[str, Any] = {}


class Body:
    """An outbound adapter's ``body:`` block, compiled: field -> expression over the event's
    fields (``$id``, ``$type``... for its metadata). Without one, the body is the event's fields.

    Targets want nested documents, so a value may also be a block of its own (a nested object),
    and a block with ``$each: <list expression>`` becomes one object per element, the element
    named by ``$as`` (default ``item``) in the block's expressions:

        CustomerRef: {value: customer_id}
        Line: {$each: lines, $as: line, Amount: line.quantity * line.unit_price}
        skus: {$each: lines, $value: item.sku}       # a list of values rather than of objects
    """

    def __init__(self, spec: Mapping[str, Any] | None) -> None:
        self._fields = _compile_block(spec or {})

    @staticmethod
    def check(spec: dict[str, Any] | None) -> dict[str, Any] | None:
        """For config validators: every expression compiles, or the error names the field."""
        _compile_block(spec or {})
        return spec

    def render(self, event: Event) -> dict[str, Any]:
        return self.render_fields(event.data, event.meta())

    @property
    def empty(self) -> bool:
        return not self._fields

    def render_fields(self, data: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
        if not self._fields:
            return data if isinstance(data, dict) else dict(data)
        return _render(self._fields, data, meta)


# A compiled block: (field name, function of (scope, meta)) pairs. Nested objects and lists are
# functions too, built once here, so rendering is one loop with no per-event type tests.
_Evaluator = Callable[[Mapping[str, Any], Mapping[str, Any]], Any]
_Block = list[tuple[str, _Evaluator]]
_KEYWORDS = ("$each", "$as", "$value")


def _compile_block(spec: Mapping[str, Any], path: str = "") -> _Block:
    fields: _Block = []
    for name, value in spec.items():
        where = f"{path}{name}"
        if name in _KEYWORDS:
            continue
        if isinstance(value, Mapping):
            fields.append((name, _compile_nested(value, where)))
        elif isinstance(value, str):
            fields.append((name, _compile(value, where)))
        elif value is None or isinstance(value, (bool, int, float)):
            fields.append((name, _compile(json.dumps(value), where)))  # a YAML number, boolean or null: a constant
        else:
            raise ValueError(f"{where}: expected an expression (text) or a block, got {type(value).__name__} {value!r}")
    return fields


def _compile_nested(spec: Mapping[str, Any], where: str) -> _Evaluator:
    """A nested object, or with ``$each`` a list (of objects, or of ``$value`` values)."""
    if "$each" not in spec:
        for keyword in ("$as", "$value"):
            if keyword in spec:
                raise ValueError(f"{where}: {keyword} belongs in a block with $each")
        block = _compile_block(spec, f"{where}.")
        return lambda scope, meta: _render(block, scope, meta)
    items_of = _compile(str(spec["$each"]), f"{where}.$each")
    as_name = str(spec.get("$as", "item"))
    if "$value" in spec:
        element = _compile(str(spec["$value"]), f"{where}.$value")
    else:
        inner = _compile_block(spec, f"{where}.")

        def element(scope: Mapping[str, Any], meta: Mapping[str, Any]) -> Any:
            return _render(inner, scope, meta)

    def each(scope: Mapping[str, Any], meta: Mapping[str, Any]) -> list[Any]:
        items = items_of(scope, meta)
        if items is None:
            return []
        if not isinstance(items, list):
            raise ExpressionError(f"{where}.$each: expected a list, got {type(items).__name__}")
        return [element({**scope, as_name: item}, meta) for item in items]

    return each


def _compile(text: str, where: str) -> _Evaluator:
    try:
        return compile_expression(text)
    except ExpressionError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def _render(fields: _Block, scope: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    return {name: evaluate(scope, meta) for name, evaluate in fields}
