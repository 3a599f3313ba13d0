"""`bus backfill`: a system that joins the hub gets the events routed before it joined, from the
canonical topics, through its own routes (their transforms as configured now), without what it
already has, without older data over newer, and without any other subscriber seeing them again."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bus.app import backfill, kafka_commands
from bus.app.cli import main
from bus.app.hub import Hub
from bus.event import Event
from tests.integration.test_delivery import post
from tests.support.hub import build_hub, payment, payment_hub_config, write_config
from tests.support.target import Call, Target

WRITE = "write-token-backfill"


class Said(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(args))  # main() runs its own event loop
    said = capsys.readouterr()
    return code, said.out, said.err


async def routed_dry_run(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    """A dry run once the router has routed (and committed) every record of the window."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        code, out, err = await cli(capsys, "backfill", *args, "--dry-run", "--json")
        assert code in (0, 1), err
        found: dict[str, Any] = json.loads(out)
        if found["not_routed"] == 0:
            return found
        assert asyncio.get_running_loop().time() < deadline, found
        await asyncio.sleep(0.3)


@pytest.mark.parametrize(
    ("hold_bytes", "engine"),
    [(None, "aiokafka"), (0, "aiokafka"), (None, "faust")],
    ids=["kept-from-the-first-read", "read-again-to-write", "faust-router"],
)
async def test_a_subscriber_that_joins_later_gets_the_history_its_routes_give_it(
    tmp_path: Path,
    bootstrap: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    hold_bytes: int | None,
    engine: str,
) -> None:
    said = Said()  # a backfill's progress, as the hub logs it (on its own logger: the CLI calls set the root's handlers anew)
    jobs_log = logging.getLogger("bus.app.copy_jobs")
    jobs_log.addHandler(said)
    jobs_log.setLevel(logging.INFO)
    if hold_bytes is not None:  # a history larger than what a backfill keeps between its reads
        monkeypatch.setattr(backfill, "_HOLD_BYTES", hold_bytes)
    held: dict[str, int] = {}  # what the CRM holds by payment: an upsert, the last write wins

    def answer(call: Call) -> tuple[int, dict[str, object]]:
        if call.path == "/crm":
            held[call.body["id"]] = call.body["amount"]
        return 201, {}

    target = await Target(answer=answer).start()
    before = payment_hub_config(bootstrap, target.url)
    before["ops"]["tokens"] = [{"name": "admin", "token": WRITE, "scope": "write"}]
    before["router"] = {"engine": engine}  # the router's position is read from either engine's group
    path = write_config(tmp_path / "bus.yaml", before)
    crm = lambda: [c for c in target.accepted if c.path == "/crm"]  # noqa: E731
    erp = lambda: [c for c in target.accepted if c.path == "/erp"]  # noqa: E731
    since = datetime.now(UTC)
    try:
        async with build_hub(path) as hub:
            await post(hub, *(payment(i) for i in range(6)))
            await post(hub, {**payment(1, amount=160_000), "id": "evt_1b"})  # pi_1's newer state, in order after evt_1
            await post(hub, {**payment(5, amount=999), "id": "evt_5c"})  # the CRM route's transform fails on this one
            await target.wait_for(lambda: len(erp()) == 7)
        erp_before = len(erp())

        # The CRM joins: a route of its own, whose transform fails on an amount of 999.
        after = json.loads(json.dumps(before))
        after["outbound"].append(
            {"name": "crm", "type": "http", "url": f"{target.url}/crm", "body": {"id": "payment_id", "amount": "amount", "event": "$id"}}
        )
        after["routes"].append(
            {
                "name": "payments-to-crm",
                "from": "Payment",
                "to": ["crm"],
                "transform": {
                    "map": {
                        "payment_id": "payment_id",
                        "amount": "amount + 0 * (amount % (amount - 999))",
                        "currency": "currency",
                        "customer_id": "customer_id",
                        "status": "status",
                    }
                },
            }
        )
        write_config(path, after)
        async with build_hub(path) as hub:
            await post(hub, payment(6), {**payment(2, amount=170_000), "id": "evt_2b"})  # live: the CRM gets these at once
            await target.wait_for(lambda: len(crm()) == 2)
            assert held == {"pi_6": 150_000, "pi_2": 170_000}
            hub_url = f"http://127.0.0.1:{hub.ops.port}"
            (tmp_path / "token").write_text(WRITE)
            asked = ["crm", "--since", since.isoformat(), "--hub", hub_url, "--token-file", str(tmp_path / "token")]

            dry = await routed_dry_run(capsys, *asked)
            # 10 records: evt_0..evt_5, evt_1b, evt_5c (999), evt_6, evt_2b. The route gives the CRM
            # one event for each but the 999, on which it fails; evt_6 and evt_2b it has; evt_2 came before evt_2b.
            assert (dry["read"], dry["matched"], dry["failed"]) == (10, 9, 1), dry
            assert (dry["already_delivered"], dry["superseded"], dry["to_send"], dry["sent"]) == (2, 1, 6, 0), dry
            assert [(e["event_id"], e["after"]) for e in dry["superseded_events"]] == [("evt_2", "evt_2b")], dry
            assert dry["failed_events"][0]["route"] == "payments-to-crm" and dry["failed_events"][0]["event_id"] == "evt_5c", dry
            assert dry["routes"] == ["payments-to-crm"], dry
            # "From the very beginning": Kafka has no time before 1970, and a window that began earlier
            # stopped the backfill ("The target time cannot be negative").
            ever = await routed_dry_run(capsys, "crm", "--since", "1960-01-01T00:00:00+00:00", *asked[3:])
            assert (ever["read"], ever["matched"], ever["to_send"]) == (10, 9, 6), ever
            one_key = await routed_dry_run(capsys, *asked, "--key", "pi_1")  # one payment's history only
            assert (one_key["read"], one_key["to_send"], one_key["keys"]) == (2, 2, ["pi_1"]), one_key
            await asyncio.sleep(1)
            assert len(crm()) == 2  # a dry run writes nothing

            code, out, _ = await cli(capsys, "backfill", *asked)
            assert code == 1, out  # a route failed on one record: said, and the exit code says so
            assert "wrote 6" in out and "left out: 2 already delivered" in out and "evt_2 at" in out and "evt_5c at" in out, out
            await target.wait_for(lambda: len(crm()) == 8)
            progress = said.lines
            assert any(line.startswith("a backfill to crm asked at") and "canonical.Payment/0: read" in line for line in progress), progress
            # pi_1 in the canonical order (evt_1 then evt_1b), pi_2 still its newest, pi_5 as evt_5 had it
            assert held == {"pi_0": 150_000, "pi_1": 160_000, "pi_2": 170_000, "pi_3": 150_000, "pi_4": 150_000,
                            "pi_5": 150_000, "pi_6": 150_000}  # fmt: skip
            events = [c.body["event"] for c in crm()]
            assert events.index("evt_1") < events.index("evt_1b"), events
            await target.wait_for(lambda: len(erp()) >= erp_before + 2)  # the two live events
            await asyncio.sleep(1)  # anything more would arrive now
            assert len(erp()) == erp_before + 2, [c.body for c in erp()]  # and no history again

            again = await routed_dry_run(capsys, *asked)
            assert (again["to_send"], again["already_delivered"]) == (0, 8), again  # a second backfill writes nothing
            anyway = await routed_dry_run(capsys, *asked, "--include-superseded")
            assert (anyway["to_send"], anyway["superseded"]) == (1, 0), anyway  # evt_2, older than what the CRM holds

            # Through the API, with a window that cannot hold anything: refused with why.
            # A backfill answers when it has read and written: more than httpx's 5 s on a loaded machine (seen in CI).
            async with httpx.AsyncClient(base_url=f"{hub_url}/api/v1", headers={"Authorization": f"Bearer {WRITE}"}, timeout=60) as api:
                refused = await api.post("/subscribers/crm/backfill", json={"since": "2999-01-01T00:00:00Z"})
                assert refused.status_code == 400 and "future" in refused.json()["detail"], refused.text
                unknown = await api.post("/subscribers/nobody/backfill", json={"since": since.isoformat()})
                assert unknown.status_code == 404, unknown.text
                support = await api.post("/subscribers/support/backfill", json={"since": since.isoformat(), "dry_run": True})
                assert support.status_code == 200 and support.json()["routes"] == ["failed"], support.text
                # Asked twice at once (a button pressed twice): the second is refused while the first writes.
                twice = await asyncio.gather(*(api.post("/subscribers/erp/backfill", json={"since": since.isoformat()}) for _ in range(2)))
                assert sorted(answer.status_code for answer in twice) == [200, 409], [a.text for a in twice]
                refused_twice = next(a for a in twice if a.status_code == 409).json()["detail"]
                assert "a backfill to erp asked at" in refused_twice and "under way in this process" in refused_twice, refused_twice
                assert (await api.get("/subscribers/erp")).json()["copying"] is None  # shown while one writes, gone after
    finally:
        await target.stop()
        jobs_log.removeHandler(said)
        jobs_log.setLevel(logging.NOTSET)
    # The ledger balances: what a backfill wrote entered the CRM's delivery topic and was delivered.
    code, out, _ = await cli(capsys, "reconcile", "-c", str(path), "--bootstrap", bootstrap, "--subscriber", "crm", "--json")
    balance = json.loads(out)[0]
    assert code == 0 and balance["unaccounted"] == [] and (balance["entered"], balance["delivered"]) == (8, 8), out


async def routed_all(hub: Hub, count: int) -> None:
    """Wait until the hub's router has committed ``count`` canonical Payment records."""
    group = AIOKafkaConsumer(bootstrap_servers=hub.bootstrap, group_id=f"{hub.topics.prefix}-router", enable_auto_commit=False)
    await group.start()
    try:
        tps = [TopicPartition(hub.topics.canonical("Payment"), p) for p in range(3)]
        deadline = asyncio.get_running_loop().time() + 60
        while sum([(await group.committed(tp)) or 0 for tp in tps]) < count:
            assert asyncio.get_running_loop().time() < deadline, "the router did not route the history"
            await asyncio.sleep(0.2)
    finally:
        await group.stop()


async def test_a_long_backfill_says_how_far_it_is(
    tmp_path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """40,000 events of history: `bus backfill --hub` says on stderr how far the hub is while it
    works (it was one silent wait for the answer), and the subscriber shows it meanwhile."""
    monkeypatch.setattr(kafka_commands, "_PROGRESS_EVERY_S", 0.1)  # asked often: the whole backfill takes a second or two
    target = await Target().start()
    config = payment_hub_config(bootstrap, target.url)
    config["ops"]["tokens"] = [{"name": "admin", "token": WRITE, "scope": "write"}]
    path = write_config(tmp_path / "bus.yaml", config)
    since = datetime.now(UTC)
    try:
        async with build_hub(path) as hub:  # no route of it takes EUR payments: the history goes nowhere yet
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
            await producer.start()
            try:
                sent = []
                for i in range(40_000):
                    data = {"payment_id": f"pi_{i}", "amount": i, "currency": "eur", "customer_id": None, "status": "succeeded"}
                    event = Event(schema="Payment", data=data, source="/history", key=f"pi_{i}", id=f"evt_{i}", type="Payment")
                    value = hub.codec.encode("Payment", data)
                    sent.append(
                        await producer.send(hub.topics.canonical("Payment"), value, key=event.key.encode(), headers=event.headers())
                    )
                # and one record that is not an event at all (a producer outside the hub): no route can read it
                sent.append(await producer.send(hub.topics.canonical("Payment"), b"not avro", key=b"junk", headers=[("ce_id", b"junk-1")]))
                for future in sent:
                    await future
            finally:
                await producer.stop()
            await routed_all(hub, 40_001)  # before the CRM joins: routed to nobody
        config["outbound"].append({"name": "crm", "type": "http", "url": f"{target.url}/crm"})
        config["routes"].append({"name": "first-ones", "from": "Payment", "when": "amount < 5", "to": ["crm"]})
        async with build_hub(write_config(path, config)) as hub:
            (tmp_path / "token").write_text(WRITE)
            asked = [
                "crm",
                "--since",
                since.isoformat(),
                "--hub",
                f"http://127.0.0.1:{hub.ops.port}",
                "--token-file",
                str(tmp_path / "token"),
            ]
            dry = await routed_dry_run(capsys, *asked)
            assert (dry["read"], dry["to_send"], dry["failed"]) == (40_001, 5, 1), json.dumps(dry)
            assert dry["failed_events"][0]["event_id"] == "junk-1" and dry["failed_events"][0]["route"] == "_router", dry
            code, out, err = await cli(capsys, "backfill", *asked)
            assert code == 1 and "wrote 5" in out and "junk-1" in out, out  # said, and the exit code says so
            said = [line for line in err.splitlines() if line.startswith("bus: a backfill to crm asked at")]
            assert said and any("canonical.Payment/" in line and "record(s)" in line for line in said), err
            await target.wait_for(lambda: len([c for c in target.accepted if c.path == "/crm"]) == 5)
    finally:
        await target.stop()
