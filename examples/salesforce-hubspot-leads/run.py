"""Run the recipe end to end on this machine: Salesforce leads <-> HubSpot contacts, both ways,
with no change echoed back to where it came from.

    .venv/bin/python examples/salesforce-hubspot-leads/run.py [--leads 25]

Starts a Salesforce stand-in (OAuth2 client credentials, SOQL query pages, PATCH) holding leads
that salespeople created, a HubSpot stand-in (batch upsert by email, v3-signed batched webhooks
for every change, the hub's own included), and the hub. Then: the leads reach HubSpot; a
marketer changes three contacts in HubSpot (they reach Salesforce); a salesperson changes two
leads in Salesforce (they reach HubSpot). After a quiet spell it counts the writes each system
received from the hub: exactly one per real change, none for the echoes of the hub's own.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
from examples.kit.hub import RecipeHub, verdict, wait_until  # noqa: E402
from examples.kit.hubspot import HubSpot  # noqa: E402
from examples.kit.salesforce import Salesforce  # noqa: E402

FIRST = ["Ada", "Grace", "Alan", "Katherine", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Frances"]
LAST = ["Lovelace", "Hopper", "Turing", "Johnson", "Torvalds", "Hamilton", "Ritchie", "Liskov", "Thompson", "Allen"]
STATUS_SF_TO_HS = {
    "Open - Not Contacted": "NEW",
    "Working - Contacted": "IN_PROGRESS",
    "Closed - Converted": "OPEN_DEAL",
    "Closed - Not Converted": "UNQUALIFIED",
}


@dataclass
class Report:
    leads: dict[str, dict[str, Any]] = field(default_factory=dict)  # Salesforce at the end
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)  # HubSpot at the end, by email
    hubspot_writes: int = 0
    salesforce_writes: int = 0
    echoes_seen: int = 0  # webhook events HubSpot delivered about the hub's own writes
    expected_hubspot_writes: int = 0
    expected_salesforce_writes: int = 0
    hub_exit: int = -1

    def disagreements(self) -> list[str]:
        out = []
        for lead in self.leads.values():
            contact = self.contacts.get(lead["Email"].lower(), {})
            pairs = [
                (lead["FirstName"], contact.get("firstname")),
                (lead["LastName"], contact.get("lastname")),
                (lead["Company"], contact.get("company")),
                (STATUS_SF_TO_HS[lead["Status"]], contact.get("hs_lead_status")),
                (lead["Id"], contact.get("salesforceleadid")),
            ]
            if any(a != b for a, b in pairs):
                out.append(lead["Id"])
        return out

    def problems(self) -> list[str]:
        found = []
        if self.hubspot_writes != self.expected_hubspot_writes:
            found.append(f"HubSpot got {self.hubspot_writes} writes, expected {self.expected_hubspot_writes} (an echo, or a lost change)")
        if self.salesforce_writes != self.expected_salesforce_writes:
            found.append(f"Salesforce got {self.salesforce_writes} writes, expected {self.expected_salesforce_writes}")
        if self.echoes_seen < self.hubspot_writes:
            found.append(
                f"HubSpot delivered {self.echoes_seen} events about the hub's {self.hubspot_writes} writes: the echo was not tested"
            )
        if self.disagreements():
            found.append(f"the systems disagree on {self.disagreements()[:5]}")
        if self.hub_exit != 0:
            found.append(f"hub exit code {self.hub_exit}")
        return found


async def run(leads: int = 25, *, bootstrap: str | None = None, prefix: str = "leads", within: float = 120, quiet: float = 6) -> Report:
    salesforce = await Salesforce(page_size=10).start()
    hubspot = await HubSpot(throttle_next=1).start()
    for n in range(leads):
        salesforce.edit(
            f"00Q5g00000{n:05d}AAA",
            FirstName=FIRST[n % 10],
            LastName=LAST[(n // 10 + n) % 10],
            Email=f"{FIRST[n % 10].lower()}.{n}@example.com",
            Company=f"Example {n % 7} Ltd",
            Status="Open - Not Contacted",
            LeadSource="Web",
            OwnerId="005USERADA0001",
        )
    hub = RecipeHub(
        HERE / "bus.yaml",
        {
            "SALESFORCE_URL": salesforce.url,
            "SALESFORCE_CLIENT_ID": salesforce.client_id,
            "SALESFORCE_CLIENT_SECRET": salesforce.client_secret,
            "SALESFORCE_INTEGRATION_USER_ID": salesforce.integration_user,
            "HUBSPOT_URL": hubspot.url,
            "HUBSPOT_TOKEN": hubspot.token,
            "HUBSPOT_APP_ID": hubspot.app_id,
            "HUBSPOT_CLIENT_SECRET": hubspot.client_secret,
        },
        bootstrap=bootstrap,
        prefix=prefix,
    )
    report = Report(expected_hubspot_writes=leads + 2, expected_salesforce_writes=3)
    try:
        await hub.start()
        hubspot.webhook_url = f"{hub.http_url}/hooks/hubspot"
        await wait_until(lambda: len(hubspot.contacts) >= leads, within, f"the {leads} leads in HubSpot")
        # A marketer works three contacts in HubSpot...
        for n in range(3):
            hubspot.edit(f"{FIRST[n].lower()}.{n}@example.com", hs_lead_status="IN_PROGRESS", company=f"Renamed {n} GmbH")
        await wait_until(lambda: len(salesforce.api_writes) >= 3, within, "the three HubSpot changes in Salesforce")
        # ...and a salesperson two leads in Salesforce.
        for n in (10, 11):
            salesforce.edit(
                f"00Q5g00000{n:05d}AAA", user="005USERBOB0002", Status="Working - Contacted", FirstName=f"{FIRST[n % 10]}-Marie"
            )
        await wait_until(lambda: len(hubspot.api_writes) >= leads + 2, within, "the two Salesforce changes in HubSpot")
        # Quiet spell: long enough for several polls and webhook rounds, so any echo would show.
        await asyncio.sleep(quiet)
        await wait_until(lambda: hubspot.pending_webhooks == 0, within, "HubSpot's webhooks delivered")
    finally:
        report.hub_exit = await hub.stop()
        await hubspot.stop()
        await salesforce.stop()
    report.leads = salesforce.leads
    report.contacts = {c["email"]: c for c in hubspot.contacts.values()}
    report.hubspot_writes, report.salesforce_writes = len(hubspot.api_writes), len(salesforce.api_writes)
    report.echoes_seen = hubspot.delivered.get("INTEGRATION", 0)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=25)
    args = parser.parse_args()
    report = asyncio.run(run(args.leads))
    print(f"\n  Salesforce leads               {len(report.leads):4d}")
    print(f"  HubSpot contacts               {len(report.contacts):4d}")
    hs, sf = report.expected_hubspot_writes, report.expected_salesforce_writes
    print(f"  writes to HubSpot by the hub   {report.hubspot_writes:4d}   (expected {hs}: one per lead, one per Salesforce edit)")
    print(f"  writes to Salesforce by the hub{report.salesforce_writes:5d}   (expected {sf}: one per HubSpot edit)")
    print(f"  echoes of the hub's own writes {report.echoes_seen:4d}   (webhook events HubSpot sent about them; none crossed over)")
    return verdict(report.problems(), "both systems agree, every change crossed once, nothing echoed")


if __name__ == "__main__":
    sys.exit(main())
