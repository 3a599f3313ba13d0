"""Run the recipe end to end on this machine: Shopify order webhooks -> QuickBooks invoices and
PostgreSQL stock levels, through the hub on an embedded broker.

    .venv/bin/python examples/shopify-orders-to-quickbooks/run.py [--orders 30]

Starts a QuickBooks stand-in (OAuth2, requestid idempotency, a throttle and an outage on the
first calls), resets the `shop` schema in PostgreSQL (schema.sql, 100 of each item in stock),
starts `bus run -c bus.yaml`, and plays a Shopify store: signed order webhooks, one delivery
repeated with the same webhook id, one forged signature. It then checks that every order became
exactly one invoice with the right lines and total, and that stock fell by what was sold.
Exit code 0 when everything matches.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
from examples.kit.hub import RecipeHub, verdict  # noqa: E402
from examples.kit.quickbooks import QuickBooks  # noqa: E402
from examples.kit.shopify import CATALOG, ShopifyStore  # noqa: E402

SECRET = "shpss_recipe_demo_secret"
STOCK = 100
DSN = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass
class Report:
    orders: list[dict[str, Any]]
    invoices: list[dict[str, Any]]
    levels: dict[str, int]
    answers: dict[str, int] = field(default_factory=dict)  # what Shopify's deliveries were answered
    quickbooks_calls: int = 0  # invoice calls QuickBooks saw, the throttled and the failed included
    hub_exit: int = -1

    def expected_levels(self) -> dict[str, int]:
        sold = Counter[str]()
        for order in self.orders:
            for line in order["line_items"]:
                sold[line["sku"]] += line["quantity"]
        return {sku: STOCK - sold[sku] for sku in CATALOG}

    def invoice_totals(self) -> dict[str, Decimal]:
        return {i["DocNumber"]: Decimal(str(i["TotalAmt"])) for i in self.invoices}

    def problems(self) -> list[str]:
        found = []
        want = {str(o["id"]): Decimal(o["total_price"]) for o in self.orders}
        if len(self.invoices) != len(want):
            found.append(f"{len(self.invoices)} invoices for {len(want)} orders")
        if self.invoice_totals() != want:
            found.append("invoice totals differ from the orders'")
        if self.levels != self.expected_levels():
            found.append(f"stock levels {self.levels} != expected {self.expected_levels()}")
        if self.answers != {"accepted": len(self.orders), "repeated": 200, "forged": 401}:
            found.append(f"webhook answers {self.answers}")
        if self.hub_exit != 0:
            found.append(f"hub exit code {self.hub_exit}")
        return found


async def reset_database(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("DROP SCHEMA IF EXISTS shop CASCADE")
        await connection.execute((HERE / "schema.sql").read_text())
        await connection.executemany("INSERT INTO shop.inventory_levels (sku, available) VALUES ($1, $2)", [(s, STOCK) for s in CATALOG])
    finally:
        await connection.close()


async def read_levels(dsn: str) -> tuple[dict[str, int], int]:
    connection = await asyncpg.connect(dsn)
    try:
        levels = {r["sku"]: r["available"] for r in await connection.fetch("SELECT sku, available FROM shop.inventory_levels")}
        moves = await connection.fetchval("SELECT count(*) FROM shop.inventory_movements")
        return levels, int(moves)
    finally:
        await connection.close()


async def run(orders: int = 30, *, bootstrap: str | None = None, prefix: str = "shop", dsn: str = DSN, within: float = 120) -> Report:
    quickbooks = await QuickBooks(throttle_next=1, fail_next=1).start()
    await reset_database(dsn)
    hub = RecipeHub(
        HERE / "bus.yaml",
        {
            "SHOPIFY_WEBHOOK_SECRET": SECRET,
            "QUICKBOOKS_URL": quickbooks.url,
            "QUICKBOOKS_TOKEN_URL": f"{quickbooks.url}/oauth2/v1/tokens/bearer",
            "QUICKBOOKS_REALM_ID": quickbooks.realm,
            "QUICKBOOKS_CLIENT_ID": quickbooks.client_id,
            "QUICKBOOKS_CLIENT_SECRET": quickbooks.client_secret,
            "INVENTORY_DB_URL": dsn,
        },
        bootstrap=bootstrap,
        prefix=prefix,
    )
    store = ShopifyStore(SECRET)
    placed = [store.order(1001 + n, customer_id=[207, 208, 311, 412][n % 4]) for n in range(orders)]
    report = Report(placed, [], {})
    try:
        await hub.start()
        url = f"{hub.http_url}/hooks/shopify/orders"
        async with httpx.AsyncClient(timeout=30) as client:
            answers = [await store.deliver(client, url, "orders/create", o, webhook_id=f"wh-{o['id']}") for o in placed]
            report.answers["accepted"] = sum(1 for a in answers if a.status_code == 202)
            again = await store.deliver(client, url, "orders/create", placed[0], webhook_id=f"wh-{placed[0]['id']}")
            report.answers["repeated"] = again.status_code
            forged = await store.deliver(client, url, "orders/create", placed[1], secret="not-the-secret")
            report.answers["forged"] = forged.status_code
        lines = sum(len(o["line_items"]) for o in placed)
        deadline = asyncio.get_running_loop().time() + within
        while asyncio.get_running_loop().time() < deadline:
            if len(quickbooks.invoices) >= len(placed) and (await read_levels(dsn))[1] >= lines:
                break
            await asyncio.sleep(0.3)
        await asyncio.sleep(1)  # anything that would arrive twice has had time to
    finally:
        report.hub_exit = await hub.stop()
        await quickbooks.stop()
    report.invoices = quickbooks.invoices
    report.quickbooks_calls = quickbooks.requests
    report.levels, _ = await read_levels(dsn)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=30)
    parser.add_argument("--dsn", default=DSN, help="PostgreSQL for the shop schema (default: the local test database)")
    args = parser.parse_args()
    report = asyncio.run(run(args.orders, dsn=args.dsn))
    print(f"\n  Shopify orders sent        {len(report.orders):5d}   answers: {report.answers}")
    print(f"  QuickBooks invoices        {len(report.invoices):5d}   ({report.quickbooks_calls} calls: a 429 and a 503 retried)")
    for sku, level in sorted(report.levels.items()):
        print(f"  stock {sku:<12}         {level:5d}   (expected {report.expected_levels()[sku]})")
    return verdict(report.problems(), "every order invoiced once, stock moved once per line")


if __name__ == "__main__":
    sys.exit(main())
