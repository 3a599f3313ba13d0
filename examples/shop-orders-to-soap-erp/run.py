"""Run the recipe end to end on this machine: a shop's orders read from its GraphQL API become
invoices posted to the ERP's SOAP ledger service.

    .venv/bin/python examples/shop-orders-to-soap-erp/run.py [--orders 30]

Starts two stand-ins (examples/kit): a shop whose GraphQL API graphql-core serves from
shop.graphql, with a Relay connection of orders, and an ERP ledger served from ledger.wsdl that
checks a WS-Security UsernameToken digest and answers SOAP 1.2 faults. Then the hub on an
embedded broker: every order becomes one invoice; orders of a customer the ERP has no account
for are refused by the ERP with a fault and dead-lettered with its text; two 503s from the
ERP's load balancer are retried; orders placed later are read on from the saved cursor.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
from examples.kit.graphql_shop import TOKEN, GraphQLShop  # noqa: E402
from examples.kit.hub import RecipeHub, verdict  # noqa: E402
from examples.kit.soap_erp import SoapLedger  # noqa: E402

ACCOUNTS = {"cus_1": "4000", "cus_2": "4100", "cus_3": "4200"}  # as the config's erp-accounts table
UNKNOWN = "cus_9"  # a customer the ERP has no account for


@dataclass
class Report:
    orders: list[dict[str, Any]]
    invoices: list[dict[str, Any]] = field(default_factory=list)
    erp_calls: Counter[str] = field(default_factory=Counter)
    dead_letters: str = ""  # `bus dlq list --subscriber erp`
    hub_exit: int = -1

    def expected(self) -> dict[str, tuple[str, Decimal]]:
        """Invoice number -> (account, amount) for every order the ERP can take."""
        return {
            f"SHOP-{o['number']}": (ACCOUNTS[o["customer"]["id"]], Decimal(o["total"]) / 100)
            for o in self.orders
            if o["customer"]["id"] in ACCOUNTS
        }

    def problems(self) -> list[str]:
        found = []
        numbers = Counter(i["InvoiceNumber"] for i in self.invoices)
        if set(numbers) != set(self.expected()) or any(n > 1 for n in numbers.values()):
            found.append(
                f"the ERP holds {len(numbers)} invoices ({sum(numbers.values())} posts), expected {len(self.expected())} once each"
            )
        got = {i["InvoiceNumber"]: (i["Account"], Decimal(i["Amount"])) for i in self.invoices}
        wrong = [n for n, want in self.expected().items() if n in got and got[n] != want]
        if wrong:
            found.append(f"invoices with the wrong account or amount: {wrong[:5]}")
        refused = sum(1 for o in self.orders if o["customer"]["id"] not in ACCOUNTS)
        if self.dead_letters.count("Account 9999 does not exist") != refused:
            found.append(f"expected {refused} dead letters with the ERP's fault, got:\n{self.dead_letters}")
        if self.erp_calls["503"] != 2:
            found.append(f"the ERP's 503s were not both retried: {dict(self.erp_calls)}")
        if self.hub_exit != 0:
            found.append(f"hub exit code {self.hub_exit}")
        return found


async def run(orders: int = 30, *, bootstrap: str | None = None, prefix: str = "erp", within: float = 120) -> Report:
    shop = await GraphQLShop().start()
    erp = await SoapLedger(username="hub", password="erp-s3cret", fail_next=2).start()
    customers = [*ACCOUNTS, UNKNOWN]
    for n in range(orders):
        shop.add_order(1000 + n, 2_500 + 125 * n, f"2026-11-0{1 + n % 9}T10:00:00Z", customer=customers[n % 7 % 4])
    report = Report(shop.orders)
    env = {
        "SHOP_GRAPHQL_URL": shop.url,
        "SHOP_TOKEN": TOKEN,
        "ERP_SOAP_URL": f"{erp.url}12",
        "ERP_USER": "hub",
        "ERP_PASSWORD": "erp-s3cret",
    }
    hub = RecipeHub(HERE / "bus.yaml", env, bootstrap=bootstrap, prefix=prefix)
    try:
        await hub.start()
        # Orders placed while the hub runs: the next polls read on after the saved cursor.
        await asyncio.sleep(1)
        for n in range(orders, orders + 5):
            shop.add_order(1000 + n, 9_900, "2026-11-20T10:00:00Z", customer="cus_1")
        refused = sum(1 for o in report.orders if o["customer"]["id"] not in ACCOUNTS)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            _, report.dead_letters = await hub.command("dlq", "list", "--subscriber", "erp")
            if len(erp.invoices) >= len(report.expected()) and report.dead_letters.count("does not exist") >= refused:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(1)  # nothing more should arrive
    finally:
        report.hub_exit = await hub.stop()
        report.invoices = list(erp.invoices)
        report.erp_calls = Counter(str(c["outcome"]) for c in erp.calls)
        await shop.stop()
        await erp.stop()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=30)
    args = parser.parse_args()
    report = asyncio.run(run(args.orders))
    print(f"\n  orders in the shop        {len(report.orders):5d}")
    print(f"  invoices in the ERP       {len(report.invoices):5d}   (calls: {dict(report.erp_calls)})")
    print("\n$ bus dlq list --subscriber erp")
    print(report.dead_letters)
    return verdict(report.problems(), "every order the ERP can take is invoiced once; the others are dead letters with the ERP's fault")


if __name__ == "__main__":
    sys.exit(main())
