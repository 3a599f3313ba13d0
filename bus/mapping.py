"""Turning a received document into a canonical event, by an inbound adapter's ``emit:`` block.

Expressions are compiled once, when the adapter is built; ``Emitter.build`` only evaluates.
"""

from __future__ import annotations

__all__ = ["Body", "Emitter"]

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from bus.errors import EventRejected, ExpressionError
from bus.event import Event, new_traceparent
from bus.expr import compile_expression

if TYPE_CHECKING:
    from bus.adapter_api import EmitSpec


class Emitter:
    """Compiled form of an ``EmitSpec``."""

    def __init__(self, spec: EmitSpec, *, source: str, event_type: str | None = None) -> None:
        self.schema = spec.schema_
        self.source = source
        self.event_type = event_type or spec.schema_
        self._key = compile_expression(spec.key) if spec.key else None
        self._id = compile_expression(spec.id) if spec.id else None
        self.has_id = self._id is not None
        self._subject = compile_expression(spec.subject) if spec.subject else None
        self._fields = _compile_block(spec.map or {})

    def id_of(self, document: Any) -> str | None:
        """The event id ``emit.id`` gives for ``document``, or None (no ``id``, or it cannot be
        read from this document): for a message that is refused, so its dead letter carries it."""
        if self._id is None or not isinstance(document, Mapping):
            return None
        try:
            found = self._id(document)
        except ExpressionError:
            return None
        return None if found is None else str(found)

    def build(self, document: Any, *, traceparent: str | None = None, headers: Mapping[str, str] | None = None) -> Event:
        """Map ``document`` to an event. Raises EventRejected naming the field that failed.
        ``headers``: what came with the document (a webhook's request headers, names in lower
        case), read in expressions as ``$headers["x-github-event"]``."""
        if not isinstance(document, Mapping):
            raise EventRejected(f"expected a JSON object, got {type(document).__name__}")
        meta = _NO_META if headers is None else {"headers": headers}
        try:
            data = _render(self._fields, document, meta) if self._fields else dict(document)
            key = self._key(document, meta) if self._key else None
            event_id = self._id(document, meta) if self._id else None
            subject = self._subject(document, meta) if self._subject else None
        except ExpressionError as exc:
            raise EventRejected(f"mapping failed: {exc}") from exc
        event = Event(
            schema=self.schema,
            data=data,
            source=self.source,
            key=None if key is None else str(key),
            type=self.event_type,
            subject=None if subject is None else str(subject),
            traceparent=traceparent or new_traceparent(),
        )
        if event_id is not None:
            event.id = str(event_id)
        return event


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

    def render_fields(self, data: dict[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
        if not self._fields:
            return data
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
