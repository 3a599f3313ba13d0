"""Run the recipe end to end on this machine: Stripe payment webhooks -> the ERP ledger in
MariaDB, then `bus reconcile` against what the ledger holds.

    .venv/bin/python examples/stripe-payments-to-erp-ledger/run.py [--payments 40]

Resets `erp_ledger_payments` in the local MariaDB (schema.sql), starts the hub on an embedded
broker and plays Stripe: signed payment_intent events (some failed, which the ERP does not
post), a few retried deliveries of the same event, one forged signature and one replayed after
Stripe's five-minute tolerance. It then reads the ledger and runs `bus reconcile --subscriber
ledger --target-ids <the ledger's event ids>`: balanced, nothing missing at the target.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiomysql
import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
from examples.kit.hub import RecipeHub, verdict  # noqa: E402
from examples.kit.stripe import StripeAccount  # noqa: E402

SECRET = "whsec_recipe_demo_secret"
DSN = "mysql://root@127.0.0.1:3306/test"


@dataclass
class Report:
    events: list[dict[str, Any]]
    ledger: dict[str, dict[str, Any]] = field(default_factory=dict)  # payment_id -> row
    answers: dict[str, Any] = field(default_factory=dict)
    reconcile_code: int = -1
    reconcile_output: str = ""
    dead_letters: str = ""  # `bus dlq list --subscriber ledger`
    hub_exit: int = -1

    def succeeded(self) -> dict[str, dict[str, Any]]:
        return {e["data"]["object"]["id"]: e for e in self.events if e["type"] == "payment_intent.succeeded"}

    def postable(self) -> dict[str, dict[str, Any]]:
        return {pid: e for pid, e in self.succeeded().items() if len(e["data"]["object"]["currency"]) == 3}

    def problems(self) -> list[str]:
        found = []
        want = {
            pid: (e["data"]["object"]["amount"], e["data"]["object"]["currency"].upper(), e["id"]) for pid, e in self.postable().items()
        }
        got = {pid: (row["amount_minor"], row["currency"], row["stripe_event_id"]) for pid, row in self.ledger.items()}
        if got != want:
            found.append(f"ledger holds {len(got)} rows, expected {len(want)} (or amounts/ids differ)")
        if self.answers.get("accepted") != len(self.events) or self.answers.get("retried") != [202] * len(self.answers.get("retried", [])):
            found.append(f"Stripe's deliveries were answered {self.answers}")
        if self.answers.get("forged") != 400 and self.answers.get("forged") != 401:
            found.append(f"a forged signature was answered {self.answers.get('forged')}")
        if self.answers.get("replayed") not in (400, 401):
            found.append(f"a replayed delivery was answered {self.answers.get('replayed')}")
        if self.reconcile_code != 0 or "balanced" not in self.reconcile_output:
            found.append("bus reconcile did not balance")
        if "dead-lettered 1 " not in self.reconcile_output or "Data too long" not in self.dead_letters:
            found.append("the refused payment is not on the dead-letter topic with the database's reason")
        if self.hub_exit != 0:
            found.append(f"hub exit code {self.hub_exit}")
        return found


def _connect_args(dsn: str) -> dict[str, Any]:
    url = urlparse(dsn)
    return {
        "host": url.hostname,
        "port": url.port or 3306,
        "user": url.username or "root",
        "password": url.password or "",
        "db": url.path[1:],
    }


async def sql(dsn: str, *statements: str) -> list[dict[str, Any]]:
    connection = await aiomysql.connect(**_connect_args(dsn), autocommit=True)
    try:
        async with connection.cursor(aiomysql.DictCursor) as cursor:
            for statement in statements:
                await cursor.execute(statement)
            return list(await cursor.fetchall())
    finally:
        connection.close()


async def run(payments: int = 40, *, bootstrap: str | None = None, prefix: str = "payments", dsn: str = DSN, within: float = 120) -> Report:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", aiomysql.Warning)  # "Unknown table" from DROP ... IF EXISTS
        await sql(dsn, "DROP TABLE IF EXISTS erp_ledger_payments", (HERE / "schema.sql").read_text().strip().rstrip(";"))
    stripe = StripeAccount(SECRET)
    events = [stripe.payment_event(n, kind="payment_failed" if n % 7 == 3 else "succeeded") for n in range(payments)]
    # One payment in a currency code the ledger's CHAR(3) column cannot hold: the database refuses
    # it, the hub dead-letters it with the database's reason, and reconcile still balances.
    events[-1]["data"]["object"]["currency"] = "usdt"
    report = Report(events)
    hub = RecipeHub(HERE / "bus.yaml", {"STRIPE_WEBHOOK_SECRET": SECRET, "LEDGER_DB_URL": dsn}, bootstrap=bootstrap, prefix=prefix)
    try:
        await hub.start()
        url = f"{hub.http_url}/hooks/stripe"
        async with httpx.AsyncClient(timeout=30) as client:
            answers = [await stripe.deliver(client, url, e) for e in events]
            report.answers["accepted"] = sum(1 for a in answers if a.status_code == 202)
            # Stripe retries when it did not see a 2xx in time: the same events again, signed anew.
            report.answers["retried"] = [(await stripe.deliver(client, url, e)).status_code for e in events[:3]]
            report.answers["forged"] = (await stripe.deliver(client, url, events[0], secret="whsec_wrong")).status_code
            stale = int(time.time()) - 3600
            report.answers["replayed"] = (await stripe.deliver(client, url, events[1], signed_at=stale)).status_code
        want = len(report.postable())
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            rows = await sql(dsn, "SELECT * FROM erp_ledger_payments")
            _, report.dead_letters = await hub.command("dlq", "list", "--subscriber", "ledger")
            if len(rows) >= want and "Data too long" in report.dead_letters:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(1)  # let the last batch's commit follow the database's answer
        rows = await sql(dsn, "SELECT * FROM erp_ledger_payments")
        report.ledger = {row["payment_id"]: row for row in rows}
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as ids:
            ids.write("\n".join(row["stripe_event_id"] for row in rows))
            ids.flush()
            for _ in range(20):  # the delivery ledger's last entries may trail the table by a moment
                code, out = await hub.command("reconcile", "--subscriber", "ledger", "--target-ids", ids.name)
                if code == 0:
                    break
                await asyncio.sleep(1)
        report.reconcile_code, report.reconcile_output = code, out
    finally:
        report.hub_exit = await hub.stop()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payments", type=int, default=40)
    parser.add_argument("--dsn", default=DSN, help="MariaDB/MySQL for the ledger table (default: the local test database)")
    args = parser.parse_args()
    report = asyncio.run(run(args.payments, dsn=args.dsn))
    print(f"\n  Stripe events sent        {len(report.events):5d}   ({len(report.succeeded())} succeeded, the rest failed: not posted)")
    print(f"  answers                         {report.answers}")
    print(f"  ledger rows in MariaDB    {len(report.ledger):5d}")
    print("\n$ bus dlq list --subscriber ledger")
    print(report.dead_letters)
    print("$ bus reconcile --subscriber ledger --target-ids <the ledger's stripe_event_id column>")
    print(report.reconcile_output)
    return verdict(report.problems(), "every succeeded payment posted once, and the hub's ledger agrees")


if __name__ == "__main__":
    sys.exit(main())
