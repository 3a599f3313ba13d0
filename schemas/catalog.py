"""The catalog of canonical schemas: the built-in ``canonical/*.avsc`` files plus any extra folders."""

from __future__ import annotations

__all__ = ["BUILTIN_DIR", "SchemaCatalog", "SchemaFile"]

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import SchemaParseException

from bus.documents import MAX_SCHEMA_FILE_BYTES, parse_json, read_at_most
from bus.errors import ConfigError, ConfigIssue

BUILTIN_DIR = Path(__file__).parent / "canonical"


@dataclass(frozen=True)
class SchemaFile:
    name: str  # short name, as in routes (Payment)
    fullname: str  # Avro full name (bus.canonical.Payment), also the CloudEvents type
    text: str  # compact JSON with docs and defaults, as registered (defaults matter for evolution)
    parsed: Any
    path: Path

    @property
    def subject(self) -> str:
        """Confluent TopicNameStrategy subject for the canonical topic's values."""
        return f"{self.fullname}-value"


class SchemaCatalog:
    def __init__(self, schemas: Iterable[SchemaFile]) -> None:
        self._by_name = {s.name: s for s in schemas}

    @classmethod
    def load(cls, extra_dirs: Iterable[Path] = ()) -> SchemaCatalog:
        found: dict[str, SchemaFile] = {}
        issues: list[ConfigIssue] = []
        for folder in (BUILTIN_DIR, *extra_dirs):
            if not folder.is_dir():
                issues.append(ConfigIssue(str(folder), None, "schema_dirs", "not a folder"))
                continue
            for path in sorted(folder.glob("*.avsc")):
                try:
                    raw, parsed = _record_schema(path)
                except (OSError, ValueError, SchemaParseException) as exc:
                    issues.append(ConfigIssue(str(path), None, "", f"invalid Avro schema: {exc}"))
                    continue
                short = str(parsed["name"]).rsplit(".", 1)[-1]
                if short in found and found[short].path != path:
                    issues.append(ConfigIssue(str(path), None, "", f"schema {short} is also defined in {found[short].path}"))
                    continue
                text = json.dumps(raw, separators=(",", ":"))
                found[short] = SchemaFile(short, str(parsed["name"]), text, parsed, path)
        if issues:
            raise ConfigError(issues)
        return cls(found.values())

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def parsed(self) -> dict[str, Any]:
        """Name -> parsed Avro schema: what the config checker types field references with."""
        return {name: self._by_name[name].parsed for name in sorted(self._by_name)}

    def get(self, name: str) -> SchemaFile:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._by_name.values())


def _record_schema(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The record schema in an ``.avsc`` file, as written and as fastavro parsed it; ValueError
    saying why it is not one (a file of nested lists was a RecursionError, "string" or a union a
    TypeError: tracebacks out of loading the config)."""
    raw = parse_json(read_at_most(path, MAX_SCHEMA_FILE_BYTES))
    if not isinstance(raw, dict) or raw.get("type") != "record":
        raise ValueError('a schema file holds one record schema: {"type": "record", "name": ..., "fields": [...]}')
    parsed: dict[str, Any] = parse_schema(raw)  # type: ignore[assignment]  # a record schema parses to a dict
    return raw, parsed
