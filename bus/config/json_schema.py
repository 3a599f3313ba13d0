"""A JSON Schema of the whole hub config, generated from the models with the fields of every
installed adapter type, for editors (VS Code's YAML extension completes and checks a config as
it is typed: ``# yaml-language-server: $schema=bus-config.schema.json``) and for the Helm
chart, whose ``values.schema.json`` validates ``config:`` with it.

    bus docs json-schema > bus-config.schema.json
    bus docs json-schema --chart helm/bus/values.schema.json     # refresh the chart's copy

It checks shape (fields, types, enums, required); meaning (field references against schemas)
is ``bus validate``'s. A number or boolean field also takes a ``${VAR}`` string, which the hub
replaces when it loads the config.
"""

from __future__ import annotations

__all__ = ["config_json_schema", "into_chart"]

import copy
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from bus.adapter_api import AdapterRegistry
from bus.config.fields import ConfigJsonSchema
from bus.config.models import HubConfig

ROOT = "BusConfig"
_INTERPOLATED = {"type": "string", "pattern": r"\$\{[^}]+\}", "description": "a ${VAR}, replaced when the config loads"}


def config_json_schema(registry: AdapterRegistry) -> dict[str, Any]:
    """The config's schema: ``$defs`` holds every model (``BusConfig`` is the whole config)."""
    adapters: dict[str, list[tuple[str, type[BaseModel]]]] = {"inbound": [], "outbound": []}
    for type_name, adapter in registry.items():
        adapters[adapter.direction].append((type_name, adapter.Config))
    models: list[type[BaseModel]] = [HubConfig, *(m for items in adapters.values() for _, m in items)]
    refs, schema = models_json_schema(
        [(m, "validation") for m in models], ref_template="#/$defs/{model}", schema_generator=ConfigJsonSchema
    )
    defs: dict[str, Any] = schema["$defs"]
    hub_name = refs[(HubConfig, "validation")]["$ref"].split("/")[-1]
    root = copy.deepcopy(defs[hub_name])
    for direction, items in adapters.items():
        choices = []
        for type_name, model in items:
            name = refs[(model, "validation")]["$ref"].split("/")[-1]
            # Pin `type` to the adapter's name, so an editor knows which fields apply.
            defs[name].setdefault("properties", {})["type"] = {"const": type_name, "description": "Adapter type."}
            choices.append({"$ref": f"#/$defs/{name}"})
        root["properties"][direction] = {
            "type": "array",
            "description": f"{direction.capitalize()} adapters; `type:` picks the fields that apply.",
            "items": {"oneOf": choices},
        }
    defs[ROOT] = root
    _allow_interpolation(defs)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Integration hub config (bus.yaml)",
        "$ref": f"#/$defs/{ROOT}",
        "$defs": dict(sorted(defs.items())),
    }


def _allow_interpolation(node: Any) -> None:
    """Where a number, a boolean, one of a set of words or a string of a set pattern is expected,
    a ``${VAR}`` string is allowed too: the hub checks the value it stands for when it loads."""
    if isinstance(node, dict):
        for value in node.values():
            _allow_interpolation(value)
        kind = node.get("type")
        constrained_text = kind == "string" and any(k in node for k in ("pattern", "enum", "format", "minLength", "maxLength"))
        if kind in ("integer", "number", "boolean") or constrained_text or ("enum" in node and kind is None):
            original = {k: node.pop(k) for k in list(node) if k not in ("description", "title", "default", "examples")}
            node["anyOf"] = [original, _INTERPOLATED]
    elif isinstance(node, list):
        for item in node:
            _allow_interpolation(item)


def into_chart(values_schema: dict[str, Any], generated: dict[str, Any]) -> dict[str, Any]:
    """The chart's ``values.schema.json`` with the generated ``$defs`` (its ``config`` property
    refers to ``#/$defs/BusConfig`` and to the chart's own rules)."""
    out = copy.deepcopy(values_schema)
    out["$defs"] = generated["$defs"]
    return out
