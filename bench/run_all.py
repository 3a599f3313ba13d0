"""Every benchmark, one after another, each in its own process (a clean interpreter and broker):

    .venv/bin/python bench/run_all.py [--quick]

--quick runs smaller sizes (a few minutes in all) to check the benchmarks still work; the numbers
in RESULTS.md come from the full sizes. Each benchmark prints its table and writes its JSON to
bench/results/; this prints a summary line per benchmark and exits non-zero if one failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
FULL = {
    "router.py": [],
    "plan_cost.py": [],
    "codec.py": [],
    "latency.py": [],
    "memory.py": [],
    "scale_out.py": [],
    "sql_batch.py": [],
    "migrate_throughput.py": [],
    "migrate_memory.py": [],
}
QUICK = {
    "router.py": ["--events", "10000", "--rounds", "1", "--skip-faust"],
    "plan_cost.py": ["--events", "300"],
    "codec.py": ["--events", "20000"],
    "latency.py": ["--seconds", "3", "--loads", "500", "--search-limit", "750", "--rounds", "1"],
    "memory.py": ["--events", "50000"],
    "scale_out.py": ["--events", "10000"],
    "sql_batch.py": ["--events", "500"],
    "migrate_throughput.py": ["--rows", "5000", "--rounds", "1"],
    "migrate_memory.py": ["--small", "2000", "--large", "10000"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("only", nargs="*", help="run just these (e.g. router.py latency.py)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    failed = []
    for script, extra in plan.items():
        if args.only and script not in args.only:
            continue
        print(f"\n=== {script} {' '.join(extra)}", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(HERE / script), *extra], cwd=HERE.parent)
        print(f"=== {script}: {'ok' if code == 0 else f'FAILED ({code})'} in {time.monotonic() - started:.0f} s", flush=True)
        if code:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
