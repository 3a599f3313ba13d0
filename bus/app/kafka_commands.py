"""The ``bus`` subcommands that read the hub's topics: ``bus dlq`` and ``bus reconcile``.

Straight to Kafka with the config (``-c``), or through a running hub's management API with
``--hub URL`` (``bus.app.api_client``): the same operations, the same output."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from bus.adapter_api import AdapterRegistry
from bus.app.api_client import ApiClient, ApiRefused, token_from
from bus.app.commands import EXIT_CONFIG, EXIT_RUNTIME, _load
from bus.app.kafka_address import kafka_bootstrap as _bootstrap
from bus.documents import FileTooLarge, read_at_most

_PROGRESS_EVERY_S = 1.0  # how often a redelivery or backfill through the API is asked how far it is

MAX_TARGET_IDS_BYTES = 512_000_000  # some ten million event ids


def _print_letters(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        print(
            f"{row['subscriber']:<12} {row['position']:<10} {row['status']:<9} {row['failed_at']:<25} "
            f"{row['error_class']:<15} {row['event_id']:<24} {row['error'][:80]}"
        )
    print(f"{len(rows)} dead letter(s)")


def _dlq_through_api(args: argparse.Namespace) -> int:
    """``bus dlq`` with ``--hub``: the management API does the work, on the hub's own Kafka."""
    client = ApiClient(args.hub, token_from(args.token_file))
    command = args.dlq_command
    if command in ("list", "show"):
        rows = client.dead_letters(
            subscriber=args.subscriber,
            ids=list(args.ids or ()),
            since=args.since,
            until=args.until,
            error_class=args.error_class,
            all_=args.all or command == "show",
        )
        if command == "list":
            _print_letters(rows, args.json)
            return 0
        for row in rows:
            print(json.dumps(row, indent=2, ensure_ascii=False))
        if not rows:
            print(f"bus: no dead letter matches {' '.join(args.ids) or 'the filters given'}", file=sys.stderr)
        return 0 if rows else EXIT_RUNTIME
    body = {
        "subscriber": args.subscriber,
        "ids": list(args.ids or ()),
        "since": args.since,
        "until": args.until,
        "error_class": args.error_class,
        "all": args.all,
        "dry_run": args.dry_run,
    }
    done = client.post(f"/dead-letters/{command}", {k: v for k, v in body.items() if v not in (None, [])})
    if done["dry_run"]:
        print(f"would {command} {done['matched']} dead letter(s)")
    else:
        print(f"{command}d {done['done']} dead letter(s)" if command == "purge" else f"replayed {done['done']} dead letter(s)")
    return 0


def _no_config(args: argparse.Namespace) -> int | None:
    """Straight to Kafka needs the config: say so when neither it nor --hub was given."""
    if args.config is None and args.hub is None:
        print("bus: give the config (-c bus.yaml) to go straight to Kafka, or --hub URL to go through a running hub", file=sys.stderr)
        return EXIT_CONFIG
    return None


def dlq(args: argparse.Namespace) -> int:
    from datetime import datetime

    from bus.deadletters import DeadLetters, Filter
    from bus.kafka.topics import TopicNames

    if (refused := _no_config(args)) is not None:
        return refused
    if args.hub is not None:
        return _dlq_through_api(args)
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
        if args.dlq_command in ("replay", "purge"):
            return await act()
        if args.dlq_command == "list":  # summaries only: the messages are not shown, and can be a day of a target's events
            found: dict[str, list[tuple[int, int, dict[str, Any]]]] = {name: [] for name in subscribers}
            async for batch in store.scan(subscribers, where):
                found[batch[0].subscriber] += [(letter.partition, letter.offset, letter.summary()) for letter in batch]
            _print_letters([summary for name in subscribers for *_, summary in sorted(found[name], key=lambda x: x[:2])], args.json)
            return 0
        letters = await store.find_all(subscribers, where)  # show: the letters asked for, messages and all
        for letter in letters:
            shown = {**letter.summary(), "headers": {k: v.decode(errors="replace") for k, v in letter.headers}}
            if letter.subscriber.startswith("_in.") and letter.value is not None:
                shown["message"] = letter.value.decode(errors="replace")  # the source's own bytes: what to fix there
            print(json.dumps(shown, indent=2, ensure_ascii=False))
        if not letters:
            asked = " ".join(args.ids) or "the filters given"
            print(f"bus: no dead letter of {', '.join(subscribers)} matches {asked}", file=sys.stderr)
        return 0 if letters else EXIT_RUNTIME

    async def act() -> int:
        """Replay or purge as the topics stream, 1,000 letters at a time: not all of them in memory."""
        matched, done, chunk = 0, 0, []
        async for batch in store.scan(subscribers, where):
            matched += len(batch)
            if not args.dry_run:
                chunk += batch
                if len(chunk) >= 1000:
                    done += await handle(chunk)
                    chunk = []
        if args.dry_run:
            print(f"would {args.dlq_command} {matched} dead letter(s)")
            return 0
        if chunk:
            done += await handle(chunk)
        print(f"{args.dlq_command}d {done} dead letter(s)" if args.dlq_command == "purge" else f"replayed {done} dead letter(s)")
        superseded, code = store.superseded, 0
        if superseded:
            shown = "; ".join(f"{letter.event_id or letter.position} (after it: {newer})" for letter, newer in superseded[:20])
            print(
                f"bus: {len(superseded)} not replayed: a later event of the same key came after each, and replayed now they would "
                f"put older data over newer: {shown}{' ...' if len(superseded) > 20 else ''}; "
                "replay them anyway with --include-superseded, or purge them",
                file=sys.stderr,
            )
            code = EXIT_RUNTIME  # not all that was asked for was done: a script must not take it for done
        if store.unsendable:
            shown = "; ".join(f"{letter.event_id or letter.position}: {why}" for letter, why in store.unsendable[:20])
            print(
                f"bus: {len(store.unsendable)} cannot be replayed: {shown}{' ...' if len(store.unsendable) > 20 else ''}", file=sys.stderr
            )
            code = EXIT_RUNTIME
        return code

    async def handle(chunk: list[Any]) -> int:
        if args.dlq_command == "purge":
            return await store.purge(chunk)
        return await store.replay(chunk, include_superseded=args.include_superseded)

    return asyncio.run(run())


def reconcile(args: argparse.Namespace) -> int:

    from bus.expr.functions import parse_duration
    from bus.kafka.topics import TopicNames
    from bus.ledger import Reconciler, render

    if (refused := _no_config(args)) is not None:
        return refused
    try:
        window = parse_duration(args.window)
    except ValueError:  # "forever": a traceback, not the words below
        window = None
    if window is None or window.total_seconds() < 1:
        print(f"bus: --window {args.window!r} is not a duration of at least 1s (e.g. 15m, 1h, 1d)", file=sys.stderr)
        return EXIT_CONFIG
    if args.hub is not None:
        if args.target_ids:
            print("bus: --target-ids reads a file here: compare straight against Kafka (-c, without --hub)", file=sys.stderr)
            return EXIT_CONFIG
        client = ApiClient(args.hub, token_from(args.token_file))
        found = [
            balance
            for name in args.subscriber or [None]
            for balance in client.get("/reconcile", subscriber=name, window_s=int(window.total_seconds()))
        ]
        if args.json:
            print(json.dumps(found, indent=2))
        else:
            print("\n\n".join(render(balance_of(b), show_ids=args.show_ids) for b in found))
        return 0 if all(b["ok"] for b in found) else EXIT_RUNTIME
    loaded, _ = _load(args.config, AdapterRegistry.from_entry_points())
    kafka = loaded.hub.kafka
    names = [c.name for c in loaded.outbound]
    subscribers = args.subscriber or names
    unknown = set(subscribers) - set(names)
    if unknown:
        print(f"bus: no outbound adapter named {', '.join(sorted(unknown))}", file=sys.stderr)
        return EXIT_CONFIG
    target_ids: set[str] | None = None
    if args.target_ids:
        if len(subscribers) != 1:
            print("bus: --target-ids compares one subscriber: add --subscriber NAME", file=sys.stderr)
            return EXIT_CONFIG
        try:  # /dev/zero given by mistake is said, not read until memory runs out
            text = read_at_most(args.target_ids, MAX_TARGET_IDS_BYTES, f"--target-ids {args.target_ids}").decode()
        except OSError as exc:
            print(f"bus: cannot read --target-ids: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        except FileTooLarge as exc:
            print(f"bus: {exc} (one event id per line)", file=sys.stderr)
            return EXIT_CONFIG
        except UnicodeDecodeError:  # a traceback
            print(f"bus: --target-ids {args.target_ids} is not UTF-8 text (one event id per line)", file=sys.stderr)
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


def balance_of(found: dict[str, Any]) -> Any:
    """A balance as the API (``bus reconcile --json``) gives it, back as ``bus.ledger.Balance`` to render."""
    from bus.ledger import Balance, Window

    fields = {k: v for k, v in found.items() if k not in ("balanced", "ok")}
    fields["windows"] = [Window(**w) for w in fields.get("windows", [])]
    for pair in ("ledger_totals", "settled_offsets"):
        if pair in fields:
            fields[pair] = tuple(fields[pair])
    return Balance(**fields)


def redeliver(args: argparse.Namespace) -> int:
    """``bus redeliver SUBSCRIBER --since TIME``: send a subscriber again what it was delivered
    (bus.redelivery), straight to Kafka with the config or through a running hub's API."""
    from bus.app.copy_claims import claim_copies
    from bus.app.hub_view import redelivery_out
    from bus.errors import BusError
    from bus.kafka.topics import TopicNames
    from bus.redelivery import Redeliverer

    if (refused := _no_config(args)) is not None:
        return refused
    since, until = _window(args)
    if args.hub is not None:
        return _print_redelivery(_through_hub(args, "redeliver"), args.json)
    loaded, _ = _load(args.config, AdapterRegistry.from_entry_points())
    if not any(c.name == args.subscriber for c in loaded.outbound):
        known = ", ".join(c.name for c in loaded.outbound) or "none"
        print(f"bus: no outbound adapter named {args.subscriber!r} (outbound: {known})", file=sys.stderr)
        return EXIT_CONFIG
    kafka, bootstrap, topics = loaded.hub.kafka, _bootstrap(args, loaded.hub), TopicNames(loaded.hub.kafka.topic_prefix)
    on_terminal = sys.stderr.isatty()

    async def run() -> dict[str, Any]:
        async def redeliver(progress: Callable[[str], None] | None) -> dict[str, Any]:
            redeliverer = Redeliverer(kafka, bootstrap, topics, progress=progress)
            done = await redeliverer.redeliver(
                args.subscriber, since, until, dry_run=args.dry_run, include_superseded=args.include_superseded, keys=args.key or ()
            )
            return redelivery_out(done).model_dump(mode="json")

        said = (lambda line: print(f"bus: {line}", file=sys.stderr)) if on_terminal else None  # progress on a terminal
        if args.dry_run:
            return await redeliver(said)
        what = f"a redelivery to {args.subscriber} asked at {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} by `bus redeliver -c`"
        # Held across the hub: a redelivery or backfill of the same subscriber asked of a replica meanwhile is refused.
        async with claim_copies(kafka, bootstrap, topics.control, args.subscriber, what) as holding:

            def progressed(line: str) -> None:
                holding.progressed(line)
                if said is not None:
                    said(line)

            return await redeliver(progressed)

    try:
        found = asyncio.run(run())
    except (ValueError, LookupError) as exc:
        print(f"bus: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except BusError as exc:  # Busy: another one is under way; ClaimLost: stopped, to be asked again
        print(f"bus: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    return _print_redelivery(found, args.json)


def backfill(args: argparse.Namespace) -> int:
    """``bus backfill SUBSCRIBER --since TIME --hub URL``: give a subscriber the events routed
    before it could receive them (bus.app.backfill), through the running hub's API: the records
    are routed with its routes, registered schemas and lookup tables."""
    done = _through_hub(args, "backfill")
    code = EXIT_RUNTIME if done.get("oldest_kept") or done.get("failed") else 0
    if args.json:
        print(json.dumps(done, indent=2))
        return code
    window = f"since {done['since']}" + (f" until {done['until']}" if done.get("until") else "")
    if done.get("keys"):
        window += f" of key(s) {', '.join(done['keys'])}"
    verb = "would write" if done["dry_run"] else "wrote"
    print(
        f"{done['subscriber']}: {done['read']} record(s) reached the canonical topics {window}; "
        f"routes {', '.join(done['routes'])} give it {done['matched']} event(s); {verb} {done['to_send']}"
    )
    for route, why in done.get("left_out_routes", {}).items():
        print(f"  route {route} left out: {why}")
    left = [
        (done["already_delivered"], "already delivered (the same event id is on its delivery topic)"),
        (done["superseded"], "superseded: it was delivered a later event of the same key (--include-superseded writes them)"),
    ]
    for count, why in left:
        if count:
            print(f"  left out: {count} {why}")
    for event in done.get("superseded_events", [])[:20]:
        print(f"    {event['event_id']} at {event['position']} (delivered after it: {event['after']})")
    if done["failed"]:
        print(f"  {done['failed']} event(s) a route failed on (nothing written for them):")
        for event in done.get("failed_events", [])[:20]:
            print(f"    {event['event_id']} at {event['position']}, route {event['route']}: {event['reason']}")
    if done["kept_in_order"]:
        print(f"  {done['kept_in_order']} live event(s) that reached the topic ahead of a written one of their key written again behind it")
    if done["not_routed"]:
        print(f"  {done['not_routed']} record(s) of the window are not routed yet: the router gives them to every subscriber")
    if done.get("paused"):
        print("  the subscriber is paused: the events wait until it is resumed")
    if done.get("oldest_kept"):
        print(
            f"bus: Kafka no longer holds what reached the canonical topics before {done['oldest_kept']} (the topics' retention): "
            "that part of the window cannot be backfilled",
            file=sys.stderr,
        )
    return code


def _window(args: argparse.Namespace) -> tuple[datetime, datetime | None]:
    """``--since`` and ``--until`` as times (the parser has checked that they are)."""
    return datetime.fromisoformat(args.since), datetime.fromisoformat(args.until) if args.until else None


def _through_hub(args: argparse.Namespace, action: str) -> Any:
    """A redelivery or backfill asked of the running hub's API (``--hub``), with its progress on stderr."""
    # A day of a busy subscriber's events is read (and routed) and written before the hub answers: minutes, not the usual 2.
    client = ApiClient(args.hub, token_from(args.token_file), timeout=3600)
    asked = {
        "since": args.since,
        "until": args.until,
        "keys": args.key or None,
        "dry_run": args.dry_run,
        "include_superseded": args.include_superseded,
    }
    return _while_it_writes(client, args.subscriber, action, {k: v for k, v in asked.items() if v is not None})


def _while_it_writes(client: ApiClient, subscriber: str, action: str, body: dict[str, Any]) -> Any:
    """POST a redelivery or backfill and, while the hub works on it, say on stderr how far it is
    (the subscriber's ``copying``, each time it changes): a long one is not a silent wait."""
    name = quote(subscriber, safe="")
    with ThreadPoolExecutor(max_workers=1) as pool:
        answer = pool.submit(client.post, f"/subscribers/{name}/{action}", body)
        said = None
        while not body.get("dry_run"):
            try:
                answer.result(timeout=_PROGRESS_EVERY_S)
                break
            except FutureTimeout:
                pass
            try:
                now = client.get(f"/subscribers/{name}").get("copying")
            except ApiRefused:
                continue  # a look that failed: the answer says what happened
            if now and now != said:
                print(f"bus: {now}", file=sys.stderr, flush=True)
                said = now
        return answer.result()


def _print_redelivery(done: dict[str, Any], as_json: bool) -> int:
    """Exit 1 when part of the window is no longer in Kafka: not all that was asked could be sent."""
    code = EXIT_RUNTIME if done.get("oldest_kept") else 0
    if as_json:
        print(json.dumps(done, indent=2))
        return code
    window = f"since {done['since']}" + (f" until {done['until']}" if done.get("until") else "")
    if done.get("keys"):
        window += f" of key(s) {', '.join(done['keys'])}"
    verb = "would send again" if done["dry_run"] else "sent again"
    print(f"{done['subscriber']}: {done['matched']} event(s) delivered {window}; {verb} {done['to_send']}")
    left = [
        (done["dead_lettered"], "dead-lettered (bus dlq replays or purges them)"),
        (done["superseded"], "superseded: a later event of the same key came after (--include-superseded sends them)"),
        (done["earlier_copies"], "copies an earlier redelivery made of events sent again now"),
    ]
    for count, why in left:
        if count:
            print(f"  left out: {count} {why}")
    for event in done.get("superseded_events", [])[:20]:
        print(f"    {event['event_id']} at {event['position']} (after it: {event['after']})")
    if done["kept_in_order"]:
        print(f"  {done['kept_in_order']} live event(s) that reached the topic ahead of a copy of their key sent again behind it")
    if done["not_settled"]:
        print(f"  {done['not_settled']} event(s) of the window are still on their way to the subscriber (not copied)")
    if done.get("paused"):
        print("  the subscriber is paused: the copies wait until it is resumed")
    if done.get("oldest_kept"):
        print(
            f"bus: Kafka no longer holds what reached the subscriber before {done['oldest_kept']} (the topic's retention): "
            "that part of the window cannot be sent again",
            file=sys.stderr,
        )
    return code


def positions(args: argparse.Namespace) -> int:
    """``bus positions list|reset|adopt``: see bus.app.positions."""
    from bus.app import positions as kept
    from bus.errors import BusError, KafkaUnavailable

    registry = AdapterRegistry.from_entry_points()
    loaded, _ = _load(args.config, registry)
    bootstrap = _bootstrap(args, loaded.hub)
    if args.positions_command == "list":
        rows = asyncio.run(kept.view(loaded, registry, bootstrap))
        if args.json:
            print(json.dumps([row.as_json() for row in rows], indent=2, ensure_ascii=False, default=str))
        else:
            print("\n".join(row.line() for row in rows) or "no inbound of this config keeps a position")
        return 0
    try:
        if args.positions_command == "reset":
            row = asyncio.run(kept.reset(loaded, registry, bootstrap, args.name, stopped=args.stopped))
        else:
            row = asyncio.run(kept.adopt(loaded, registry, bootstrap, args.name, stopped=args.stopped, force=args.force))
        _, said = kept.outcome(args.positions_command, row)
    except kept.Refused as exc:
        print(f"bus: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KafkaUnavailable:
        raise  # bus.app.cli prints it, exit 1: the hub's Kafka, not the command, is at fault
    except BusError as exc:  # a wrong name, a change that would misread the position
        print(f"bus: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{args.name}: {said}")
    return 0
