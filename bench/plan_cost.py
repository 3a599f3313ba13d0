"""Instructions per event of the router's hot path (``Dispatcher.plan``: decode, 20 routes,
transforms, encode), counted by valgrind's callgrind: the same count for the same code whatever
else the machine is doing, where timings on this shared machine move by 30 % from run to run.
Use it to judge a change to the hot path: run it before and after, compare the counts.

    .venv/bin/python bench/plan_cost.py [--events 3000]

Runs this file twice under callgrind, once building the inputs only and once also planning them;
the difference divided by the events is the cost of plan(). Needs valgrind (Debian's package).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import callgrind_instructions, write


def workload(events: int, plan: bool) -> None:
    from bench.hubs import payment_records
    from bench.router import twenty_routes
    from bus.codec import Codec
    from bus.kafka.topics import TopicNames
    from routing.dispatch import Dispatcher
    from routing.router import Router
    from schemas.catalog import SchemaCatalog

    codec = Codec()
    codec.add("Payment", 1, SchemaCatalog.load().get("Payment").parsed)
    dispatcher = Dispatcher(Router(twenty_routes()), codec=codec, topics=TopicNames("bench"))
    records = list(payment_records(codec, events))
    if plan:
        for key, value, headers in records:
            dispatcher.plan(key, value, list(headers), "bench/0/0", partition=0, offset=0)


def instructions(events: int, plan: bool) -> int:
    return callgrind_instructions(__file__, ["--events", str(events), "--inside", "plan" if plan else "inputs"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--inside", choices=["inputs", "plan"], help=argparse.SUPPRESS)  # the run under valgrind
    args = parser.parse_args()
    if args.inside:
        workload(args.events, plan=args.inside == "plan")
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    inputs = instructions(args.events, plan=False)
    planned = instructions(args.events, plan=True)
    per_event = (planned - inputs) / args.events
    print(f"plan(): {per_event:,.0f} instructions per event ({args.events} events, 20 routes)")
    write("plan_cost", {"events": args.events, "instructions_per_event": per_event, "inputs": inputs, "planned": planned})


if __name__ == "__main__":
    main()
