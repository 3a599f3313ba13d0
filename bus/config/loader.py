"""Load a hub config from one YAML file or a folder of them, and say exactly what is wrong.

Every error names the file, the line and the dotted field, and all errors are reported at once.
Steps: read YAML keeping each node's line -> interpolate ``${ENV}`` -> merge files -> validate the
core models -> validate each adapter block with its adapter's own model -> check references
(route targets, schema names, duplicate names). Nothing here does network I/O.

Interpolation: ``${NAME}``, ``${NAME:-default}``, and ``${file:/path}`` (a secret read from a
file, stripped of its trailing newline). Values never appear in error messages.
"""

from __future__ import annotations

__all__ = ["LoadedConfig", "load_config"]

import difflib
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bus.adapter_api import AdapterConfig, AdapterRegistry, EmitSpec
from bus.config.check import check_config
from bus.config.models import HubConfig
from bus.config.yaml_files import Marks, config_files, dotted, merge
from bus.errors import ConfigError, ConfigIssue
from bus.expr.typecheck import closest
from bus.logs import Redactor, secrets_in

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class LoadedConfig:
    hub: HubConfig
    inbound: list[AdapterConfig]
    outbound: list[AdapterConfig]
    files: list[Path] = field(default_factory=list)
    # What the checker found that does not stop the config from loading (bus.config.check);
    # ``strict`` loading refuses them. ``unchecked``: paths no declared shape could check.
    warnings: list[ConfigIssue] = field(default_factory=list)
    unchecked: list[ConfigIssue] = field(default_factory=list)
    # Every value that came from the environment or a file (${NAME}, ${file:...}): treated as a
    # secret wherever it could appear (logs, dead letters, API answers), whatever its field's type.
    secrets: set[str] = field(default_factory=set)


def _migration_issues(
    hub: HubConfig, schemas: Any, marks: Marks, default_file: str, *, outbound: list[str], inbound: list[str]
) -> list[ConfigIssue]:
    """A migration emits a known schema, feeds routes that exist and read that schema, and names
    only outbound adapters under ``targets``."""
    issues = []
    route_from = {r.name: r.from_ for r in hub.routes}
    for i, migration in enumerate(hub.migrations):
        schema = migration.emit.schema_
        if schemas is not None and schema not in schemas:
            loc: Loc = ("migrations", i, "emit", "schema")
            issues.append(ConfigIssue(*marks.find(loc, default_file), dotted(loc), _unknown_schema(schema, schemas)))
        for j, name in enumerate(migration.routes):
            loc = ("migrations", i, "routes", j)
            if name not in route_from:
                why = f"no route named {name!r} (routes: {', '.join(route_from) or 'none'})"
            elif route_from[name] != schema:
                why = f"route {name!r} reads {route_from[name]} events; this migration emits {schema}"
            else:
                continue
            issues.append(ConfigIssue(*marks.find(loc, default_file), dotted(loc), why))
        for name in migration.targets:
            if name not in outbound:
                loc = ("migrations", i, "targets", name)
                why = f"no outbound adapter named {name!r} (outbound: {', '.join(outbound) or 'none'})"
                issues.append(ConfigIssue(*marks.find(loc, default_file), dotted(loc), why))
        if migration.then is not None and migration.then not in inbound:
            loc = ("migrations", i, "then")
            why = f"no inbound adapter named {migration.then!r} (inbound: {', '.join(inbound) or 'none'})"
            issues.append(ConfigIssue(*marks.find(loc, default_file), dotted(loc), why))
    return issues


def _issues_from(exc: ValidationError, prefix: Loc, marks: Marks, default_file: str) -> list[ConfigIssue]:
    found = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = (*prefix, *(p for p in err["loc"] if p not in ("function-after", "function-before")))
        file, line = marks.find(loc, default_file)
        message = err["msg"].removeprefix("Value error, ")
        found.append(ConfigIssue(file, line, dotted(loc), message))
    return found


def _build_adapters(
    section: str,
    blocks: list[Any],
    *,
    registry: AdapterRegistry,
    marks: Marks,
    config_dir: Path,
    default_file: str,
    issues: list[ConfigIssue],
) -> list[tuple[int, AdapterConfig]]:
    """Validate each block with its adapter's model; returns (index in the section, config)."""
    direction = section  # "inbound" or "outbound"
    built: list[tuple[int, AdapterConfig]] = []
    seen: dict[str, int] = {}
    for i, block in enumerate(blocks):
        loc: Loc = (section, i)
        file, line = marks.find(loc, default_file)
        if not isinstance(block, dict):
            issues.append(ConfigIssue(file, line, dotted(loc), "must be a mapping with type: and name:"))
            continue
        type_name = block.get("type")
        adapter = registry.get(str(type_name), direction) if type_name is not None else None
        if adapter is None:
            names = registry.names(direction)
            known = ", ".join(names) or "none installed"
            what = "missing type" if type_name is None else f"unknown {direction} adapter type {type_name!r}"
            close = difflib.get_close_matches(str(type_name), names, n=1) if type_name is not None else []
            if close:
                what += f"; did you mean {close[0]!r}?"
            file, line = marks.find((*loc, "type"), default_file)
            issues.append(ConfigIssue(file, line, dotted((*loc, "type")), f"{what} (known: {known})"))
            continue
        try:
            config = adapter.Config.model_validate(block, context={"config_dir": config_dir})
        except ValidationError as exc:
            issues.extend(_issues_from(exc, loc, marks, default_file))
            continue
        if config.name in seen:
            file, line = marks.find((*loc, "name"), default_file)
            issues.append(ConfigIssue(file, line, dotted((*loc, "name")), f"{direction} adapter name {config.name!r} is used twice"))
        seen[config.name] = i
        built.append((i, config))
    return built


def _without_follow_ons(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    """A field whose ${...} could not be resolved also fails validation; report only the cause."""
    unresolved = {i.field for i in issues if i.message.startswith(("environment variable", "cannot read secret file"))}
    return [i for i in issues if i.field not in unresolved or i.message.startswith(("environment variable", "cannot read secret file"))]


def load_config(
    path: Path | str,
    registry: AdapterRegistry,
    *,
    known_schemas: Callable[[HubConfig], Collection[str] | Mapping[str, Any]] | None = None,
    env: Mapping[str, str] | None = None,
    strict: bool = False,
) -> LoadedConfig:
    """Load and check everything; raise ConfigError listing every issue found, by file and line.

    ``known_schemas`` gives the canonical schema names, or better a mapping of name -> parsed
    Avro schema: then the meaning of the config is checked too (``bus.config.check``): every
    field reference against its schema, types, mappings. ``strict`` refuses warnings and paths
    that could not be checked, as errors."""
    path = Path(path)
    files = config_files(path)
    issues: list[ConfigIssue] = []
    interpolated: set[str] = set()
    data, marks = merge(files, os.environ if env is None else env, issues, interpolated)
    default_file = str(files[0])

    core = {k: v for k, v in data.items() if k not in ("inbound", "outbound")}
    hub: HubConfig | None = None
    try:
        hub = HubConfig.model_validate(core)
    except ValidationError as exc:
        issues.extend(_issues_from(exc, (), marks, default_file))  # and go on: the adapters' issues too, at once
    for section in ("inbound", "outbound"):
        if not isinstance(data.get(section, []), list):
            file, line = marks.find((section,), default_file)
            issues.append(ConfigIssue(file, line, section, "must be a list of adapter blocks"))
            data[section] = []
    config_dir = path if path.is_dir() else path.parent
    inbound, outbound = (
        _build_adapters(
            section, data.get(section, []), registry=registry, marks=marks, config_dir=config_dir, default_file=default_file, issues=issues
        )
        for section in ("inbound", "outbound")
    )

    if hub is None:
        raise ConfigError(_in_order(_without_follow_ons(issues)))
    found_schemas = known_schemas(hub) if known_schemas else None
    schemas = set(found_schemas) if found_schemas is not None else None
    # Names of every outbound block, valid or not: one broken block must not cascade into
    # "no outbound adapter named ..." on every route that uses it.
    outbound_names = {str(b["name"]) for b in data.get("outbound", []) if isinstance(b, dict) and "name" in b}
    route_names: set[str] = set()
    for i, route in enumerate(hub.routes):
        if route.name in route_names:
            file, line = marks.find(("routes", i, "name"), default_file)
            issues.append(ConfigIssue(file, line, f"routes[{i}].name", f"route name {route.name!r} is used twice"))
        route_names.add(route.name)
        for j, target in enumerate(route.to):
            if target not in outbound_names:
                file, line = marks.find(("routes", i, "to", j), default_file)
                known = ", ".join(sorted(outbound_names)) or "none defined"
                hint = closest(target, outbound_names)
                issues.append(
                    ConfigIssue(file, line, f"routes[{i}].to[{j}]", f"no outbound adapter named {target!r}{hint} (known: {known})")
                )
        if route.aggregate is not None and hub.router.engine == "faust":
            file, line = marks.find(("routes", i, "aggregate"), default_file)
            issues.append(ConfigIssue(file, line, f"routes[{i}].aggregate", "aggregate needs router.engine: aiokafka (the default)"))
        output_schema = route.transform.schema_ if route.transform else None
        if output_schema is not None and schemas is not None and output_schema not in schemas:
            file, line = marks.find(("routes", i, "transform", "schema"), default_file)
            message = _unknown_schema(output_schema, schemas)
            issues.append(ConfigIssue(file, line, f"routes[{i}].transform.schema", message))
        table_names = {t.name for t in hub.tables}
        for j, enrich in enumerate(route.enrich):
            if enrich.table not in table_names:
                file, line = marks.find(("routes", i, "enrich", j, "table"), default_file)
                message = f"no table named {enrich.table!r} (known: {', '.join(sorted(table_names)) or 'none defined'})"
                issues.append(ConfigIssue(file, line, f"routes[{i}].enrich[{j}].table", message))
        if schemas is not None and route.from_ not in schemas:
            file, line = marks.find(("routes", i, "from"), default_file)
            issues.append(ConfigIssue(file, line, f"routes[{i}].from", _unknown_schema(route.from_, schemas)))
    if schemas is not None:
        for i, config in inbound:
            emit = getattr(config, "emit", None)
            if isinstance(emit, EmitSpec) and emit.schema_ not in schemas:
                loc: Loc = ("inbound", i, "emit", "schema")
                file, line = marks.find(loc, default_file)
                issues.append(ConfigIssue(file, line, dotted(loc), _unknown_schema(emit.schema_, schemas)))
    issues.extend(
        _migration_issues(hub, schemas, marks, default_file, outbound=[c.name for _, c in outbound], inbound=[c.name for _, c in inbound])
    )
    warnings: list[ConfigIssue] = []
    unchecked: list[ConfigIssue] = []
    if isinstance(found_schemas, Mapping):
        base_dir = path if path.is_dir() else path.parent
        findings = check_config(
            hub,
            inbound=inbound,
            outbound=outbound,
            schemas=found_schemas,
            locate=lambda loc: marks.find(loc, default_file),
            base_dir=base_dir,
            grace_s=_grace_period(os.environ if env is None else env),
        )
        # The checker quotes expressions, and an expression may hold a ${SECRET}: mask them.
        masked = Redactor()
        masked.remember(_secret_shaped(interpolated))
        clean = [
            [ConfigIssue(i.file, i.line, i.field, masked.redact(i.message)) for i in found]
            for found in (findings.errors, findings.warnings, findings.unchecked)
        ]
        issues.extend(clean[0])
        warnings, unchecked = _in_order(clean[1]), _in_order(clean[2])
        if strict:
            issues.extend(warnings + unchecked)
    if issues:
        raise ConfigError(_in_order(_without_follow_ons(issues)))
    return LoadedConfig(
        hub=hub,
        inbound=[c for _, c in inbound],
        outbound=[c for _, c in outbound],
        files=files,
        secrets=_secret_shaped(interpolated) - _in_plain_sight(hub, [c for _, c in (*inbound, *outbound)]),
        warnings=warnings,
        unchecked=unchecked,
    )


def _grace_period(env: Mapping[str, str]) -> float | None:
    """How long Kubernetes lets the pod stop (the chart passes terminationGracePeriodSeconds as
    ``BUS_TERMINATION_GRACE_S``); None elsewhere, or when it is not a number."""
    try:
        return float(env["BUS_TERMINATION_GRACE_S"])
    except (KeyError, ValueError):
        return None


def _in_order(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    """By file, then line (issues with no line last in their file), duplicates removed."""
    unique = list(dict.fromkeys(issues))
    return sorted(unique, key=lambda i: (i.file, i.line is None, i.line or 0))


def _in_plain_sight(hub: HubConfig, adapters: list[AdapterConfig]) -> set[str]:
    """Values the hub shows by design wherever it runs, so never secrets: the topic prefix (in
    every topic name), the Kafka bootstrap servers, the adapters' and routes' names (in metric
    labels). Taken from ${...} (``topic_prefix: ${TOPIC_PREFIX}``), they were masked in every log
    line that named a topic: ``***.deliver.erp``, an inbound ``***ify-orders`` when the prefix was
    ``shop``. A value that is also a secret field's (a password) stays masked."""
    bootstrap = str(hub.kafka.bootstrap)
    shown = {hub.kafka.topic_prefix, bootstrap, *bootstrap.split(",")}
    shown |= {config.name for config in adapters} | {route.name for route in hub.routes}
    return shown - set(secrets_in([hub, adapters])) - {""}


def _secret_shaped(values: set[str]) -> set[str]:
    """The interpolated values worth masking: numbers and booleans (a port, a partition count)
    cannot be secrets, and masking them would blank out ordinary numbers in every log line."""
    return {v for v in values if len(v) >= 4 and not v.isdigit() and v.lower() not in ("true", "false")}


def _unknown_schema(name: str, schemas: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(schemas), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown schema {name!r}{hint} (known: {', '.join(sorted(schemas))})"
