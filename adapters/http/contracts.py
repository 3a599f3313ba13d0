"""What ``bus validate`` checks of an ``http`` outbound or an ``http_webhook`` that names an
OpenAPI operation (``openapi: {document, operation}``): the body against the operation's
request body schema, and for an outbound its method, its URL's path against the operation's
path template, and its query parameters against the ones the operation declares."""

from __future__ import annotations

__all__ = ["body_check", "outbound_contract", "webhook_contract"]

import asyncio
import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bus.adapter_api import ApiOperation, BodyCheck, Contract, ContractError, OpenApiOperation, RetryableError, operation_in

_TEMPLATE = re.compile(r"\$\{[^}]*\}")


def _operation(spec: OpenApiOperation) -> ApiOperation | Contract:
    try:
        return operation_in(spec.document, spec.operation)
    except ContractError as exc:
        return Contract(errors=((("openapi", exc.field), str(exc)),))


def _path_matches(filled: str, template: str) -> bool:
    """``/api/repos/x/x/issues`` (a URL's path, each ``${...}`` filled) against
    ``/repos/{owner}/{repo}/issues``: the operation's path is the URL path's tail (a server's
    base path may come first), a ``{param}`` standing for one segment."""
    pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in re.split(r"(\{[^}]*\})", template))
    return re.fullmatch(f"(/.*)?{pattern}/?", filled) is not None


def outbound_contract(url: str, method: str, body: dict[str, Any] | None, spec: OpenApiOperation | None) -> Contract:
    if spec is None:
        return Contract()
    operation = _operation(spec)
    if isinstance(operation, Contract):
        return operation
    errors: list[tuple[tuple[str | int, ...], str]] = []
    said = f"{spec.operation} is {operation.method} {operation.path}"
    if operation.method and method != operation.method:
        errors.append((("method",), f"{said}, and this outbound sends {method}"))
    parts = urlsplit(_TEMPLATE.sub("x", url))  # each ${...} as one segment's value
    if not _path_matches(parts.path, operation.path):
        written = url.split("://", 1)[-1].partition("/")[2].split("?")[0]  # the path as the config writes it
        errors.append((("url",), f"the URL's path /{written} does not match the operation's path: {said}"))
    declared = {str(p.get("name")): p for p in operation.parameters if p.get("in") == "query"}
    given = {name for name, _ in parse_qsl(parts.query, keep_blank_values=True)}
    for name in sorted(given - set(declared)):
        errors.append((("url",), f"{spec.operation} has no query parameter {name!r} (it has: {', '.join(declared) or 'none'})"))
    for name, parameter in declared.items():
        if parameter.get("required") and name not in given:
            errors.append((("url",), f"{spec.operation} requires the query parameter {name!r}, and the URL does not send it"))
    schema = operation.json_schema()
    if schema is None and body is not None:
        errors.append((("body",), f"{spec.operation} takes no JSON request body"))
    if errors or schema is None or body is None:
        return Contract(errors=tuple(errors))
    return Contract(body=(("body",), schema), name=f"the request body of {spec.operation}")


def webhook_contract(spec: OpenApiOperation | None) -> Contract:
    if spec is None:
        return Contract()
    operation = _operation(spec)
    if isinstance(operation, Contract):
        return operation
    schema = operation.json_schema()
    if schema is None:
        return Contract(errors=((("openapi", "operation"), f"{spec.operation} has no JSON request body to check requests against"),))
    return Contract(payload=schema)


async def body_check(spec: OpenApiOperation, whose: str) -> BodyCheck:
    """The operation's request body schema, compiled at an adapter's start (the document is read
    off the event loop); RetryableError saying why when it cannot be had."""
    try:
        return BodyCheck(await asyncio.to_thread(operation_in, spec.document, spec.operation))
    except (ContractError, ValueError) as exc:
        raise RetryableError(f"{whose} contract cannot be read: {exc}") from exc
