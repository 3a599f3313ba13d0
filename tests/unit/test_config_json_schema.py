"""The config's JSON Schema (`bus docs json-schema`): generated from the models, accepts every
real config (with ${VAR} in number fields), refuses a typo, and the chart's copy is current."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bus.adapter_api import AdapterRegistry
from bus.app.cli import main
from bus.config.json_schema import config_json_schema, into_chart

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "examples").glob("*/bus.yaml"))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = config_json_schema(AdapterRegistry.from_entry_points())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator: jsonschema.Draft202012Validator, config: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(config)]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.parent.name for p in CONFIGS])
def test_every_example_config_fits_the_schema(validator: jsonschema.Draft202012Validator, path: Path) -> None:
    assert _errors(validator, yaml.safe_load(path.read_text())) == []


def test_the_schema_refuses_a_misspelt_field_and_a_wrong_adapter_field(validator: jsonschema.Draft202012Validator) -> None:
    config = yaml.safe_load((ROOT / "examples/quickstart/bus.yaml").read_text())
    config["routes"][0]["whn"] = 'status == "failed"'
    assert any("'whn' was unexpected" in e for e in _errors(validator, config))
    config = yaml.safe_load((ROOT / "examples/quickstart/bus.yaml").read_text())
    config["outbound"][0]["timeout_s"] = "soon"
    assert _errors(validator, config)  # not a number, not a ${VAR}
    config["outbound"][0]["timeout_s"] = "${ERP_TIMEOUT:-5}"
    assert _errors(validator, config) == []


def test_the_chart_checks_config_with_the_current_schema() -> None:
    chart = ROOT / "helm/bus/values.schema.json"
    values_schema = json.loads(chart.read_text())
    generated = config_json_schema(AdapterRegistry.from_entry_points())
    assert values_schema == into_chart(values_schema, generated), (
        "helm/bus/values.schema.json is stale: run `.venv/bin/bus docs json-schema --chart helm/bus/values.schema.json`"
    )
    assert values_schema["properties"]["config"]["allOf"][0] == {"$ref": "#/$defs/BusConfig"}


def test_bus_docs_json_schema_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["docs", "json-schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["$ref"] == "#/$defs/BusConfig"
    inbound = printed["$defs"]["BusConfig"]["properties"]["inbound"]["items"]["oneOf"]
    assert len(inbound) == len([1 for _, a in AdapterRegistry.from_entry_points().items() if a.direction == "inbound"])
