"""CloudEvents 1.0: how an event's context attributes travel on each transport, out and in.

Every event carries ``specversion``, ``id``, ``source``, ``type``, ``time`` and, when set,
``subject``; the Distributed Tracing extension's ``traceparent`` travels as the transport's own
W3C header. Outgoing messages use the binary content mode (attributes in headers, the body as
the adapter renders it), with each binding's own header names:

- Kafka: ``ce_<attribute>`` headers (the canonical topics and the ``kafka`` outbound);
- HTTP: ``ce-<attribute>`` headers, values percent-encoded as the binding says;
- AMQP (RabbitMQ): ``ce-<attribute>`` headers (the RabbitMQ binding);
- NATS: ``ce-<attribute>`` headers;
- MQTT 3.1.1 has no headers: attributes travel only when the body maps them (``$id``...).

Incoming HTTP requests are read in either mode: ``ce-*`` headers (binary), or a structured
``application/cloudevents+json`` envelope whose ``data`` is the document to map. What came in
gives the event its ``id``, ``time`` and ``subject`` unless ``emit`` sets them.
tests/unit/test_cloudevents.py checks every binding against the ``cloudevents`` SDK's reading.
"""

from __future__ import annotations

__all__ = ["SPEC_VERSION", "attributes", "from_http", "http_headers", "kafka_headers", "prefixed_headers"]

import string
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote, unquote

from bus.errors import EventRejected


class Event(Protocol):
    """What this module reads of ``bus.event.Event`` (which builds its headers here)."""

    id: str
    source: str
    type: str
    time: str
    subject: str | None
    traceparent: str


SPEC_VERSION = "1.0"
STRUCTURED = "application/cloudevents+json"
_REQUIRED = ("specversion", "id", "source", "type")
_CONTENT_TYPE = b"application/avro"


def attributes(event: Event) -> dict[str, str]:
    """The event's context attributes, by CloudEvents name (no transport prefix)."""
    found = {"specversion": SPEC_VERSION, "id": event.id, "source": event.source, "type": event.type, "time": event.time}
    if event.subject is not None:
        found["subject"] = event.subject
    return found


def kafka_headers(event: Event) -> list[tuple[str, bytes]]:
    """Kafka binary mode: the canonical record's headers (the value is Avro)."""
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", event.id.encode()),
        ("ce_source", event.source.encode()),
        ("ce_type", event.type.encode()),
        ("ce_time", event.time.encode()),
        ("content-type", _CONTENT_TYPE),
        ("traceparent", event.traceparent.encode()),
    ]
    if event.subject is not None:
        headers.append(("ce_subject", event.subject.encode()))
    return headers


def prefixed_headers(event: Event, prefix: str) -> dict[str, str]:
    """Binary mode for a transport with text headers: ``ce-`` for HTTP, AMQP and NATS, ``ce_``
    for the ``kafka`` outbound; ``traceparent`` as the W3C header."""
    headers = {prefix + name: value for name, value in attributes(event).items()}
    headers["traceparent"] = event.traceparent
    return headers


# HTTP binding, 3.1.3.2: in a ce- header, a space, '"', '%' and anything outside printable ASCII
# is percent-encoded (UTF-8): header values cannot carry them as they are.
_HEADER_SAFE = "".join(c for c in string.punctuation if c not in '"%')


def _header_value(value: str) -> str:
    # Most values (ids, URIs without spaces, RFC 3339 times) are printable ASCII with nothing to
    # encode: kept as they are without quote(), which cost more than the rest of the headers.
    if value.isascii() and value.isprintable() and " " not in value and '"' not in value and "%" not in value:
        return value
    return quote(value, safe=_HEADER_SAFE)


def http_headers(event: Event) -> dict[str, str]:
    # Written out rather than made from attributes(): one is built for every delivery.
    headers = {
        "ce-specversion": SPEC_VERSION,
        "ce-id": _header_value(event.id),
        "ce-source": _header_value(event.source),
        "ce-type": _header_value(event.type),
        "ce-time": _header_value(event.time),
    }
    if event.subject is not None:
        headers["ce-subject"] = _header_value(event.subject)
    headers["traceparent"] = event.traceparent
    return headers


def from_http(headers: Mapping[str, str], document: Any, content_type: str) -> tuple[Any, dict[str, str]]:
    """What a request carried: the document to map, and the CloudEvents attributes that came
    with it (empty for a plain request). A structured envelope that lacks a required attribute
    is refused (EventRejected: a 400 naming it)."""
    if content_type == STRUCTURED:
        if not isinstance(document, Mapping):
            raise EventRejected(f"a structured CloudEvent is a JSON object, not {type(document).__name__}")
        missing = [name for name in _REQUIRED if not isinstance(document.get(name), str) or not document.get(name)]
        if missing:
            raise EventRejected(f"the CloudEvent lacks {', '.join(missing)}")
        if document["specversion"] != SPEC_VERSION:
            raise EventRejected(f"CloudEvents specversion {document['specversion']!r} is not supported (only {SPEC_VERSION})")
        found = {k: str(v) for k, v in document.items() if k not in ("data", "data_base64") and isinstance(v, str | int | bool)}
        return document.get("data"), found
    found = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith("ce-") and len(lower) > 3:
            found[lower[3:]] = unquote(value)
    return document, found
