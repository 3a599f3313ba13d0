"""The import direction of the product's packages, read from the source (every import statement,
at module level, inside functions and under ``TYPE_CHECKING`` alike).

- ``bus/`` is the core; ``routing``, ``schemas``, ``ops`` and ``adapters`` stand on it.
- Only the composition root, ``bus/app/``, imports those layers; no other core module does.
- The layers import the core and themselves, never one another (what they share is core).
- No import cycle between the core's modules (``TYPE_CHECKING`` imports count: a cycle hidden
  behind one is still a cycle in the design).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("routing", "schemas", "ops", "adapters")
COMPOSITION_ROOT = "bus.app"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute names (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def top(name: str) -> str:
    return name.split(".", maxsplit=1)[0]


def violations(modules: dict[str, set[str]]) -> list[str]:
    found = []
    for module, imported in sorted(modules.items()):
        layer = top(module)
        in_root = module == COMPOSITION_ROOT or module.startswith(COMPOSITION_ROOT + ".")
        for name in sorted(imported):
            target = top(name)
            if target not in LAYERS or target == layer or in_root:
                continue
            where = "the core" if layer == "bus" else f"layer {layer}"
            found.append(f"{module} imports {name}: {where} may not import {target}/ (only {COMPOSITION_ROOT} may)")
    return found


def all_modules() -> dict[str, set[str]]:
    return {module_name(path): imports(path) for package in ("bus", *LAYERS) for path in sources(package)}


def test_the_core_and_the_layers_import_only_downwards() -> None:
    assert violations(all_modules()) == []


def test_the_check_fails_on_an_upward_import(tmp_path: Path) -> None:
    # The check itself must be able to fail: the shapes main had before the composition root.
    modules = {
        "bus.runtime.hub": {"routing.router", "bus.config"},
        "bus.cli": {"schemas.catalog"},
        "adapters.kafka.avro": {"schemas.registry_client"},
        "bus.app.hub": {"routing.router", "ops.server"},
        "routing.router": {"bus.expr"},
    }
    assert violations(modules) == [
        "adapters.kafka.avro imports schemas.registry_client: layer adapters may not import schemas/ (only bus.app may)",
        "bus.cli imports schemas.catalog: the core may not import schemas/ (only bus.app may)",
        "bus.runtime.hub imports routing.router: the core may not import routing/ (only bus.app may)",
    ]


def cycles(modules: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles among ``modules`` (Tarjan's strongly connected components of size > 1)."""
    graph = {m: sorted(n for n in imported if n in modules and n != m) for m, imported in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_core_modules() -> None:
    # A module's own ancestor packages are left out: Python runs them before the module whatever
    # it imports (`from bus.expr import tree` inside bus/expr/ names the package, not a cycle).
    core = {
        module: {name for name in imported if not module.startswith(name + ".")}
        for module, imported in all_modules().items()
        if top(module) == "bus"
    }
    assert cycles(core) == []


@pytest.mark.parametrize("shape", [{"a": {"b"}, "b": {"c"}, "c": {"a"}}, {"a": {"b"}, "b": {"a"}}])
def test_the_cycle_check_finds_a_cycle(shape: dict[str, set[str]]) -> None:
    assert cycles(shape) == [sorted(shape)]
