"""The reconcile audit's peak memory and time against the size of a delivery topic.

``bus reconcile`` and ``GET /reconcile`` read a subscriber's delivery topic whole: every event of
its retention (a week of a busy subscriber is millions). Each size runs in a fresh process that
feeds the audit synthetic records in batches of 500, as the topics stream in (a delivery record
per event, one ledger entry per batch, a dead letter per 1,000 events), and reports the process's
peak resident set and the audit's time. The figures of interest are the peak per added event
and the time per event.

    .venv/bin/python bench/reconcile_memory.py --sizes 200000 1000000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import write

TOPIC = "bench.deliver.erp"
BATCH = 500


class Rec:  # the fields of aiokafka's ConsumerRecord that the audit reads
    __slots__ = ("headers", "offset", "partition")

    def __init__(self, partition: int, offset: int, event_id: str) -> None:
        self.partition, self.offset = partition, offset
        self.headers = [("ce_id", event_id.encode()), ("ce_time", f"2026-12-0{1 + offset % 5}T10:{offset % 60:02d}:00Z".encode())]


def one(events: int) -> dict[str, Any]:
    """In this process: feed ``events`` to the audit; its peak resident set and time."""
    from bus import ledger

    started = time.perf_counter()
    partitions = 4
    per = events // partitions
    committed = {p: per - per // 100 for p in range(partitions)}  # the last 1 % in flight
    audit = ledger.Audit("erp", committed, TOPIC, 3600)
    totals = dict.fromkeys(range(partitions), 0)
    for p in range(partitions):
        for first in range(0, per, BATCH):
            offsets = range(first, min(first + BATCH, per))
            audit.add_copies([Rec(p, o, f"evt_{p}_{o:09d}") for o in offsets])
            dead = [o for o in offsets if o % 1000 == 999]
            delivered = [o for o in offsets if o % 1000 != 999]
            totals[p] += len(delivered)
            entry = ledger.LedgerEntry(
                p, offsets[-1] + 1, ledger.offset_ranges(delivered), ledger.offset_ranges(dead), totals[p], 0, "2026-12-05T00:00:00Z"
            )
            audit.add_entries([entry])
            audit.add_letters([f"{TOPIC}/{p}/{o}" for o in dead])
    balance = audit.balance(None)
    audit.close()
    seconds = time.perf_counter() - started
    status = Path("/proc/self/status").read_text()
    peak_kb = int(status.split("VmHWM:")[1].split()[0])
    return {"events": events, "peak_mb": round(peak_kb / 1024, 1), "seconds": round(seconds, 2), "entered": balance.entered}


def main(sizes: list[int]) -> dict[str, Any]:
    runs = []
    for events in sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(events)], capture_output=True, text=True, check=True)
        found = json.loads(out.stdout.strip().splitlines()[-1])
        assert found["entered"] == events, found
        runs.append(found)
        print(f"{events:>10,} events: peak {found['peak_mb']:>7.1f} MB, {found['seconds']:.1f} s", flush=True)
    small, large = runs[0], runs[-1]
    per_event = (large["peak_mb"] - small["peak_mb"]) * 1024 * 1024 / max(1, large["events"] - small["events"])
    body = {
        "runs": runs,
        "bytes_per_more_event": round(per_event, 1),
        "us_per_event": round(large["seconds"] / large["events"] * 1e6, 2),
    }
    print(body)
    write("reconcile_memory", body)
    return body


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.one:
        print(json.dumps(one(options.one)))
    else:
        main(options.sizes)
