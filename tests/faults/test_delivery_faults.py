"""Delivery under faults, over the real broker: flaky and dead targets, limits, order under concurrency."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest

from bus.app.hub import Hub
from tests.support.hub import build_hub, unique_prefix, write_config
from tests.support.target import Call, Target
from tests.support.wait import until


def hub_config(bootstrap: str, subscribers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A webhook of Payment events (key = data.key, id = id) routed to every subscriber."""
    return {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 3, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "inbound": [
            {
                "name": "in",
                "type": "http_webhook",
                "path": "/in",
                "emit": {"schema": "Payment", "id": "id", "key": "key", "map": {"payment_id": "id", "amount": "seq", "currency": '"usd"'}},
            }
        ],
        "routes": [{"name": "all", "from": "Payment", "to": list(subscribers)}],
        "outbound": [{"name": name, "type": "http", **spec} for name, spec in subscribers.items()],
    }


async def post_all(hub: Hub, events: list[dict[str, Any]], concurrency: int = 64) -> None:
    assert hub.web is not None
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}", timeout=30) as client:

        async def post(e: dict[str, Any]) -> None:
            async with sem:
                assert (await client.post("/in", json=e)).status_code == 202

        await asyncio.gather(*(post(e) for e in events))


@pytest.mark.timeout(360)
async def test_flaky_target_gets_every_event_and_duplicates_only_after_timeouts(
    tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bus.runtime.delivery")  # each failed call, with its event id and reason
    rng = random.Random(7)
    fate: dict[str, list[str]] = defaultdict(list)

    def decide(call: Call) -> str:
        roll = rng.random()
        outcome = "500" if roll < 0.30 else "timeout" if roll < 0.35 else "ok"
        fate[call.headers["Idempotency-Key"]].append(outcome)
        return outcome

    decisions: dict[int, str] = {}

    def delay(call: Call) -> float:
        decisions[id(call)] = decide(call)
        return 1.0 if decisions[id(call)] == "timeout" else 0.0  # processed, but the answer comes too late

    target = await Target(delay=delay, answer=lambda c: (500, {}) if decisions[id(c)] == "500" else (200, {})).start()
    spec = {
        "url": f"{target.url}/flaky",
        "timeout_s": 0.25,
        "delivery": {"concurrency": 64, "backoff_initial": "10ms", "backoff_max": "200ms", "circuit_breaker": None},
    }
    events = [{"id": f"e{i}", "key": f"k{i % 500}", "seq": i} for i in range(10_000)]
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", hub_config(bootstrap, {"flaky": spec}))) as hub:
            await post_all(hub, events)
            await target.wait_for(lambda: len({c.headers["Idempotency-Key"] for c in target.accepted}) == 10_000, timeout=240)
        accepted = Counter(c.headers["Idempotency-Key"] for c in target.accepted)
        assert set(accepted) == {e["id"] for e in events}  # none lost
        duplicated = {key for key, n in accepted.items() if n > 1}
        assert duplicated, "the run had timeouts, so some duplicates are expected"
        # Duplicates only where a call timed out: by the script, or because under load the hub did
        # not see an accepted call's answer within its 0.25 s (its loop, the target's and the broker
        # share two cores with the other test worker). The hub logs each failed call with its event
        # id; a duplicate without a timeout before it (after a 200, or a 500 alone) would be a bug.
        timed_out = {
            str(r.args[1])
            for r in caplog.records
            if r.msg == "delivery %s of %s failed (%s); retry in %.2fs" and isinstance(r.args, tuple) and "timed out" in str(r.args[2])
        }
        unexplained = {key for key in duplicated if "timeout" not in fate[key] and key not in timed_out}
        assert not unexplained, sorted(unexplained)[:10]
        by_key: dict[str, set[str]] = defaultdict(set)
        for call in target.accepted:
            by_key[call.headers["Idempotency-Key"]].add(call.body["payment_id"])
        assert all(len(ids) == 1 for ids in by_key.values())  # a duplicate is the same event, same key
        assert Counter(o for outcomes in fate.values() for o in outcomes)["500"] > 2000
    finally:
        await target.stop()


async def test_dead_target_opens_its_circuit_without_slowing_the_others(tmp_path: Path, bootstrap: str) -> None:
    down = True
    dead = await Target(answer=lambda c: (503, {}) if down else (200, {})).start()
    healthy = await Target().start()
    subscribers = {
        "dead": {
            "url": f"{dead.url}/dead",
            "delivery": {"backoff_initial": "10ms", "circuit_breaker": {"min_calls": 3, "reset_after": "1s"}},
        },
        "healthy": {"url": f"{healthy.url}/healthy"},
    }
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", hub_config(bootstrap, subscribers))) as hub:
            await post_all(hub, [{"id": f"e{i}", "key": f"k{i}", "seq": i} for i in range(300)])
            await healthy.wait_for(lambda: len(healthy.accepted) == 300, timeout=60)
            # All 300 reached the healthy target while the dead one was refusing everything...
            assert dead.accepted == []
            worker = next(w for w in hub.workers if w.name == "dead")
            breaker = worker.gate.breaker
            assert breaker is not None
            # The dead subscriber's consumer may join after the healthy one has had everything (the
            # two join apart, and a loaded machine can take seconds): the circuit opens once its
            # first calls fail, not by the time another subscriber is done.
            await until(lambda: breaker.opened >= 1, "the dead target's circuit to open", timeout=30)
            # ...and the open circuit spared the dead target: a few probes, not 300 events x retries.
            calls_while_down = len(dead.calls)
            assert calls_while_down < 100, calls_while_down
            async with httpx.AsyncClient() as client:
                metrics = (await client.get(f"http://127.0.0.1:{hub.ops.port}/metrics")).text
            assert 'bus_circuit_opened_total{subscriber="dead"}' in metrics
            assert 'bus_circuit_state{subscriber="dead"} 0.0' not in metrics  # open, or half-open while probing
            assert 'bus_circuit_state{subscriber="healthy"} 0.0' in metrics
            down = False  # it comes back: the waiting events flow, none lost
            await dead.wait_for(lambda: len({c.headers["Idempotency-Key"] for c in dead.accepted}) == 300, timeout=60)
            async with httpx.AsyncClient() as client:
                metrics = (await client.get(f"http://127.0.0.1:{hub.ops.port}/metrics")).text
            assert 'bus_circuit_state{subscriber="dead"} 0.0' in metrics  # closed again, and the gauge says so
    finally:
        await dead.stop()
        await healthy.stop()


async def test_attempt_limit_dead_letters_with_reason(tmp_path: Path, bootstrap: str) -> None:
    target = await Target(answer=lambda c: (503, {})).start()
    spec = {"url": f"{target.url}/x", "delivery": {"max_attempts": 3, "backoff_initial": "10ms", "circuit_breaker": None}}
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", hub_config(bootstrap, {"x": spec}))) as hub:
            await post_all(hub, [{"id": "e1", "key": "k", "seq": 1}])
            await target.wait_for(lambda: len(target.calls) == 3)
            from tests.integration.test_delivery import dead_letters

            [letter] = await dead_letters(hub, "x", 1)
        headers = dict(letter.headers)
        assert headers["bus_attempts"] == b"3"
        assert headers["bus_error"].startswith(b"gave up after 3 attempt(s): POST ")
        assert len(target.calls) == 3
    finally:
        await target.stop()


async def test_per_key_order_holds_with_concurrency_across_keys(tmp_path: Path, bootstrap: str) -> None:
    target = await Target(delay=lambda c: 0.02, answer=lambda c: (503, {}) if random.random() < 0.2 else (200, {})).start()
    spec = {"url": f"{target.url}/x", "delivery": {"concurrency": 16, "backoff_initial": "5ms", "circuit_breaker": None}}
    events = [{"id": f"e{i}", "key": f"k{i % 6}", "seq": i} for i in range(240)]
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", hub_config(bootstrap, {"x": spec}))) as hub:
            for e in events:  # one at a time, so Kafka holds each key's events in order
                await post_all(hub, [e], concurrency=1)
            await target.wait_for(lambda: len(target.accepted) == 240, timeout=90)
        per_key: dict[str, list[int]] = defaultdict(list)
        for call in target.accepted:
            per_key[f"k{call.body['amount'] % 6}"].append(call.body["amount"])  # key = seq % 6, as posted
        assert all(seqs == sorted(seqs) for seqs in per_key.values())  # a key's later events waited for retries
        assert target.max_in_flight > 1  # different keys really went at once
    finally:
        await target.stop()


async def test_rate_limit_paces_calls(tmp_path: Path, bootstrap: str) -> None:
    target = await Target().start()
    spec = {"url": f"{target.url}/x", "delivery": {"rate_limit": {"rate": 40, "burst": 5}}}
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", hub_config(bootstrap, {"x": spec}))) as hub:
            posted = time.monotonic()
            await post_all(hub, [{"id": f"e{i}", "key": f"k{i}", "seq": i} for i in range(85)])
            await target.wait_for(lambda: len(target.accepted) == 85, timeout=60)
        last = max(c.at for c in target.accepted)
        # 85 calls, a burst of 5 free, then 40/s: the last call starts at least 80/40 = 2 s after the
        # first token was taken, which is after the first event was posted. Measured from the post,
        # not from the first arrival: the first call's connection set-up delays its arrival by a
        # varying amount, which made "last - first arrival" fall short of 2 s on a loaded machine.
        assert last - posted >= (85 - 5) / 40
    finally:
        await target.stop()
