"""Instructions per event of each role on the webhook-to-target path, counted by valgrind's
callgrind: the same count for the same code whatever else the machine is doing. Run it before and
after a change to a role's hot path and compare the counts (bench/plan_cost.py splits the
router's further, by phase).

    .venv/bin/python bench/role_cost.py [--events 2000] [--roles inbound,router,delivery]

The roles, with the integration of the headline bench (bench/latency.py):

- inbound: a webhook body to the record handed to the producer: JSON parse (``parse_json``, as
  the webhook does, with its checks: json.loads until 2026-12-07), the ``emit`` mapping,
  the schema check, Avro encode, the CloudEvents headers (what ``KafkaSink.submit`` does before
  ``send``). The HTTP server's request handling and aiokafka's produce are not in it: see the
  profile in bench/RESULTS.md for their share.
- router: ``Dispatcher.plan`` of the same canonical record through the headline's one route.
- delivery: a Kafka record to the target's answer: decode, ``Event.from_kafka``, and
  ``HttpOutbound.deliver`` (rendering, headers, the wire client's request and the answer read) against a
  target in another process (not counted). Calls are made one at a time, so every event costs one
  whole request; the hub's 32 concurrent calls share some loop work between them.

Each role runs under callgrind with N and 2N events, and each also with its inputs made but not
run; (2N run - 2N inputs) - (N run - N inputs), divided by N, is the cost of one event, with
start-up (imports, sessions, the target's process) and the making of the inputs left out.
Needs valgrind.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import callgrind_by_object, write
from bench.loadgen import TARGET_COMMAND

ROLES = ("inbound", "router", "delivery")


def bodies(n: int) -> list[bytes]:
    """Webhook bodies as the headline bench sends them."""
    return [
        json.dumps({"id": f"evt-{i}", "data": {"id": f"pi_{i}", "amount": 1000 + i, "currency": "usd", "status": "succeeded"}}).encode()
        for i in range(n)
    ]


def headline() -> dict[str, Any]:
    from bench.latency import hub_config

    return hub_config(target_port=9, http_port=9, ops_port=9, kafka={})


def headline_emitter() -> Any:
    """The headline webhook's ``emit`` mapping, compiled as the webhook adapter compiles it."""
    from bus.config.adapters import EmitSpec
    from bus.mapping import Emitter

    return Emitter(EmitSpec.model_validate(headline()["inbound"][0]["emit"]), source="/inbound/payments")


def codec() -> Any:
    from bus.codec import Codec
    from schemas.catalog import SchemaCatalog

    made = Codec()
    made.add("Payment", 1, SchemaCatalog.load().get("Payment").parsed)
    return made


def canonical(n: int) -> list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]:
    """The canonical records the inbound role makes of the headline's webhook bodies."""
    avro = codec()
    emitter = headline_emitter()
    out = []
    for body in bodies(n):
        event = emitter.build(json.loads(body))
        out.append((event.key.encode() if event.key else None, avro.encode(event.schema, event.data), event.headers()))
    return out


def inbound(n: int) -> Callable[[], None]:
    from bus.documents import parse_json  # what the webhook parses a body with (its checks included)

    avro = codec()
    emitter = headline_emitter()
    work = bodies(n)

    def run() -> None:
        for body in work:
            event = emitter.build(parse_json(body))
            avro.validate(event.schema, event.data)
            avro.encode(event.schema, event.data)
            _ = event.key.encode() if event.key is not None else None
            event.headers()

    return run


def router(n: int) -> Callable[[], None]:
    from bus.config.routes import RouteConfig
    from bus.kafka.topics import TopicNames
    from routing.dispatch import Dispatcher
    from routing.router import Router

    routes = [RouteConfig.model_validate(r) for r in headline()["routes"]]
    dispatcher = Dispatcher(Router(routes), codec=codec(), topics=TopicNames("bench"))
    records = canonical(n)

    def run() -> None:
        for key, value, headers in records:
            dispatcher.plan(key, value, list(headers), "bench.canonical.Payment/0/0", partition=0, offset=0)

    return run


def delivery(n: int) -> Callable[[], None]:
    from adapters.http.config import HttpOutboundConfig
    from adapters.http.outbound import HttpOutbound
    from bus.adapter_api import Context
    from bus.event import Event

    avro = codec()
    records = canonical(n)
    # The target runs in a process of its own: valgrind counts only this one.
    target = subprocess.Popen(TARGET_COMMAND, stdout=subprocess.PIPE, text=True)  # noqa: S603
    atexit.register(target.kill)  # also when only the inputs are made
    assert target.stdout is not None
    port = int(target.stdout.readline())
    config = dict(headline()["outbound"][0], url=f"http://127.0.0.1:{port}/in")
    adapter = HttpOutbound(HttpOutboundConfig.model_validate(config), Context("target", logging.getLogger("bench")))

    async def deliver_all() -> None:
        await adapter.start()
        try:
            for key, value, headers in records:
                schema, data = avro.decode(value)
                await adapter.deliver(Event.from_kafka(schema, data, key, headers))
        finally:
            await adapter.stop()

    def run() -> None:
        asyncio.run(deliver_all())

    return run


def instructions(role: str, events: int, *, setup_only: bool = False) -> int:
    args = ["--events", str(events), "--inside", role, *(["--setup-only"] if setup_only else [])]
    return sum(callgrind_by_object(__file__, args).values())


def per_event(role: str, events: int) -> float:
    """What one more event costs: the inputs' making (which grows with N too) taken out of each
    run, then the runs with N and 2N events compared (start-up taken out)."""
    work = {n: instructions(role, n) - instructions(role, n, setup_only=True) for n in (events, 2 * events)}
    return (work[2 * events] - work[events]) / events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--roles", default=",".join(ROLES))
    parser.add_argument("--inside", choices=ROLES, help=argparse.SUPPRESS)  # the run under valgrind
    parser.add_argument("--setup-only", action="store_true", help=argparse.SUPPRESS)  # make the inputs, run nothing
    args = parser.parse_args()
    if args.inside:
        run = {"inbound": inbound, "router": router, "delivery": delivery}[args.inside](args.events)
        if not args.setup_only:
            run()
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    roles = [r for r in args.roles.split(",") if r]
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise SystemExit(f"unknown role(s) {', '.join(sorted(unknown))}: choose from {', '.join(ROLES)}")
    results: dict[str, float] = {}
    for role in roles:
        results[role] = per_event(role, args.events)
        print(f"{role:10} {results[role]:>10,.0f} instructions per event", flush=True)
    write("role_cost", {"events": args.events, "instructions_per_event": results})


if __name__ == "__main__":
    main()
