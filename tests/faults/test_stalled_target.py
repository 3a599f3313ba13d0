"""A target that stops answering for a minute while events keep arriving: the backlog builds in Kafka,
not in the hub's memory (its RSS stays flat), and drains by itself once the target answers again."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bus.app.cli import main
from tests.faults.test_restarts import process_config
from tests.support.hub import HubProcess, unique_prefix, write_config
from tests.support.source import Source
from tests.support.target import Call, Target

# 24,000 events held back, 20,000 of them after the warm-up: were the hub to keep them in memory
# (an event as Python objects takes more than 1 KB), it would grow by more than the 20 MB allowed.
# Offered fast, so that the suite does not wait minutes for the backlog.
STALL_S = 60
RATE = 400  # events per second offered during the stall


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def in_flight(ops_port: int) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{ops_port}/metrics")).text
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        if f.name == "bus_ledger_events"
        for s in f.samples
        if s.labels["state"] == "in_flight" and s.labels["subscriber"] == "sink"
    )


@pytest.mark.timeout(STALL_S + 480)  # the drain is slow when the suite runs beside it
async def test_backlog_builds_in_kafka_not_in_memory(tmp_path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    stalled = True

    def delay(_call: Call) -> float:
        return 3600.0 if stalled else 0.0  # a hung server: the connection is taken, no answer comes

    target = await Target(delay=delay).start()
    config = process_config(bootstrap, unique_prefix(), target, concurrency=64)  # drain fast once it answers
    config["outbound"][0].update(timeout_s=1.0)
    config["outbound"][0]["delivery"].update(backoff_max="2s", circuit_breaker={"reset_after": "5s"})
    path = write_config(tmp_path / "bus.yaml", config)
    hub = HubProcess(path, config["ops"]["port"])
    count = STALL_S * RATE
    events = [{"id": f"e{i}", "key": f"k{i % 500}", "seq": i} for i in range(count)]
    source = Source([f"http://127.0.0.1:{config['http']['port']}/in"], concurrency=16, rate=RATE)
    try:
        await hub.start()
        assert hub.proc is not None
        sending = asyncio.create_task(source.send_all(events))
        samples: list[tuple[float, float]] = []
        began = time.monotonic()
        while not sending.done():
            samples.append((time.monotonic() - began, rss_mb(hub.proc.pid)))
            await asyncio.sleep(2)
        await sending
        sent_s = time.monotonic() - began
        assert source.rejected == []
        # The gauge follows the delivery topic's end, probed every 5 s: wait for it (longer on a loaded machine).
        backlog, deadline = 0.0, time.monotonic() + 60
        while backlog < 0.95 * count and time.monotonic() < deadline:
            await asyncio.sleep(1)
            backlog = await in_flight(config["ops"]["port"])
        gauge_s = time.monotonic() - began - sent_s
        code = await asyncio.to_thread(main, ["reconcile", "-c", str(path), "--bootstrap", bootstrap, "--json"])
        audit = json.loads(capsys.readouterr().out)[0]
        audit_s = time.monotonic() - began - sent_s - gauge_s

        stalled = False
        drained_from = time.monotonic()
        await target.wait_for(lambda: len({c.headers["Idempotency-Key"] for c in target.accepted}) == count, timeout=300)
        drain_s = time.monotonic() - drained_from

        # After a warm-up (first connections, first batches), memory does not follow the backlog.
        warm = [mb for t, mb in samples if t >= 10]  # the first 4,000 events
        growth = max(warm) - warm[0]
        print(
            f"stall {STALL_S}s at {RATE}/s: backlog {backlog:.0f} events in Kafka (audit: {audit['in_flight']}); "
            f"RSS {warm[0]:.0f} -> {max(warm):.0f} MB "
            f"(+{growth:.1f}) over {len(warm)} samples; sent in {sent_s:.1f}s, gauge after {gauge_s:.1f}s, "
            f"audit in {audit_s:.1f}s, drained in {drain_s:.1f}s"
        )
        # The events wait in the delivery topic: the live gauge and the audit both say so.
        assert code == 0 and audit["in_flight"] >= 0.95 * count, audit
        assert backlog >= 0.95 * count
        assert growth < 20, samples  # the backlog grew by ~24,000 events; memory did not follow
    finally:
        stalled = False
        await hub.kill()
        await target.stop()
