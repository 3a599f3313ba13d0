"""Instructions per event of the router's hot path (``Dispatcher.plan``: decode, 20 routes,
transforms, encode), counted by valgrind's callgrind: the same count for the same code whatever
else the machine is doing, where timings on this shared machine move by 30 % from run to run.
Use it to judge a change to the hot path: run it before and after, compare the counts.

    .venv/bin/python bench/plan_cost.py [--events 3000]

Runs this file under callgrind once per phase, each doing a little more of plan() than the one
before: building the inputs only; then decoding them; then deciding (conditions and
transforms); then the whole plan() (validation, encoding, headers, the copies). The differences
divided by the events are each phase's cost, split by the binary the instructions ran in: the
interpreter running our Python (what a compiled core would replace), fastavro's compiled
modules, libc. Needs valgrind (Debian's package).
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import callgrind_by_object, write

PHASES = ["inputs", "decode", "decide", "plan"]
NAMES = {
    "decode": "decode (Avro to dict)",
    "decide": "conditions and transforms",
    "plan": "validate, encode, headers, copies",
}


def workload(events: int, phase: str) -> None:
    from bench.hubs import payment_records
    from bench.router import twenty_routes
    from bus.codec import Codec
    from bus.kafka.topics import TopicNames
    from routing.dispatch import Dispatcher, HeaderMeta
    from routing.router import Router
    from schemas.catalog import SchemaCatalog

    codec = Codec()
    codec.add("Payment", 1, SchemaCatalog.load().get("Payment").parsed)
    dispatcher = Dispatcher(Router(twenty_routes()), codec=codec, topics=TopicNames("bench"))
    records = list(payment_records(codec, events))
    decode, decide, plan = codec.decode, dispatcher.router.decide, dispatcher.plan
    for key, value, headers in records:
        if phase == "decode":
            decode(value)
        elif phase == "decide":
            schema, data = decode(value)
            decide(schema, data, HeaderMeta(headers, key, schema))
        elif phase == "plan":
            plan(key, value, list(headers), "bench/0/0", partition=0, offset=0)


def instructions(events: int, phase: str) -> dict[str, int]:
    return callgrind_by_object(__file__, ["--events", str(events), "--inside", phase])


def part(binary: str) -> str:
    """Where a binary's instructions belong: what a compiled core would replace (the interpreter
    running our Python, and the objects any code makes through it), what already runs compiled (fastavro's Cython modules), or the rest."""
    name = Path(binary).name
    if "fastavro" in binary:
        return "fastavro (compiled)"
    if name.startswith(("python3", "libpython3")):
        return "libpython (interpreter, objects)"
    if name.startswith(("libc.", "libc-", "ld-linux", "libm.")):
        return "libc (allocation, copies)"
    return "other"


def by_part(counts: dict[str, int]) -> dict[str, int]:
    parts: dict[str, int] = {}
    for binary, count in counts.items():
        parts[part(binary)] = parts.get(part(binary), 0) + count
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--inside", choices=PHASES, help=argparse.SUPPRESS)  # the run under valgrind
    args = parser.parse_args()
    if args.inside:
        workload(args.events, args.inside)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    counts = {phase: by_part(instructions(args.events, phase)) for phase in PHASES}
    phases: dict[str, dict[str, float]] = {}
    for before, phase in itertools.pairwise(PHASES):  # each phase's run does all the one before did, and more
        binaries = {*counts[before], *counts[phase]}
        phases[NAMES[phase]] = {k: (counts[phase].get(k, 0) - counts[before].get(k, 0)) / args.events for k in binaries}
    per_event = (sum(counts["plan"].values()) - sum(counts["inputs"].values())) / args.events
    print(f"plan(): {per_event:,.0f} instructions per event ({args.events} events, 20 routes)")
    totals: dict[str, float] = {}
    for name, kinds in phases.items():
        print(f"  {name:36} {sum(kinds.values()):>10,.0f}  {sum(kinds.values()) / per_event:6.1%}")
        for kind, count in sorted(kinds.items(), key=lambda kv: -kv[1]):
            totals[kind] = totals.get(kind, 0) + count
            if abs(count) >= 500:
                print(f"      {kind:32} {count:>10,.0f}")
    print("  by where the instructions ran:")
    for kind, count in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"      {kind:32} {count:>10,.0f}  {count / per_event:6.1%}")
    write(
        "plan_cost",
        {
            "events": args.events,
            "instructions_per_event": per_event,
            "phases": phases,
            "by_part": totals,
            "counts": counts,
        },
    )


if __name__ == "__main__":
    main()
