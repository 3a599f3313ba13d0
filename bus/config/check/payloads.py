"""Checks of an inbound's ``emit``: its expressions against the payload's declared shape (a JSON
Schema, a sample, or an OpenAPI operation's request body), its mapping against its schema."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from bus.config.check.checker import Checker, Loc, texts_of
from bus.documents import MAX_DOCUMENT_FILE_BYTES, read_at_most, text_codec
from bus.expr import paths_of
from bus.expr.typecheck import Scope, closest
from bus.expr.types import (
    ANY,
    Array,
    MapOf,
    Record,
    Type,
    describe,
    from_json_schema,
    from_sample,
    non_null,
)
from bus.openapi import find_operation, load_document


class PayloadChecks(Checker):
    def inbound(self, index: int, config: BaseModel) -> tuple[str, set[str] | None] | None:
        """Check an inbound's ``emit``; returns (schema, fields it sets; None: all of them)."""
        emit = getattr(config, "emit", None)
        if emit is None or not hasattr(emit, "schema_"):
            return None
        loc: Loc = ("inbound", index, "emit")
        if not getattr(type(config), "provides_headers", False) and "$headers" in emit.model_dump_json():
            kind = getattr(config, "type", "this")
            self.warn(loc, f"$headers reads null here: the {kind} inbound has no request headers (http_webhook has)")
        # An adapter's own checks of how its fields fit together (``config_warnings()``).
        try:
            own = list(getattr(config, "config_warnings", lambda: [])())
        except Exception as exc:  # noqa: BLE001 - a third-party adapter's check that breaks is its bug, said as such
            self.error(("inbound", index), f"the {getattr(config, 'type', '')} adapter's own config check failed: {exc!r}")
            own = []
        for where, message in own:
            self.warn(("inbound", index, *where), message)
        contract = self.contract(config, ("inbound", index))
        return self.emit(emit, loc, contract.payload if contract is not None else None)

    def migration(self, index: int, migration: Any) -> tuple[str, set[str] | None]:
        """Check a migration's ``emit`` (``migrations[i].emit``) as an inbound's is checked: a row is
        its document. A CSV file's header is the shape of its rows (every column a string), so a
        column read that the file does not have is an error naming the closest one."""
        columns = self.csv_columns(migration.source.file)
        if columns is not None and len(columns["properties"]) == 1:
            (only,) = columns["properties"]
            other = next((d for d in ";\t|" if d in only), None)
            if other is not None:  # one column whose name holds a separator: the file is not separated by commas
                self.error(
                    ("migrations", index, "source", "file", "delimiter"),
                    f"the header of {migration.source.file.path} reads as one column {only!r}: set source.file.delimiter to {other!r}",
                )
                return self.emit(migration.emit, ("migrations", index, "emit"))
        return self.emit(migration.emit, ("migrations", index, "emit"), columns)

    def csv_columns(self, source: Any) -> dict[str, Any] | None:
        """A CSV source's rows as a JSON Schema, from its header; None when it is not a CSV file or
        cannot be read now (the run reports that itself)."""
        if source is None or source.kind != "csv":
            return None
        path = source.path if source.path.is_absolute() else self.base_dir / source.path
        try:
            with path.open(encoding=text_codec(source.encoding), errors="replace", newline="") as handle:
                header = next(csv.reader(handle, delimiter=source.delimiter), None)
        except (OSError, csv.Error):
            return None
        if not header:
            return None
        properties = {name: {"type": "string"} for name in header}  # every record has every column (others are refused)
        return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}

    def emit(self, emit: Any, loc: Loc, offered: dict[str, Any] | None = None) -> tuple[str, set[str] | None]:
        """An ``emit`` block: its expressions against the payload's shape (declared in
        ``emit.payload``, else ``offered`` by the adapter's contract), its mapping against its schema."""
        payload: Type | None = None
        if getattr(emit, "payload", None) is not None:
            payload = self.payload(emit.payload, (*loc, "payload"))
        elif offered is not None:
            payload = from_json_schema(offered)
        scope = Scope(payload or ANY, meta=False, what="the payload")
        for name in ("key", "id", "subject"):
            text = getattr(emit, name, None)
            if text is not None:
                found = non_null(self.expression(text, scope, (*loc, name)))
                if isinstance(found, Record | Array | MapOf):  # its text would be Python's repr of it
                    self.error((*loc, name), f"{text!r} is {describe(found)}: an event's {name} is one value, text or a number")
        target = self.schema(emit.schema_)
        if emit.map is None:
            return emit.schema_, None
        self.block(emit.map, scope, (*loc, "map"), target)
        if payload is None:
            paths = sorted({p for text in texts_of(emit.map) for p in paths_of(text)})
            if paths:
                self.issue(
                    self.found.unchecked,
                    (*loc, "map"),
                    f"{len(paths)} payload path(s) not checked ({', '.join(paths[:8])}{', ...' if len(paths) > 8 else ''}): "
                    "declare the payload's shape in emit.payload (a JSON Schema or a sample)",
                )
        return emit.schema_, set(emit.map)

    def payload(self, shape: Any, loc: Loc) -> Type | None:
        if shape.openapi is not None:
            return self.openapi(shape.openapi, (*loc, "openapi"))
        for what, convert in (("json_schema", from_json_schema), ("sample", from_sample)):
            value = getattr(shape, what)
            if value is None:
                continue
            if isinstance(value, str):
                path = Path(value) if Path(value).is_absolute() else self.base_dir / value
                try:
                    value = yaml.safe_load(read_at_most(path, MAX_DOCUMENT_FILE_BYTES).decode())  # JSON is YAML
                except (OSError, ValueError, yaml.YAMLError) as exc:  # too large, not UTF-8, not YAML
                    self.error((*loc, what), f"cannot read {path}: {exc}")
                    return None
            return convert(value)
        return None

    def openapi(self, spec: Any, loc: Loc) -> Type | None:
        path = Path(spec.document) if Path(spec.document).is_absolute() else self.base_dir / spec.document
        try:
            document = load_document(path)
        except (OSError, ValueError) as exc:
            self.error((*loc, "document"), f"cannot read {path}: {exc}")
            return None
        operation, names = find_operation(document, spec.operation)
        if operation is None:
            self.error((*loc, "operation"), f"{path} has no operation {spec.operation!r}{closest(spec.operation, names)}")
            return None
        schema = operation.json_schema()
        if schema is None:
            self.error((*loc, "operation"), f"operation {spec.operation!r} of {path} has no application/json request body")
            return None
        return from_json_schema(schema)
