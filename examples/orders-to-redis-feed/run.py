"""Run the recipe end to end on this machine: Shopify order webhooks and in-store sales on a Redis
Stream -> one order feed (a Redis Stream) and a customer cache (a Redis hash per customer).

    .venv/bin/python examples/orders-to-redis-feed/run.py [--orders 12] [--sales 12]

Needs the local Redis (127.0.0.1:6379). Starts `bus run -c bus.yaml` on an embedded broker and
plays a Shopify store (signed order webhooks, one delivery repeated with the same webhook id, one
forged signature) and the shop's POS terminals (sales appended to `<prefix>.pos.sales`, some of
them anonymous, one with a total the terminal mistyped). A warehouse app reads the feed through a
consumer group of its own. It checks that every order and sale is in the feed once, the broken
sale is refused (and acknowledged: nothing left pending), and each customer's hash holds their
last order. Exit code 0 when everything matches.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
from examples.kit.hub import RecipeHub, verdict  # noqa: E402
from examples.kit.shopify import ShopifyStore  # noqa: E402

SECRET = "shpss_recipe_demo_secret"
REDIS = "redis://127.0.0.1:6379/0"
ONLINE_CUSTOMERS = [207, 208, 311, 412]
STORE_CUSTOMERS = ["c-901", None, "c-902"]  # None: an anonymous sale (no loyalty card)
MISTYPED = "S0005"  # its total reads "12,5O": refused by the mapping, parked with the reason


@dataclass
class Report:
    online: list[dict[str, Any]]
    sales: list[dict[str, str]]
    feed: list[dict[str, Any]] = field(default_factory=list)  # what the warehouse app read, in order
    customers: dict[str, dict[str, str]] = field(default_factory=dict)
    answers: dict[str, int] = field(default_factory=dict)  # what Shopify's deliveries were answered
    sales_pending: int = -1  # POS entries the hub read and never acknowledged
    hub_exit: int = -1

    def expected_orders(self) -> list[str]:
        return [f"shopify-{o['id']}" for o in self.online] + [f"pos-{s['sale_id']}" for s in self.sales if s["sale_id"] != MISTYPED]

    def expected_customers(self) -> dict[str, dict[str, str]]:
        last: dict[str, dict[str, str]] = {}
        for order in self.online:  # in the order they were placed: the last one stays
            cents = int(Decimal(order["total_price"]) * 100)
            last[str(order["customer"]["id"])] = {
                "last_order": f"shopify-{order['id']}",
                "last_total": str(cents),
                "currency": "usd",
                "items": str(len(order["line_items"])),
            }
        for sale in self.sales:
            if sale.get("customer") and sale["sale_id"] != MISTYPED:
                cents = int(Decimal(sale["total"]) * 100)
                last[sale["customer"]] = {"last_order": f"pos-{sale['sale_id']}", "last_total": str(cents), "currency": "eur", "items": "1"}
        return last

    def problems(self) -> list[str]:
        found = []
        ids = [entry["order_id"] for entry in self.feed]
        if sorted(ids) != sorted(self.expected_orders()):
            found.append(f"the feed holds {len(ids)} orders ({len(set(ids))} distinct), expected {len(self.expected_orders())}")
        cached = {k: {f: v for f, v in h.items() if f != "updated"} for k, h in self.customers.items()}
        if cached != self.expected_customers():
            found.append(f"customer cache {cached} != expected {self.expected_customers()}")
        if not all(h.get("updated", "").endswith("Z") for h in self.customers.values()):
            found.append("a cached customer has no update time")
        if self.answers != {"accepted": len(self.online), "repeated": 200, "forged": 401}:
            found.append(f"webhook answers {self.answers}")
        if self.sales_pending != 0:
            found.append(f"{self.sales_pending} POS entries left unacknowledged")
        if self.hub_exit != 0:
            found.append(f"hub exit code {self.hub_exit}")
        return found


def store_sales(count: int) -> list[dict[str, str]]:
    sales = []
    for n in range(count):
        sale = {"sale_id": f"S{n:04d}", "currency": "EUR", "sku": "MUG-11OZ", "quantity": str(1 + n % 3), "price": "14.50"}
        sale["total"] = "12,5O" if sale["sale_id"] == MISTYPED else f"{Decimal('14.50') * (1 + n % 3):.2f}"
        customer = STORE_CUSTOMERS[n % len(STORE_CUSTOMERS)]
        if customer is not None:
            sale["customer"] = customer
        sales.append(sale)
    return sales


async def read_feed(client: aioredis.Redis, stream: str, want: int, within: float) -> list[dict[str, Any]]:
    """The warehouse app: its own consumer group on the feed, each entry acknowledged once handled."""
    await client.xgroup_create(stream, "warehouse", id="0", mkstream=True)
    read: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + within
    while len(read) < want and asyncio.get_running_loop().time() < deadline:
        found: Any = await client.xreadgroup("warehouse", "picker-1", {stream: ">"}, count=100, block=500)
        for entry_id, fields in found[0][1] if found else []:
            read.append(json.loads(fields[b"data"]))
            await client.xack(stream, "warehouse", entry_id)
    return read


async def run(
    orders: int = 12, sales: int = 12, *, bootstrap: str | None = None, prefix: str = "shop", redis_url: str = REDIS, within: float = 120
) -> Report:
    client = aioredis.Redis.from_url(redis_url)
    stale = [key async for key in client.scan_iter(match=f"{prefix}[.:]*")]
    if stale:
        await client.delete(*stale)
    hub = RecipeHub(
        HERE / "bus.yaml",
        {"SHOPIFY_WEBHOOK_SECRET": SECRET, "REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix},
        bootstrap=bootstrap,
        prefix=prefix,
    )
    store = ShopifyStore(SECRET)
    online = [store.order(2001 + n, customer_id=ONLINE_CUSTOMERS[n % len(ONLINE_CUSTOMERS)]) for n in range(orders)]
    report = Report(online, store_sales(sales))
    try:
        await hub.start()
        url = f"{hub.http_url}/hooks/shopify/orders"
        async with httpx.AsyncClient(timeout=30) as http:
            answers = [await store.deliver(http, url, "orders/create", o, webhook_id=f"wh-{o['id']}") for o in report.online]
            report.answers["accepted"] = sum(1 for a in answers if a.status_code == 202)
            first, second = report.online[0], report.online[1]
            again = await store.deliver(http, url, "orders/create", first, webhook_id=f"wh-{first['id']}")
            forged = await store.deliver(http, url, "orders/create", second, secret="wrong")
            report.answers.update(repeated=again.status_code, forged=forged.status_code)
        for sale in report.sales:  # the POS terminals
            await client.xadd(f"{prefix}.pos.sales", sale)  # type: ignore[arg-type]
        report.feed = await read_feed(client, f"{prefix}.orders.feed", len(report.expected_orders()), within)
        await asyncio.sleep(1)  # anything that would arrive twice has had time to
    finally:
        report.hub_exit = await hub.stop()
    for customer in report.expected_customers():
        held: dict[bytes, bytes] = await client.hgetall(f"{prefix}:customer:{customer}")  # type: ignore[assignment]
        if held:
            report.customers[customer] = {k.decode(): v.decode() for k, v in held.items()}
    report.feed += await read_feed_rest(client, f"{prefix}.orders.feed")
    report.sales_pending = (await client.xpending(f"{prefix}.pos.sales", "bus-store-sales"))["pending"]
    await client.aclose()
    return report


async def read_feed_rest(client: aioredis.Redis, stream: str) -> list[dict[str, Any]]:
    """Whatever reached the feed after the warehouse app stopped waiting (a repeat would be here)."""
    found: Any = await client.xreadgroup("warehouse", "picker-1", {stream: ">"}, count=10_000)
    return [json.loads(fields[b"data"]) for _, fields in (found[0][1] if found else [])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=12)
    parser.add_argument("--sales", type=int, default=12)
    parser.add_argument("--redis", default=REDIS, help="the Redis to use (default: the local one)")
    args = parser.parse_args()
    report = asyncio.run(run(args.orders, args.sales, redis_url=args.redis))
    print(f"\n  Shopify orders sent        {len(report.online):5d}   answers: {report.answers}")
    print(f"  POS sales appended         {len(report.sales):5d}   (one mistyped: refused and parked)")
    print(f"  orders in the feed         {len(report.feed):5d}   (read by the warehouse app's own consumer group)")
    for customer, cached in sorted(report.customers.items()):
        print(f"  customer {customer:<8}          last order {cached['last_order']}, {cached['last_total']} {cached['currency']}")
    return verdict(report.problems(), "every order in the feed once, each customer's last order cached, the mistyped sale refused")


if __name__ == "__main__":
    sys.exit(main())
