"""Avro in the Confluent wire format for the Kafka adapters: writer schemas fetched from a registry
by id (once each), and a schema registered once for writing."""

from __future__ import annotations

__all__ = ["WireAvro"]

import io
import json
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from bus.adapter_api import PermanentError, WireFormat
from bus.kafka.registry_client import RegistryClient  # the registry's client: shared with the hub, by design


class WireAvro:
    def __init__(self, registry_url: str, token: str | None = None) -> None:
        self._registry = RegistryClient(registry_url, token=token)
        self._readers: dict[int, Any] = {}

    async def close(self) -> None:
        await self._registry.close()

    async def decode(self, payload: bytes) -> Any:
        """Raises PermanentError for a value that is not wire-format Avro or names an unknown
        schema, RetryableError while the registry cannot answer."""
        schema_id = WireFormat.schema_id(payload)
        parsed = self._readers.get(schema_id)
        if parsed is None:
            text = await self._registry.schema_by_id(schema_id)  # 404 -> PermanentError, down -> RetryableError
            parsed = self._readers[schema_id] = parse_schema(json.loads(text))
        try:
            return schemaless_reader(io.BytesIO(payload[5:]), parsed)
        except Exception as exc:  # fastavro raises several kinds on a truncated or foreign body
            raise PermanentError(f"Avro body does not match writer schema {schema_id}: {exc!r}") from exc

    async def writer(self, subject: str, schema: dict[str, Any]) -> tuple[int, Any]:
        schema_id = await self._registry.register(subject, json.dumps(schema))
        return schema_id, parse_schema(schema)

    @staticmethod
    def encode(schema_id: int, parsed: Any, record: Any) -> bytes:
        out = io.BytesIO()
        out.write(WireFormat.header(schema_id))
        schemaless_writer(out, parsed, record)
        return out.getvalue()
