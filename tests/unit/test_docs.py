"""Generated docs stay in step with the models (house rule 5)."""

from __future__ import annotations

from pathlib import Path

from bus.adapter_api import AdapterRegistry
from bus.docgen import config_reference

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_reference_is_current() -> None:
    generated = config_reference(AdapterRegistry.from_entry_points())
    checked_in = (ROOT / "docs/configuration.md").read_text()
    assert checked_in == generated, "docs/configuration.md is stale: run `.venv/bin/bus docs config > docs/configuration.md`"


def test_reference_documents_every_adapter_field() -> None:
    registry = AdapterRegistry.from_entry_points()
    text = config_reference(registry)
    for name, adapter in registry.items():
        assert f"type {name}`" in text
        for field_name, field in adapter.Config.model_fields.items():
            assert f"| `{field.alias or field_name}` |" in text
            if field_name not in ("type",):
                assert field.description, f"{name}.{field_name} has no description"
