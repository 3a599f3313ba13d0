"""The hub described for the systems around it, from its config: an OpenAPI 3.1 document of its
webhook endpoints (``bus docs openapi``) and an AsyncAPI 3.0 document of its Kafka topics and the
Avro schemas of their messages (``bus docs asyncapi``). Both are also served by a running hub's
management API, so a sender or a consumer team reads what this deployment accepts and emits.

An inbound adapter takes part in the OpenAPI document by a config method ``http_endpoint()``
(path, method, security, body kinds); the request body's schema comes from what the config
declares the sender sends (``emit.payload``, or the OpenAPI operation the adapter follows) or,
failing that, from the fields its ``emit`` mapping reads (an open object: what the hub needs,
not all a sender may send).
"""

from __future__ import annotations

__all__ = ["asyncapi_document", "openapi_document", "payload_schema"]

import json
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from bus.config.loader import LoadedConfig
from bus.documents import MAX_DOCUMENT_FILE_BYTES, read_at_most
from bus.expr import paths_of
from bus.kafka.topics import TopicNames
from bus.openapi import find_operation, inline, load_document

_PROBLEM = {
    "type": "object",
    "properties": {"error": {"type": "string", "description": "Why the request was refused."}},
    "required": ["error"],
}
# CloudEvents' Kafka protocol binding (binary mode) and W3C trace context, on every hub record.
_HEADERS = {
    "type": "object",
    "properties": {
        "ce_id": {"type": "string", "description": "The event id (the sender's, or a UUID)."},
        "ce_source": {"type": "string", "description": "Where it entered: /inbound/<adapter>."},
        "ce_type": {"type": "string", "description": "The canonical schema's full name."},
        "ce_specversion": {"type": "string", "const": "1.0"},
        "ce_time": {"type": "string", "format": "date-time"},
        "ce_subject": {"type": "string"},
        "traceparent": {"type": "string", "description": "W3C trace context."},
    },
    "required": ["ce_id", "ce_source", "ce_type", "ce_specversion"],
}


def _version() -> str:
    try:
        return version("integration-bus")
    except PackageNotFoundError:
        return "0"


def _from_sample(value: Any, depth: int = 0) -> dict[str, Any]:
    if depth > 32:
        return {}
    if isinstance(value, Mapping):
        return {"type": "object", "properties": {str(k): _from_sample(v, depth + 1) for k, v in value.items()}}
    if isinstance(value, list):
        return {"type": "array", "items": _from_sample(value[0], depth + 1)} if value else {"type": "array"}
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    return {"type": "string"} if isinstance(value, str) else {}


def _from_paths(paths: set[str]) -> dict[str, Any]:
    """An open object with the fields a mapping reads (``data.object.amount``), nested."""
    root: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": True}
    for path in sorted(paths):
        node = root
        parts = path.split(".")
        for i, part in enumerate(parts):
            leaf = i == len(parts) - 1
            child = node["properties"].setdefault(part, {} if leaf else {"type": "object", "properties": {}, "additionalProperties": True})
            if not leaf and "properties" not in child:
                child.update(type="object", properties={}, additionalProperties=True)
            node = child
    return root


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _texts(v)]
    return []


def _read(value: Any, base_dir: Path) -> Any:
    if isinstance(value, str):
        path = Path(value) if Path(value).is_absolute() else base_dir / value
        return yaml.safe_load(read_at_most(path, MAX_DOCUMENT_FILE_BYTES).decode("utf-8"))
    return value


def payload_schema(emit: Any, base_dir: Path, follows: Any = None) -> dict[str, Any]:
    """The JSON Schema of what a sender sends: the declared payload shape, the OpenAPI operation
    the adapter follows (``follows``: a config's ``openapi``), or the fields ``emit`` reads."""
    shape = getattr(emit, "payload", None)
    spec = shape.openapi if shape is not None and shape.openapi is not None else follows
    if spec is not None:
        path = Path(spec.document) if Path(spec.document).is_absolute() else base_dir / spec.document
        operation, _ = find_operation(load_document(path), spec.operation)
        if operation is not None and operation.body_schema is not None:
            inlined: dict[str, Any] = inline(operation.document, operation.body_schema)
            return inlined
    if shape is not None and shape.json_schema is not None:
        found = _read(shape.json_schema, base_dir)
        return inline(found, found) if isinstance(found, Mapping) else {}
    if shape is not None and shape.sample is not None:
        return _from_sample(_read(shape.sample, base_dir))
    texts = [*_texts(emit.map), *(t for t in (emit.id, emit.key, emit.subject) if t)]
    return _from_paths({p for text in texts for p in paths_of(text)})


def openapi_document(loaded: LoadedConfig, base_dir: Path, server: str | None = None) -> dict[str, Any]:
    """OpenAPI 3.1 of the hub's webhook endpoints."""
    paths: dict[str, Any] = {}
    schemes: dict[str, Any] = {}
    schemas: dict[str, Any] = {"Problem": _PROBLEM}
    for config in loaded.inbound:
        describe = getattr(config, "http_endpoint", None)
        if not callable(describe):
            continue
        endpoint = describe()
        name = str(config.name)
        body = payload_schema(config.emit, base_dir, getattr(config, "openapi", None))  # type: ignore[attr-defined]
        schemas[f"{name}-body"] = {"type": "array", "items": body} if endpoint.get("batch") else body
        security: list[dict[str, list[str]]] = []
        for scheme_name, scheme in endpoint.get("security", {}).items():
            schemes[f"{name}-{scheme_name}"] = scheme
            security.append({f"{name}-{scheme_name}": []})
        ref = {"$ref": f"#/components/schemas/{name}-body"}
        problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        accepted = {"type": "object", "properties": {"ids": {"type": "array", "items": {"type": "string"}}}} if endpoint.get("batch") else {
            "type": "object",
            "properties": {"id": {"type": "string", "description": "The event id."}},
        }  # fmt: skip
        paths[endpoint["path"]] = {
            endpoint.get("method", "post"): {
                "operationId": f"{name}",
                "summary": endpoint.get("summary", f"inbound {name}"),
                "description": endpoint.get("description", ""),
                **({"security": security} if security else {}),
                "requestBody": {
                    "required": True,
                    "content": {kind: {"schema": ref} for kind in endpoint.get("content_types", ["application/json"])},
                },
                "responses": {
                    "202": {
                        "description": "Accepted: Kafka acknowledged the event(s).",
                        "content": {"application/json": {"schema": accepted}},
                    },
                    "200": {"description": "A repeated delivery id: accepted before, not stored again."},
                    "400": {"description": "The body does not parse, breaks the contract, or does not fit the schema.", "content": problem},
                    "401": {"description": "Missing or wrong credentials or signature.", "content": problem},
                    "408": {"description": "The body did not arrive in time.", "content": problem},
                    "409": {"description": "The same delivery id is being processed.", "content": problem},
                    "413": {"description": "The body is too large.", "content": problem},
                    "415": {"description": "A Content-Type this endpoint does not take.", "content": problem},
                    "503": {"description": "Kafka could not take the event, or the hub is stopping: retry.", "content": problem},
                },
            }
        }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Webhook endpoints of this hub",
            "version": _version(),
            "description": "Generated from the hub's config (bus docs openapi). Each endpoint answers 202 once Kafka holds the event.",
        },
        "paths": paths,
        "components": {"schemas": schemas, **({"securitySchemes": schemes} if schemes else {})},
    }
    if server:
        document["servers"] = [{"url": server}]
    return document


def _produced(loaded: LoadedConfig) -> dict[str, list[str]]:
    """Canonical schema -> who writes its topic (inbound adapters and routes with a transform)."""
    found: dict[str, list[str]] = {}
    for config in loaded.inbound:
        emit = getattr(config, "emit", None)
        if emit is not None:
            found.setdefault(emit.schema_, []).append(f"inbound {config.name}")
    for migration in loaded.hub.migrations:
        found.setdefault(migration.emit.schema_, []).append(f"migration {migration.name}")
    return found


def asyncapi_document(loaded: LoadedConfig, schemas: Mapping[str, Any]) -> dict[str, Any]:
    """AsyncAPI 3.0 of the hub's topics: canonical events, each subscriber's deliveries and dead
    letters, the inbound dead letters; messages with their Avro schemas and CloudEvents headers."""
    hub = loaded.hub
    topics = TopicNames(hub.kafka.topic_prefix)
    producers = _produced(loaded)
    feeds: dict[str, set[str]] = {}
    for route in hub.routes:
        output = route.output_schema
        for target in route.to:
            feeds.setdefault(target, set()).add(output)
    used = sorted(set(producers) | {route.from_ for route in hub.routes} | {s for f in feeds.values() for s in f})
    messages: dict[str, Any] = {}
    for name in used:
        if name not in schemas:
            continue
        messages[name] = {
            "name": name,
            "title": f"{name} event",
            "summary": str(schemas[name].get("doc", "")) if isinstance(schemas[name], Mapping) else "",
            "contentType": "avro/binary",
            "headers": _HEADERS,
            "payload": {"schemaFormat": "application/vnd.apache.avro;version=1.9.0", "schema": json.loads(json.dumps(schemas[name]))},
            "bindings": {
                "kafka": {
                    "key": {"type": "string", "description": "The business key (emit.key): one key's events stay in order."},
                    "schemaIdLocation": "payload",
                    "schemaIdPayloadEncoding": "confluent",
                    "bindingVersion": "0.5.0",
                }
            },
        }
    messages["RawInput"] = {
        "name": "RawInput",
        "title": "A message an inbound adapter could not turn into an event",
        "contentType": "application/octet-stream",
        "headers": {"type": "object", "properties": {"bus_error": {"type": "string", "description": "Why it was refused."}}},
        "payload": {"type": "string", "contentEncoding": "binary", "description": "The bytes as they came."},
    }

    def refs(names: list[str]) -> dict[str, Any]:
        return {n: {"$ref": f"#/components/messages/{n}"} for n in names if n in messages}

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for name in used:
        key = f"canonical-{name}"
        channels[key] = {
            "address": topics.canonical(name),
            "description": f"Every {name} event, in canonical form.",
            "messages": refs([name]),
        }
        for who in producers.get(name, []):
            operations[f"{who.split()[1]}-publishes-{name}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{key}"},
                "summary": f"{who} publishes {name} events",
            }
    for route in hub.routes:
        if f"canonical-{route.from_}" in channels:
            operations[f"route-{route.name}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/canonical-{route.from_}"},
                "summary": f"route {route.name}: to {', '.join(route.to)}" + (f" when {route.when}" if route.when else ""),
            }
    for config in loaded.outbound:
        name = str(config.name)
        carried = sorted(feeds.get(name, ()))
        channels[f"deliver-{name}"] = {
            "address": topics.delivery(name),
            "description": f"What the routes send subscriber {name}, in the order it is delivered per key.",
            "messages": refs(carried),
        }
        channels[f"dead-letters-{name}"] = {
            "address": topics.dead_letter(name),
            "description": f"Events subscriber {name} refused for good, with the reason in the bus_error header.",
            "messages": refs(carried),
        }
        operations[f"{name}-delivers"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/deliver-{name}"},
            "summary": f"outbound {name} ({getattr(config, 'type', '')}) delivers each event to its system",
        }
    for config in loaded.inbound:
        channels[f"refused-{config.name}"] = {
            "address": topics.inbound_dead_letter(str(config.name)),
            "description": f"Messages inbound {config.name} could not turn into events, kept as they came.",
            "messages": refs(["RawInput"]),
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Kafka topics of this hub",
            "version": _version(),
            "description": "Generated from the hub's config (bus docs asyncapi): canonical events as Avro in the Confluent "
            "wire format (schema id in the payload), CloudEvents attributes as headers.",
        },
        "servers": {"kafka": {"host": hub.kafka.bootstrap if hub.kafka.bootstrap != "embedded" else "localhost:9092", "protocol": "kafka"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }
