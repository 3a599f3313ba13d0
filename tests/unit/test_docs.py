"""Generated docs stay in step with the models (house rule 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bus.adapter_api import AdapterRegistry
from bus.docgen import BLOCKS, config_reference

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


def test_docs_name_only_commands_and_options_that_exist() -> None:
    """Every `bus SUBCOMMAND` the docs, the README and the chart's notes mention is one the CLI has,
    and `bus reconcile` is given its subscriber with --subscriber (the CLI refuses a bare name)."""
    import re

    from bus.app.cli import _parser

    commands = set(_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    texts = {p: p.read_text() for p in [*ROOT.glob("docs/*.md"), ROOT / "README.md", ROOT / "helm/bus/templates/NOTES.txt"]}
    for path, text in texts.items():
        for command in re.findall(r"`bus ([a-z][a-z-]+)", text) + re.findall(r"\bbus ([a-z][a-z-]+) -c", text):
            assert command in commands, f"{path.name} mentions `bus {command}`, which does not exist"
        assert not re.search(r"bus reconcile -c \S+ [A-Z]+\b", text), f"{path.name}: bus reconcile takes --subscriber NAME"


def test_the_reference_lists_every_field_at_any_depth() -> None:
    """Top-level fields (schema_dirs), ops tokens, and models nested two deep (an outbound's
    delivery.circuit_breaker and delivery.rate_limit) are in the reference and in `adapters describe`."""
    from pydantic import BaseModel

    from bus.config.models import HubConfig
    from bus.docgen import model_table

    registry = AdapterRegistry.from_entry_points()
    text = config_reference(registry)

    def fields(model: type[BaseModel], seen: set[type]) -> set[str]:
        found = set()
        for name, info in model.model_fields.items():
            found.add(info.alias or name)
            stack = [info.annotation]
            while stack:
                candidate = stack.pop()
                if isinstance(candidate, type) and issubclass(candidate, BaseModel) and candidate not in seen:
                    seen.add(candidate)
                    found |= fields(candidate, seen)
                else:
                    stack.extend(getattr(candidate, "__args__", ()))
        return found

    for name in fields(HubConfig, set()) - set(BLOCKS):  # the blocks are sections of their own
        assert f"| `{name}` |" in text, name
    for block in set(BLOCKS) - {"inbound", "outbound"}:
        assert f"## `{block}" in text, block
    http = registry.get("http", "outbound")
    assert http is not None
    described = model_table(http.Config)
    for name in ("failure_ratio", "reset_after", "when_open", "rate", "burst"):
        assert f"| `{name}` |" in described


def _docs_yaml() -> list[tuple[str, dict[str, Any]]]:
    import re

    import yaml

    pages = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md", *sorted((ROOT / "examples").glob("*/README.md"))]
    found = []
    for page in pages:
        for number, block in enumerate(re.findall(r"```ya?ml\n(.*?)```", page.read_text(), re.S), start=1):
            document = yaml.safe_load(block)  # a block that is not YAML fails here
            if isinstance(document, dict):
                found.append((f"{page.relative_to(ROOT)} block {number}", document))
    return found


def test_the_docs_config_examples_are_valid() -> None:
    """A user copies these: each adapter, route and migration in a docs YAML block passes its own
    model's validation (a flow mapping `{total: minor_units(total, currency)}` splits at the
    comma, and did in three examples)."""
    from bus.config.migrations import MigrationConfig
    from bus.config.routes import RouteConfig

    registry = AdapterRegistry.from_entry_points()
    checked = 0
    for where, document in _docs_yaml():
        for kind in ("inbound", "outbound"):
            for item in document.get(kind) or []:
                cls = registry.get(item["type"], kind)
                assert cls is not None, f"{where}: no {kind} adapter {item['type']!r}"
                cls.Config.model_validate(item)
                checked += 1
        for item in document.get("routes") or []:
            RouteConfig.model_validate(item)
            checked += 1
        for item in document.get("migrations") or []:
            MigrationConfig.model_validate(item)
            checked += 1
    assert checked >= 15
