"""Memory of the `file` inbound: the peak RSS of `bus run --role inbound` while it imports one CSV
file dropped into its folder, for two file sizes, each in a fresh hub process.

    .venv/bin/python bench/file_memory.py [--small 100000] [--large 400000]

The growth between the two sizes, per row and as a multiple of the file's size, is what a larger
file costs (the goal: none; the whole file read at once cost about 17 times its size). The hub
process is sampled from /proc every 0.1 s until the file is in done/. Writes
bench/results/file_memory-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import rss_mb, write
from bench.hubs import HubProcess
from bus.kafka.broker import EmbeddedBroker

# How a row of ``export`` becomes a Payment (bench/sftp_import.py imports the same file).
EMIT = {
    "schema": "Payment",
    "key": "ref",
    "map": {
        "payment_id": "ref",
        "amount": "int(cents)",
        "currency": "currency",
        "customer_id": "customer",
        "status": "status",
        "description": "null",
    },
}


def export(path: Path, rows: int) -> int:
    with path.open("w") as handle:
        handle.write("ref,cents,currency,customer,status,note\n")
        for i in range(rows):
            handle.write(f"pi_{i:08d},{i * 7},usd,cus_{i % 977},succeeded,Order {i} for a customer somewhere\n")
    return path.stat().st_size


async def peak_while_importing(bootstrap: str, rows: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "inbox"
        folder.mkdir()
        config = {
            "kafka": {"bootstrap": bootstrap, "partitions": 4, "session_timeout_ms": 3000, "topic_prefix": f"fm{rows}-{time.time_ns()}"},
            "schema_registry": {"url": "embedded"},
            "inbound": [
                {
                    "name": "exports",
                    "type": "file",
                    "path": str(folder),
                    "pattern": "*.csv",
                    "settle": "100ms",
                    "poll_interval": "200ms",
                    "emit": EMIT,
                }
            ],
        }
        hub = HubProcess(config, role="inbound")
        await hub.start()
        try:
            staged = Path(tmp) / "export.csv"
            size = export(staged, rows)
            started = rss_mb(hub.pid)
            peak = started
            began = time.perf_counter()
            staged.rename(folder / "export.csv")
            manifest = folder / "done" / "export.csv.manifest.json"
            while not manifest.exists():
                peak = max(peak, rss_mb(hub.pid))
                await asyncio.sleep(0.1)
            seconds = time.perf_counter() - began
            done = json.loads(manifest.read_text())
            assert done["rows"] == rows and done["accepted"] == rows, done
        finally:
            await hub.stop()
    print(f"{rows:>9,} rows ({size / 1e6:6.1f} MB): RSS {started:6.1f} MB before, peak {peak:6.1f} MB ({seconds:5.1f} s)", flush=True)
    return {"rows": rows, "file_mb": size / 1e6, "rss_mb_before": started, "rss_mb_peak": peak, "seconds": seconds}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=400_000)
    args = parser.parse_args()
    async with EmbeddedBroker() as broker:
        small = await peak_while_importing(broker.bootstrap, args.small)
        large = await peak_while_importing(broker.bootstrap, args.large)
    growth = (large["rss_mb_peak"] - large["rss_mb_before"]) - (small["rss_mb_peak"] - small["rss_mb_before"])
    per_row = growth * 1e6 / (args.large - args.small)
    per_file_byte = growth / (large["file_mb"] - small["file_mb"])
    print(
        f"growth from {args.small:,} to {args.large:,} rows: {growth:+.1f} MB, "
        f"{per_row:.0f} bytes per row, {per_file_byte:.1f}x the file's growth"
    )
    write(
        "file_memory", {"small": small, "large": large, "growth_mb": growth, "bytes_per_row": per_row, "times_file_growth": per_file_byte}
    )


if __name__ == "__main__":
    asyncio.run(main())
