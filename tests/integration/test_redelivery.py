"""`bus redeliver`: a target that lost what it was delivered in a window of time (restored from a
backup, an import rolled back) gets it again from the subscriber's delivery topic, through the
running hub, without what would do harm: dead letters (the DLQ workflow owns them), events a later
event of their key came after, and copies an earlier redelivery already made."""

from __future__ import annotations

import asyncio
import json
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bus.app.cli import main
from bus.app.hub import Hub
from bus.config.models import KafkaConfig
from bus.kafka.topics import TopicNames
from bus.redelivery import Redeliverer, Redelivery, _Partition, _Window
from tests.integration.test_delivery import post
from tests.support.hub import build_hub, payment, payment_hub_config, unique_prefix, write_config
from tests.support.target import Call, Target

WRITE = "write-token-5678"


async def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(args))  # main() runs its own event loop
    said = capsys.readouterr()
    return code, said.out, said.err


async def a_moment_between() -> datetime:
    """A time no record shares with the records before or after it (Kafka's timestamps are ms)."""
    await asyncio.sleep(0.05)
    moment = datetime.now(UTC)
    await asyncio.sleep(0.05)
    return moment


async def settled_dry_run(capsys: pytest.CaptureFixture[str], subscriber: str, *args: str) -> dict[str, Any]:
    """A dry run once the subscriber has committed all it was sent (only settled events are copied)."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        code, out, err = await cli(capsys, "redeliver", subscriber, *args, "--dry-run", "--json")
        assert code == 0, err
        found: dict[str, Any] = json.loads(out)
        if found["not_settled"] == 0:
            return found
        assert asyncio.get_running_loop().time() < deadline, found
        await asyncio.sleep(0.3)


async def settled(hub: Hub, subscriber: str, since: datetime) -> None:
    """Wait until the subscriber has committed what it was sent since ``since`` (only settled events are copied)."""
    redeliverer = Redeliverer(hub.loaded.hub.kafka, hub.bootstrap, hub.topics)
    deadline = asyncio.get_running_loop().time() + 30
    while (found := await redeliverer.redeliver(subscriber, since, dry_run=True)).not_settled:
        assert asyncio.get_running_loop().time() < deadline, found
        await asyncio.sleep(0.3)


async def copies_on(bootstrap: str, topic: str) -> list[Any]:
    """The records of ``topic`` that a redelivery wrote (every partition)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or await _partitions(consumer, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found: list[Any] = []
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            found += [r for records in batches.values() for r in records]
            ends = [(consumer.highwater(tp), await consumer.position(tp)) for tp in tps]
            if all(high is not None and at >= high for high, at in ends):
                return [r for r in found if any(k == "bus_replayed_from" for k, _ in r.headers or ())]
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


async def test_a_target_that_lost_a_window_gets_it_again_without_dead_letters_or_older_over_newer(
    tmp_path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    held: dict[str, int] = {}  # what the ERP holds by payment: an upsert, the last write wins

    def answer(call: Call) -> tuple[int, dict[str, object]]:
        if call.body["event"] == "evt_7":
            return 422, {}  # refused for good: a dead letter
        held[call.body["external_id"]] = call.body["amount_cents"]
        return 201, {}

    target = await Target(answer=answer).start()
    config = payment_hub_config(bootstrap, target.url)
    config["ops"]["tokens"] = [{"name": "admin", "token": WRITE, "scope": "write"}]
    path = write_config(tmp_path / "bus.yaml", config)
    direct = ["-c", str(path), "--bootstrap", bootstrap]
    erp = lambda: [c for c in target.accepted if c.path == "/erp"]  # noqa: E731
    try:
        async with build_hub(path) as hub:
            await post(hub, *(payment(i) for i in range(6)))  # before the window: the ERP's backup has these
            await target.wait_for(lambda: len(erp()) == 6)
            since = await a_moment_between()
            second_6 = {**payment(6, amount=260_000), "id": "evt_6b"}
            await post(hub, payment(6), second_6, payment(7), payment(8), payment(9))
            await target.wait_for(lambda: len(erp()) == 10 and len(target.calls) >= 11)  # evt_7 refused
            until = await a_moment_between()
            newer_8 = {**payment(8, amount=280_000), "id": "evt_8b"}
            await post(hub, newer_8)  # after the window: pi_8's newest, which the ERP still holds
            await target.wait_for(lambda: len(erp()) == 11)

            # The ERP loses what it got in the window (an import rolled back): pi_6 and pi_9 are gone; pi_8 holds
            # evt_8b's amount, which came after the window.
            for payment_id in ("pi_6", "pi_9"):
                del held[payment_id]
            target.accepted.clear()
            window = ["--since", since.isoformat(), "--until", until.isoformat()]

            dry = await settled_dry_run(capsys, "erp", *window, *direct)
            assert dry["dry_run"] and dry["sent"] == 0, dry
            # five events of the window were delivered or dead-lettered; evt_7 is the DLQ's, evt_8 came before evt_8b
            assert (dry["matched"], dry["to_send"], dry["dead_lettered"], dry["superseded"]) == (5, 3, 1, 1), dry
            assert [(e["event_id"], e["after"]) for e in dry["superseded_events"]] == [("evt_8", "evt_8b")], dry
            await asyncio.sleep(1)
            assert erp() == []  # a dry run sends nothing

            code, out, _ = await cli(capsys, "redeliver", "erp", *window, *direct)
            assert code == 0 and "sent again 3" in out and "left out: 1 dead-lettered" in out and "evt_8 at" in out, out
            await target.wait_for(lambda: len(erp()) == 3)
            assert [c.body["event"] for c in erp() if c.body["external_id"] == "pi_6"] == ["evt_6", "evt_6b"]  # in order
            assert held["pi_6"] == 260_000 and held["pi_9"] == 150_000 and held["pi_8"] == 280_000  # the newest stays
            assert sorted(c.headers["Idempotency-Key"] for c in erp()) == ["evt_6", "evt_6b", "evt_9"]  # the same ids
            copies = await copies_on(bootstrap, hub.topics.delivery("erp"))
            assert len(copies) == 3 and all(
                dict(r.headers)["bus_replayed_from"].decode().startswith(f"{hub.topics.delivery('erp')}/") for r in copies
            )

            # The lineage shows the copy as another delivery of the same event, and where it was sent again from.
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.ops.port}/api/v1", timeout=60) as api:
                deadline = asyncio.get_running_loop().time() + 30
                while (
                    len((lineage := (await api.get("/events/evt_9", headers={"Authorization": f"Bearer {WRITE}"})).json())["deliveries"])
                    < 2
                ):
                    assert asyncio.get_running_loop().time() < deadline, lineage
                    await asyncio.sleep(0.3)
            first, again = lineage["deliveries"]
            assert (first["replayed_from"], again["replayed_from"], again["outcome"]) == (None, first["position"], "delivered"), lineage

            # Again, through the management API, with no end: the first copies are not copied a second time
            # (their originals are), and evt_8 and evt_8b are both in the window now, in their order.
            await settled_dry_run(capsys, "erp", "--since", since.isoformat(), *direct)  # the copies delivered and committed
            target.accepted.clear()
            # The redelivery reads the topics before the hub answers: seconds on a loaded machine, not httpx's default 5.
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.ops.port}/api/v1", timeout=60) as api:
                admin = {"Authorization": f"Bearer {WRITE}"}
                assert (await api.post("/subscribers/nope/redeliver", json={"since": since.isoformat()}, headers=admin)).status_code == 404
                future = await api.post("/subscribers/erp/redeliver", json={"since": "2999-01-01T00:00:00Z"}, headers=admin)
                assert future.status_code == 400 and "in the future" in future.json()["detail"], future.text
                bad = await api.post("/subscribers/erp/redeliver", json={"since": "yesterday"}, headers=admin)
                assert bad.status_code == 400, bad.text
                done = (await api.post("/subscribers/erp/redeliver", json={"since": since.isoformat()}, headers=admin)).json()
            assert (done["matched"], done["earlier_copies"], done["dead_lettered"], done["superseded"]) == (9, 3, 1, 0), done
            assert (done["to_send"], done["sent"], done["paused"]) == (5, 5, False), done
            await target.wait_for(lambda: len(erp()) == 5)
            assert sorted(c.body["event"] for c in erp()) == ["evt_6", "evt_6b", "evt_8", "evt_8b", "evt_9"]
            assert [c.body["event"] for c in erp() if c.body["external_id"] == "pi_8"] == ["evt_8", "evt_8b"]
            assert held["pi_8"] == 280_000 and held["pi_6"] == 260_000

            # One payment's events only (a support case): pi_9's original, not the two copies made of it.
            await settled_dry_run(capsys, "erp", "--since", since.isoformat(), *direct)
            target.accepted.clear()
            code, out, _ = await cli(capsys, "redeliver", "erp", "--since", since.isoformat(), "--key", "pi_9", *direct, "--json")
            one = json.loads(out)
            assert code == 0 and (one["keys"], one["matched"], one["earlier_copies"], one["sent"]) == (["pi_9"], 3, 2, 1), out
            await target.wait_for(lambda: len(erp()) == 1)
            assert erp()[0].body["event"] == "evt_9"
    finally:
        await target.stop()
    # The ledger balances: copies are deliveries of events it knows.
    code, out, _ = await cli(capsys, "reconcile", *direct, "--subscriber", "erp", "--json")
    assert code == 0 and json.loads(out)[0]["unaccounted"] == [], out


async def test_a_live_event_that_overtakes_a_copy_of_its_key_is_sent_again_behind_it(bootstrap: str) -> None:
    """Between the read that chooses what to copy and the copies, a live event of a copied key
    reaches the partition: it is ahead of the (older) copy, which would put older data over newer
    at the target. It is copied again behind the copy."""
    names = TopicNames(unique_prefix())
    topic, kafka = names.delivery("erp"), KafkaConfig(bootstrap=bootstrap, topic_prefix=names.prefix)
    tp = TopicPartition(topic, 0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        since = await a_moment_between()
        for i, key in enumerate([b"a", b"b", b"a"]):
            await producer.send_and_wait(topic, b"v%d" % i, key=key, partition=0, headers=[("ce_id", b"e%d" % i)])
        group = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=names.delivery_group("erp"), enable_auto_commit=False)
        await group.start()
        try:
            group.assign([tp])
            await group.commit({tp: 3})  # all three delivered
        finally:
            await group.stop()

        said: list[str] = []
        redeliverer = Redeliverer(kafka, bootstrap, names, progress=said.append)
        outcome = Redelivery("erp", since, None, dry_run=False)
        part = _Partition(tp, committed=3, start=0, beginning=0)
        reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await reader.start()
        try:
            window = _Window(int(since.timestamp() * 1000), None, None)
            await redeliverer._choose(reader, part, window, {}, outcome, include_superseded=False)
        finally:
            await reader.stop()
        assert part.chosen == [0, 1, 2]
        assert said == [f"{topic}/0: read from offset 0 to 3, 3 event(s) of the window"]  # what a terminal is told
        await producer.send_and_wait(topic, b"live", key=b"b", partition=0, headers=[("ce_id", b"e3")])  # newer than e1
        copies = await redeliverer._copy(producer, part, outcome)
        await redeliverer._keep_order(producer, part, copies, set(), outcome)
    finally:
        await producer.stop()
    assert outcome.kept_in_order == 1
    records = await copies_on(bootstrap, topic)
    last_of_b = [r for r in records if r.key == b"b"][-1]
    assert last_of_b.value == b"live" and dict(last_of_b.headers)["bus_replayed_from"] == f"{topic}/0/3".encode()


async def test_random_windows_never_copy_what_they_must_not_and_keep_each_keys_newest_last(bootstrap: str) -> None:
    """Random partitions of keyed events (some dead-lettered, some not settled yet) and random
    windows: a redelivery never copies a dead letter, an event not settled or one outside the
    window, copies each chosen event once, in order; and every key it copies ends with its newest
    event that is not a dead letter as the last one on the partition (what an upsert target
    holds when the copies are delivered)."""
    rng = random.Random(20261206)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for case in range(25):
            names = TopicNames(unique_prefix())
            topic, tp = names.delivery("erp"), TopicPartition(names.delivery("erp"), 0)
            base = int(time.time() * 1000) - 100_000
            count = rng.randint(1, 14)
            keys = [rng.choice([b"a", b"b", b"c", None]) for _ in range(count)]
            committed = rng.randint(0, count)
            dead = {i for i in range(committed) if rng.random() < 0.2}
            first, last = sorted(rng.sample(range(count + 1), 2))  # the window: the events first..last-1
            for i, key in enumerate(keys):
                await producer.send_and_wait(topic, b"v", key=key, partition=0, timestamp_ms=base + 10 * i, headers=[("ce_id", b"e%d" % i)])
            for i in sorted(dead):
                origin = f"{topic}/0/{i}".encode()
                await producer.send_and_wait(
                    names.dead_letter("erp"), b"v", key=keys[i], headers=[("ce_id", b"e%d" % i), ("bus_origin", origin)]
                )
            group = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=names.delivery_group("erp"), enable_auto_commit=False)
            await group.start()
            try:
                group.assign([tp])
                await group.commit({tp: committed})
            finally:
                await group.stop()
            since = datetime.fromtimestamp((base + 10 * first - 5) / 1000, UTC)
            until = datetime.fromtimestamp((base + 10 * last - 5) / 1000, UTC)
            kafka = KafkaConfig(bootstrap=bootstrap, topic_prefix=names.prefix)
            done = await Redeliverer(kafka, bootstrap, names).redeliver("erp", since, until)
            shown = f"case {case}: keys {keys}, committed {committed}, dead {sorted(dead)}, window {first}..{last - 1}: {done}"

            after = [r for r in await copies_on(bootstrap, topic) if r.partition == 0]
            copied = [int(dict(r.headers)["bus_replayed_from"].decode().rpartition("/")[2]) for r in after]
            assert len(copied) == done.sent == done.to_send, shown
            assert copied == sorted(set(copied)), shown  # each once, in order
            assert all(first <= i < last and i < committed and i not in dead for i in copied), shown
            assert done.matched == len([i for i in range(first, last) if i < committed]), shown
            # Every copied key ends with its newest event that reached (or will reach) the target.
            final = {r.key: dict(r.headers)["ce_id"] for r in await _whole(bootstrap, tp)}  # the last record of each key
            for key in {keys[i] for i in copied} - {None}:
                newest = max(i for i, k in enumerate(keys) if k == key and i not in dead)
                assert final[key] == b"e%d" % newest, shown
    finally:
        await producer.stop()


async def _whole(bootstrap: str, tp: TopicPartition) -> list[Any]:
    """Every record of ``tp``, in offset order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        found: list[Any] = []
        while True:
            found += (await consumer.getmany(tp, timeout_ms=300)).get(tp, [])
            high = consumer.highwater(tp)
            if high is not None and await consumer.position(tp) >= high:
                return found
    finally:
        await consumer.stop()


async def test_a_window_that_starts_before_1970_starts_at_the_first_record(bootstrap: str) -> None:
    """Kafka's timestamps start at the epoch, and the client refuses to ask for an earlier one: a
    `--since 1960-01-01` (an operator's "from the very beginning") stopped the redelivery with
    aiokafka's "The target time cannot be negative"."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    names = TopicNames(unique_prefix())
    topic, tp = names.delivery("erp"), TopicPartition(names.delivery("erp"), 0)
    try:
        for i in range(3):
            await producer.send_and_wait(topic, b"v", key=b"k%d" % i, partition=0, headers=[("ce_id", b"e%d" % i)])
    finally:
        await producer.stop()
    group = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=names.delivery_group("erp"), enable_auto_commit=False)
    await group.start()
    try:
        group.assign([tp])
        await group.commit({tp: 3})
    finally:
        await group.stop()
    kafka = KafkaConfig(bootstrap=bootstrap, topic_prefix=names.prefix)
    done = await Redeliverer(kafka, bootstrap, names).redeliver("erp", datetime(1960, 1, 1, tzinfo=UTC), dry_run=True)
    assert done.matched == 3 and done.to_send == 3, done
