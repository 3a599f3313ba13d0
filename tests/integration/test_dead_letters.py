"""Poison events go to dead-letter topics while the rest flow; after the fix, `bus dlq replay`
delivers them; `bus dlq list` shows what happened."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bus.app.cli import main
from tests.integration.test_delivery import post
from tests.support.hub import build_hub, payment, payment_hub_config, unique_prefix, write_config
from tests.support.target import Target


async def cli(*args: str) -> int:
    return await asyncio.to_thread(main, list(args))  # main() runs its own event loop


async def test_refused_events_are_replayed_after_the_target_is_fixed(
    tmp_path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = True
    target = await Target(answer=lambda c: (422, {}) if broken and c.body["external_id"] in ("pi_1", "pi_3") else (201, {})).start()
    path = write_config(tmp_path / "bus.yaml", payment_hub_config(bootstrap, target.url))
    try:
        async with build_hub(path) as hub:
            await post(hub, *(payment(i) for i in range(5)))
            await target.wait_for(lambda: len(target.accepted) == 3)  # the others flowed past the poison

            capsys.readouterr()
            assert await cli("dlq", "list", "-c", str(path), "--bootstrap", bootstrap, "--subscriber", "erp", "--json") == 0
            letters = json.loads(capsys.readouterr().out)
            assert sorted(d["event_id"] for d in letters) == ["evt_1", "evt_3"]
            assert {d["error_class"] for d in letters} == {"PermanentError"} and all("answered 422" in d["error"] for d in letters)
            assert all(d["status"] == "new" and d["route"] == "large-usd" for d in letters)

            broken = False
            assert await cli("dlq", "replay", "-c", str(path), "--bootstrap", bootstrap, "--subscriber", "erp") == 0
            assert "replayed 2 dead letter(s)" in capsys.readouterr().out
            await target.wait_for(lambda: len(target.accepted) == 5)
            assert sorted(c.body["external_id"] for c in target.accepted) == [f"pi_{i}" for i in range(5)]

            # Replayed letters are marked: a second replay finds nothing to do; --all still lists them.
            assert await cli("dlq", "replay", "-c", str(path), "--bootstrap", bootstrap, "--subscriber", "erp") == 0
            assert "replayed 0 dead letter(s)" in capsys.readouterr().out
            assert await cli("dlq", "list", "-c", str(path), "--bootstrap", bootstrap, "--subscriber", "erp", "--all", "--json") == 0
            assert {d["status"] for d in json.loads(capsys.readouterr().out)} == {"replayed"}
    finally:
        await target.stop()


async def test_router_dead_letters_replay_through_the_fixed_route(
    tmp_path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = await Target().start()
    prefix = unique_prefix()
    broken = payment_hub_config(bootstrap, target.url, prefix=prefix)
    broken["routes"][0]["when"] = "100 / (amount - 5) > 0"  # fails for amount 5
    fixed = payment_hub_config(bootstrap, target.url, prefix=prefix)
    fixed["routes"][0]["when"] = "amount == 5 or amount >= 100000"
    try:
        async with build_hub(write_config(tmp_path / "broken.yaml", broken)) as hub:
            await post(hub, payment(1, amount=5), payment(2, amount=6))
            await target.wait_for(lambda: len(target.accepted) == 1)  # amount 6: routed by the broken route too

        path = write_config(tmp_path / "fixed.yaml", fixed)
        assert await cli("dlq", "list", "-c", str(path), "--bootstrap", bootstrap, "--subscriber", "_router", "--json") == 0
        [letter] = json.loads(capsys.readouterr().out)
        assert letter["event_id"] == "evt_1" and "division by zero" in letter["error"]

        async with build_hub(path):
            assert await cli("dlq", "replay", "-c", str(path), "--bootstrap", bootstrap, "--subscriber", "_router", "evt_1") == 0
            await target.wait_for(lambda: any(c.headers["Idempotency-Key"] == "evt_1" for c in target.accepted))
    finally:
        await target.stop()


async def test_dlq_needs_a_reachable_kafka(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path / "bus.yaml", payment_hub_config("embedded", "http://127.0.0.1:9"))
    assert await cli("dlq", "list", "-c", str(path)) == 1
    assert "the config says embedded, and its ops.port is 0" in capsys.readouterr().err  # nothing to ask: say what to pass
    assert await cli("dlq", "list", "-c", str(path), "--subscriber", "nope", "--bootstrap", "x:1") == 2
    assert "no outbound adapter named nope" in capsys.readouterr().err
