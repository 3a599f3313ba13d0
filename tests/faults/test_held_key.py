"""One event the target refuses for ever holds only its own key, with the default delivery policy.

- 1,000 events of other keys arrive within 30 s although the refused one sits in front of them;
  the refused key's later events wait behind it (per-key order), and `/readyz` says the
  subscriber is retrying, with the target's answer.
- kill -9 of the hub, and a restart: nothing the target already accepted is sent again (by the
  target's own count per id), although the committed offset never moved past the held event.
- A partly failing target (30% answered 500, 5% hanging) drains 2,000 events with the default
  circuit breaker in at most twice the time it takes with the breaker off, in the same run.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from bus.ports import free_port
from tests.faults.test_delivery_faults import hub_config, post_all
from tests.support.hub import HubProcess, build_hub, write_config
from tests.support.source import Source
from tests.support.target import Call, Target

REFUSED = "e-refused"


async def subscriber_state(ops_port: int, name: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        answer = (await client.get(f"http://127.0.0.1:{ops_port}/readyz")).json()
    state: dict[str, Any] = answer["subscribers"][name]
    return state


@pytest.mark.timeout(300)
async def test_a_refused_event_holds_only_its_key_and_a_restart_sends_nothing_twice(tmp_path: Path, bootstrap: str) -> None:
    def answer(call: Call) -> tuple[int, dict[str, str]]:
        return (500, {}) if call.headers["Idempotency-Key"] == REFUSED else (200, {})

    target = await Target(answer=answer).start()
    config = hub_config(bootstrap, {"sink": {"url": f"{target.url}/sink"}})  # the default delivery policy
    config["http"]["port"], config["ops"]["port"] = free_port(), free_port()
    path = write_config(tmp_path / "bus.yaml", config)
    hub = HubProcess(path, config["ops"]["port"])
    source = Source([f"http://127.0.0.1:{config['http']['port']}/in"], concurrency=16)
    refused = {"id": REFUSED, "key": "held", "seq": 0}
    behind = [{"id": f"e-held-{i}", "key": "held", "seq": i} for i in range(1, 3)]  # the held key's later events
    others = [{"id": f"e{i}", "key": f"k{i}", "seq": i} for i in range(1000)]
    try:
        await hub.start()
        for event in (refused, *behind):  # one at a time: the key's order is the order Kafka got them in
            await source.send_all([event])
        began = time.monotonic()
        await source.send_all(others)
        await target.wait_for(lambda: {e["id"] for e in others} <= {c.headers["Idempotency-Key"] for c in target.accepted}, timeout=30)
        took = time.monotonic() - began
        assert took < 30, took
        accepted = Counter(c.headers["Idempotency-Key"] for c in target.accepted)
        assert not any(i in accepted for i in (REFUSED, *(e["id"] for e in behind)))  # order within the key holds
        state = await subscriber_state(config["ops"]["port"], "sink")
        assert state["state"] == "retrying" and state["failing_events"] == 1, state
        assert "answered 500" in state["last_error"]

        await asyncio.sleep(1)  # the last settlements reach the ledger (it is written within 50 ms)
        before = Counter(c.headers["Idempotency-Key"] for c in target.accepted)
        await hub.kill()
        await hub.start()
        await source.send_all([{"id": "e-after", "key": "k-after", "seq": 1}])
        await target.wait_for(lambda: any(c.headers["Idempotency-Key"] == "e-after" for c in target.accepted), timeout=60)
        await asyncio.sleep(2)  # time for anything wrongly redelivered to arrive
        after = Counter(c.headers["Idempotency-Key"] for c in target.accepted)
        sent_twice = {i: n for i, n in after.items() if n > 1}
        assert not sent_twice, f"{len(sent_twice)} id(s) delivered twice, e.g. {list(sent_twice)[:5]}"
        assert set(before) <= set(after)
        # The refused event is tried again after the restart, and still holds only its key.
        attempts = [c for c in target.calls if c.headers["Idempotency-Key"] == REFUSED]
        assert len(attempts) >= 2
        assert await hub.terminate() == 0
    finally:
        await hub.kill()
        await target.stop()


async def drain_time(tmp_path: Path, bootstrap: str, breaker: bool, count: int) -> float:
    """Seconds to deliver ``count`` events to a target that answers 500 to 30% of calls and hangs on 5%."""
    rng = random.Random(30)
    fates: dict[int, str] = {}

    def delay(call: Call) -> float:  # called first, for every call: decide its fate
        roll = rng.random()
        fates[id(call)] = "fail" if roll < 0.30 else "hang" if roll < 0.35 else "ok"
        return 5.0 if fates[id(call)] == "hang" else 0.0  # the hub gives up after 0.5 s

    def answer(call: Call) -> tuple[int, dict[str, str]]:
        return (200, {}) if fates.pop(id(call)) == "ok" else (500, {})

    target = await Target(answer=answer, delay=delay).start()
    delivery: dict[str, Any] = {"backoff_initial": "50ms", "backoff_max": "1s"}
    if not breaker:
        delivery["circuit_breaker"] = None
    config = hub_config(bootstrap, {"sink": {"url": f"{target.url}/sink", "timeout_s": 0.5, "delivery": delivery}})
    path = write_config(tmp_path / f"bus-{'on' if breaker else 'off'}.yaml", config)
    events = [{"id": f"e{i}", "key": f"k{i % 200}", "seq": i} for i in range(count)]
    try:
        async with build_hub(path) as hub:
            began = time.monotonic()
            await post_all(hub, events)
            await target.wait_for(lambda: len({c.headers["Idempotency-Key"] for c in target.accepted}) == count, timeout=240)
            return time.monotonic() - began
    finally:
        await target.stop()


@pytest.mark.timeout(600)
async def test_a_partly_failing_target_drains_with_the_default_breaker_about_as_fast_as_without(tmp_path: Path, bootstrap: str) -> None:
    count = 2000
    without = await drain_time(tmp_path, bootstrap, False, count)
    with_breaker = await drain_time(tmp_path, bootstrap, True, count)
    print(f"drain of {count} events: breaker off {without:.1f}s, default breaker {with_breaker:.1f}s, ratio {with_breaker / without:.2f}")
    assert with_breaker <= 2 * without, f"with the default breaker {with_breaker:.1f}s, without {without:.1f}s"
