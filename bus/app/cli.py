"""The ``bus`` command.

    bus run -c bus.yaml [--role all|inbound|router|outbound]   start the hub (SIGTERM stops it cleanly)
    bus validate -c bus.yaml                                    check a config; no I/O
    bus health -c bus.yaml [--ready]                            is the hub of this config alive (ready)? exit 0 or 1
    bus adapters list                                           the adapter types installed
    bus adapters describe TYPE [--json-schema]                  one type's config fields (or JSON Schema)
    bus test -c bus.yaml tests.yaml                             route tests, no broker needed
    bus routes explain -c bus.yaml event.json                   which routes match an event, and what they emit
    bus dlq list|show|replay|purge -c bus.yaml [filters]        dead letters
    bus reconcile -c bus.yaml [--target-ids FILE]               the delivery ledger: is every event accounted for?
    bus docs config                                             the configuration reference, from the models
    bus docs json-schema [--chart FILE]                         a JSON Schema of the whole config (editors, the chart)
    bus new [RECIPE DIR]                                        start an integration from a recipe in examples/

Exit codes: 0 success, 1 the hub failed at run time, 2 the configuration is invalid.
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bus.adapter_api import AdapterRegistry
from bus.config.loader import LoadedConfig, load_config
from bus.config.models import HubConfig
from bus.errors import BusError, ConfigError, ConfigIssue
from bus.logs import REDACTOR, configure_logging, secrets_in

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


def _validate(args: argparse.Namespace) -> int:
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


def _run(args: argparse.Namespace) -> int:
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


def _health(args: argparse.Namespace) -> int:
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


def _bootstrap(args: argparse.Namespace, hub: HubConfig) -> str:
    """The Kafka a command uses: ``--bootstrap``; else the one a running hub reports on its ops
    port (``--hub URL``, by default the config's own ops port when the config says embedded: an
    embedded broker's port is known only to its hub); else the config's."""
    if args.bootstrap:
        return str(args.bootstrap)
    url = args.hub
    if url is None and hub.kafka.bootstrap != "embedded":
        return hub.kafka.bootstrap
    if url is None:
        if hub.ops.port == 0:
            raise BusError(
                "the config says embedded, and its ops.port is 0 (a free port picked at start): name the running hub with "
                "--hub http://HOST:OPS_PORT (its start-up log says the port), or its broker with --bootstrap HOST:PORT"
            )
        host = "127.0.0.1" if hub.ops.host in ("0.0.0.0", "::", "") else hub.ops.host  # noqa: S104 - listening everywhere: ask locally
        url = f"http://{host}:{hub.ops.port}"
    import httpx

    try:
        answer = httpx.get(f"{url.rstrip('/')}/readyz", timeout=5).json()
        return str(answer["kafka"]["bootstrap"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise BusError(
            f"cannot ask the hub at {url} for its Kafka address ({exc.__class__.__name__}: {exc}); is it running? "
            "Name it with --hub http://HOST:OPS_PORT, or the broker with --bootstrap HOST:PORT"
        ) from None


def _adapters(args: argparse.Namespace) -> int:
    registry = AdapterRegistry.from_entry_points()
    for name, adapter in registry.items():
        print(f"{name:<16} {adapter.direction:<9} {adapter.summary}")
    return 0


def _describe(args: argparse.Namespace) -> int:

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


def _test(args: argparse.Namespace) -> int:
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


def _explain(args: argparse.Namespace) -> int:

    from bus.app.route_tests import RouteTester, TestInput
    from schemas.catalog import SchemaCatalog

    loaded, catalog = _load(args.config, AdapterRegistry.from_entry_points())
    assert isinstance(catalog, SchemaCatalog)
    document = json.loads(args.event.read_text())
    if args.inbound:
        given = TestInput(inbound=args.inbound, body=document)
    else:
        schema = args.schema or document.get("schema")
        event = document.get("event", document) if not args.schema else document
        if schema is None:
            print('bus: name the event\'s schema with --schema, or give {"schema": ..., "event": {...}}', file=sys.stderr)
            return EXIT_CONFIG
        given = TestInput.model_validate({"schema": schema, "event": event})
    for line in RouteTester(loaded, catalog).explain(given).lines:
        print(line)
    return 0


def _dlq(args: argparse.Namespace) -> int:
    from datetime import datetime

    from bus.deadletters import DeadLetters, Filter
    from bus.kafka.topics import TopicNames

    loaded, _ = _load(args.config, AdapterRegistry.from_entry_points())
    kafka = loaded.hub.kafka
    inbound = [f"_in.{c.name}" for c in loaded.inbound]
    subscribers = [args.subscriber] if args.subscriber else [*(c.name for c in loaded.outbound), "_router", *inbound]
    unknown = set(subscribers) - {c.name for c in loaded.outbound} - {"_router", *inbound}
    if unknown:
        print(
            f"bus: no outbound adapter named {', '.join(sorted(unknown))} "
            "(use _router for the router's dead letters, _in.NAME for what inbound adapter NAME could not read)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if args.dlq_command == "replay" and any(s.startswith("_in.") for s in subscribers):
        print("bus: inbound dead letters hold the source's raw message: fix it at the source and send it again", file=sys.stderr)
        return EXIT_CONFIG
    where = Filter(
        since=datetime.fromisoformat(args.since) if args.since else None,
        until=datetime.fromisoformat(args.until) if args.until else None,
        error_class=args.error_class,
        ids=set(args.ids or ()),
        include_handled=args.all or args.dlq_command == "show",
    )
    store = DeadLetters(kafka, _bootstrap(args, loaded.hub), TopicNames(kafka.topic_prefix))

    async def run() -> int:
        letters = [letter for name in subscribers for letter in await store.find(name, where)]
        if args.dlq_command == "list":
            rows = [letter.summary() for letter in letters]
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                for row in rows:
                    print(
                        f"{row['subscriber']:<12} {row['position']:<10} {row['status']:<9} {row['failed_at']:<25} "
                        f"{row['error_class']:<15} {row['event_id']:<24} {row['error'][:80]}"
                    )
                print(f"{len(rows)} dead letter(s)")
            return 0
        if args.dlq_command == "show":
            for letter in letters:
                shown = {**letter.summary(), "headers": {k: v.decode(errors="replace") for k, v in letter.headers}}
                if letter.subscriber.startswith("_in.") and letter.value is not None:
                    shown["message"] = letter.value.decode(errors="replace")  # the source's own bytes: what to fix there
                print(json.dumps(shown, indent=2, ensure_ascii=False))
            if not letters:
                asked = " ".join(args.ids) or "the filters given"
                print(f"bus: no dead letter of {', '.join(subscribers)} matches {asked}", file=sys.stderr)
            return 0 if letters else EXIT_RUNTIME
        if args.dry_run:
            print(f"would {args.dlq_command} {len(letters)} dead letter(s)")
            return 0
        done = await (store.replay(letters) if args.dlq_command == "replay" else store.purge(letters))
        print(f"{args.dlq_command}d {done} dead letter(s)" if args.dlq_command == "purge" else f"replayed {done} dead letter(s)")
        return 0

    return asyncio.run(run())


def _new(args: argparse.Namespace) -> int:
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
    for path in written:
        print(f"  wrote {path}")
    print(
        f"\nnext: set the variables of {Path(args.dir) / '.env.example'} in the hub's environment (or its secrets), read its README, then"
    )
    print(f"  bus validate -c {Path(args.dir) / 'bus.yaml'}\n  bus run -c {Path(args.dir) / 'bus.yaml'}")
    return 0


def _reconcile(args: argparse.Namespace) -> int:

    from bus.expr.functions import parse_duration
    from bus.kafka.topics import TopicNames
    from bus.ledger import Reconciler, render

    loaded, _ = _load(args.config, AdapterRegistry.from_entry_points())
    kafka = loaded.hub.kafka
    names = [c.name for c in loaded.outbound]
    subscribers = args.subscriber or names
    unknown = set(subscribers) - set(names)
    if unknown:
        print(f"bus: no outbound adapter named {', '.join(sorted(unknown))}", file=sys.stderr)
        return EXIT_CONFIG
    window = parse_duration(args.window)
    if window is None or window.total_seconds() < 1:
        print(f"bus: --window {args.window!r} is not a duration of at least 1s (e.g. 15m, 1h, 1d)", file=sys.stderr)
        return EXIT_CONFIG
    target_ids: set[str] | None = None
    if args.target_ids:
        if len(subscribers) != 1:
            print("bus: --target-ids compares one subscriber: add --subscriber NAME", file=sys.stderr)
            return EXIT_CONFIG
        try:
            text = args.target_ids.read_text()
        except OSError as exc:
            print(f"bus: cannot read --target-ids: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        target_ids = {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}
    reconciler = Reconciler(kafka, _bootstrap(args, loaded.hub), TopicNames(kafka.topic_prefix))

    async def run() -> int:
        balances = [await reconciler.balance(name, window_s=int(window.total_seconds()), target_ids=target_ids) for name in subscribers]
        if args.json:
            print(json.dumps([b.as_json() for b in balances], indent=2))
        else:
            print("\n\n".join(render(b, show_ids=args.show_ids) for b in balances))
        return 0 if all(b.ok for b in balances) else EXIT_RUNTIME

    return asyncio.run(run())


def _docs(args: argparse.Namespace) -> int:
    from bus.docgen import config_reference

    print(config_reference(AdapterRegistry.from_entry_points()), end="")
    return 0


def _json_schema(args: argparse.Namespace) -> int:
    from bus.config.json_schema import config_json_schema, into_chart

    schema = config_json_schema(AdapterRegistry.from_entry_points())
    if args.chart is None:
        print(json.dumps(schema, indent=2))
        return 0
    values = json.loads(args.chart.read_text())
    args.chart.write_text(json.dumps(into_chart(values, schema), indent=2) + "\n")
    print(f"{args.chart}: config schema refreshed ({len(schema['$defs'])} definitions)")
    return 0


def _schemas(args: argparse.Namespace) -> int:
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bus", description="The integration hub.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument(
        "--log-format",
        default=os.environ.get("BUS_LOG_FORMAT", "text"),
        choices=["text", "json"],
        help="text for a terminal, json (one object per line) for a log pipeline; default $BUS_LOG_FORMAT or text",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start the hub")
    run.add_argument("-c", "--config", type=Path, required=True, help="a YAML file or a folder of them")
    run.add_argument("--role", default="all", choices=["all", "inbound", "router", "outbound"], help="which part to run (default all)")
    run.set_defaults(func=_run)

    validate = sub.add_parser("validate", help="check a config without starting anything")
    validate.add_argument("-c", "--config", type=Path, required=True)
    validate.add_argument("--strict", action="store_true", help="refuse warnings too, and mapping paths no payload shape checks")
    validate.add_argument("--json", action="store_true", help="errors and warnings as JSON (for tools and editors)")
    validate.set_defaults(func=_validate)

    health = sub.add_parser("health", help="ask a running hub (its config names the ops port) whether it is alive: exit 0 or 1")
    health.add_argument("-c", "--config", type=Path, required=True)
    health.add_argument("--ready", action="store_true", help="ask /readyz (serving) instead of /healthz (alive)")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer (default 3)")
    health.set_defaults(func=_health)

    adapters = sub.add_parser("adapters", help="adapter catalogue")
    adapters_sub = adapters.add_subparsers(dest="adapters_command", required=True)
    adapters_sub.add_parser("list", help="list installed adapter types").set_defaults(func=_adapters)
    describe = adapters_sub.add_parser("describe", help="an adapter type's config: every field, its default and meaning")
    describe.add_argument("type", help="the type: name, e.g. amqp")
    describe.add_argument("--direction", choices=["inbound", "outbound"], help="only this side of a family")
    describe.add_argument("--json-schema", action="store_true", help="print the config's JSON Schema (for editors)")
    describe.set_defaults(func=_describe)
    test = sub.add_parser("test", help="run route tests (YAML) without a broker")
    test.add_argument("-c", "--config", type=Path, required=True)
    test.add_argument("tests", type=Path, nargs="+", help="YAML files with a tests: list")
    test.set_defaults(func=_test)

    routes = sub.add_parser("routes", help="inspect routes")
    routes_sub = routes.add_subparsers(dest="routes_command", required=True)
    explain = routes_sub.add_parser("explain", help="which routes match an event and what each would emit")
    explain.add_argument("event", type=Path, help='JSON file: {"schema": "Payment", "event": {...}}, or the event with --schema')
    explain.add_argument("-c", "--config", type=Path, required=True)
    explain.add_argument("--schema", help="the event's canonical schema")
    explain.add_argument("--inbound", help="treat the file as a body received by this inbound adapter")
    explain.set_defaults(func=_explain)

    dlq = sub.add_parser("dlq", help="dead letters: list, show, replay, purge")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    for name, text in (
        ("list", "list dead letters"),
        ("show", "show dead letters in full"),
        ("replay", "send dead letters back"),
        ("purge", "mark dead letters as handled"),
    ):
        cmd = dlq_sub.add_parser(name, help=text)
        cmd.add_argument("-c", "--config", type=Path, required=True)
        cmd.add_argument("--bootstrap", help="Kafka to use instead of the config's")
        cmd.add_argument("--hub", help="a running hub's ops URL, to use its Kafka (default with an embedded broker: the config's ops port)")
        cmd.add_argument("--subscriber", help="an outbound adapter name, _router, or _in.INBOUND; default all")
        cmd.add_argument("--since", help="failed at or after (ISO 8601)")
        cmd.add_argument("--until", help="failed before (ISO 8601)")
        cmd.add_argument("--error-class", help="e.g. PermanentError, RetryableError, UnknownSchemaId")
        cmd.add_argument("--all", action="store_true", help="include letters already replayed or purged")
        cmd.add_argument("ids", nargs="*", help="event ids or partition/offset positions")
        if name == "list":
            cmd.add_argument("--json", action="store_true")
        if name in ("replay", "purge"):
            cmd.add_argument("--dry-run", action="store_true")
        cmd.set_defaults(func=_dlq)

    reconcile = sub.add_parser(
        "reconcile",
        help="balance of every subscriber: entered = delivered + dead-lettered + in flight; exit 1 if an event is unaccounted for",
    )
    reconcile.add_argument("-c", "--config", type=Path, required=True)
    reconcile.add_argument("--bootstrap", help="Kafka to use instead of the config's")
    reconcile.add_argument(
        "--hub", help="a running hub's ops URL, to use its Kafka (default with an embedded broker: the config's ops port)"
    )
    reconcile.add_argument("--subscriber", action="append", help="an outbound adapter name (repeatable); default all")
    reconcile.add_argument("--window", default="1h", help="checksum window of event time (default 1h)")
    reconcile.add_argument(
        "--target-ids", type=Path, help="a file of the event ids the target holds, one per line: compared with what was delivered"
    )
    reconcile.add_argument("--show-ids", type=int, default=20, help="how many ids to print per list (default 20)")
    reconcile.add_argument("--json", action="store_true")
    reconcile.set_defaults(func=_reconcile)

    schemas = sub.add_parser("schemas", help="schema evolution: check (a CI gate), register, diff")
    schemas_sub = schemas.add_subparsers(dest="schemas_command", required=True)
    check = schemas_sub.add_parser("check", help="may the catalog's schemas follow what the registry (or a git ref) has?")
    check.add_argument("--registry", help="Schema Registry URL (its compatibility levels decide)")
    check.add_argument("--against", metavar="GIT_REF", help="compare with the schema files at this git ref instead (no registry)")
    check.add_argument("--dir", help="with --against: the folder of .avsc files (default: the built-in canonical schemas)")
    register = schemas_sub.add_parser("register", help="register the catalog's schemas; refusals say why")
    register.add_argument(
        "--registry", required=True, help="Schema Registry URL (the hub's embedded one takes a write token from $BUS_OPS_TOKEN)"
    )
    for cmd in (check, register):
        cmd.add_argument("--schema-dir", action="append", default=[], help="extra folder of .avsc files (repeatable)")
    diff = schemas_sub.add_parser("diff", help="what breaks between two .avsc files, both ways")
    diff.add_argument("old")
    diff.add_argument("new")
    for cmd in (check, register, diff):
        cmd.add_argument("--mode", default="BACKWARD", help="compatibility mode for diff and check --against (default BACKWARD)")
        cmd.set_defaults(func=_schemas)

    new = sub.add_parser("new", help="start an integration from a recipe (without arguments: list them)")
    new.add_argument("recipe", nargs="?", help="recipe name, e.g. stripe-payments-to-erp-ledger")
    new.add_argument("dir", nargs="?", help="a new (or empty) folder for the copy")
    new.set_defaults(func=_new)

    docs = sub.add_parser("docs", help="generated documentation")
    docs_sub = docs.add_subparsers(dest="docs_command", required=True)
    docs_sub.add_parser("config", help="the configuration reference (docs/configuration.md)").set_defaults(func=_docs)
    schema = docs_sub.add_parser("json-schema", help="a JSON Schema of the whole config, for editors and the Helm chart")
    schema.add_argument("--chart", type=Path, help="write it into this values.schema.json (the chart's copy) instead of printing it")
    schema.set_defaults(func=_json_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # The reader went away (`bus docs json-schema | head`): not an error of ours. Point stdout
        # at nothing so the interpreter's final flush does not complain a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    except BusError as exc:
        print(f"bus: {exc}", file=sys.stderr)
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
