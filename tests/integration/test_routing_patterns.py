"""Every routing pattern over the real broker, in one hub: transform and schema conversion,
enrichment from a table fed by events, splitter, dedup, throttle, and dead letters for a failing
condition and for an output that does not fit its schema."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from bus.app.hub import Hub
from tests.support.hub import build_hub, unique_prefix, write_config
from tests.support.target import Target

THROTTLE_RATE = 20.0


def config(bootstrap: str, target: str, engine: str) -> dict[str, Any]:
    def hook(name: str, schema: str, key: str) -> dict[str, Any]:
        return {"name": name, "type": "http_webhook", "path": f"/hooks/{name}", "emit": {"schema": schema, "id": "event_id", "key": key}}

    def out(name: str) -> dict[str, Any]:
        return {"name": name, "type": "http", "url": f"{target}/{name}"}

    return {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 3, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "router": {"engine": engine},
        "inbound": [
            {
                **hook("orders", "Order", "order_id"),
                "emit": {
                    "schema": "Order",
                    "id": "event_id",
                    "key": "order_id",
                    "map": {
                        "order_id": "order_id",
                        "customer_id": "customer_id",
                        "currency": "currency",
                        "total": "total",
                        "lines": "lines",
                    },
                },
            },
            {
                **hook("customers", "Customer", "customer_id"),
                "emit": {
                    "schema": "Customer",
                    "id": "event_id",
                    "key": "customer_id",
                    "map": {"customer_id": "customer_id", "name": "name", "email": "email", "country": "country"},
                },
            },
        ],
        "tables": [
            {"name": "customers", "from": "Customer", "key": "customer_id"},
            {"name": "terms", "rows": {"de": {"days": 14}, "us": {"days": 30}}},
        ],
        "routes": [
            {
                "name": "invoice",
                "from": "Order",
                "when": "total < 7000",
                "enrich": [
                    {"table": "customers", "key": "customer_id", "into": "customer"},
                    {"table": "terms", "key": "lower(customer.country)", "into": "term"},
                ],
                "transform": {
                    "schema": "Invoice",
                    "key": "customer_id",
                    "map": {
                        "invoice_id": '"INV-" + order_id',
                        "order_id": "order_id",
                        "customer_id": "customer_id",
                        "account": "customer.email",
                        "currency": "upper(currency)",
                        "amount": "total",
                    },
                    "templates": {"memo": "Net ${term.days} days for ${customer.name}"},
                },
                "to": ["books"],
            },
            {
                "name": "stock",
                "from": "Order",
                "split": {"items": "lines", "as": "line"},
                "transform": {
                    "schema": "Inventory",
                    "key": "line.sku",
                    "map": {"sku": "line.sku", "quantity_change": "-line.quantity", "reference": "order_id"},
                },
                "to": ["wms"],
            },
            {"name": "notify-once", "from": "Order", "dedup": {"by": "order_id", "ttl": "1h"}, "to": ["notify"]},
            {"name": "audit", "from": "Order", "throttle": {"rate": THROTTLE_RATE, "burst": 1}, "to": ["audit"]},
            {"name": "risky", "from": "Order", "when": "100 / (total - 4242) > 0", "to": ["audit"]},
            {
                # A value only run time can find does not fit (a table row's is not typed): the
                # output fails its schema and is dead-lettered. (A mapping the checker can see
                # is wrong never loads.)
                "name": "bad-shape",
                "from": "Order",
                "when": "total == 7777",
                "enrich": [{"table": "terms", "key": '"de"', "into": "term"}],
                "transform": {
                    "schema": "Invoice",
                    "map": {"invoice_id": "order_id", "currency": "term.days", "amount": "total"},  # a number as currency
                },
                "to": ["books"],
            },
        ],
        "outbound": [out("books"), out("wms"), out("notify"), out("audit")],
    }


def order(i: int, customer: str, total: int, *, event: str | None = None) -> dict[str, Any]:
    return {
        "event_id": event or f"o-evt-{i}",
        "order_id": f"o-{i}",
        "customer_id": customer,
        "currency": "eur",
        "total": total,
        "lines": [{"sku": f"sku-{i}-a", "quantity": 1, "unit_price": total}, {"sku": f"sku-{i}-b", "quantity": 3, "unit_price": 0}],
    }


async def read_topic(hub: Hub, topic: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=hub.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found: list[Any] = []
        deadline = time.monotonic() + 30
        while len(found) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                found.extend(batch)
        return found
    finally:
        await consumer.stop()


@pytest.mark.parametrize("engine", ["aiokafka", "faust"])
async def test_routing_patterns_over_the_real_broker(tmp_path: Path, bootstrap: str, engine: str) -> None:
    target = await Target().start()
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config(bootstrap, target.url, engine))) as hub:
            assert hub.web is not None and hub.router is not None and hub.router.tables is not None
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}") as client:
                for cid, name, country in (("c-1", "Ada", "DE"), ("c-2", "Bob", "US")):
                    r = await client.post(
                        "/hooks/customers",
                        json={
                            "event_id": f"cust-{cid}",
                            "customer_id": cid,
                            "name": name,
                            "email": f"{name.lower()}@example.com",
                            "country": country,
                        },
                    )
                    assert r.status_code == 202
                # The table is fed through Kafka: wait until this router process has both rows.
                await target.wait_for(lambda: len(hub.router.tables.tables["customers"]) == 2)  # type: ignore[union-attr]

                orders = [order(i, "c-1" if i % 2 else "c-2", 1000 + i) for i in range(20)]
                orders.append(order(20, "c-1", 4242))  # its `risky` condition divides by zero
                orders.append(order(21, "c-2", 7777))  # `bad-shape` builds an Invoice with a number as currency
                orders.append(order(3, "c-1", 1003, event="o-evt-3-redelivered"))  # same order, new event id
                for o in orders:
                    assert (await client.post("/hooks/orders", json=o)).status_code == 202

            by = lambda name: [c for c in target.accepted if c.path == f"/{name}"]  # noqa: E731
            # audit gets each order once, though both `audit` and `risky` (for o-21) choose it unchanged.
            await target.wait_for(lambda: len(by("audit")) >= 23 and len(by("wms")) >= 46 and len(by("books")) >= 22, timeout=90)
            dead = await read_topic(hub, hub.topics.router_dead_letter, 2)
            async with httpx.AsyncClient() as client:
                metrics = (await client.get(f"http://127.0.0.1:{hub.ops.port}/metrics")).text
            audit_copies = await read_topic(hub, hub.topics.delivery("audit"), 23)

        # Transform + enrichment (customer from a table fed by Customer events, terms from config rows).
        invoices = {c.body["order_id"]: c for c in by("books")}
        assert invoices["o-1"].body == {
            "invoice_id": "INV-o-1",
            "order_id": "o-1",
            "customer_id": "c-1",
            "account": "ada@example.com",
            "currency": "EUR",
            "amount": 1001,
            "due": None,
            "memo": "Net 14 days for Ada",
        }
        assert invoices["o-2"].body["memo"] == "Net 30 days for Bob"
        assert invoices["o-1"].headers["ce-type"] == "Invoice"
        assert "o-21" not in invoices  # its output did not fit Invoice: dead-lettered instead
        # Splitter: two Inventory events per order, ids derived from the order's event id.
        moves = by("wms")
        assert len(moves) == 46
        assert {c.body["sku"]: c.body["quantity_change"] for c in moves if c.body["reference"] == "o-5"} == {"sku-5-a": -1, "sku-5-b": -3}
        assert {c.headers["Idempotency-Key"] for c in moves if c.body["reference"] == "o-5"} == {"o-evt-5/0", "o-evt-5/1"}
        # Dedup by order id: the redelivered o-3 reached notify once, though it came in twice.
        notified = [c.body["order_id"] for c in by("notify")]
        assert sorted(notified) == sorted(f"o-{i}" for i in range(22))
        # Throttle: the audit route produced at no more than its rate (record timestamps are set when the
        # router sends). A lower bound on the spread cannot be met early by a fast machine: no timing race.
        sent_at = sorted(r.timestamp / 1000 for r in audit_copies)
        assert len(sent_at) == 23
        assert sent_at[-1] - sent_at[0] >= (len(sent_at) - 2) / THROTTLE_RATE
        # Dead letters: the failing condition and the misfit output, each with its route and reason.
        reasons = {dict(d.headers)["bus_route"].decode(): dict(d.headers)["bus_error"].decode() for d in dead}
        assert "division by zero" in reasons["risky"]
        assert "does not match schema Invoice" in reasons["bad-shape"] and "currency" in reasons["bad-shape"]
        assert {dict(d.headers)["ce_id"] for d in dead} == {b"o-evt-20", b"o-evt-21"}
        # Per-route metrics, as Prometheus scrapes them.
        for line in (
            'bus_routed_events_total{outcome="emitted",route="stock"} 46.0',
            'bus_routed_events_total{outcome="matched",route="notify-once"} 23.0',
            'bus_routed_events_total{outcome="dropped",route="notify-once"} 1.0',
            'bus_routed_events_total{outcome="failed",route="bad-shape"} 1.0',
            'bus_routed_events_total{outcome="failed",route="risky"} 1.0',
            'bus_routed_events_total{outcome="matched",route="risky"} 1.0',
        ):
            assert line in metrics, line
        assert 'bus_route_evaluation_seconds_total{route="invoice"}' in metrics
    finally:
        await target.stop()


async def test_a_throttled_routes_batch_does_not_hold_the_stop_and_nothing_is_lost(tmp_path: Path, bootstrap: str) -> None:
    """A throttled route copies at its rate, and a batch of events waited for every token before
    the router could stop: 2 a second, 40 events held the stop (and a pod's shutdown, past its
    grace period) for 20 s. Now the stop ends the wait; the batch is left uncommitted and the next
    router routes it again (a copy already made comes again with the same id)."""
    from tests.faults.test_delivery_faults import hub_config, post_all

    target = await Target().start()
    spec = hub_config(bootstrap, {"audit": {"url": f"{target.url}/audit"}})
    spec["kafka"]["partitions"] = 1  # one batch
    spec["routes"][0]["throttle"] = {"rate": 2.0, "burst": 1}
    path = write_config(tmp_path / "bus.yaml", spec)
    events = [{"id": f"e{i}", "key": f"k{i % 5}", "seq": i} for i in range(40)]
    try:
        async with build_hub(path) as hub:
            await post_all(hub, events)
            await target.wait_for(lambda: len(target.accepted) >= 2, timeout=30)  # the batch is being copied
            stopping = time.monotonic()
            await hub.stop()
        took = time.monotonic() - stopping
        assert took < 10, f"the hub took {took:.1f}s to stop behind its throttled route"
        assert len(target.accepted) < 40
        del spec["routes"][0]["throttle"]  # the same route and group, unthrottled: the rest at once
        async with build_hub(write_config(path, spec)):
            await target.wait_for(lambda: {c.body["payment_id"] for c in target.accepted} == {e["id"] for e in events}, timeout=60)
    finally:
        await target.stop()
