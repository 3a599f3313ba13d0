"""The ``bus`` command.

    bus run -c bus.yaml [--role all|inbound|router|outbound]   start the hub (SIGTERM stops it cleanly)
    bus validate -c bus.yaml                                    check a config; no I/O
    bus health -c bus.yaml [--ready]                            is the hub of this config alive (ready)? exit 0 or 1
    bus status --hub URL [--watch S] [--json]                   a running hub's parts and their states (management API)
    bus pause|resume subscriber|inbound NAME --hub URL          stop or restart a subscriber's deliveries or a source's reads
    bus adapters list                                           the adapter types installed
    bus adapters describe TYPE [--json-schema]                  one type's config fields (or JSON Schema)
    bus test -c bus.yaml tests.yaml                             route tests, no broker needed
    bus routes explain -c bus.yaml event.json                   which routes match an event, and what they emit
    bus dlq list|show|replay|purge -c bus.yaml [filters]        dead letters (or --hub URL: through the management API)
    bus redeliver SUBSCRIBER --since TIME -c bus.yaml           send a subscriber again what it was delivered
    bus backfill SUBSCRIBER --since TIME --hub URL              give a subscriber what was routed before it joined
    bus migrate plan NAME -c bus.yaml                           a migration's dry run: what it would write, what refuse
    bus migrate run NAME -c bus.yaml                            the load: resumable, checked by reading back, with a report
    bus migrate rollback RUN -c bus.yaml                        put the targets back as they were before a run
    bus migrate cutover RUN -c bus.yaml                         the live inbound (then:) takes over where the run began
    bus positions list|reset|adopt -c bus.yaml                  where each poller reads from; forget it, or keep it across a filter change
    bus reconcile -c bus.yaml [--target-ids FILE]               the delivery ledger: is every event accounted for? (or --hub URL)
    bus auth login NAME -c bus.yaml [--paste]                    give the hub an OAuth2 connection's consent (PKCE); tokens stored
    bus auth status -c bus.yaml | bus auth key                  the connections' stored tokens | a new credentials.key
    bus docs config                                             the configuration reference, from the models
    bus docs json-schema [--chart FILE]                         a JSON Schema of the whole config (editors, the chart)
    bus docs openapi -c bus.yaml [--server URL]                 OpenAPI 3.1 of the webhook endpoints (also /api/v1/webhooks.openapi.json)
    bus docs asyncapi -c bus.yaml                               AsyncAPI 3.0 of the topics and schemas (also /api/v1/asyncapi.json)
    bus new [RECIPE DIR]                                        start an integration from a recipe in examples/

Exit codes: 0 success, 1 the hub failed at run time, 2 the configuration is invalid.
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from bus.app import auth_commands, commands, kafka_commands
from bus.app.commands import EXIT_CONFIG, EXIT_RUNTIME
from bus.app.pause_commands import steer
from bus.app.status import status
from bus.errors import BusError, ConfigError
from bus.logs import configure_logging
from bus.numbers import whole_number


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
    run.set_defaults(func=commands.run)

    validate = sub.add_parser("validate", help="check a config without starting anything")
    validate.add_argument("-c", "--config", type=Path, required=True)
    validate.add_argument("--strict", action="store_true", help="refuse warnings too, and mapping paths no payload shape checks")
    validate.add_argument("--json", action="store_true", help="errors and warnings as JSON (for tools and editors)")
    validate.set_defaults(func=commands.validate)

    health = sub.add_parser("health", help="ask a running hub (its config names the ops port) whether it is alive: exit 0 or 1")
    health.add_argument("-c", "--config", type=Path, required=True)
    health.add_argument("--ready", action="store_true", help="ask /readyz (serving) instead of /healthz (alive)")
    health.add_argument("--timeout", type=_seconds, default=3.0, help="seconds to wait for the answer (default 3)")
    health.set_defaults(func=commands.health)

    shown = sub.add_parser("status", help="a running hub's topology and each part's state, through its management API")
    shown.add_argument("--hub", required=True, help="the hub's ops address, e.g. http://127.0.0.1:9090")
    shown.add_argument("--token-file", type=Path, help="a file holding the API token (default: $BUS_OPS_TOKEN)")
    shown.add_argument("--watch", type=_seconds, metavar="SECONDS", help="show it again every SECONDS, until Ctrl-C")
    shown.add_argument("--json", action="store_true", help="the API's answer as it is")
    shown.add_argument("--timeout", type=_seconds, default=10.0, help="seconds to wait for an answer (default 10)")
    shown.set_defaults(func=status)

    for verb, text in (
        ("pause", "stop delivering to a subscriber, or reading an inbound adapter's source, in every process of a running hub"),
        ("resume", "deliver to a subscriber, or read an inbound adapter's source, again from where it stopped"),
    ):
        steered = sub.add_parser(verb, help=text)
        steered.add_argument("kind", choices=["subscriber", "inbound"], help="a subscriber (outbound adapter) or an inbound adapter")
        steered.add_argument("name", help="its name in the config")
        steered.add_argument("--hub", required=True, help="the hub's ops address, e.g. http://127.0.0.1:9090")
        steered.add_argument("--token-file", type=Path, help="a file holding a write token (default: $BUS_OPS_TOKEN)")
        if verb == "pause":
            steered.add_argument("--reason", help="why, shown with the pause in bus status and the console (one line)")
        steered.add_argument(
            "--wait", type=_seconds_or_none, default=15.0, help="seconds to wait until the hub shows it obeyed (default 15; 0: do not wait)"
        )
        steered.add_argument("--timeout", type=_seconds, default=10.0, help="seconds to wait for each answer (default 10)")
        steered.set_defaults(func=steer, steer_command=verb, reason=None)

    adapters = sub.add_parser("adapters", help="adapter catalogue")
    adapters_sub = adapters.add_subparsers(dest="adapters_command", required=True)
    adapters_sub.add_parser("list", help="list installed adapter types").set_defaults(func=commands.adapters)
    describe = adapters_sub.add_parser("describe", help="an adapter type's config: every field, its default and meaning")
    describe.add_argument("type", help="the type: name, e.g. amqp")
    describe.add_argument("--direction", choices=["inbound", "outbound"], help="only this side of a family")
    describe.add_argument("--json-schema", action="store_true", help="print the config's JSON Schema (for editors)")
    describe.set_defaults(func=commands.describe)
    test = sub.add_parser("test", help="run route tests (YAML) without a broker")
    test.add_argument("-c", "--config", type=Path, required=True)
    test.add_argument("tests", type=Path, nargs="+", help="YAML files with a tests: list")
    test.set_defaults(func=commands.test)

    routes = sub.add_parser("routes", help="inspect routes")
    routes_sub = routes.add_subparsers(dest="routes_command", required=True)
    explain = routes_sub.add_parser("explain", help="which routes match an event and what each would emit")
    explain.add_argument("event", type=Path, help='JSON file: {"schema": "Payment", "event": {...}}, or the event with --schema')
    explain.add_argument("-c", "--config", type=Path, required=True)
    explain.add_argument("--schema", help="the event's canonical schema")
    explain.add_argument("--inbound", help="treat the file as a body received by this inbound adapter")
    explain.set_defaults(func=commands.explain)

    dlq = sub.add_parser("dlq", help="dead letters: list, show, replay, purge")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    for name, text in (
        ("list", "list dead letters"),
        ("show", "show dead letters in full"),
        ("replay", "send dead letters back"),
        ("purge", "mark dead letters as handled"),
    ):
        cmd = dlq_sub.add_parser(name, help=text)
        cmd.add_argument("-c", "--config", type=Path, help="the hub's config: go straight to its Kafka")
        cmd.add_argument("--bootstrap", help="Kafka to use instead of the config's")
        cmd.add_argument("--hub", help="a running hub's ops URL, e.g. http://127.0.0.1:9090: go through its management API instead")
        cmd.add_argument("--token-file", type=Path, help="with --hub: a file holding the API token (default: $BUS_OPS_TOKEN)")
        cmd.add_argument("--subscriber", help="an outbound adapter name, _router, or _in.INBOUND; default all")
        cmd.add_argument("--since", type=_iso_time, help="failed at or after (ISO 8601; without a zone, UTC)")
        cmd.add_argument("--until", type=_iso_time, help="failed before (ISO 8601)")
        cmd.add_argument("--error-class", help="e.g. PermanentError, RetryableError, UnknownSchemaId")
        cmd.add_argument("--all", action="store_true", help="include letters already replayed or purged")
        cmd.add_argument("ids", nargs="*", help="event ids or partition/offset positions")
        if name == "list":
            cmd.add_argument("--json", action="store_true")
        if name in ("replay", "purge"):
            cmd.add_argument("--dry-run", action="store_true")
        if name == "replay":
            cmd.add_argument(
                "--include-superseded",
                action="store_true",
                help="also replay letters that a later event of the same key came after (they would put older data over newer)",
            )
        cmd.set_defaults(func=kafka_commands.dlq)

    redeliver = sub.add_parser(
        "redeliver",
        help="send a subscriber again what it was delivered since a time (a target restored from a backup): "
        "copies at the end of its delivery topic, delivered by the running hub",
    )
    _window_arguments(
        redeliver,
        reached="its delivery topic",
        dry="say what would be sent; send nothing",
        superseded="send also events that a later event of the same key came after (they would put older data over newer)",
    )
    redeliver.add_argument("-c", "--config", type=Path, help="the hub's config: go straight to its Kafka")
    redeliver.add_argument("--bootstrap", help="Kafka to use instead of the config's")
    redeliver.add_argument("--hub", help="a running hub's ops URL, e.g. http://127.0.0.1:9090: go through its management API instead")
    redeliver.add_argument("--token-file", type=Path, help="with --hub: a file holding the API token (default: $BUS_OPS_TOKEN)")
    redeliver.set_defaults(func=kafka_commands.redeliver)

    backfill = sub.add_parser(
        "backfill",
        help="give a subscriber the events its routes give it from what reached the canonical topics since a time (a system "
        "that just joined): written at the end of its delivery topic, delivered by the running hub",
    )
    _window_arguments(
        backfill,
        reached="the canonical topics",
        dry="say what would be written; write nothing",
        superseded="write also events of a key whose later event the subscriber was delivered (they would put older data over newer)",
    )
    backfill.add_argument(
        "--hub", required=True, help="the running hub's ops URL, e.g. http://127.0.0.1:9090 (its routes, schemas and tables are used)"
    )
    backfill.add_argument("--token-file", type=Path, help="a file holding the API token (default: $BUS_OPS_TOKEN)")
    backfill.set_defaults(func=kafka_commands.backfill)

    reconcile = sub.add_parser(
        "reconcile",
        help="balance of every subscriber: entered = delivered + dead-lettered + in flight; exit 1 if an event is unaccounted for",
    )
    reconcile.add_argument("-c", "--config", type=Path, help="the hub's config: go straight to its Kafka")
    reconcile.add_argument("--bootstrap", help="Kafka to use instead of the config's")
    reconcile.add_argument("--hub", help="a running hub's ops URL, e.g. http://127.0.0.1:9090: go through its management API instead")
    reconcile.add_argument("--token-file", type=Path, help="with --hub: a file holding the API token (default: $BUS_OPS_TOKEN)")
    reconcile.add_argument("--subscriber", action="append", help="an outbound adapter name (repeatable); default all")
    reconcile.add_argument("--window", default="1h", help="checksum window of event time (default 1h)")
    reconcile.add_argument(
        "--target-ids", type=Path, help="a file of the event ids the target holds, one per line: compared with what was delivered"
    )
    reconcile.add_argument("--show-ids", type=_count, default=20, help="how many ids to print per list (default 20)")
    reconcile.add_argument("--json", action="store_true")
    reconcile.set_defaults(func=kafka_commands.reconcile)

    positions = sub.add_parser(
        "positions", help="where each poller reads from (its saved position), and keeping or forgetting it: list, reset, adopt"
    )
    positions_sub = positions.add_subparsers(dest="positions_command", required=True)
    listed = positions_sub.add_parser("list", help="each inbound's saved position, and whether it is for what the config reads now")
    listed.add_argument("--json", action="store_true")
    forget = positions_sub.add_parser("reset", help="forget an inbound's position: its source is read again from the start")
    keep = positions_sub.add_parser(
        "adopt", help="keep an inbound's position for what the config reads now (its filter changed on purpose)"
    )
    keep.add_argument("--force", action="store_true", help="also when more than the filter changed (the same source under another name)")
    for cmd in (forget, keep):
        cmd.add_argument("name", help="the inbound adapter's name")
        cmd.add_argument("--stopped", action="store_true", help="no process of the hub runs: go on although the inbound is not paused")
    for cmd in (listed, forget, keep):
        cmd.add_argument("-c", "--config", type=Path, required=True, help="the hub's config")
        cmd.add_argument("--bootstrap", help="Kafka to use instead of the config's")
        cmd.add_argument("--hub", help="or the running hub whose (embedded) broker to use: http://HOST:OPS_PORT")
        cmd.set_defaults(func=kafka_commands.positions)

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
        cmd.set_defaults(func=commands.schemas)

    migrate = sub.add_parser("migrate", help="move what a source already holds through the routes: plan, run, verify, rollback, runs")
    migrate_sub = migrate.add_subparsers(dest="migrate_command", required=True)
    plan = migrate_sub.add_parser(
        "plan", help="read, map and route every row without writing anything: what would be written, what refused"
    )
    plan.add_argument("name", help="the migration's name (migrations: in the config)")
    plan.add_argument("-c", "--config", type=Path, required=True)
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=commands.migrate)
    run = migrate_sub.add_parser("run", help="load: resumable after a crash, read back and checked, with a report")
    run.add_argument("name", help="the migration's name")
    run.add_argument("--without-rollback", action="store_true", help="start although some target cannot be rolled back")
    run.add_argument("--again", action="store_true", help="import a file although a finished run imported the same bytes")
    run.add_argument("--metrics-port", type=_port, help="serve the run's Prometheus metrics on this port")
    verify = migrate_sub.add_parser("verify", help="read every record of a run back again and rewrite its report")
    verify.add_argument("run", help="the run's id (bus migrate runs)")
    rollback = migrate_sub.add_parser("rollback", help="put the targets back as they were before a run")
    rollback.add_argument("run", help="the run's id (bus migrate runs)")
    rollback.add_argument("--force", action="store_true", help="although a later run of the same migration was not rolled back")
    runs = migrate_sub.add_parser("runs", help="the runs in the journal, newest last")
    runs.add_argument("name", nargs="?", help="only this migration's")
    cutover = migrate_sub.add_parser("cutover", help="hand over to the live inbound (then:) from where the run started reading")
    cutover.add_argument("run", help="a finished run's id")
    cutover.add_argument("--bootstrap", help="the Kafka to write the inbound's position to (default: the config's)")
    cutover.add_argument("--hub", help="or the running hub whose (embedded) broker to use: http://HOST:OPS_PORT")
    cutover.add_argument("--force", action="store_true", help="replace a position the inbound already has")
    for cmd in (run, verify, rollback, runs, cutover):
        cmd.add_argument("-c", "--config", type=Path, required=True)
        cmd.add_argument(
            "--state", type=Path, help="the journal and reports folder (default: .bus-migrate beside the config; $BUS_MIGRATE_STATE)"
        )
        cmd.add_argument("--json", action="store_true")
        cmd.set_defaults(func=commands.migrate)

    new = sub.add_parser("new", help="start an integration from a recipe (without arguments: list them)")
    new.add_argument("recipe", nargs="?", help="recipe name, e.g. stripe-payments-to-erp-ledger")
    new.add_argument("dir", nargs="?", help="a new (or empty) folder for the copy")
    new.set_defaults(func=commands.new)

    auth = sub.add_parser("auth", help="OAuth2 connections: give the hub a consent once (authorization code with PKCE)")
    auth_sub = auth.add_subparsers(dest="auth_command", required=True)
    auth_sub.add_parser("key", help="print a new credentials.key").set_defaults(func=auth_commands.key)
    for name, text in (
        ("login", "run the consent flow of a connection and store its tokens"),
        ("status", "the stored tokens of every connection"),
    ):
        cmd = auth_sub.add_parser(name, help=text)
        if name == "login":
            cmd.add_argument("name", help="the connection's name (connections[].name)")
            cmd.add_argument(
                "--paste", action="store_true", help="type in the code (or the redirected URL) instead of receiving the redirect"
            )
            cmd.add_argument("--timeout", type=_seconds, default=600, help="seconds to wait for the provider's redirect (default 600)")
        cmd.add_argument("-c", "--config", type=Path, default=Path("bus.yaml"))
        cmd.add_argument("--bootstrap", help="Kafka to use instead of the config's")
        cmd.add_argument("--hub", help="a running hub's ops URL, to ask for its embedded broker's address")
        cmd.set_defaults(func=auth_commands.login if name == "login" else auth_commands.status)

    docs = sub.add_parser("docs", help="generated documentation")
    docs_sub = docs.add_subparsers(dest="docs_command", required=True)
    docs_sub.add_parser("config", help="the configuration reference (docs/configuration.md)").set_defaults(func=commands.docs)
    schema = docs_sub.add_parser("json-schema", help="a JSON Schema of the whole config, for editors and the Helm chart")
    schema.add_argument("--chart", type=Path, help="write it into this values.schema.json (the chart's copy) instead of printing it")
    schema.set_defaults(func=commands.json_schema)
    webhooks = docs_sub.add_parser("openapi", help="an OpenAPI 3.1 document of the config's webhook endpoints, for the senders")
    webhooks.add_argument("-c", "--config", type=Path, default=Path("bus.yaml"))
    webhooks.add_argument("--server", help="the public base URL the senders use, e.g. https://hooks.example.com")
    webhooks.set_defaults(func=commands.docs_openapi)
    topics = docs_sub.add_parser("asyncapi", help="an AsyncAPI 3.0 document of the config's topics and their Avro schemas")
    topics.add_argument("-c", "--config", type=Path, default=Path("bus.yaml"))
    topics.set_defaults(func=commands.docs_asyncapi)
    return parser


_MOST_SECONDS = 7 * 86_400  # a week: any wait a command makes, and far below what a socket's timer can hold


def _seconds(text: str) -> float:
    """A duration in seconds, more than 0 and at most a week: "nan", "-1" or 1e23 reached a
    socket's timeout as a traceback."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (0 < seconds <= _MOST_SECONDS):  # NaN compares false
        raise argparse.ArgumentTypeError(f"a number of seconds above 0 and at most {_MOST_SECONDS:,} (a week), not {text!r}")
    return seconds


def _seconds_or_none(text: str) -> float:
    """The same, or 0 for none."""
    with contextlib.suppress(ValueError):
        if float(text) == 0:
            return 0.0
    return _seconds(text)


def _count(text: str) -> int:
    number = whole_number(text.strip())
    if number is None:
        raise argparse.ArgumentTypeError(f"a whole number from 0, not {text!r}")
    return number


def _port(text: str) -> int:
    number = whole_number(text.strip(), 65535)
    if not number:
        raise argparse.ArgumentTypeError(f"a port from 1 to 65535, not {text!r}")
    return number


def _iso_time(text: str) -> str:
    """A ``--since``/``--until`` checked as it is typed (the text is passed on as given: to a hub's
    API, or read as a time here): "garbage" ended in a traceback once the config had loaded."""
    try:
        datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"an ISO 8601 time, e.g. 2026-12-01T14:00:00+00:00, not {text!r} ({exc})") from None
    return text


def _window_arguments(parser: argparse.ArgumentParser, *, reached: str, dry: str, superseded: str) -> None:
    """What `bus redeliver` and `bus backfill` both take: a subscriber and a window of time (and keys) on ``reached``."""
    parser.add_argument("subscriber", help="the outbound adapter's name")
    parser.add_argument("--since", required=True, type=_iso_time, help=f"reached {reached} at or after (ISO 8601; without a zone, UTC)")
    parser.add_argument("--until", type=_iso_time, help="and before (default: now)")
    parser.add_argument("--key", action="append", help="only the events of this key (repeatable): a customer's, an order's")
    parser.add_argument("--dry-run", action="store_true", help=dry)
    parser.add_argument("--include-superseded", action="store_true", help=superseded)
    parser.add_argument("--json", action="store_true")


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
    except Exception as exc:
        from aiokafka.errors import KafkaError  # here, not at the top: most commands never touch Kafka

        if not isinstance(exc, KafkaError):
            raise
        # `bus dlq`, `bus reconcile`, `bus redeliver` straight to a Kafka that is down: said, not a traceback.
        print(f"bus: Kafka did not answer ({exc}): is it running, and is kafka.bootstrap (or --bootstrap) its address?", file=sys.stderr)
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
