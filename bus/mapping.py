"""Turning a received document into a canonical event, by an inbound adapter's ``emit:`` block.

Expressions are compiled once, when the adapter is built; ``Emitter.build`` only evaluates.
"""

from __future__ import annotations

import re
import uuid

__all__ = ["Emitter"]

from collections.abc import Mapping
from typing import Any

from bus.config.adapters import EmitSpec
from bus.errors import EventRejected, ExpressionError
from bus.event import Event, new_traceparent
from bus.expr import compile_expression
from bus.expr.body import Body
from bus.moments import rfc3339_moment

# A W3C traceparent (version, trace id, parent span id, flags).
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


# An event's id and subject travel as Kafka and HTTP headers (ce_id, ce-subject) to every target:
# CloudEvents allows them neither control characters (a CR or LF would end a header line) nor
# surrogates or noncharacters, and a header line has limits (8 KiB in most servers).
_NOT_ATTRIBUTE_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_ATTRIBUTE_CHARS = 4096


def _check_attribute(what: str, value: str) -> None:
    if len(value) > MAX_ATTRIBUTE_CHARS:
        raise EventRejected(f"the event's {what} is {len(value):,} characters long; at most {MAX_ATTRIBUTE_CHARS:,} are accepted")
    found = _NOT_ATTRIBUTE_TEXT.search(value)
    if found is not None:
        raise EventRejected(
            f"the event's {what} {value[:40]!r} holds U+{ord(found.group()):04X} at position {found.start()}: "
            "an event's id and subject cannot hold control characters, surrogates or noncharacters"
        )


_PLAIN = frozenset({str, int, float, bool, type(None)})  # what ids and keys nearly always are: checked by type alone
_NOT_ONE_VALUE = (Mapping, list, tuple, set, bytes, bytearray)


def _kind(value: Any) -> str:
    return "an object" if isinstance(value, Mapping) else "a list" if isinstance(value, list | tuple | set) else "bytes"


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
        self._body = Body(spec.map)

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

    def build(
        self,
        document: Any,
        *,
        traceparent: str | None = None,
        headers: Mapping[str, str] | None = None,
        cloudevent: Mapping[str, str] | None = None,
        new_id: bool = True,
    ) -> Event:
        """Map ``document`` to an event. Raises EventRejected naming the field that failed.
        ``headers``: what came with the document (a webhook's request headers, names in lower
        case), read in expressions as ``$headers["x-github-event"]``. ``cloudevent``: the
        CloudEvents attributes it came with (``bus.cloudevents``): they give the event its id,
        time and subject where ``emit`` does not. ``new_id=False``: without ``emit.id`` the
        event's id is left empty, for a caller that gives it one of its own (a migration)."""
        if not isinstance(document, Mapping):
            raise EventRejected(f"expected a JSON object, got {type(document).__name__}")
        meta: Mapping[str, Any] = {} if headers is None else {"headers": headers}
        try:
            data = self._body.render_fields(document, meta)
            key = self._key(document, meta) if self._key else None
            event_id = self._id(document, meta) if self._id else None
            subject = self._subject(document, meta) if self._subject else None
        except ExpressionError as exc:
            raise EventRejected(f"mapping failed: {exc}") from exc
        if type(key) not in _PLAIN or type(event_id) not in _PLAIN or type(subject) not in _PLAIN:  # rare: look closer
            for what, value in (("key", key), ("id", event_id), ("subject", subject)):
                if isinstance(value, _NOT_ONE_VALUE):  # its text would be Python's repr: "{'a': 1}" as an id
                    raise EventRejected(f"emit.{what} gave {_kind(value)}, not text or a number")
        # The mapped id when emit gives one; otherwise a new UUID, or none for a caller that sets
        # its own (a migration: a UUID made to be thrown away cost a fifth of the mapping).
        if event_id is not None:
            ident = str(event_id)
            if not ident:  # every empty id would be the same event to the ledger, lineage and targets
                raise EventRejected("emit.id gave an empty value: every event needs an id of its own")
        elif new_id:
            ident = str(uuid.uuid4())
        else:
            ident = ""
        event = Event(
            id=ident,
            schema=self.schema,
            data=data,
            source=self.source,
            key=None if key is None else str(key),
            type=self.event_type,
            subject=None if subject is None or subject == "" else str(subject),
            # W3C trace context: a value that does not parse starts a new trace (it came from the
            # sender, and goes on as a header to every target: a CR/LF in it must not travel).
            traceparent=traceparent if traceparent and _TRACEPARENT.fullmatch(traceparent) else new_traceparent(),
        )
        if cloudevent:
            self._adopt(event, cloudevent, subject_mapped=self._subject is not None, id_mapped=event_id is not None)
        # Printable text of a sane length (nearly every id) passes at C speed; anything else is looked at closely.
        ident = event.id
        if (event_id is not None or cloudevent) and not (len(ident) <= MAX_ATTRIBUTE_CHARS and ident.isprintable()):
            _check_attribute("id", ident)  # a UUID made here needs no look
        if event.subject is not None and not (len(event.subject) <= MAX_ATTRIBUTE_CHARS and event.subject.isprintable()):
            _check_attribute("subject", event.subject)
        if event.key is not None and not event.key.isascii() and _SURROGATE.search(event.key):  # not text Kafka can carry
            raise EventRejected(f"the event's key {event.key[:40]!r} holds a lone surrogate, which is not text")
        return event

    @staticmethod
    def _adopt(event: Event, cloudevent: Mapping[str, str], *, subject_mapped: bool, id_mapped: bool) -> None:
        if not id_mapped and cloudevent.get("id"):
            event.id = cloudevent["id"]  # the sender's own id: a redelivery keeps it
        if cloudevent.get("time"):
            if rfc3339_moment(cloudevent["time"]) is None:  # a date alone, or no zone: read as local time downstream
                raise EventRejected(
                    f"the CloudEvent's time {cloudevent['time'][:60]!r} is not an RFC 3339 timestamp (a date, a time and a zone)"
                )
            event.time = cloudevent["time"]
        if not subject_mapped and cloudevent.get("subject"):
            event.subject = cloudevent["subject"]
