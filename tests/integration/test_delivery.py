"""Outbound delivery over the real broker: retries, dead letters, and commit only after a 2xx."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from bus.app.hub import Hub
from tests.support.hub import build_hub, payment, payment_hub_config, unique_prefix, write_config
from tests.support.target import Call, Target


async def post(hub: Hub, *payments: dict) -> None:
    assert hub.web is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}", headers={"X-API-Key": "k1"}) as client:
        for p in payments:
            assert (await client.post("/hooks/payments", json=p)).status_code == 202


async def dead_letters(hub: Hub, subscriber: str, count: int) -> list:
    consumer = AIOKafkaConsumer(bootstrap_servers=hub.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(hub.topics.dead_letter(subscriber), p) for p in range(3)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found: list = []
        deadline = time.monotonic() + 30
        while len(found) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                found.extend(batch)
        return found
    finally:
        await consumer.stop()


async def test_retryable_answers_are_retried_until_accepted(tmp_path: Path, bootstrap: str) -> None:
    answers: Counter[str] = Counter()

    def flaky(call: Call) -> tuple[int, dict[str, str]]:
        key = call.headers["Idempotency-Key"]
        answers[key] += 1
        return [(503, {"Retry-After": "0"}), (429, {}), (500, {}), (200, {})][min(answers[key] - 1, 3)]

    target = await Target(answer=flaky).start()
    config = write_config(tmp_path / "bus.yaml", payment_hub_config(bootstrap, target.url))
    try:
        async with build_hub(config) as hub:
            await post(hub, payment(1), payment(2))
            await target.wait_for(lambda: len(target.accepted) == 2)
        assert sorted(c.headers["Idempotency-Key"] for c in target.accepted) == ["evt_1", "evt_2"]
        # Every attempt of an event carries the same idempotency key: 3 refusals, then the success.
        assert answers == {"evt_1": 4, "evt_2": 4}
    finally:
        await target.stop()


async def test_permanent_refusal_goes_to_the_dead_letter_topic_with_reason(tmp_path: Path, bootstrap: str) -> None:
    target = await Target(answer=lambda c: (422, {}) if c.body["external_id"] == "pi_1" else (201, {})).start()
    config = write_config(tmp_path / "bus.yaml", payment_hub_config(bootstrap, target.url))
    try:
        async with build_hub(config) as hub:
            await post(hub, payment(1), payment(2))
            await target.wait_for(lambda: len(target.accepted) == 1)
            [letter] = await dead_letters(hub, "erp", 1)
        headers = dict(letter.headers)
        assert letter.key == b"pi_1"
        assert headers["ce_id"] == b"evt_1"
        assert headers["bus_error_class"] == b"PermanentError"
        assert headers["bus_error"].startswith(b"POST " + target.url.encode() + b"/erp answered 422")
        assert headers["bus_attempts"] == b"1"
        assert headers["bus_subscriber"] == b"erp"
        assert headers["bus_route"] == b"large-usd"
        assert letter.value[0] == 0  # the original Avro value, ready for replay
        assert [c.body["external_id"] for c in target.accepted] == ["pi_2"]
    finally:
        await target.stop()


async def test_a_refusal_inside_a_200_answer_is_a_dead_letter_and_a_retry_asked_for_is_retried(tmp_path: Path, bootstrap: str) -> None:
    """Slack-like: every answer is 200, and `ok: false` says the call was refused. Counted as
    delivered, such a refusal lost the event with nothing said. With refused_when and retry_when
    the answer decides: refused, dead-lettered with the answer; rate-limited, retried; ok, delivered."""
    tries: Counter[str] = Counter()

    def says(call: Call) -> dict[str, object]:
        ref = call.body["external_id"]
        tries[ref] += 1
        if ref == "pi_1":
            return {"ok": False, "error": "channel_not_found"}
        if ref == "pi_2" and tries[ref] < 3:
            return {"ok": False, "error": "ratelimited"}
        return {"ok": True}

    target = await Target(says=says).start()
    raw = payment_hub_config(bootstrap, target.url)
    raw["outbound"][0] |= {"refused_when": "ok == false", "retry_when": 'error == "ratelimited"'}
    raw["outbound"][0]["delivery"] = {"backoff_initial": "50ms", "backoff_max": "100ms"}
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", raw)) as hub:
            await post(hub, payment(1), payment(2), payment(3))
            [letter] = await dead_letters(hub, "erp", 1)
            await target.wait_for(lambda: tries["pi_2"] == 3 and tries["pi_3"] == 1)
            await asyncio.sleep(0.5)
        headers = dict(letter.headers)
        assert headers["ce_id"] == b"evt_1" and headers["bus_error_class"] == b"PermanentError" and headers["bus_attempts"] == b"1"
        assert b"answered 200, and its answer says refused_when (ok == false)" in headers["bus_error"]
        assert b"channel_not_found" in headers["bus_error"]
        assert tries == {"pi_1": 1, "pi_2": 3, "pi_3": 1}  # refused once, not retried; rate-limited twice, then taken
    finally:
        await target.stop()


async def test_a_refusal_in_an_answer_that_is_a_list_is_judged_by_dollar_answer(tmp_path: Path, bootstrap: str) -> None:
    """A batch API answers 200 with one result per record, a JSON list (Salesforce's sObject
    Collections: `[{"id": ..., "success": false, "errors": [...]}]`). A list has no fields, so no
    condition over fields could see the refusal and the event counted as delivered. `$answer` is
    the whole answer: the refused event is dead-lettered with it, the other delivered."""

    def says(call: Call) -> list[dict[str, object]]:
        if call.body["external_id"] == "pi_1":
            return [{"id": None, "success": False, "errors": [{"statusCode": "REQUIRED_FIELD_MISSING"}]}]
        return [{"id": "001xx", "success": True, "errors": []}]

    target = await Target(says=says).start()
    raw = payment_hub_config(bootstrap, target.url)
    raw["outbound"][0] |= {"refused_when": 'find($answer, "success", false) != null'}
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", raw)) as hub:
            await post(hub, payment(1), payment(2))
            [letter] = await dead_letters(hub, "erp", 1)
            await target.wait_for(lambda: len(target.calls) == 2)
        headers = dict(letter.headers)
        assert headers["ce_id"] == b"evt_1" and headers["bus_error_class"] == b"PermanentError"
        assert b"REQUIRED_FIELD_MISSING" in headers["bus_error"]
    finally:
        await target.stop()


async def test_offset_is_committed_only_after_the_target_accepted(tmp_path: Path, bootstrap: str) -> None:
    down = True
    target = await Target(answer=lambda c: (503, {}) if down else (200, {})).start()
    config = write_config(tmp_path / "bus.yaml", payment_hub_config(bootstrap, target.url, prefix=unique_prefix()))
    try:
        async with build_hub(config) as hub:
            await post(hub, payment(1))
            await target.wait_for(lambda: len(target.calls) >= 2)  # refused and being retried
        assert target.accepted == []
        # The hub stopped while the event was unaccepted: it must still be there for the next run.
        down = False
        async with build_hub(config) as hub:
            await target.wait_for(lambda: len(target.accepted) == 1)
        assert target.accepted[0].headers["Idempotency-Key"] == "evt_1"
    finally:
        await target.stop()


async def test_timeout_is_retried_with_the_same_idempotency_key(tmp_path: Path, bootstrap: str) -> None:
    seen: set[str] = set()

    def slow_first_time(call: Call) -> float:
        key = call.headers["Idempotency-Key"]
        first = key not in seen
        seen.add(key)
        return 2.0 if first else 0.0

    target = await Target(delay=slow_first_time).start()
    cfg = payment_hub_config(bootstrap, target.url)
    cfg["outbound"][0]["timeout_s"] = 0.5
    config = write_config(tmp_path / "bus.yaml", cfg)
    try:
        async with build_hub(config) as hub:
            await post(hub, payment(1))
            await target.wait_for(lambda: len(target.calls) >= 2 and len(target.accepted) >= 1)
        # Attempt 1 timed out at the hub (the target still finished it: the duplicate a target
        # dedups by key); attempt 2 was answered in time. Both carried the same key.
        assert [c.headers["Idempotency-Key"] for c in target.calls[:2]] == ["evt_1", "evt_1"]
    finally:
        await target.stop()


async def test_first_match_mode_sends_each_event_to_its_first_matching_route_only(tmp_path: Path, bootstrap: str) -> None:
    target = await Target().start()
    cfg = payment_hub_config(bootstrap, target.url)
    cfg["router"] = {"mode": "first"}
    cfg["routes"][1]["to"] = ["support"]  # failed payments: support only
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", cfg)) as hub:
            # Matches both routes; the first (large-usd -> erp) wins. Then one only the second matches.
            await post(hub, payment(1, status="failed"), payment(2, amount=10, status="failed"))
            await target.wait_for(lambda: len(target.accepted) == 2)
            await asyncio.sleep(0.5)  # a wrong extra delivery would arrive now
        assert sorted((c.path, c.headers["Idempotency-Key"]) for c in target.accepted) == [("/erp", "evt_1"), ("/support", "evt_2")]
    finally:
        await target.stop()


async def test_retries_count_the_attempts_that_were_retried_not_the_last_one(tmp_path: Path, bootstrap: str) -> None:
    from prometheus_client import REGISTRY

    def count(outcome: str) -> float:
        return REGISTRY.get_sample_value("bus_deliveries_total", {"subscriber": "erp", "outcome": outcome}) or 0.0

    target = await Target(answer=lambda c: (500, {})).start()
    raw = payment_hub_config(bootstrap, target.url)
    raw["outbound"][0]["delivery"] = {"max_attempts": 4, "backoff_initial": "10ms", "backoff_max": "20ms"}
    config = write_config(tmp_path / "bus.yaml", raw)
    before = {o: count(o) for o in ("retried", "dead_lettered")}
    try:
        async with build_hub(config) as hub:
            await post(hub, *(payment(i) for i in range(1, 6)))
            await dead_letters(hub, "erp", 5)
            deadline = time.monotonic() + 10
            while count("dead_lettered") - before["dead_lettered"] < 5 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        assert count("dead_lettered") - before["dead_lettered"] == 5
        assert count("retried") - before["retried"] == 5 * 3  # four attempts each: three of them were retried
        assert len(target.calls) == 5 * 4
    finally:
        await target.stop()


async def test_a_dropped_field_is_absent_from_what_the_subscriber_receives(tmp_path: Path, bootstrap: str) -> None:
    target = await Target().start()
    raw = payment_hub_config(bootstrap, target.url)
    # support receives the event's fields as they are (no body:): customer_id and description dropped.
    raw["routes"][1]["transform"] = {"drop": ["customer_id", "description"]}
    config = write_config(tmp_path / "bus.yaml", raw)
    try:
        async with build_hub(config) as hub:
            await post(hub, payment(1, status="failed"))
            await target.wait_for(lambda: any(c.path.endswith("/support") for c in target.accepted))
        [body] = [c.body for c in target.accepted if c.path.endswith("/support")]
        assert "customer_id" not in body and "description" not in body  # absent, not null
        assert body["payment_id"] == "pi_1" and body["status"] == "failed"
    finally:
        await target.stop()


async def test_a_webhooks_request_headers_can_be_read_in_its_mapping(tmp_path: Path, bootstrap: str) -> None:
    """GitHub says what an event is in X-GitHub-Event, not in the body: emit reads $headers."""
    target = await Target().start()
    raw = payment_hub_config(bootstrap, target.url)
    raw["inbound"][0]["emit"]["map"]["description"] = '$headers["x-github-event"]'  # names in lower case
    raw["routes"] = [{"name": "pushes", "from": "Payment", "when": 'description == "push"', "to": ["support"]}]
    raw["outbound"] = raw["outbound"][1:]
    config = write_config(tmp_path / "bus.yaml", raw)
    try:
        async with build_hub(config) as hub:
            assert hub.web is not None
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}", headers={"X-API-Key": "k1"}) as client:
                for i, kind in ((1, "push"), (2, "issues"), (3, "push")):
                    answer = await client.post("/hooks/payments", json=payment(i), headers={"X-GitHub-Event": kind})
                    assert answer.status_code == 202
            await target.wait_for(lambda: len(target.accepted) == 2)
        assert sorted(c.body["payment_id"] for c in target.accepted) == ["pi_1", "pi_3"]
        assert {c.body["description"] for c in target.accepted} == {"push"}
    finally:
        await target.stop()


async def test_a_stop_cuts_calls_still_under_way_after_drain_at_stop_and_they_come_again(
    tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A stop waited for each call under way to be answered, however long the target took (its
    timeout_s, or six times it for an answer sent a byte at a time): a slow target held the stop
    past the pod's grace period, and Kubernetes killed it. After ``delivery.drain_at_stop`` the
    call is cut, said, and its event delivered again by the next hub with the same idempotency key."""
    calls: list[str] = []

    def slow_first_time(call: Call) -> float:
        calls.append(call.headers["Idempotency-Key"])
        return 300.0 if len(calls) == 1 else 0.0  # the first answer would take five minutes

    target = await Target(delay=slow_first_time).start()
    cfg = payment_hub_config(bootstrap, target.url, prefix=unique_prefix())
    cfg["outbound"][0] |= {"timeout_s": 120, "delivery": {"drain_at_stop": "1s"}}
    config = write_config(tmp_path / "bus.yaml", cfg)
    try:
        async with build_hub(config) as hub:
            await post(hub, payment(1))
            await target.wait_for(lambda: len(calls) >= 1)  # the call is under way
            began = time.monotonic()
        stopped_in = time.monotonic() - began
        assert stopped_in < 15, f"the stop took {stopped_in:.0f}s"  # 120 s (the call's timeout) before
        assert "1 call(s) to the target still under way 1s into the stop (delivery.drain_at_stop): cut" in caplog.text
        async with build_hub(config) as hub:  # the event was not settled: it comes again
            await target.wait_for(lambda: any(c.headers["Idempotency-Key"] == "evt_1" for c in target.accepted))
        assert calls[:2] == ["evt_1", "evt_1"]
    finally:
        await target.stop()
