"""OpenAPI documents as contracts: find an operation (by operationId, ``METHOD /path`` or a
webhook's name), say what its JSON request body must be, and check a body against it at run
time, with the reason a validator library gives and where in the body it failed.

OpenAPI 3.1 schemas are JSON Schema 2020-12; 3.0's ``nullable: true`` is read as "or null"
(the one 3.0 keyword that changes what validates). ``$ref``s are followed within the document.
Documents are read once per change of the file.
"""

from __future__ import annotations

__all__ = ["ApiOperation", "BodyCheck", "ContractError", "find_operation", "inline", "load_document", "operation_in"]

import copy
import difflib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from bus.documents import MAX_DOCUMENT_FILE_BYTES, parse_json, read_at_most
from bus.patterns import PatternError
from bus.patterns import search as pattern_search

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_URI = "urn:bus:contract"


@lru_cache(maxsize=16)
def _read(path: str, modified: float) -> Any:
    text = read_at_most(Path(path), MAX_DOCUMENT_FILE_BYTES).decode("utf-8")
    if path.endswith(".json"):
        return parse_json(text)  # bounded in depth: nested lists were a RecursionError
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:  # not a ValueError: it was a traceback out of bus validate
        raise ValueError(f"not YAML: {exc}") from None
    except RecursionError:
        raise ValueError("nested too deeply to be an OpenAPI document") from None


def load_document(path: Path) -> Any:
    """The document at ``path`` (JSON or YAML); OSError or ValueError saying why if it cannot be read."""
    return _read(str(path), path.stat().st_mtime)


def _pointer(*parts: str) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _follow(document: Any, node: Any, pointer: str) -> tuple[Any, str]:
    """A ``$ref``'d object (a requestBody, a parameter) and its pointer; chains bounded."""
    for _ in range(32):
        ref = node.get("$ref") if isinstance(node, Mapping) else None
        if not (isinstance(ref, str) and ref.startswith("#/")):
            break
        pointer, node = ref[1:], document
        for part in ref[2:].split("/"):
            key = part.replace("~1", "/").replace("~0", "~")
            node = node.get(key) if isinstance(node, Mapping) else None
    return node, pointer


@dataclass(frozen=True)
class ApiOperation:
    """One operation of an OpenAPI document."""

    name: str  # as the config named it
    method: str  # upper case; "" for a webhook that names none
    path: str  # the path template (/repos/{owner}/{repo}/issues); a webhook's name
    document: Any
    body_pointer: str | None  # JSON pointer of its application/json request body schema
    required_body: bool
    parameters: tuple[Mapping[str, Any], ...]  # path, query and header parameters, refs followed

    @property
    def body_schema(self) -> Any:
        return _follow(self.document, {"$ref": "#" + self.body_pointer}, "")[0] if self.body_pointer else None

    def json_schema(self) -> dict[str, Any] | None:
        """The request body's schema as plain JSON Schema (3.0's nullable read): the whole
        document with a ``$ref`` to the body's schema at its top, so its own refs resolve."""
        if self.body_pointer is None:
            return None
        document = _as_json_schema(self.document)
        return {**document, "$ref": "#" + self.body_pointer}


def _as_json_schema(document: Any) -> Any:
    """3.0's ``nullable: true`` as "or null"; a deep copy, the document stays as read."""
    converted = copy.deepcopy(document)
    if str(converted.get("openapi", "")).startswith("3.1"):
        return converted

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.pop("nullable", False) is True:
                kind = node.get("type")
                if isinstance(kind, str):
                    node["type"] = [kind, "null"]
                    if "enum" in node:
                        node["enum"] = [*node["enum"], None]
                elif kind is None:
                    inner = {k: node.pop(k) for k in list(node) if k not in ("description", "title", "default", "example")}
                    node["anyOf"] = [inner, {"type": "null"}]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(converted)
    return converted


def inline(document: Any, node: Any, depth: int = 0, seen: tuple[str, ...] = ()) -> Any:
    """``node`` with every local ``$ref`` replaced by what it points at (a recursive one left as
    an open schema that says so) and 3.0's ``nullable`` read: a schema that stands alone, to put
    into another document."""
    if depth > 64:
        return {}
    if isinstance(node, list):
        return [inline(document, item, depth + 1, seen) for item in node]
    if not isinstance(node, Mapping):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        if ref in seen:
            return {"description": f"recursive: see {ref}"}
        target, _ = _follow(document, node, "")
        return inline(document, target, depth + 1, (*seen, ref))
    out = {str(k): inline(document, v, depth + 1, seen) for k, v in node.items()}
    if out.pop("nullable", False) is True:
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
        elif kind is None:
            return {"anyOf": [out, {"type": "null"}]}
    return out


def find_operation(document: Any, name: str) -> tuple[ApiOperation | None, list[str]]:
    """The operation ``name`` names (operationId, ``METHOD /path``, or a webhook's name), and
    every name the document answers to (for "did you mean")."""
    found: dict[str, ApiOperation] = {}
    for section in ("paths", "webhooks"):
        routes = document.get(section) if isinstance(document, Mapping) else None
        for route, methods in (routes or {}).items():
            if not isinstance(methods, Mapping):
                continue
            shared = methods.get("parameters") or []
            for method, operation in methods.items():
                if method not in _METHODS or not isinstance(operation, Mapping):
                    continue
                here = _pointer(section, route, method)
                body, body_at = _follow(document, operation.get("requestBody") or {}, here + "/requestBody")
                media = (body.get("content") or {}) if isinstance(body, Mapping) else {}
                json_media = next((m for m in media if m == "application/json" or m.endswith("+json")), None)
                parameters = tuple(
                    p
                    for p in (_follow(document, p, "")[0] for p in [*shared, *(operation.get("parameters") or [])])
                    if isinstance(p, Mapping)
                )
                entry = ApiOperation(
                    name=name,
                    method=method.upper() if section == "paths" else "",
                    path=str(route),
                    document=document,
                    body_pointer=f"{body_at}{_pointer('content', json_media, 'schema')}"
                    if json_media and "schema" in media[json_media]
                    else None,
                    required_body=bool(isinstance(body, Mapping) and body.get("required")),
                    parameters=parameters,
                )
                for alias in (operation.get("operationId"), f"{method.upper()} {route}", route if section == "webhooks" else None):
                    if alias:
                        found[str(alias)] = entry
    return found.get(name), sorted(found)


class ContractError(ValueError):
    """A document that cannot be read, or lacks the operation; ``field`` is "document" or "operation"."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def operation_in(path: Path, name: str) -> ApiOperation:
    """The operation ``name`` of the document at ``path``, or ContractError saying what is wrong."""
    try:
        document = load_document(path)
    except (OSError, ValueError) as exc:
        raise ContractError("document", f"cannot read the OpenAPI document {path}: {exc}") from exc
    operation, names = find_operation(document, name)
    if operation is None:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f" (it has {len(names)} names for its operations)"
        raise ContractError("operation", f"{path.name} has no operation {name!r}{hint}")
    return operation


_log = logging.getLogger("bus.openapi")
_BACKTRACKING: set[str] = set()  # patterns RE2 cannot run, said once each


def _found(pattern: str, text: str) -> bool:
    """Whether a contract's ``pattern`` matches ``text``, on RE2: a sender's value (or key) cannot
    make the check take exponential time (bus/patterns.py). A pattern RE2 cannot run (a lookahead
    in a vendor's document) is checked with Python's ``re``, said once."""
    try:
        return pattern_search(pattern, text)
    except PatternError as exc:
        if pattern not in _BACKTRACKING:
            _BACKTRACKING.add(pattern)
            _log.warning("contract pattern %s; checked with Python's re, which a crafted value can hold for minutes", exc)
        return re.search(pattern, text) is not None


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    """JSON Schema's ``pattern``, on ``_found``."""
    if validator.is_type(instance, "string") and not _found(pattern, instance):
        # The value quoted short: it is the sender's, and can be megabytes.
        shown = repr(instance) if len(instance) <= 60 else f"{instance[:60]!r}... ({len(instance):,} characters)"
        yield ValidationError(f"{shown} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any, schema: Any) -> Any:
    """JSON Schema's ``patternProperties``, on ``_found`` (the keys are the sender's)."""
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _found(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, allowed: Any, instance: Any, schema: Any) -> Any:
    """JSON Schema's ``additionalProperties``: the keys no ``properties`` names and no
    ``patternProperties`` matches (on ``_found``), checked against ``allowed`` or refused."""
    if not validator.is_type(instance, "object"):
        return
    named, patterns = schema.get("properties", {}), list(schema.get("patternProperties", {}))
    extras = sorted((k for k in instance if k not in named and not any(_found(p, k) for p in patterns)), key=str)
    if validator.is_type(allowed, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], allowed, path=extra)
    elif not allowed and extras:
        shown, one = _listed(extras), len(extras) == 1
        if patterns:
            regexes = ", ".join(map(repr, patterns))
            yield ValidationError(f"{shown} {'does' if one else 'do'} not match any of the regexes: {regexes}")
        else:
            yield ValidationError(f"Additional properties are not allowed ({shown} {'was' if one else 'were'} unexpected)")


def _valid(errors: Any) -> bool:
    return next(errors, None) is None


def _evaluated_keys(validator: Any, instance: dict[str, Any], schema: Any) -> set[str]:
    """The keys of ``instance`` that ``schema`` evaluates (``properties``, ``patternProperties`` on
    ``_found``, the applicators that passed): jsonschema's own walk for ``unevaluatedProperties``,
    which runs ``patternProperties`` on Python's ``re`` over the sender's keys."""
    if validator.is_type(schema, "boolean"):
        return set()
    keys: set[str] = set()
    for keyword in ("$ref", "$dynamicRef"):
        if (ref := schema.get(keyword)) is not None:
            resolved = validator._resolver.lookup(ref)
            inner = validator.evolve(schema=resolved.contents, _resolver=resolved.resolver)
            keys |= _evaluated_keys(inner, instance, resolved.contents)
    properties = schema.get("properties")
    if validator.is_type(properties, "object"):
        keys |= properties.keys() & instance.keys()
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        if (subschema := schema.get(keyword)) is not None:
            keys.update(key for key, value in instance.items() if _valid(validator.descend(value, subschema)))
    for pattern in schema.get("patternProperties", {}):
        keys.update(key for key in instance if _found(pattern, key))
    for name, subschema in schema.get("dependentSchemas", {}).items():
        if name in instance:
            keys |= _evaluated_keys(validator, instance, subschema)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for subschema in schema.get(keyword, []):
            if _valid(validator.descend(instance, subschema)):
                keys |= _evaluated_keys(validator, instance, subschema)
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            keys |= _evaluated_keys(validator, instance, schema["if"])
            if "then" in schema:
                keys |= _evaluated_keys(validator, instance, schema["then"])
        elif "else" in schema:
            keys |= _evaluated_keys(validator, instance, schema["else"])
    return keys


def _unevaluated_properties(validator: Any, unevaluated: Any, instance: Any, schema: Any) -> Any:
    """JSON Schema's ``unevaluatedProperties``, with the evaluated keys found on ``_found``."""
    if not validator.is_type(instance, "object"):
        return
    evaluated = _evaluated_keys(validator, instance, schema)
    refused = sorted(
        (key for key in instance if key not in evaluated and not _valid(validator.descend(instance[key], unevaluated, path=key))), key=str
    )
    if refused:
        shown, were = _listed(refused), "was" if len(refused) == 1 else "were"
        if unevaluated is False:
            yield ValidationError(f"Unevaluated properties are not allowed ({shown} {were} unexpected)")
        else:
            yield ValidationError(f"Unevaluated properties are not valid under the given schema ({shown} {were} unevaluated and invalid)")


def _listed(keys: list[str]) -> str:
    """The sender's keys quoted short (a key can be megabytes), ten at most."""
    return ", ".join(repr(key[:60]) for key in keys[:10]) + (f" and {len(keys) - 10:,} more" if len(keys) > 10 else "")


# Draft 2020-12 with the keywords that run regular expressions on RE2.
_Validator = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    {
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
        "unevaluatedProperties": _unevaluated_properties,
    },
)


class BodyCheck:
    """An operation's request body schema, compiled once: ``problem(body)`` says why a body
    breaks it (the validator's most relevant error, and where), or None."""

    def __init__(self, operation: ApiOperation) -> None:
        schema = operation.json_schema()
        if schema is None:
            raise ValueError(f"operation {operation.name!r} has no application/json request body")
        root = {k: v for k, v in schema.items() if k != "$ref"}
        registry: Registry[Any] = Registry().with_resource(_URI, Resource.from_contents(root, default_specification=DRAFT202012))
        self._validator = _Validator({"$ref": f"{_URI}#{operation.body_pointer}"}, registry=registry)
        self.name = operation.name

    def problem(self, body: Any) -> str | None:
        error = best_match(self._validator.iter_errors(body))
        if error is None:
            return None
        text = error.message if len(error.message) <= 300 else error.message[:300] + "..."
        return f"{text} (at {error.json_path})"
