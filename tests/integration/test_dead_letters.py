"""Poison events go to dead-letter topics while the rest flow; after the fix, `bus dlq replay`
delivers them; `bus dlq list` shows what happened."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from bus.app.cli import main
from bus.kafka.reader import read_topic
from tests.integration.test_delivery import dead_letters, post
from tests.support.hub import build_hub, payment, payment_hub_config, unique_prefix, write_config
from tests.support.target import Call, Target


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


async def test_a_letter_that_a_later_event_of_its_key_came_after_is_not_replayed_over_it(
    tmp_path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """pi_1's first version is refused and dead-lettered; its second version is delivered. Replayed
    after the target was fixed, the first reached the target after the second and put the older
    amount over the newer (an upsert by key, as a CRM or ERP does), unsaid. Now replay leaves it
    out, naming the later event, and --include-superseded sends it anyway; a letter no later event
    of its key came after (pi_2) is replayed as before."""
    broken = True
    held: dict[str, int] = {}  # what the target holds, by key: the last write wins

    def answer(call: Call) -> tuple[int, dict[str, object]]:
        if broken and call.body["event"] in ("evt_1", "evt_2", "evt_3", "evt_3b"):
            return 422, {}
        held[call.body["external_id"]] = call.body["amount_cents"]
        return 201, {}

    target = await Target(answer=answer).start()
    path = write_config(tmp_path / "bus.yaml", payment_hub_config(bootstrap, target.url))
    try:
        async with build_hub(path) as hub:
            newer = payment(1, amount=250_000)
            newer["id"] = "evt_1b"
            refused_too = payment(3, amount=350_000)  # a later event of pi_3 that failed as well: nothing newer got through
            refused_too["id"] = "evt_3b"
            await post(hub, payment(1), payment(2), payment(3))
            await post(hub, newer, refused_too)
            await target.wait_for(lambda: held.get("pi_1") == 250_000)
            await dead_letters(hub, "erp", 4)

            broken = False
            capsys.readouterr()
            assert await cli("dlq", "replay", "-c", str(path), "--bootstrap", bootstrap, "--subscriber", "erp") == 1  # not all
            out, err = capsys.readouterr()
            assert "replayed 3 dead letter(s)" in out, out
            assert "1 not replayed: a later event of the same key came after each" in err and "evt_1 (after it: evt_1b)" in err, err
            await target.wait_for(lambda: "pi_2" in held and held.get("pi_3") == 350_000)
            sent_back = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.delivery("erp"))
            replays = sorted(dict(r.headers)["ce_id"] for r in sent_back if "bus_replayed_from" in dict(r.headers))
            assert replays == [b"evt_2", b"evt_3", b"evt_3b"]  # evt_1 was not sent back; pi_3's two in their order
            assert held == {"pi_1": 250_000, "pi_2": 150_000, "pi_3": 350_000}  # the newer amounts stay

            assert await cli("dlq", "replay", "-c", str(path), "--bootstrap", bootstrap, "--subscriber", "erp", "--include-superseded") == 0
            assert "replayed 1 dead letter(s)" in capsys.readouterr().out
            await target.wait_for(lambda: held.get("pi_1") == 150_000)  # sent anyway, as asked
    finally:
        await target.stop()


async def test_a_letter_from_before_where_an_earlier_chunk_read_its_partition_is_judged_too(tmp_path: Path, bootstrap: str) -> None:
    """A replay goes 1,000 letters at a time and reads each origin partition once, from the first
    letter it judges. A letter in a later chunk from before that point (dead-letter partitions
    hold one origin partition's letters in their own orders) was replayed unjudged, over the
    newer event of its key. Now the partition is read again from that letter."""
    from bus.deadletters import DeadLetters
    from bus.kafka.topics import TopicNames

    def answer(call: Call) -> tuple[int, dict[str, object]]:
        return (422, {}) if call.body["event"] in ("evt_1", "evt_9") else (201, {})

    target = await Target(answer=answer).start()
    config = payment_hub_config(bootstrap, target.url, partitions=1)  # one origin partition: evt_1, evt_1b, evt_9 in that order
    path = write_config(tmp_path / "bus.yaml", config)
    try:
        async with build_hub(path) as hub:
            newer = payment(1, amount=250_000)
            newer["id"] = "evt_1b"
            await post(hub, payment(1))
            await post(hub, newer)
            await post(hub, payment(9))
            store = DeadLetters(hub.config.kafka, hub.bootstrap, TopicNames(hub.config.kafka.topic_prefix))
            by_id: dict[str, Any] = {}
            for _ in range(150):
                by_id = {letter.event_id: letter for letter in await store.find("erp")}
                if len(by_id) == 2:
                    break
                await asyncio.sleep(0.2)
            assert set(by_id) == {"evt_1", "evt_9"}
            assert await store.replay([by_id["evt_9"]]) == 1  # the first chunk: its partition read from evt_9 on
            assert await store.replay([by_id["evt_1"]]) == 0  # the next: from before that
            assert [(letter.event_id, newer_id) for letter, newer_id in store.superseded] == [("evt_1", "evt_1b")]
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


async def test_many_large_dead_letters_are_listed_counted_and_replayed_in_bounded_memory(tmp_path: Path, bootstrap: str) -> None:
    """A target down for a day leaves every event it missed on its dead-letter topic. The API (the
    console asked every 10 s) read every letter, message and all, into the hub's memory per call,
    and counted only the first 1,000 in the console."""
    import tracemalloc

    from aiokafka import AIOKafkaProducer

    from bus.adapter_api import AdapterRegistry
    from bus.app.hub_view import HubView
    from ops.api.models import DeadLetterAction

    target = await Target().start()
    path = write_config(tmp_path / "bus.yaml", payment_hub_config(bootstrap, target.url))
    letters, size = 1200, 100_000  # 120 MB of messages
    try:
        async with build_hub(path) as hub:
            producer = AIOKafkaProducer(bootstrap_servers=hub.bootstrap, max_request_size=2 << 20)
            await producer.start()
            try:
                body = b"x" * size
                for i in range(letters):
                    headers = [("ce_id", f"big_{i}".encode()), ("bus_error", b"answered 500"), ("bus_error_class", b"RetryableError"),
                               ("bus_failed_at", f"2026-12-05T10:{i // 60 % 60:02d}:{i % 60:02d}.000Z".encode())]  # fmt: skip
                    await producer.send(hub.topics.dead_letter("erp"), body, key=f"k{i}".encode(), headers=headers)
                await producer.flush()
            finally:
                await producer.stop()
            view = HubView(hub, AdapterRegistry.from_entry_points(), hub._catalog)
            tracemalloc.start()
            try:
                page = await view.dead_letters(DeadLetterAction(), offset=1000, limit=50)
                peak_listing = tracemalloc.get_traced_memory()[1]
                tracemalloc.reset_peak()
                dry = await view.dead_letter_action("replay", DeadLetterAction(subscriber="erp", dry_run=True))
                peak_action = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert (page.total, page.counts) == (letters, {"erp": letters})
            assert [item.event_id for item in page.items] == [f"big_{i}" for i in range(1000, 1050)]  # oldest first
            assert (dry.matched, dry.done) == (letters, 0)
            assert peak_listing < 40_000_000 and peak_action < 40_000_000, (peak_listing, peak_action)  # not the 120 MB
    finally:
        await target.stop()
