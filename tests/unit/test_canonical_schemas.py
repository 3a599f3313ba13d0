"""House rules of the canonical model (schemas/canonical/): namespaced, every record and field
documented, optional fields nullable with a null default (so adding one stays compatible both
ways), instants as timestamp-millis, money as integer minor units beside a currency."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bus.errors import ConfigError
from schemas.catalog import SchemaCatalog
from schemas.compatibility import resolve

CATALOG = SchemaCatalog.load()
REQUIRED = {
    "Customer", "Lead", "Account", "Order", "Product", "Inventory", "Invoice",
    "Payment", "Refund", "Subscription", "Ticket", "PatientVisit", "UsageMetric",
}  # fmt: skip


def records(schema: Any) -> list[dict[str, Any]]:
    """The record and every record nested in it."""
    found = []
    if isinstance(schema, dict):
        if schema.get("type") == "record":
            found.append(schema)
            for field in schema["fields"]:
                found += records(field["type"])
        elif schema.get("type") == "array":
            found += records(schema["items"])
        elif schema.get("type") == "map":
            found += records(schema["values"])
    elif isinstance(schema, list):
        for branch in schema:
            found += records(branch)
    return found


def test_the_catalog_covers_what_integrations_connect_most() -> None:
    assert set(CATALOG.names()) >= REQUIRED


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_house_rules(name: str) -> None:
    raw = json.loads(CATALOG.get(name).path.read_text())
    assert raw["namespace"] == "bus.canonical"
    for record in records(raw):
        assert record.get("doc"), f"{name}: record {record['name']} has no doc"
        for field in record["fields"]:
            where = f"{name}.{record['name']}.{field['name']}"
            assert field.get("doc"), f"{where} has no doc"
            kind = field["type"]
            if isinstance(kind, list) and "null" in kind:
                assert kind[0] == "null" and field.get("default", "missing") is None, f"{where}: optional, so null first and default null"
            if field["name"].endswith("_at"):
                branches = kind if isinstance(kind, list) else [kind]
                assert {"type": "long", "logicalType": "timestamp-millis"} in branches, f"{where}: an instant is timestamp-millis"
            if field["name"] in ("amount", "price", "total", "unit_price"):
                assert kind == "long", f"{where}: money is a long in minor units"
                assert "currency" in {f["name"] for f in raw["fields"]}, f"{name}: money needs its currency"


def test_every_schema_reads_itself_and_ignores_an_added_optional_field() -> None:
    for schema in CATALOG:
        raw = json.loads(schema.text)
        assert resolve(raw, raw) == []
        grown = {**raw, "fields": [*raw["fields"], {"name": "extra", "type": ["null", "string"], "default": None, "doc": "x"}]}
        assert resolve(grown, raw) == [] and resolve(raw, grown) == []


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('"string"', "a schema file holds one record schema"),  # a TypeError out of loading the config
        ('["null", "string"]', "a schema file holds one record schema"),
        ("[" * 100_000 + "]" * 100_000, "JSON nested more than 256 levels deep"),  # a RecursionError
        ('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}', "invalid Avro schema"),
        ("\udcff", "invalid Avro schema"),  # not UTF-8
    ],
    ids=["a-primitive", "a-union", "nested", "unknown-type", "not-utf8"],
)
def test_a_schema_file_that_is_no_record_schema_is_a_config_error_naming_it(tmp_path: Path, text: str, said: str) -> None:
    (tmp_path / "custom.avsc").write_bytes(text.encode(errors="surrogateescape"))
    with pytest.raises(ConfigError) as refused:
        SchemaCatalog.load([tmp_path])
    [issue] = refused.value.issues
    assert issue.file == str(tmp_path / "custom.avsc") and said in issue.message, issue
