"""Schema compatibility by the Avro specification's schema-resolution rules, with a report of what
breaks and where.

``resolve(reader, writer)`` answers: can every datum written with ``writer`` be read with
``reader``? It lists each reason it cannot, with a path (``Order.lines[].qty``) and a sentence an
engineer can act on ("field added without a default", "type narrowed from long to int", "enum
symbol REFUNDED removed and the reader has no default"). ``check(mode, new, previous)`` applies a
registry compatibility mode on top:

- BACKWARD: the new schema reads data written with the previous one (consumers upgrade first);
- FORWARD: the previous schema reads data written with the new one (producers upgrade first);
- FULL: both; the ``_TRANSITIVE`` forms against every earlier version, not only the latest;
- NONE: anything goes.

The rules (https://avro.apache.org/docs/1.11.1/specification/#schema-resolution): primitives
match themselves and the promotions int -> long, float, double; long -> float, double;
float -> double; string <-> bytes. Records, enums and fixed match by name (or a reader alias);
a reader field missing from the writer needs a default; writer fields the reader lacks are
skipped. Enum symbols the reader lacks fail unless the reader enum has a default. Fixed sizes must
be equal. Arrays and maps resolve their items and values. A writer union resolves when every
branch does; a reader union when some branch matches the writer. Logical types resolve as their
underlying types, except that a decimal whose scale or precision changes is reported: the bytes
would read, but as another number.

Two places follow fastavro (the hub's reader) where it is stricter than the letter of the spec,
found by the property-based cross-check in tests/unit/test_compatibility.py: a reader union uses
the *first* branch the writer's type matches, promotions included (so a bytes value meets
``["string", "bytes"]`` as a string), and bytes read as a string fail unless they are UTF-8; both
are reported rather than waved through.
"""

from __future__ import annotations

__all__ = ["MODES", "Incompatibility", "check", "resolve"]

import json
from dataclasses import dataclass
from typing import Any

MODES = ("BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE", "NONE")
_PROMOTIONS = {
    ("int", "long"),
    ("int", "float"),
    ("int", "double"),
    ("long", "float"),
    ("long", "double"),
    ("float", "double"),
    ("string", "bytes"),
    ("bytes", "string"),
}
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_NARROWER = {("long", "int"), ("double", "float"), ("double", "long"), ("double", "int"), ("float", "long"), ("float", "int")}


@dataclass(frozen=True)
class Incompatibility:
    path: str
    message: str
    kind: str = ""  # "field" (the reader has a field the writer lacks), "symbols" (the writer has symbols the reader lacks)
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def as_change(self, reader_is_new: bool) -> str:
        """Said in the direction of the change (old schema -> new), not of the resolution: the
        same missing field is "added" when the new schema reads old data and "removed" when the
        old one reads new data."""
        if reader_is_new or not self.kind:
            return str(self)
        stuck = "consumers still on the old schema cannot read"
        if self.kind == "field":
            return f"{self.path}: field removed, and the old schema has no default for it: {stuck} new data"
        return f"{self.path}: enum symbol(s) {self.detail} added: {stuck} them (it has no default symbol)"


class _Names:
    """Named types (records, enums, fixed) by full name, so references by name resolve."""

    def __init__(self) -> None:
        self.types: dict[str, dict[str, Any]] = {}

    def collect(self, schema: Any, namespace: str = "") -> None:
        if isinstance(schema, list):
            for branch in schema:
                self.collect(branch, namespace)
        elif isinstance(schema, dict):
            kind = schema.get("type")
            if kind in ("record", "error", "enum", "fixed"):
                full = _full_name(schema, namespace)
                self.types[full] = schema
                inner = full.rpartition(".")[0]
                for field in schema.get("fields", []) if kind in ("record", "error") else []:
                    self.collect(field["type"], inner)
            elif kind == "array":
                self.collect(schema["items"], namespace)
            elif kind == "map":
                self.collect(schema["values"], namespace)
            elif isinstance(kind, (dict, list)):
                self.collect(kind, namespace)

    def deref(self, schema: Any) -> Any:
        """A reference by (full) name -> its definition."""
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            return self.types.get(schema, schema)
        return schema


def _qualified(schema: Any, namespace: str = "") -> Any:
    """A copy of ``schema`` where every named type, alias and reference is a full name, as the
    specification reads them: a name without a dot takes the enclosing namespace. Comparing
    full names is what tells a record moved to another namespace (which fastavro refuses to read
    without an alias naming the old full name) from the same record."""
    if isinstance(schema, str):
        if schema in _PRIMITIVES or "." in schema or not namespace:
            return schema
        return f"{namespace}.{schema}"
    if isinstance(schema, list):
        return [_qualified(branch, namespace) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    kind = schema.get("type")
    if kind in ("record", "error", "enum", "fixed"):
        full = _full_name(schema, namespace)
        inner = full.rpartition(".")[0]
        out["name"] = full
        out.pop("namespace", None)
        out["aliases"] = [a if "." in a or not inner else f"{inner}.{a}" for a in (str(x) for x in schema.get("aliases", []))]
        if kind in ("record", "error"):
            out["fields"] = [{**f, "type": _qualified(f["type"], inner)} for f in schema.get("fields", [])]
        return out
    if kind == "array":
        out["items"] = _qualified(schema["items"], namespace)
    elif kind == "map":
        out["values"] = _qualified(schema["values"], namespace)
    elif isinstance(kind, (dict, list, str)) and kind not in _PRIMITIVES and kind not in ("array", "map"):
        out["type"] = _qualified(kind, namespace)
    return out


def _full_name(schema: dict[str, Any], namespace: str = "") -> str:
    name = str(schema["name"])
    if "." in name:
        return name
    ns = schema.get("namespace", namespace)
    return f"{ns}.{name}" if ns else name


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        kind = schema["type"]
        return _kind(kind) if isinstance(kind, (dict, list)) else ("record" if kind == "error" else str(kind))
    return str(schema)


def _unwrap(schema: Any) -> Any:
    """``{"type": "string"}`` and ``{"type": {...}}`` are their inner type (logical types aside)."""
    while isinstance(schema, dict) and isinstance(schema.get("type"), (dict, list)) and "logicalType" not in schema:
        schema = schema["type"]
    if isinstance(schema, dict) and schema.get("type") in _PRIMITIVES and "logicalType" not in schema:
        return schema["type"]
    return schema


def _describe(schema: Any) -> str:
    kind = _kind(schema)
    if kind in ("record", "enum", "fixed") and isinstance(schema, dict):
        return f"{kind} {schema['name']}"
    if kind == "union":
        return "union [" + ", ".join(_describe(b) for b in schema) + "]"
    if isinstance(schema, dict) and "logicalType" in schema:
        return f"{schema['type']} ({schema['logicalType']})"
    return kind


class _Resolver:
    def __init__(self, reader: Any, writer: Any) -> None:
        self.readers, self.writers = _Names(), _Names()
        self.readers.collect(reader)
        self.writers.collect(writer)
        self.found: list[Incompatibility] = []
        self._seen: set[tuple[str, str]] = set()  # recursive records: each pair checked once

    def problem(self, path: str, message: str, kind: str = "", detail: str = "") -> None:
        self.found.append(Incompatibility(path, message, kind, detail))

    def matches(self, reader: Any, writer: Any) -> bool:
        """Whether the pair resolves, without recording anything (for choosing a union branch)."""
        trial = _Resolver.__new__(_Resolver)
        trial.readers, trial.writers, trial.found, trial._seen = self.readers, self.writers, [], set(self._seen)
        trial.resolve(reader, writer, "")
        return not trial.found

    def resolve(self, reader: Any, writer: Any, path: str) -> None:
        reader = _unwrap(self.readers.deref(reader))
        writer = _unwrap(self.writers.deref(writer))
        r_kind, w_kind = _kind(reader), _kind(writer)
        if w_kind == "union":
            for branch in writer:
                if r_kind == "union":
                    self.resolve(reader, branch, path)
                elif not self.matches(reader, branch):
                    b = _unwrap(self.writers.deref(branch))
                    if _kind(b) == r_kind or (_kind(b), r_kind) in _PROMOTIONS:
                        # Same kind (a record, a decimal...): say what inside it breaks; a promotion
                        # with a caveat (bytes read as string): say the caveat, not that it cannot be read.
                        self.resolve(reader, b, path)
                    else:
                        self.problem(path, f"the writer's union branch {_describe(b)} cannot be read as {_describe(reader)}")
            return
        if r_kind == "union":
            # Like fastavro (the hub's reader): the first branch the writer's type can be read as,
            # promotions included, is the one used; its own caveats (bytes -> string) count.
            chosen = next((rb for rb in reader if self._loosely(rb, writer)), None)
            if chosen is None:
                self.problem(path, f"{_describe(writer)} is not in the reader's {_describe(reader)}")
            else:
                self.resolve(chosen, writer, path)
            return
        if r_kind in _PRIMITIVES and w_kind in _PRIMITIVES:
            if r_kind != w_kind and (w_kind, r_kind) not in _PROMOTIONS:
                narrowed = "narrowed" if (w_kind, r_kind) in _NARROWER else "changed"
                self.problem(path, f"type {narrowed} from {w_kind} to {r_kind}")
            elif (w_kind, r_kind) == ("bytes", "string"):
                # The spec allows it; in practice bytes that are not UTF-8 fail to read (fastavro).
                self.problem(path, "bytes read as string: values that are not valid UTF-8 cannot be read")
            elif isinstance(reader, dict) or isinstance(writer, dict):
                self._logical(reader, writer, path)
            return
        if r_kind != w_kind:
            self.problem(path, f"type changed from {_describe(writer)} to {_describe(reader)}")
            return
        if r_kind == "array":
            self.resolve(reader["items"], writer["items"], f"{path}[]")
        elif r_kind == "map":
            self.resolve(reader["values"], writer["values"], f"{path}{{}}")
        elif r_kind in ("record", "enum", "fixed"):
            if not self._same_name(reader, writer):
                old, new = str(writer["name"]), str(reader["name"])
                if old.rpartition(".")[0] == new.rpartition(".")[0]:  # same namespace: the short names say it
                    old, new = old.rpartition(".")[2], new.rpartition(".")[2]
                self.problem(path, f"{r_kind} renamed from {old} to {new} (add the old full name to `aliases`)")
                return
            getattr(self, f"_{r_kind}")(reader, writer, path or str(reader["name"]).rpartition(".")[2])  # paths read short

    def _loosely(self, reader: Any, writer: Any) -> bool:
        """The spec's "matches" for choosing a union branch: same kind (and name), or a promotion."""
        reader = _unwrap(self.readers.deref(reader))
        writer = _unwrap(self.writers.deref(writer))
        r_kind, w_kind = _kind(reader), _kind(writer)
        if r_kind in _PRIMITIVES and w_kind in _PRIMITIVES:
            return r_kind == w_kind or (w_kind, r_kind) in _PROMOTIONS
        if r_kind != w_kind:
            return False
        return self._same_name(reader, writer) if r_kind in ("record", "enum", "fixed") else True

    @staticmethod
    def _same_name(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
        """As the specification resolves named types: the same unqualified name, or else the
        writer's full name is one of the reader's aliases, which are full names (``_qualified``
        made a relative alias full with the reader's namespace). An alias "bus.v2.Ticket" does not
        name the writer's "bus.v1.Ticket", whatever their short names."""
        if str(writer["name"]).rpartition(".")[2] == str(reader["name"]).rpartition(".")[2]:
            return True
        return str(writer["name"]) in {str(a) for a in reader.get("aliases", [])}

    def _record(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> None:
        key = (json.dumps(reader, sort_keys=True), json.dumps(writer, sort_keys=True))
        if key in self._seen:
            return
        self._seen.add(key)
        written = {f["name"]: f for f in writer.get("fields", [])}
        for field in reader.get("fields", []):
            names = [field["name"], *field.get("aliases", [])]
            source = next((written[n] for n in names if n in written), None)
            where = f"{path}.{field['name']}"
            if source is None:
                if "default" not in field:
                    self.problem(where, "field added without a default: data written before it cannot be read", "field")
                continue
            self.resolve(field["type"], source["type"], where)

    def _enum(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> None:
        missing = [s for s in writer.get("symbols", []) if s not in reader.get("symbols", [])]
        if missing and "default" not in reader:
            self.problem(path, f"enum symbol(s) {', '.join(missing)} removed and the reader has no default", "symbols", ", ".join(missing))

    def _fixed(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> None:
        if reader.get("size") != writer.get("size"):
            self.problem(path, f"fixed size changed from {writer.get('size')} to {reader.get('size')}")

    def _logical(self, reader: Any, writer: Any, path: str) -> None:
        r = reader if isinstance(reader, dict) else {}
        w = writer if isinstance(writer, dict) else {}
        decimal = "decimal" in (r.get("logicalType"), w.get("logicalType"))
        if decimal and (r.get("precision"), r.get("scale", 0)) != (w.get("precision"), w.get("scale", 0)):
            self.problem(
                path,
                f"decimal changed from precision {w.get('precision')} scale {w.get('scale', 0)} to precision "
                f"{r.get('precision')} scale {r.get('scale', 0)}: the same bytes would read as another number",
            )


def resolve(reader: Any, writer: Any) -> list[Incompatibility]:
    """Why data written with ``writer`` cannot be read with ``reader``; empty when it always can.
    Schemas are parsed JSON (dicts, lists, strings) or JSON text."""
    reader = json.loads(reader) if isinstance(reader, str) and reader.lstrip().startswith(("{", "[", '"')) else reader
    writer = json.loads(writer) if isinstance(writer, str) and writer.lstrip().startswith(("{", "[", '"')) else writer
    if reader == writer:
        return []  # the same schema: read without resolution
    reader, writer = _qualified(reader), _qualified(writer)
    resolver = _Resolver(reader, writer)
    resolver.resolve(reader, writer, "")
    return [Incompatibility(p.path or "(top level)", p.message, p.kind, p.detail) for p in resolver.found]


def check(mode: str, new: Any, previous: list[Any]) -> list[str]:
    """Problems that keep ``new`` from being registered after ``previous`` (oldest first) under
    ``mode``; each names the version it breaks against and in which direction."""
    mode = mode.upper()
    if mode not in MODES:
        raise ValueError(f"unknown compatibility mode {mode!r}; use one of {', '.join(MODES)}")
    if mode == "NONE" or not previous:
        return []
    against = list(enumerate(previous, start=1))
    if not mode.endswith("_TRANSITIVE"):
        against = against[-1:]
    base = mode.removesuffix("_TRANSITIVE")
    problems: list[str] = []
    for number, old in against:
        if base in ("BACKWARD", "FULL"):
            problems += [f"reading data of version {number} with the new schema: {p}" for p in resolve(new, old)]
        if base in ("FORWARD", "FULL"):
            problems += [f"reading new data with version {number}: {p.as_change(reader_is_new=False)}" for p in resolve(old, new)]
    return problems
