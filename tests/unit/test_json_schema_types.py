"""What a payload's JSON Schema says a document holds, as the checker reads it: ``allOf`` parts merged."""

from __future__ import annotations

from bus.expr.types import INT, NULL, STRING, Record, from_json_schema, join


def test_all_of_merges_the_parts_through_refs_and_nesting() -> None:
    schema = {
        "$defs": {
            "base": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
            "audited": {"allOf": [{"properties": {"created_by": {"type": "string"}}}]},
        },
        "allOf": [
            {"$ref": "#/$defs/base"},
            {"$ref": "#/$defs/audited"},
            {"properties": {"total": {"type": "integer"}}, "required": ["total"]},
        ],
    }
    found = from_json_schema(schema)
    assert isinstance(found, Record) and not found.open
    assert {name: f.type for name, f in found.fields.items()} == {"id": STRING, "created_by": join(STRING, NULL), "total": INT}


def test_all_of_is_open_when_a_part_allows_other_properties() -> None:
    found = from_json_schema({"allOf": [{"type": "object", "properties": {"id": {"type": "string"}}}, {"additionalProperties": True}]})
    assert isinstance(found, Record) and found.open
