"""Where the hub's extra CPU per event goes, against the bare pipeline, counted call by call.

Runs the headline's two pipelines (bench/latency.py: ``bus run`` of the webhook-to-target
integration, and bench/raw_pipeline.py) one after the other, each under Python's cProfile switched
on only while a fixed load is offered (SIGUSR1 on, SIGUSR2 off and written), not during start-up,
warm-up or the stop. Then it prints, per event, each pipeline's function calls and time by part
(the hub's own modules by file; aiokafka, asyncio, fastavro and the rest by package) and the
difference, largest first.

    .venv/bin/python bench/window_profile.py [--rate 1000] [--seconds 8] [--top 40]

Calls per event are exact and do not depend on the machine's load; times are cProfile's, inflated
by its own cost per call (about 1.7x here), so read them as shares, not as CPU-us. The profiles are
kept (bench/results/window_profile-<pipeline>-<time>.prof) for ``python -m pstats``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import pstats
import signal
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import RESULTS, wait_ready
from bench.latency import hub_config, offer
from bench.loadgen import RawSender, RawTarget
from bus.ports import free_port

ROOT = Path(__file__).resolve().parents[1]

# Runs the given script under a profiler that SIGUSR1 starts and SIGUSR2 stops and writes.
_WRAPPER = """
import cProfile, os, runpy, signal, sys
profile, out = cProfile.Profile(), os.environ["WINDOW_PROFILE_OUT"]
signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
signal.signal(signal.SIGUSR2, lambda *_: (profile.disable(), profile.dump_stats(out)))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


async def profile(pipeline: str, rate: int, seconds: float, out: Path) -> int:
    """Offer ``rate`` events/s for ``seconds`` under the profiler; the events that arrived."""
    target = RawTarget()
    await target.start()
    http_port, ops_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as folder:
        if pipeline == "hub":
            config = Path(folder) / "bus.yaml"
            config.write_text(yaml.safe_dump(hub_config(target.port, http_port, ops_port, {})))
            script = [str(Path(sys.executable).with_name("bus")), "--log-level", "WARNING", "run", "-c", str(config)]
            ready = f"http://127.0.0.1:{ops_port}/readyz"
        else:
            script = [str(ROOT / "bench" / "raw_pipeline.py"), "--http-port", str(http_port), "--target-port", str(target.port)]
            ready = f"http://127.0.0.1:{http_port}/readyz"
        env = {**os.environ, "BUS_GC": "tuned", "WINDOW_PROFILE_OUT": str(out)}
        process = await asyncio.create_subprocess_exec(sys.executable, "-c", _WRAPPER, *script, env=env)
        sender = RawSender("127.0.0.1", http_port, "/hooks/payments")
        try:
            await wait_ready(process, ready, pipeline)
            await offer(sender, 200, 3, "warm")  # connections, group joins, code paths
            await asyncio.sleep(1)
            before = len(target.arrived)
            process.send_signal(signal.SIGUSR1)
            await offer(sender, rate, seconds, "load")
            for _ in range(300):
                if len(target.arrived) >= before + int(rate * seconds):
                    break
                await asyncio.sleep(0.1)
            process.send_signal(signal.SIGUSR2)
            for _ in range(100):  # the profile is written by the process, in its own time
                if _written(out):
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            return len(target.arrived) - before
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            await process.wait()
            await sender.close()
            await target.stop()


def _written(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


def part(where: tuple[str, int, str]) -> str:
    """The hub's modules by file, libraries by package, C functions by name."""
    path, _, name = where
    if path == "~":
        return f"(C) {name}"
    if str(ROOT) in path and "site-packages" not in path:
        return path.split(str(ROOT) + "/", 1)[1]
    for package in ("aiokafka", "asyncio", "fastavro", "prometheus_client", "httptools", "aiohttp", "logging", "json"):
        if f"/{package}/" in path:
            return package
    return Path(path).name


def by_part(stats: pstats.Stats, events: int) -> tuple[dict[str, float], dict[str, float]]:
    calls: collections.Counter[str] = collections.Counter()
    micros: collections.Counter[str] = collections.Counter()
    for where, (_, ncalls, tottime, *_rest) in stats.stats.items():  # type: ignore[attr-defined]
        calls[part(where)] += ncalls / events
        micros[part(where)] += tottime / events * 1e6
    return dict(calls), dict(micros)


def report(parts: dict[str, tuple[dict[str, float], dict[str, float]]], top: int) -> str:
    hub_calls, hub_us = (collections.defaultdict(float, d) for d in parts["hub"])
    raw_calls, raw_us = (collections.defaultdict(float, d) for d in parts["raw"])
    idle = "(C) <method 'poll' of 'select.epoll' objects>"  # waiting, not working
    lines = [
        f"per event: hub {sum(hub_calls.values()):.0f} calls, {sum(hub_us.values()) - hub_us[idle]:.0f} us busy; "
        f"raw {sum(raw_calls.values()):.0f} calls, {sum(raw_us.values()) - raw_us[idle]:.0f} us busy (cProfile's us)",
        f"{'part':<58} {'hub calls':>9} {'raw calls':>9} {'hub us':>8} {'raw us':>8} {'hub-raw':>8}",
    ]
    names = sorted((set(hub_us) | set(raw_us)) - {idle}, key=lambda n: -abs(hub_us[n] - raw_us[n]))
    for name in names[:top]:
        lines.append(
            f"{name[:58]:<58} {hub_calls[name]:>9.2f} {raw_calls[name]:>9.2f} {hub_us[name]:>8.1f} {raw_us[name]:>8.1f} "
            f"{hub_us[name] - raw_us[name]:>8.1f}"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=1000, help="events per second offered while profiling")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--top", type=int, default=40, help="parts listed, by the size of their difference")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    parts: dict[str, Any] = {}
    for pipeline in ("raw", "hub"):
        out = RESULTS / f"window_profile-{pipeline}-{stamp}.prof"
        events = await profile(pipeline, args.rate, args.seconds, out)
        if events < int(args.rate * args.seconds):
            raise SystemExit(f"{pipeline}: {events} of {int(args.rate * args.seconds)} events arrived; the profile would be wrong")
        parts[pipeline] = by_part(pstats.Stats(str(out)), events)
        print(f"{pipeline}: {events} events profiled, {out.relative_to(ROOT)}", flush=True)
    print(report(parts, args.top))


if __name__ == "__main__":
    asyncio.run(main())
