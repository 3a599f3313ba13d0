"""GraphQL documents and schemas with graphql-core, the reference implementation's port: parse a
config's query or mutation once, check it against the server's schema, and say in JSON Schema
what its variables accept and what its selection returns (the config checker reads both).

A schema comes from a file: SDL (``.graphql``, ``.graphqls``, ``.gql``) or the JSON result of an
introspection query (``.json``: ``{"data": {"__schema": ...}}`` or ``{"__schema": ...}``), which
any GraphQL server answers and any GraphQL client can save.
"""

from __future__ import annotations

__all__ = [
    "SchemaError",
    "error_codes",
    "introspect",
    "load_schema",
    "operation_of",
    "said",
    "selection_json_schema",
    "validation_errors",
    "variables_json_schema",
]

from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import httpx
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLEnumType,
    GraphQLError,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLUnionType,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    Undefined,
    build_client_schema,
    build_schema,
    get_introspection_query,
    is_input_type,
    parse,
    type_from_ast,
    validate,
)
from graphql.language import DocumentNode

from bus.adapter_api import MAX_DOCUMENT_FILE_BYTES, parse_json, read_at_most

_SCALARS: dict[str, dict[str, Any]] = {
    "Int": {"type": "integer"},
    "Float": {"type": "number"},
    "String": {"type": "string"},
    "ID": {"type": "string"},  # an ID is sent and received as text, even when it looks like a number
    "Boolean": {"type": "boolean"},
}


class SchemaError(ValueError):
    """A schema file that cannot be read, or a document that does not fit it."""


def operation_of(text: str, kind: str) -> tuple[DocumentNode, OperationDefinitionNode]:
    """The document and its one operation of ``kind`` ("query" or "mutation"), or SchemaError
    naming what is wrong (syntax with line and column, no operation, several, another kind)."""
    try:
        document = parse(text)
    except GraphQLError as exc:
        raise SchemaError(f"not a GraphQL document: {exc.message} (line {_line(exc)})") from exc
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if len(operations) != 1:
        raise SchemaError(f"the document must hold exactly one operation, and it holds {len(operations)}")
    operation = operations[0]
    if operation.operation != OperationType(kind):
        raise SchemaError(f"the document's operation is a {operation.operation.value}; this adapter runs a {kind}")
    return document, operation


def _line(exc: GraphQLError) -> str:
    return ", ".join(f"{loc.line}:{loc.column}" for loc in exc.locations or ()) or "?"


@lru_cache(maxsize=32)
def _load(path: str, modified: float) -> GraphQLSchema:
    text = read_at_most(Path(path), MAX_DOCUMENT_FILE_BYTES).decode()
    if path.endswith(".json"):
        found = parse_json(text)  # bounded in depth: a file of nested lists was a RecursionError
        found = found.get("data", found) if isinstance(found, dict) else found
        if not isinstance(found, dict) or "__schema" not in found:
            raise SchemaError(f"{path} is JSON but not an introspection result (no __schema)")
        return build_client_schema(cast(Any, found))
    return build_schema(text)


def introspect(url: str, headers: dict[str, str], timeout: float = 15.0) -> GraphQLSchema:
    """The schema a live server describes (the standard introspection query), for ``bus validate``
    with ``schema: introspect``; SchemaError saying why when it cannot be had (introspection is
    often turned off in production: save the answer from a test system to a file instead)."""
    try:
        answer = httpx.post(url, json={"query": get_introspection_query()}, headers=headers, timeout=timeout)
        body = parse_json(answer.content, repeated_keys="last")
    except (httpx.HTTPError, ValueError) as exc:
        raise SchemaError(f"cannot introspect {url}: {exc}") from exc
    data = body.get("data") if isinstance(body, dict) else None
    if answer.status_code != 200 or not isinstance(data, dict) or "__schema" not in data:
        errors = body.get("errors") if isinstance(body, dict) else None
        reason = "; ".join(said(e) for e in errors[:3]) if isinstance(errors, list) else answer.text[:200]
        raise SchemaError(f"{url} did not answer the introspection query ({answer.status_code}: {reason}); save its schema to a file")
    try:
        return build_client_schema(cast(Any, data))
    except (GraphQLError, TypeError, ValueError) as exc:
        raise SchemaError(f"{url} answered an introspection result graphql-core cannot use: {exc}") from exc


def load_schema(path: Path) -> GraphQLSchema:
    """The schema in ``path`` (SDL or an introspection result), read once per change of the file."""
    try:
        return _load(str(path), path.stat().st_mtime)
    except OSError as exc:
        raise SchemaError(f"cannot read the GraphQL schema {path}: {exc.strerror or exc}") from exc
    except (GraphQLError, TypeError, ValueError) as exc:
        if isinstance(exc, SchemaError):
            raise
        raise SchemaError(f"{path} is not a GraphQL schema: {exc}") from exc


def validation_errors(schema: GraphQLSchema, document: DocumentNode) -> list[str]:
    """What the server would refuse in ``document``: unknown fields and arguments, wrong variable
    types, missing selections... each with its line and column in the document."""
    return [f"{error.message} (line {_line(error)})" for error in validate(schema, document)]


def variables_json_schema(schema: GraphQLSchema, operation: OperationDefinitionNode, title: str) -> dict[str, Any]:
    """The JSON Schema of the variables ``operation`` declares: a non-null variable without a
    default is required; input objects, lists, enums and scalars as the schema defines them."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for definition in operation.variable_definitions or ():
        name = definition.variable.name.value
        kind = type_from_ast(schema, definition.type)
        properties[name] = _input(kind, 0) if is_input_type(kind) else {}
        if isinstance(kind, GraphQLNonNull) and definition.default_value is None:
            required.append(name)
    return {"title": title, "type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _input(kind: GraphQLInputType | None, depth: int) -> dict[str, Any]:
    if depth > 32 or kind is None:
        return {}
    if isinstance(kind, GraphQLNonNull):
        return _input(kind.of_type, depth + 1)
    if isinstance(kind, GraphQLList):
        return {"type": "array", "items": _input(kind.of_type, depth + 1)}
    if isinstance(kind, GraphQLEnumType):
        return {"title": kind.name, "enum": list(kind.values)}
    if isinstance(kind, GraphQLInputObjectType):
        fields = kind.fields
        return {
            "title": f"input {kind.name}",
            "type": "object",
            "properties": {name: _input(f.type, depth + 1) for name, f in fields.items()},
            "required": [n for n, f in fields.items() if isinstance(f.type, GraphQLNonNull) and f.default_value is Undefined],
            "additionalProperties": False,
        }
    if isinstance(kind, GraphQLScalarType):
        return dict(_SCALARS.get(kind.name, {}))  # a custom scalar (DateTime, Money, JSON): any value
    return {}


def selection_json_schema(
    schema: GraphQLSchema, document: DocumentNode, operation: OperationDefinitionNode, path: list[str]
) -> dict[str, Any] | None:
    """The JSON Schema of one node of the connection at ``path`` (response keys under ``data``):
    the fields the query selects on ``edges { node }`` (or ``nodes``), aliases as the answer
    names them. None when the path does not lead to a connection of the selection."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    root = schema.query_type
    if root is None:
        return None
    answer = _selection(schema, root, operation.selection_set, fragments, 0)
    for key in path:
        step = (answer.get("properties") or {}).get(key)
        if not isinstance(step, dict):
            return None
        answer = step.get("items", step) if step.get("type") == "array" else step
    properties = answer.get("properties") or {}
    found: Any = None
    if "edges" in properties:
        edge = properties["edges"].get("items") or {}
        found = (edge.get("properties") or {}).get("node")
    elif "nodes" in properties:
        found = properties["nodes"].get("items")
    return found if isinstance(found, dict) else None


def _selection(
    schema: GraphQLSchema,
    parent: GraphQLObjectType | GraphQLInterfaceType | GraphQLUnionType,
    selection: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    depth: int,
) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    for node, optional, condition in _fields(selection, fragments, depth):
        owner = schema.get_type(condition) if condition else parent  # a fragment's fields belong to its type
        field = getattr(owner, "fields", {}).get(node.name.value)
        key = node.alias.value if node.alias else node.name.value
        if node.name.value == "__typename":
            properties[key] = {"type": "string"}
            continue
        if field is None:
            continue  # validation_errors says so
        properties[key] = _output(schema, field.type, node.selection_set, fragments, depth + 1)
        if isinstance(field.type, GraphQLNonNull) and not optional:
            required.append(key)
    return {"title": parent.name, "type": "object", "properties": properties, "required": required}


def _fields(
    selection: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    depth: int,
    optional: bool = False,
    condition: str | None = None,
) -> list[tuple[FieldNode, bool, str | None]]:
    """The fields of a selection set with its fragments spread: (field, may be absent, the type
    it belongs to when a fragment names one). A fragment's fields may be absent from an answer."""
    found: list[tuple[FieldNode, bool, str | None]] = []
    if selection is None or depth > 32:
        return found
    for node in selection.selections:
        if isinstance(node, FieldNode):
            found.append((node, optional, condition))
        elif isinstance(node, InlineFragmentNode):
            named = node.type_condition.name.value if node.type_condition else condition
            found += _fields(node.selection_set, fragments, depth + 1, optional or node.type_condition is not None, named)
        elif isinstance(node, FragmentSpreadNode) and node.name.value in fragments:
            fragment = fragments[node.name.value]
            found += _fields(fragment.selection_set, fragments, depth + 1, True, fragment.type_condition.name.value)
    return found


def _output(
    schema: GraphQLSchema,
    kind: GraphQLOutputType,
    selection: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    depth: int,
) -> dict[str, Any]:
    if depth > 32:
        return {}
    if isinstance(kind, GraphQLNonNull):
        return _output(schema, kind.of_type, selection, fragments, depth + 1)
    if isinstance(kind, GraphQLList):
        return {"type": "array", "items": _output(schema, kind.of_type, selection, fragments, depth + 1)}
    if isinstance(kind, GraphQLEnumType):
        return {"title": kind.name, "enum": list(kind.values)}
    if isinstance(kind, GraphQLObjectType | GraphQLInterfaceType | GraphQLUnionType):
        return _selection(schema, kind, selection, fragments, depth + 1)
    if isinstance(kind, GraphQLScalarType):
        return dict(_SCALARS.get(kind.name, {}))
    return {}


def said(error: Any) -> str:
    """One GraphQL error as a line: its message, path and code."""
    if not isinstance(error, dict):
        return str(error)[:200]
    text = str(error.get("message", ""))[:300]
    path = error.get("path") or error.get("field")
    if path:
        text += f" (at {'.'.join(str(p) for p in path) if isinstance(path, list) else path})"
    code = (error.get("extensions") or {}).get("code") if isinstance(error.get("extensions"), dict) else None
    return f"{text} [{code}]" if code else text


def error_codes(errors: list[Any]) -> set[str]:
    """The ``extensions.code`` of each GraphQL error that has one (THROTTLED, BAD_USER_INPUT...).
    Codes are text by the spec's convention; a server that sends a list or an object there (a
    TypeError here before: unhashable) has them left out."""
    found = (e["extensions"].get("code") for e in errors if isinstance(e, dict) and isinstance(e.get("extensions"), dict))
    return {code for code in found if isinstance(code, str)}
