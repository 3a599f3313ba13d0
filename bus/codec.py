"""Avro values in the Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro body.

Schemas are parsed once (at start-up, or the first time an unknown id is seen) and kept by name
and by id, so encoding and decoding an event does no schema work at all.

Readers survive new versions: a value written with a schema id this process has not seen (a
producer registered Order v3 while the hub runs on v2) is learned from the registry once
(``learn_ids``, called by the loops before they decode a batch), and decoded with Avro schema
resolution into the version this process was built with: new fields are dropped, missing ones
take their defaults, so the routes and subscribers see the shape they know.
"""

from __future__ import annotations

__all__ = ["Codec", "UnknownSchemaId", "wire_header"]

import io
import json
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.validation import ValidationError, validate

from bus.documents import first_path
from bus.errors import EventRejected, PermanentError, RetryableError

log = logging.getLogger("bus.codec")

_HEADER = struct.Struct(">bI")
MAGIC = 0
_LOOKUPS_PER_S = 20  # registry lookups of new schema ids a second, at most (a new version is a rare event)
_MOST_UNKNOWN = 10_000  # ids the registry said it does not have, remembered


def wire_header(schema_id: int) -> bytes:
    """The 5 bytes before every Confluent wire-format Avro body: magic byte 0, the schema id."""
    return _HEADER.pack(MAGIC, schema_id)


class UnknownSchemaId(PermanentError):
    """A payload names a schema id this codec has not loaded (and the registry does not know)."""

    def __init__(self, schema_id: int) -> None:
        super().__init__(f"schema id {schema_id} is not registered")
        self.schema_id = schema_id


class Codec:
    """Encodes and decodes canonical event values. Not thread-safe; one per event loop."""

    def __init__(self) -> None:
        self._by_name: dict[str, tuple[int, Any]] = {}
        self._moments: dict[str, tuple[str, ...]] = {}  # by schema name: its top-level timestamp fields
        self._by_id: dict[int, tuple[str, Any, Any]] = {}  # id -> (name, writer schema, reader schema or None)
        # The same entries by their 5-byte wire header: decoding is one dict lookup, no unpacking.
        self._by_header: dict[bytes, tuple[str, Any, Any]] = {}
        self._unknown: set[int] = set()  # ids the registry does not have: not asked again (forgotten past _MOST_UNKNOWN)
        # Registry lookups of ids not seen yet, at most _LOOKUPS_PER_S a second: a flood of records
        # naming random ids (not the hub's, or not Avro at all) would otherwise hold the reading
        # loop one registry round trip per record. An id past the budget is not known yet: its value
        # is dead-lettered as not registered (replayable), and the id asked about again later.
        self._budget = float(_LOOKUPS_PER_S)
        self._budget_at = time.monotonic()
        self._throttled = False
        self.fetch_writer: Callable[[int], Awaitable[str]] | None = None  # the registry's GET /schemas/ids/{id}

    def add(self, name: str, schema_id: int, parsed_schema: Any) -> None:
        """Make schema ``name`` (registered as ``schema_id``) the writer schema for ``name``."""
        self._by_name[name] = (schema_id, parsed_schema)
        self._moments[name] = _timestamp_fields(parsed_schema)
        self._remember(schema_id, (name, parsed_schema, None))

    def _remember(self, schema_id: int, entry: tuple[str, Any, Any]) -> None:
        self._by_id[schema_id] = entry
        self._by_header[wire_header(schema_id)] = entry

    def learn(self, schema_id: int, writer_text: str) -> str:
        """Know another writer version: decode its values into this process's version of the same
        record (by short name), or as written if this process has no such schema. Returns the name."""
        writer = parse_schema(json.loads(writer_text))
        if not isinstance(writer, dict) or "name" not in writer:
            raise PermanentError(f"schema id {schema_id} is not a record schema")
        name = str(writer["name"]).rpartition(".")[2]
        mine = self._by_name.get(name)
        reader = mine[1] if mine is not None and mine[0] != schema_id else None
        self._remember(schema_id, (name, writer, reader))
        return name

    def knows_value(self, payload: bytes | None) -> bool:
        """Whether ``payload``'s schema id is known (or it is not wire format at all): the per-event
        check that lets a loop skip ``learn_ids`` (an await) in the common case."""
        return not payload or payload[:5] in self._by_header

    async def learn_ids(self, payloads: Iterable[bytes | None]) -> None:
        """Fetch the writer schema of every id in ``payloads`` not known yet. A registry that
        cannot answer is logged and skipped: decode then refuses the value (a dead letter that
        ``bus dlq replay`` brings back once the registry answers)."""
        if self.fetch_writer is None:
            return
        known = self._by_header
        for payload in payloads:
            if not payload or payload[:5] in known or len(payload) < 5 or payload[0] != MAGIC:
                continue
            schema_id = int(_HEADER.unpack_from(payload)[1])
            if schema_id in self._unknown or not self._may_look_up():
                continue
            try:
                name = self.learn(schema_id, await self.fetch_writer(schema_id))
            except PermanentError as exc:
                if len(self._unknown) >= _MOST_UNKNOWN:
                    self._unknown.clear()  # bounded: an id forgotten is only asked about again
                self._unknown.add(schema_id)
                log.warning("schema id %d: %s", schema_id, exc)
            except RetryableError as exc:
                log.warning("schema id %d: the registry did not answer (%s); its values are dead-lettered for now", schema_id, exc)
            else:
                log.info("learned schema id %d (a version of %s); its values are read as this hub's %s", schema_id, name, name)

    def _may_look_up(self) -> bool:
        now = time.monotonic()
        self._budget = min(float(_LOOKUPS_PER_S), self._budget + (now - self._budget_at) * _LOOKUPS_PER_S)
        self._budget_at = now
        if self._budget < 1:
            if not self._throttled:
                log.warning("schema ids not seen before come faster than %d a second; the rest are not looked up now", _LOOKUPS_PER_S)
            self._throttled = True
            return False
        self._budget -= 1
        self._throttled = False
        return True

    def knows(self, schema_id: int) -> bool:
        return schema_id in self._by_id

    def schema_id(self, name: str) -> int:
        return self._by_name[name][0]

    def validate(self, name: str, record: Mapping[str, Any]) -> None:
        """Raise EventRejected naming the field when ``record`` does not fit schema ``name``."""
        _, parsed = self._by_name[name]
        # Ask yes/no first: with raise_errors=True fastavro tries union branches by raising and
        # catching (json-dumping the value each time), 12 us against under 2 for a valid record.
        if validate(record, parsed, raise_errors=False):
            for field in self._moments[name]:  # most schemas have none
                if (why := _beyond_the_calendar(record.get(field))) is not None:
                    raise EventRejected(f"does not match schema {name}: {field} is {why}")
            return
        try:
            validate(record, parsed, raise_errors=True)
        except ValidationError as exc:  # lists each failing field as "ns.Record.field is <v> of type ..."
            raise EventRejected(f"does not match schema {name}: {_validation_reason(exc)}") from exc
        raise EventRejected(f"does not match schema {name}")  # the two answers disagreed: refuse all the same

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        schema_id, parsed = self._by_name[name]
        buf = io.BytesIO()
        buf.write(wire_header(schema_id))
        try:
            schemaless_writer(buf, parsed, record)
        except UnicodeEncodeError as exc:  # a lone surrogate (from JSON's "\ud800"): not text UTF-8 can hold
            where = first_path(record, _has_surrogate) or "a text field"
            raise EventRejected(
                f"cannot encode as {name}: {where} holds a lone surrogate (U+{ord(exc.object[exc.start]):04X}), which is not text"
            ) from exc
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
        entry = self._by_header.get(payload[:5])  # the hot path: one lookup by the raw header
        if entry is None:
            schema_id = self.peek_id(payload)  # not wire format at all: says so
            raise UnknownSchemaId(schema_id)
        name, writer, reader = entry
        try:
            record = schemaless_reader(io.BytesIO(payload[5:]), writer, reader)
        except (EOFError, ValueError, TypeError, IndexError, UnicodeDecodeError, OverflowError) as exc:
            # OverflowError: a timestamp or date past the years 1 to 9999, which a producer outside
            # the hub may write; it came out of the router's plan() and stopped it at every start.
            raise PermanentError(f"undecodable Avro body for schema {name} (id {self.peek_id(payload)}): {exc}") from exc
        return name, record  # type: ignore[return-value]  # record schemas only: add() and learn() take nothing else


def _timestamp_fields(schema: Any) -> tuple[str, ...]:
    """The top-level fields of a record schema that hold a timestamp (alone, or in a union)."""
    found = []
    for field in schema.get("fields", ()) if isinstance(schema, dict) else ():
        kinds = field["type"] if isinstance(field["type"], list) else [field["type"]]
        if any(isinstance(k, dict) and str(k.get("logicalType", "")).startswith("timestamp-") for k in kinds):
            found.append(field["name"])
    return tuple(found)


def _beyond_the_calendar(value: Any) -> str | None:
    """Why a time cannot be read back once written, or None. Avro keeps a timestamp as units since
    1970 in UTC: 9999-12-31T23:59:59-14:00 is written (its offset keeps it in Python's calendar)
    and is the year 10000 once read, which no reader can return."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        return None
    try:
        value.astimezone(UTC)
    except OverflowError:
        return f"{value.isoformat()}, outside the years 1 to 9999 in UTC"
    return None


def _has_surrogate(value: Any) -> bool:
    return isinstance(value, str) and any("\ud800" <= c <= "\udfff" for c in value)


def _validation_reason(exc: ValidationError) -> str:
    return "; ".join(str(e) for e in exc.errors) if exc.errors else str(exc)
