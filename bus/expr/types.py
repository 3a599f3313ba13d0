"""Types of the values expressions read, for the config checker: from Avro schemas, from a
payload's JSON Schema, or from a sample payload.

A small lattice, not Avro itself: what matters to an expression is whether a value is text, a
number, money, a time, a record with named fields, a list, a map, and whether it may be null.
``ANY`` is a value of unknown shape (what a sender posts when no shape is declared): anything
may be read from it and nothing about it is checked.
"""

from __future__ import annotations

__all__ = [
    "ANY",
    "BOOL",
    "BYTES",
    "DATE",
    "DECIMAL",
    "DURATION",
    "FLOAT",
    "INT",
    "NULL",
    "STRING",
    "TIMESTAMP",
    "Array",
    "Enum",
    "MapOf",
    "Prim",
    "Record",
    "RecordField",
    "Type",
    "Union",
    "assignable",
    "describe",
    "from_avro",
    "from_json_schema",
    "from_sample",
    "is_nullable",
    "join",
    "non_null",
]

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bus.expr.tree import Const, Node


@dataclass(frozen=True, slots=True)
class Prim:
    kind: str  # any, null, bool, int, float, decimal, string, bytes, timestamp, date, time, duration


@dataclass(frozen=True, slots=True)
class Enum:
    name: str
    symbols: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RecordField:
    type: Type
    has_default: bool = False


@dataclass(frozen=True, eq=False)
class Record:
    name: str
    fields: dict[str, RecordField] = field(default_factory=dict)
    open: bool = False  # a sample's object: other fields may exist (read as ANY)


@dataclass(frozen=True, slots=True)
class Array:
    item: Type


@dataclass(frozen=True, slots=True)
class MapOf:
    value: Type


@dataclass(frozen=True, slots=True)
class Union:
    options: tuple[Type, ...]


Type = Prim | Enum | Record | Array | MapOf | Union

ANY, NULL, BOOL, INT, FLOAT = Prim("any"), Prim("null"), Prim("bool"), Prim("int"), Prim("float")
DECIMAL, STRING, BYTES = Prim("decimal"), Prim("string"), Prim("bytes")
TIMESTAMP, DATE, TIME, DURATION = Prim("timestamp"), Prim("date"), Prim("time"), Prim("duration")


def join(*types: Type) -> Type:
    """The type of a value that is one of ``types`` (flattened, duplicates removed)."""
    found: list[Type] = []
    for one in types:
        for option in one.options if isinstance(one, Union) else (one,):
            if option is ANY:
                return ANY
            if not any(option is f or option == f for f in found):
                found.append(option)
    if not found:
        return NULL
    return found[0] if len(found) == 1 else Union(tuple(found))


def is_nullable(t: Type) -> bool:
    return t == NULL or (isinstance(t, Union) and NULL in t.options)


def non_null(t: Type) -> Type:
    if isinstance(t, Union):
        return join(*(o for o in t.options if o != NULL))
    return t


def describe(t: Type) -> str:
    """How a type reads in an error message: "a string", "a nullable long"..."""
    if isinstance(t, Union):
        rest = non_null(t)
        if is_nullable(t) and not isinstance(rest, Union):
            return f"{describe(rest)} or null"
        return " or ".join(describe(o) for o in t.options)
    if isinstance(t, Enum):
        return f"an enum {t.name} ({', '.join(t.symbols)})"
    if isinstance(t, Record):
        return f"a record {t.name}" if t.name else "an object"
    if isinstance(t, Array):
        return f"a list of {_plural(t.item)}"
    if isinstance(t, MapOf):
        return f"a map of {_plural(t.value)}"
    words = {
        "any": "a value of any type",
        "null": "null",
        "bool": "a boolean",
        "int": "an integer",
        "float": "a float",
        "decimal": "a decimal (money)",
        "string": "a string",
        "bytes": "bytes",
        "timestamp": "a timestamp",
        "date": "a date",
        "time": "a time of day",
        "duration": "a duration",
    }
    return words[t.kind]


def _plural(t: Type) -> str:
    text = describe(t)
    for article in ("an ", "a "):
        if text.startswith(article):
            return text[len(article) :] + "s"
    return text


_AVRO_PRIMITIVES = {
    "null": NULL,
    "boolean": BOOL,
    "int": INT,
    "long": INT,
    "float": FLOAT,
    "double": FLOAT,
    "string": STRING,
    "bytes": BYTES,
}
_LOGICAL = {
    "decimal": DECIMAL,
    "timestamp-millis": TIMESTAMP,
    "timestamp-micros": TIMESTAMP,
    "local-timestamp-millis": TIMESTAMP,
    "local-timestamp-micros": TIMESTAMP,
    "date": DATE,
    "time-millis": TIME,
    "time-micros": TIME,
    "uuid": STRING,
}


def from_avro(schema: Any, named: dict[str, Type] | None = None, namespace: str = "") -> Type:
    """The type of values of an Avro schema (as ``fastavro.parse_schema`` gives it, or as JSON)."""
    named = {} if named is None else named
    if isinstance(schema, str):
        if schema in _AVRO_PRIMITIVES:
            return _AVRO_PRIMITIVES[schema]
        full = schema if "." in schema or not namespace else f"{namespace}.{schema}"
        return named.get(full, named.get(schema, ANY))
    if isinstance(schema, list):
        return join(*(from_avro(s, named, namespace) for s in schema))
    if not isinstance(schema, Mapping):
        return ANY
    logical = schema.get("logicalType")
    if logical in _LOGICAL:
        return _LOGICAL[logical]
    kind = schema.get("type")
    name = str(schema.get("name", ""))
    space = str(schema.get("namespace", namespace))
    full = name if "." in name or not space else f"{space}.{name}"
    if kind in {"record", "error"}:
        record = Record(full.rsplit(".", 1)[-1])
        named[full] = record  # before the fields: a record may refer to itself
        for f in schema.get("fields", []):
            record.fields[str(f["name"])] = RecordField(from_avro(f["type"], named, space), "default" in f)
        return record
    if kind == "enum":
        enum = Enum(full.rsplit(".", 1)[-1], tuple(str(s) for s in schema.get("symbols", [])))
        named[full] = enum
        return enum
    if kind == "array":
        return Array(from_avro(schema.get("items"), named, space))
    if kind == "map":
        return MapOf(from_avro(schema.get("values"), named, space))
    if kind == "fixed":
        named[full] = BYTES
        return BYTES
    return from_avro(kind, named, space) if kind is not None else ANY


_JSON_TYPES = {"string": STRING, "integer": INT, "number": FLOAT, "boolean": BOOL, "null": NULL}
_JSON_FORMATS = {"date-time": TIMESTAMP, "date": DATE}
_BUS_TYPES = {"decimal": DECIMAL, "date": DATE, "timestamp": TIMESTAMP}


def from_json_schema(schema: Any, root: Any = None, depth: int = 0) -> Type:
    """The type of documents a JSON Schema describes (the parts that matter to field reads:
    objects and their properties, arrays, scalars, ``$ref`` within the document, ``anyOf`` and
    ``oneOf``). A field an object does not list is an error, unless the object says
    ``additionalProperties: true`` (or gives them a schema); ``allOf`` parts are merged. A declared shape is what the sender
    sends, and the point of declaring it is that a typo in a path is caught."""
    root = schema if root is None else root
    if depth > 64 or not isinstance(schema, Mapping):
        return ANY
    if schema.get("x-bus-type") in _BUS_TYPES:  # what JSON has no type for, named by a contract (an XSD decimal or date)
        return _BUS_TYPES[schema["x-bus-type"]]
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            key = part.replace("~1", "/").replace("~0", "~")  # a JSON pointer's escapes (RFC 6901)
            target = target.get(key) if isinstance(target, Mapping) else None
        return from_json_schema(target, root, depth + 1)
    if isinstance(schema.get("allOf"), list):
        return from_json_schema(_all_of(schema, root, depth), root, depth + 1)
    for combinator in ("anyOf", "oneOf"):
        if isinstance(schema.get(combinator), list):
            return join(*(from_json_schema(s, root, depth + 1) for s in schema[combinator]))
    kind = schema.get("type")
    if isinstance(kind, list):
        return join(*(from_json_schema({**schema, "type": k}, root, depth + 1) for k in kind))
    if "enum" in schema and all(isinstance(s, str) for s in schema["enum"]):
        return Enum(str(schema.get("title", "")), tuple(schema["enum"]))
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        extra = schema.get("additionalProperties")
        record = Record(str(schema.get("title", "")), open=extra is True or isinstance(extra, Mapping))
        for name, sub in props.items():
            t = from_json_schema(sub, root, depth + 1)
            record.fields[str(name)] = RecordField(t if name in required else join(t, NULL))
        if not props and isinstance(schema.get("additionalProperties"), Mapping):
            return MapOf(from_json_schema(schema["additionalProperties"], root, depth + 1))
        return record
    if kind == "array":
        return Array(from_json_schema(schema.get("items"), root, depth + 1))
    if kind == "string" and schema.get("format") in _JSON_FORMATS:
        return STRING  # JSON carries text; the format says what it holds, not how it reads
    return _JSON_TYPES.get(str(kind), ANY)


def _all_of(schema: Mapping[str, Any], root: Any, depth: int) -> dict[str, Any]:
    """``allOf`` as one schema: the parts' properties and ``required`` together (a part that is a
    ``$ref`` followed, nested ``allOf`` flattened); open when any part allows other properties."""
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    properties = dict(merged.get("properties") or {})
    required = list(merged.get("required") or [])
    for given in schema["allOf"]:
        part = given
        for _ in range(64):  # a chain of $refs, bounded
            ref = part.get("$ref") if isinstance(part, Mapping) else None
            if not (isinstance(ref, str) and ref.startswith("#/")):
                break
            part = root
            for name in ref[2:].split("/"):
                key = name.replace("~1", "/").replace("~0", "~")
                part = part.get(key) if isinstance(part, Mapping) else None
        if not isinstance(part, Mapping):
            continue
        if isinstance(part.get("allOf"), list) and depth < 64:
            part = _all_of(part, root, depth + 1)
        properties.update(part.get("properties") or {})
        required += list(part.get("required") or [])
        if part.get("additionalProperties") is True or isinstance(part.get("additionalProperties"), Mapping):
            merged["additionalProperties"] = True
        if "type" in part and "type" not in merged:
            merged["type"] = part["type"]
    if properties:
        merged["properties"] = properties
    merged["required"] = required
    return merged


def from_sample(value: Any, depth: int = 0) -> Type:
    """The type of documents shaped like ``value`` (a sample payload). A field the sample does
    not have is an error: put every field the mapping reads in the sample (null where it may be
    missing)."""
    if depth > 64:
        return ANY
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return FLOAT
    if isinstance(value, str):
        return STRING
    if isinstance(value, list):
        return Array(join(*(from_sample(v, depth + 1) for v in value)) if value else ANY)
    if isinstance(value, Mapping):
        record = Record("")
        for k, v in value.items():
            record.fields[str(k)] = RecordField(from_sample(v, depth + 1))
        return record
    return ANY


# -- assigning a value to a field of a schema --------------------------------------------------
def assignable(value: Type, target: Type, node: Node | None = None) -> str | None:
    """Why a value of type ``value`` cannot be written into a field of type ``target`` (None: it can).

    Null into a field that cannot hold it is refused at run time (the event is refused or
    dead-lettered), so a value that may be null needs coalesce() or the route's ``defaults``.
    """
    if ANY in (value, target):
        return None
    if is_nullable(value) and not is_nullable(target):
        if value == NULL:
            return f"is null, and the field is {describe(target)}, which cannot be null"
        return f"may be null ({describe(value)}), and the field cannot be: use coalesce(..., default) or a `defaults:` entry"
    plain, goal = non_null(value), non_null(target)
    if plain == NULL:
        return None
    for option in _options(plain):
        if not any(_fits(option, g, node) for g in _options(goal) if g != NULL):
            return f"is {describe(option)}, and the field is {describe(goal)}"
    return None


def _fits(value: Type, target: Type, node: Node | None) -> bool:
    if ANY in (value, target):
        return True
    if isinstance(target, Enum):
        if isinstance(node, Const) and isinstance(node.value, str):
            return node.value in target.symbols
        return isinstance(value, Enum) or value == STRING
    if isinstance(target, Record):
        return isinstance(value, Record | MapOf)
    if isinstance(target, Array):
        return isinstance(value, Array) and (
            value.item == ANY or any(_fits(o, g, None) for o in _options(value.item) for g in _options(target.item))
        )
    if isinstance(target, MapOf):
        return isinstance(value, MapOf | Record)
    accepts: dict[Type, tuple[Type, ...]] = {
        INT: (INT,),
        FLOAT: (INT, FLOAT),
        DECIMAL: (DECIMAL,),
        STRING: (STRING,),
        BYTES: (BYTES, STRING),
        BOOL: (BOOL,),
        TIMESTAMP: (TIMESTAMP, INT),  # epoch milliseconds, or a timestamp
        DATE: (DATE, INT),
    }
    if isinstance(value, Enum):
        value = STRING
    return value in accepts.get(target, (target,))


def _options(x: Type) -> tuple[Type, ...]:
    return x.options if isinstance(x, Union) else (x,)
