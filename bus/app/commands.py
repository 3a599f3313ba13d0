"""The ``bus`` subcommands that work from a config alone (see ``bus.app.cli`` for the whole list):
validate, run, health, adapters, test, routes explain, new, docs, schemas. Each takes the parsed
arguments and returns the exit code."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from bus.adapter_api import AdapterRegistry
from bus.config.loader import LoadedConfig, load_config
from bus.config.models import HubConfig
from bus.errors import ConfigError, ConfigIssue
from bus.logs import REDACTOR, secrets_in

EXIT_RUNTIME = 1
EXIT_CONFIG = 2


def _load(path: Path, registry: AdapterRegistry, *, strict: bool = False) -> tuple[LoadedConfig, object]:
    from schemas.catalog import SchemaCatalog  # composition root: the CLI wires schemas/ in

    catalogs: dict[tuple[Path, ...], SchemaCatalog] = {}

    def known(hub: HubConfig) -> dict[str, Any]:
        base = path if path.is_dir() else path.parent
        dirs = tuple(d if d.is_absolute() else base / d for d in hub.schema_dirs)
        catalogs[dirs] = SchemaCatalog.load(dirs)
        return catalogs[dirs].parsed()

    loaded = load_config(path, registry, known_schemas=known, strict=strict)
    return loaded, next(iter(catalogs.values()))


def validate(args: argparse.Namespace) -> int:
    """Exit 2 with every error (by file and line), else 0; warnings are printed and, with
    ``--strict``, refused too, with the mapping paths no declared payload shape could check."""
    registry = AdapterRegistry.from_entry_points()
    try:
        loaded, _ = _load(args.config, registry, strict=args.strict)
    except ConfigError as exc:
        if not args.json:
            raise
        print(json.dumps({"valid": False, "errors": [_issue_json(i) for i in exc.issues], "warnings": []}, indent=2))
        return EXIT_CONFIG
    hub = loaded.hub
    if args.json:
        print(json.dumps({"valid": True, "errors": [], "warnings": [_issue_json(i) for i in loaded.warnings]}, indent=2))
        return 0
    for issue in loaded.warnings:
        print(f"warning: {issue}", file=sys.stderr)
    print(
        f"{args.config}: valid ({len(loaded.inbound)} inbound, {len(hub.routes)} route(s), "
        f"{len(loaded.outbound)} outbound; kafka {hub.kafka.bootstrap}, schema registry {hub.schema_registry.url})"
        + (f"; {len(loaded.warnings)} warning(s)" if loaded.warnings else "")
    )
    return 0


def _issue_json(issue: ConfigIssue) -> dict[str, object]:
    return {"file": issue.file, "line": issue.line, "field": issue.field, "message": issue.message}


def run(args: argparse.Namespace) -> int:
    from bus.app.hub import Hub
    from schemas.catalog import SchemaCatalog

    registry = AdapterRegistry.from_entry_points()
    loaded, catalog = _load(args.config, registry)
    assert isinstance(catalog, SchemaCatalog)
    REDACTOR.remember(secrets_in([loaded.hub, loaded.inbound, loaded.outbound]))
    for issue in loaded.warnings:  # the config loads, but says something that never happens
        logging.getLogger("bus.config").warning("%s", issue)
    hub = Hub(loaded, registry, catalog, role=args.role)
    asyncio.run(hub.run_until_signalled())
    return 0


def health(args: argparse.Namespace) -> int:
    """Ask a running hub's ops port (from its config) for /healthz or /readyz: for a container's
    HEALTHCHECK, which cannot know the port the config chose."""
    import httpx

    loaded = load_config(args.config, AdapterRegistry.from_entry_points())
    ops = loaded.hub.ops
    host = "127.0.0.1" if ops.host in ("0.0.0.0", "::", "") else ops.host  # noqa: S104 - listening everywhere: ask locally
    url = f"http://{f'[{host}]' if ':' in host else host}:{ops.port}/{'readyz' if args.ready else 'healthz'}"
    try:
        answer = httpx.get(url, timeout=args.timeout)
    except httpx.HTTPError as exc:
        print(f"bus: {url}: no answer ({exc.__class__.__name__}: {exc})", file=sys.stderr)
        return EXIT_RUNTIME
    if answer.status_code != 200:
        print(f"bus: {url}: {answer.status_code} {answer.text[:500]}", file=sys.stderr)
        return EXIT_RUNTIME
    print(f"{url}: {answer.status_code}")
    return 0


def adapters(args: argparse.Namespace) -> int:
    registry = AdapterRegistry.from_entry_points()
    for name, adapter in registry.items():
        print(f"{name:<16} {adapter.direction:<9} {adapter.summary}")
    return 0


def describe(args: argparse.Namespace) -> int:

    from bus.docgen import model_table

    registry = AdapterRegistry.from_entry_points()
    found = [
        (d, adapter)
        for d in ("inbound", "outbound")
        if (adapter := registry.get(args.type, d)) is not None and (args.direction is None or d == args.direction)
    ]
    if not found:
        print(f"bus: no adapter type {args.type!r} (installed: {', '.join(registry.names())})", file=sys.stderr)
        return EXIT_CONFIG
    if args.json_schema:
        from bus.config.fields import ConfigJsonSchema

        schemas = {d: a.Config.model_json_schema(schema_generator=ConfigJsonSchema) for d, a in found}
        print(json.dumps(schemas[found[0][0]] if len(found) == 1 else schemas, indent=2))
        return 0
    for direction, adapter in found:
        print(f"# {args.type} ({direction}): {adapter.summary}\n")
        print(model_table(adapter.Config))
    return 0


def test(args: argparse.Namespace) -> int:
    from bus.app.route_tests import RouteTester, load_tests
    from schemas.catalog import SchemaCatalog

    loaded, catalog = _load(args.config, AdapterRegistry.from_entry_points())
    assert isinstance(catalog, SchemaCatalog)
    tester = RouteTester(loaded, catalog)
    failed = 0
    for path in args.tests:
        cases = load_tests(path)
        if not cases:
            print(f"{path}: no tests found", file=sys.stderr)
            failed += 1
        for case in cases:
            result = tester.run(case)
            print(f"{'PASS' if result.ok else 'FAIL'}  {path}: {case.name}")
            for failure in result.failures:
                print("      " + failure.replace("\n", "\n      "))
            failed += not result.ok
    print(f"\n{'all tests passed' if not failed else f'{failed} test(s) failed'}")
    return 0 if not failed else EXIT_RUNTIME


def explain(args: argparse.Namespace) -> int:

    from pydantic import ValidationError

    from bus.app.route_tests import RouteTester, TestInput
    from bus.documents import MAX_DOCUMENT_FILE_BYTES, FileTooLarge, parse_json, read_at_most
    from schemas.catalog import SchemaCatalog

    loaded, catalog = _load(args.config, AdapterRegistry.from_entry_points())
    assert isinstance(catalog, SchemaCatalog)
    try:
        document = parse_json(read_at_most(args.event, MAX_DOCUMENT_FILE_BYTES))  # /dev/zero given by mistake: said, not read on
    except OSError as exc:
        print(f"bus: cannot read {args.event}: {exc.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    except FileTooLarge as exc:
        print(f"bus: {exc}: not an event", file=sys.stderr)
        return EXIT_CONFIG
    except ValueError as exc:
        print(f"bus: {args.event} is not JSON: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.inbound:
        given = TestInput(inbound=args.inbound, body=document)
    else:
        if not isinstance(document, dict):
            print(f'bus: {args.event} must hold a JSON object: the event, or {{"schema": ..., "event": {{...}}}}', file=sys.stderr)
            return EXIT_CONFIG
        schema = args.schema or document.get("schema")
        event = document.get("event", document) if not args.schema else document
        if schema is None:
            print('bus: name the event\'s schema with --schema, or give {"schema": ..., "event": {...}}', file=sys.stderr)
            return EXIT_CONFIG
        try:
            given = TestInput.model_validate({"schema": schema, "event": event})
        except ValidationError as exc:
            said = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False))
            print(f"bus: {args.event}: {said}", file=sys.stderr)
            return EXIT_CONFIG
    for line in RouteTester(loaded, catalog).explain(given).lines:
        print(line)
    return 0


def new(args: argparse.Namespace) -> int:
    from bus.recipes import RECIPES, copy_recipe, find_recipes

    recipes = {r.name: r for r in find_recipes()}
    if not recipes:
        print(f"bus: no recipes found in {RECIPES} (they ship with the source tree: git clone the project)", file=sys.stderr)
        return EXIT_CONFIG
    if args.recipe is None:
        width = max(len(name) for name in recipes)
        for recipe in recipes.values():
            print(f"{recipe.name:<{width}}  {recipe.title}")
        print("\nbus new RECIPE DIR   copies one into DIR (its config, README, schema and a .env.example)")
        return 0
    if args.recipe not in recipes or args.dir is None:
        problem = f"no recipe named {args.recipe!r}" if args.recipe not in recipes else "where to? give a folder: bus new RECIPE DIR"
        print(f"bus: {problem}; recipes: {', '.join(recipes)}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        written = copy_recipe(recipes[args.recipe], Path(args.dir))
    except FileExistsError as exc:
        print(f"bus: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:  # a folder that cannot be made there: a traceback
        print(f"bus: cannot write the recipe into {args.dir}: {exc.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    for path in written:
        print(f"  wrote {path}")
    print(
        f"\nnext: set the variables of {Path(args.dir) / '.env.example'} in the hub's environment (or its secrets), read its README, then"
    )
    print(f"  bus validate -c {Path(args.dir) / 'bus.yaml'}\n  bus run -c {Path(args.dir) / 'bus.yaml'}")
    return 0


def docs(args: argparse.Namespace) -> int:
    from bus.docgen import config_reference

    print(config_reference(AdapterRegistry.from_entry_points()), end="")
    return 0


def docs_openapi(args: argparse.Namespace) -> int:
    """OpenAPI 3.1 of the config's webhook endpoints."""
    from bus.apidocs import openapi_document

    loaded, _ = _load(args.config, AdapterRegistry.from_entry_points())
    base = args.config if args.config.is_dir() else args.config.parent
    print(json.dumps(openapi_document(loaded, base, args.server), indent=2))
    return 0


def docs_asyncapi(args: argparse.Namespace) -> int:
    """AsyncAPI 3.0 of the config's topics and their schemas."""
    from bus.apidocs import asyncapi_document

    loaded, catalog = _load(args.config, AdapterRegistry.from_entry_points())
    schemas = {s.name: json.loads(s.text) for s in catalog}  # type: ignore[attr-defined]
    print(json.dumps(asyncapi_document(loaded, schemas), indent=2))
    return 0


def json_schema(args: argparse.Namespace) -> int:
    from bus.config.json_schema import config_json_schema, into_chart

    schema = config_json_schema(AdapterRegistry.from_entry_points())
    if args.chart is None:
        print(json.dumps(schema, indent=2))
        return 0
    values = json.loads(args.chart.read_text())
    args.chart.write_text(json.dumps(into_chart(values, schema), indent=2) + "\n")
    print(f"{args.chart}: config schema refreshed ({len(schema['$defs'])} definitions)")
    return 0


def schemas(args: argparse.Namespace) -> int:
    from schemas import commands
    from schemas.catalog import BUILTIN_DIR, SchemaCatalog
    from schemas.compatibility import MODES

    if args.mode.upper() not in MODES:
        print(f"bus: unknown --mode {args.mode}; use one of {', '.join(MODES)}", file=sys.stderr)
        return commands.BAD_INPUT
    if args.schemas_command == "diff":
        code, report = commands.diff(Path(args.old), Path(args.new), args.mode)
    elif args.schemas_command == "check" and args.against:
        code, report = commands.check_against_git(Path(args.dir or BUILTIN_DIR), args.against, args.mode)
    else:
        if not args.registry:
            print("bus: give --registry URL (or, for check, --against GIT_REF)", file=sys.stderr)
            return commands.BAD_INPUT
        catalog = SchemaCatalog.load([Path(d) for d in args.schema_dir])
        run = commands.check_against_registry if args.schemas_command == "check" else commands.register_all
        code, report = asyncio.run(run(catalog, args.registry, token=os.environ.get("BUS_OPS_TOKEN")))
    print(report)
    return code


def migrate(args: argparse.Namespace) -> int:
    """``bus migrate plan|run|verify|rollback|runs``; exit 1 when rows would be (or were) refused,
    records differ after a load, or a rollback left records different."""
    from bus.app.migrate.commands import migrate_command

    return migrate_command(args, _load)
