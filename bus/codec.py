"""Avro values in the Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro body.

Schemas are parsed once (at start-up, or the first time an unknown id is seen) and kept by name
and by id, so encoding and decoding an event does no schema work at all.
"""

from __future__ import annotations

__all__ = ["Codec", "UnknownSchemaId"]

import io
import struct
from collections.abc import Mapping
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.validation import ValidationError, validate

from bus.errors import EventRejected, PermanentError

_HEADER = struct.Struct(">bI")
MAGIC = 0


class UnknownSchemaId(PermanentError):
    """A payload names a schema id this codec has not loaded (and the registry does not know)."""

    def __init__(self, schema_id: int) -> None:
        super().__init__(f"schema id {schema_id} is not registered")
        self.schema_id = schema_id


class Codec:
    """Encodes and decodes canonical event values. Not thread-safe; one per event loop."""

    def __init__(self) -> None:
        self._by_name: dict[str, tuple[int, Any]] = {}
        self._by_id: dict[int, tuple[str, Any]] = {}

    def add(self, name: str, schema_id: int, parsed_schema: Any) -> None:
        """Make schema ``name`` (registered as ``schema_id``) the writer schema for ``name``."""
        self._by_name[name] = (schema_id, parsed_schema)
        self._by_id[schema_id] = (name, parsed_schema)

    def add_reader(self, schema_id: int, name: str, parsed_schema: Any) -> None:
        """Know how to decode ``schema_id`` without making it the writer schema."""
        self._by_id.setdefault(schema_id, (name, parsed_schema))

    def knows(self, schema_id: int) -> bool:
        return schema_id in self._by_id

    def schema_id(self, name: str) -> int:
        return self._by_name[name][0]

    def validate(self, name: str, record: Mapping[str, Any]) -> None:
        """Raise EventRejected naming the field when ``record`` does not fit schema ``name``."""
        _, parsed = self._by_name[name]
        try:
            validate(record, parsed, raise_errors=True)
        except ValidationError as exc:  # lists each failing field as "ns.Record.field is <v> of type ..."
            raise EventRejected(f"does not match schema {name}: {_validation_reason(exc)}") from exc

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        schema_id, parsed = self._by_name[name]
        buf = io.BytesIO()
        buf.write(_HEADER.pack(MAGIC, schema_id))
        try:
            schemaless_writer(buf, parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise EventRejected(f"cannot encode as {name}: {exc}") from exc
        return buf.getvalue()

    @staticmethod
    def peek_id(payload: bytes) -> int:
        if len(payload) < _HEADER.size or payload[0] != MAGIC:
            raise PermanentError("not a Confluent wire-format Avro value (missing magic byte 0)")
        return int(_HEADER.unpack_from(payload)[1])

    def decode(self, payload: bytes) -> tuple[str, dict[str, Any]]:
        """Return (schema name, record). Raises PermanentError for an undecodable value."""
        schema_id = self.peek_id(payload)
        entry = self._by_id.get(schema_id)
        if entry is None:
            raise UnknownSchemaId(schema_id)
        name, parsed = entry
        try:
            record = schemaless_reader(io.BytesIO(payload[_HEADER.size :]), parsed, None)
        except (EOFError, ValueError, TypeError, IndexError, UnicodeDecodeError) as exc:
            raise PermanentError(f"undecodable Avro body for schema {name} (id {schema_id}): {exc}") from exc
        if not isinstance(record, dict):
            raise PermanentError(f"schema {name} is not a record schema")
        return name, record


def _validation_reason(exc: ValidationError) -> str:
    return "; ".join(str(e) for e in exc.errors) if exc.errors else str(exc)
