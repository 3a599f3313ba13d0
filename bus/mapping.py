"""Turning a received document into a canonical event, by an inbound adapter's ``emit:`` block.

Expressions are compiled once, when the adapter is built; ``Emitter.build`` only evaluates.
"""

from __future__ import annotations

__all__ = ["Body", "Emitter"]

import json
from collections.abc import Mapping
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

    def build(self, document: Any, *, traceparent: str | None = None) -> Event:
        """Map ``document`` to an event. Raises EventRejected naming the field that failed."""
        if not isinstance(document, Mapping):
            raise EventRejected(f"expected a JSON object, got {type(document).__name__}")
        try:
            data = _render(self._fields, document, _NO_META) if self._fields else dict(document)
            key = self._key(document) if self._key else None
            event_id = self._id(document) if self._id else None
            subject = self._subject(document) if self._subject else None
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
        if not self._fields:
            return event.data
        return _render(self._fields, event.data, event.meta())


# A compiled block: (name, expression) for a value, (name, block) for a nested object, and
# (name, (list expression, element name, block)) for a list of objects.
_Block = list[tuple[str, Any]]


def _compile_block(spec: Mapping[str, Any], path: str = "") -> _Block:
    fields: _Block = []
    for name, value in spec.items():
        where = f"{path}{name}"
        if name in ("$each", "$as", "$value"):
            continue
        if isinstance(value, Mapping):
            if "$value" in value and "$each" not in value:
                raise ValueError(f"{where}: $value belongs in a block with $each")
            # $value: each element becomes that one value (a list of strings, numbers), not an object.
            block = _compile(str(value["$value"]), f"{where}.$value") if "$value" in value else _compile_block(value, f"{where}.")
            if "$each" in value:
                fields.append((name, (_compile(str(value["$each"]), f"{where}.$each"), str(value.get("$as", "item")), block)))
            else:
                fields.append((name, block))
        elif isinstance(value, str):
            fields.append((name, _compile(value, where)))
        elif value is None or isinstance(value, (bool, int, float)):
            fields.append((name, _compile(json.dumps(value), where)))  # a YAML number, boolean or null: a constant
        else:
            raise ValueError(f"{where}: expected an expression (text) or a block, got {type(value).__name__} {value!r}")
    return fields


def _compile(text: str, where: str) -> Any:
    try:
        return compile_expression(text)
    except ExpressionError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def _render(fields: _Block, scope: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in fields:
        if isinstance(value, list):
            out[name] = _render(value, scope, meta)
        elif isinstance(value, tuple):
            items_of, as_name, block = value
            items = items_of(scope, meta)
            if items is None:
                out[name] = []
            elif not isinstance(items, list):
                raise ExpressionError(f"{name}.$each: expected a list, got {type(items).__name__}")
            elif isinstance(block, list):
                out[name] = [_render(block, {**scope, as_name: item}, meta) for item in items]
            else:
                out[name] = [block({**scope, as_name: item}, meta) for item in items]
        else:
            out[name] = value(scope, meta)
    return out
