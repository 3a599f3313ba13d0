"""The `sftp` inbound against the `file` inbound: seconds from a CSV export's arrival to its manifest
in done/, the same file through the same hub config, the folder on this host's disk (`file`) or on
an OpenSSH server on this machine (`sftp`: listed, fetched into a temporary file, moved on the
server). Each import in a fresh `bus run --role inbound`; rounds interleave the two.

    .venv/bin/python bench/sftp_import.py [--rows 100000] [--rounds 3]

The ratio sftp / file per round is what fetching over SSH costs on top of reading the rows (the
transfer, the SSH encryption in both processes, the round trips of the listing and the moves).
Needs `.tools/openssh` (`make test` unpacks it). Writes bench/results/sftp_import-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import write
from bench.file_memory import EMIT, export
from bench.hubs import HubProcess
from bus.kafka.broker import EmbeddedBroker
from tests.support.sftp_private import SftpServer, sftp_server


async def one_import(bootstrap: str, rows: int, staged: Path, server: SftpServer | None) -> float:
    """Seconds from the file's arrival in the folder to its manifest in done/."""
    with tempfile.TemporaryDirectory() as tmp:
        if server is None:
            folder = Path(tmp) / "inbox"
            folder.mkdir()
            inbound: dict[str, Any] = {"type": "file", "path": str(folder)}
        else:
            folder = server.folder / f"inbox-{time.time_ns()}"
            folder.mkdir()
            os.chown(folder, *server.owner)
            inbound = {"type": "sftp", **server.config(path=str(folder))}
        kafka = {"bootstrap": bootstrap, "partitions": 4, "session_timeout_ms": 3000, "topic_prefix": f"si{time.time_ns()}"}
        common = {"name": "exports", "pattern": "*.csv", "settle": "0s", "poll_interval": "100ms", "emit": EMIT}
        hub = HubProcess({"kafka": kafka, "schema_registry": {"url": "embedded"}, "inbound": [{**common, **inbound}]}, role="inbound")
        await hub.start()
        try:
            arriving = folder / ".export.csv.part"
            await asyncio.to_thread(shutil.copyfile, staged, arriving)
            if server is not None:
                os.chown(arriving, *server.owner)
            began = time.perf_counter()
            arriving.rename(folder / "export.csv")  # arrives whole, as an upload tool renames it
            manifest = folder / "done" / "export.csv.manifest.json"
            while not manifest.exists():
                await asyncio.sleep(0.05)
            seconds = time.perf_counter() - began
            await asyncio.sleep(0.1)  # the manifest is written before the file's rename
            done = json.loads(manifest.read_text())
            assert done["rows"] == rows and done["accepted"] == rows, done
        finally:
            await hub.stop()
    return seconds


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp, sftp_server() as server:
        staged = Path(tmp) / "export.csv"
        size = export(staged, args.rows)
        async with EmbeddedBroker() as broker:
            for n in range(args.rounds):
                local = await one_import(broker.bootstrap, args.rows, staged, None)
                remote = await one_import(broker.bootstrap, args.rows, staged, server)
                rounds.append({"file_s": local, "sftp_s": remote, "ratio": remote / local})
                print(
                    f"round {n + 1}: file {args.rows / local:8,.0f} rows/s ({local:5.2f} s), "
                    f"sftp {args.rows / remote:8,.0f} rows/s ({remote:5.2f} s), sftp / file {remote / local:.2f}",
                    flush=True,
                )
    ratios = [r["ratio"] for r in rounds]
    median = statistics.median(ratios)
    print(f"{args.rows:,} rows ({size / 1e6:.1f} MB): sftp / file time, median {median:.2f} ({min(ratios):.2f}-{max(ratios):.2f})")
    write("sftp_import", {"rows": args.rows, "file_mb": size / 1e6, "rounds": rounds, "median_ratio": statistics.median(ratios)})


if __name__ == "__main__":
    asyncio.run(main())
