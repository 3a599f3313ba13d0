"""Turning a received document into a canonical event, by an inbound adapter's ``emit:`` block.

Expressions are compiled once, when the adapter is built; ``Emitter.build`` only evaluates.
"""

from __future__ import annotations

__all__ = ["Body", "Emitter"]

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
        self._fields = [(name, compile_expression(text)) for name, text in (spec.map or {}).items()]

    def build(self, document: Any, *, traceparent: str | None = None) -> Event:
        """Map ``document`` to an event. Raises EventRejected naming the field that failed."""
        if not isinstance(document, Mapping):
            raise EventRejected(f"expected a JSON object, got {type(document).__name__}")
        try:
            data = {name: expr(document) for name, expr in self._fields} if self._fields else dict(document)
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


class Body:
    """An outbound adapter's ``body:`` block, compiled: field -> expression over the event's
    fields (``$id``, ``$type``... for its metadata). Without one, the body is the event's fields."""

    def __init__(self, spec: Mapping[str, str] | None) -> None:
        self._fields = [(name, compile_expression(text)) for name, text in (spec or {}).items()]

    @staticmethod
    def check(spec: dict[str, str] | None) -> dict[str, str] | None:
        """For config validators: every expression compiles, or the error names the field."""
        for name, text in (spec or {}).items():
            try:
                compile_expression(text)
            except ExpressionError as exc:
                raise ValueError(f"{name}: {exc}") from exc
        return spec

    def render(self, event: Event) -> dict[str, Any]:
        if not self._fields:
            return event.data
        meta = event.meta()
        return {name: expr(event.data, meta) for name, expr in self._fields}
