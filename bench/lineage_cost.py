"""What the lineage index costs the router per event, in instructions (valgrind's callgrind),
against the router's own work on the same events (``Dispatcher.plan``: decode, 20 routes,
transforms, encode). The index is written by the router and by each delivery worker; the
router's share is the larger one (an entry per event plus alias entries for the key), so it is
the one measured here. A delivery worker notes one entry per settled event the same way, next to
an HTTP call that costs far more.

    .venv/bin/python bench/lineage_cost.py [--events 3000] [--batch 500]

Three runs under callgrind: inputs only; inputs and plan(); inputs, plan() and the lineage
entries noted per event and turned into index records per batch, as ``RouterWorker._route``
does. Reported: plan's instructions per event, lineage's, and lineage / plan.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import callgrind_instructions, write

MODES = ("inputs", "plan", "lineage")


def workload(events: int, batch: int, mode: str) -> None:
    from bench.hubs import payment_records
    from bench.router import twenty_routes
    from bus.codec import Codec
    from bus.event import now_rfc3339
    from bus.kafka.topics import TopicNames
    from bus.lineage import LineageBatch
    from routing.dispatch import Dispatcher
    from routing.router import Router
    from schemas.catalog import SchemaCatalog

    codec = Codec()
    codec.add("Payment", 1, SchemaCatalog.load().get("Payment").parsed)
    dispatcher = Dispatcher(Router(twenty_routes()), codec=codec, topics=TopicNames("bench"))
    records = list(payment_records(codec, events))
    if mode == "inputs":
        return
    lineage = LineageBatch("bench._lineage", 16) if mode == "lineage" else None
    plan = dispatcher.plan
    for start in range(0, events, batch):
        at = now_rfc3339()
        for offset, (key, value, headers) in enumerate(records[start : start + batch], start):
            origin = f"bench.canonical.Payment/0/{offset}"
            outs = plan(key, value, list(headers), origin, partition=0, offset=offset)
            if lineage is not None:  # as RouterWorker._route does
                lineage.routed(headers, key, origin, lineage.copies(outs))
        if lineage is not None:
            lineage.take(at)


def instructions(events: int, batch: int, mode: str) -> int:
    return callgrind_instructions(__file__, ["--events", str(events), "--batch", str(batch), "--inside", mode])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--inside", choices=MODES, help=argparse.SUPPRESS)  # the run under valgrind
    args = parser.parse_args()
    if args.inside:
        workload(args.events, args.batch, args.inside)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    counts = {mode: instructions(args.events, args.batch, mode) for mode in MODES}
    plan = (counts["plan"] - counts["inputs"]) / args.events
    lineage = (counts["lineage"] - counts["plan"]) / args.events
    print(f"plan():  {plan:,.0f} instructions per event ({args.events} events, 20 routes)")
    print(f"lineage: {lineage:,.0f} instructions per event ({lineage / plan:.1%} of plan)")
    write(
        "lineage_cost", {"events": args.events, "batch": args.batch, "counts": counts, "plan_per_event": plan, "lineage_per_event": lineage}
    )


if __name__ == "__main__":
    main()
