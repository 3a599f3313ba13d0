"""Run the recipe end to end on this machine: FHIR Encounters polled from an EHR -> invoice
lines in a billing system, the patient's identity dropped or pseudonymised on the way.

    .venv/bin/python examples/ehr-visits-to-billing/run.py [--visits 40]

Starts a FHIR R4 stand-in holding encounters (finished, in progress, cancelled; one to three CPT
codes each; one code the billing system does not know), a billing stand-in and the hub. After
the first sync it finishes a visit that was in progress (a new version of the Encounter). It
then checks that every procedure of every finished visit is one invoice line, that the unknown
code is dead-lettered with the billing system's reason, and that no body the billing system
received holds a patient's name or record number.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
from examples.kit.billing import FEES, BillingApi  # noqa: E402
from examples.kit.fhir import FhirServer  # noqa: E402
from examples.kit.hub import RecipeHub, verdict, wait_until  # noqa: E402

PSEUDONYM_KEY = "demo-pseudonym-key-rotate-me"
CPT = "http://www.ama-assn.org/go/cpt"
PATIENTS = [
    ("Patient/8812", "Maria Oliveira"),
    ("Patient/2291", "Kenji Watanabe"),
    ("Patient/5530", "Fatima Al-Sayed"),
    ("Patient/7004", "John Smith"),
]
PROVIDERS = ["Dr. Amara Okafor", "Dr. Lukas Brandt", "Dr. Priya Raman"]
UNKNOWN_CODE = "99999"


def encounter(n: int, rng: random.Random, status: str, codes: list[str]) -> dict[str, Any]:
    ref, name = PATIENTS[n % len(PATIENTS)]
    day = f"2026-11-{1 + n % 28:02d}"
    return {
        "resourceType": "Encounter",
        "id": f"enc-{n:05d}",
        "status": status,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": rng.choice(["AMB", "AMB", "EMER", "IMP"])},
        "type": [{"coding": [{"system": CPT, "code": c, "display": f"CPT {c}"}]} for c in codes],
        "subject": {"reference": ref, "display": name},
        "participant": [{"individual": {"reference": f"Practitioner/{n % 3}", "display": rng.choice(PROVIDERS)}}],
        "period": {"start": f"{day}T09:00:00Z", "end": f"{day}T09:40:00Z"},
    }


@dataclass
class Report:
    encounters: dict[str, dict[str, Any]] = field(default_factory=dict)  # the EHR at the end
    lines: dict[str, dict[str, Any]] = field(default_factory=dict)  # the billing system at the end
    raw: list[bytes] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)  # `bus dlq list --json`
    hub_exit: int = -1

    def expected_lines(self) -> dict[str, dict[str, Any]]:
        out = {}
        for e in self.encounters.values():
            if e["status"] != "finished":
                continue
            for t in e["type"]:
                code = t["coding"][0]["code"]
                if code == UNKNOWN_CODE:
                    continue
                out[f"{e['id']}-{code}"] = {
                    "visit": e["id"],
                    "procedure": code,
                    "patient": hmac.new(PSEUDONYM_KEY.encode(), e["subject"]["reference"].encode(), hashlib.sha256).hexdigest(),
                    "amount_cents": FEES[code],
                    "service_date": e["period"]["start"][:10],
                }
        return out

    def problems(self) -> list[str]:
        found = []
        got = {k: {f: v[f] for f in ("visit", "procedure", "patient", "amount_cents", "service_date")} for k, v in self.lines.items()}
        if got != self.expected_lines():
            found.append(f"billing holds {len(got)} lines, expected {len(self.expected_lines())} (or their fields differ)")
        leaked = [p for ref, name in PATIENTS for p in (ref, name) if any(p.encode() in body for body in self.raw)]
        if leaked:
            found.append(f"identifying data reached the billing system: {leaked}")
        if [(d["event_id"].split("/")[1], "not on the fee schedule" in d["error"]) for d in self.dead_letters] != [
            (f"enc-{len(self.encounters) - 1:05d}", True)
        ]:
            found.append("the unknown procedure code is not dead-lettered with the billing system's reason")
        if self.hub_exit != 0:
            found.append(f"hub exit code {self.hub_exit}")
        return found


async def run(visits: int = 40, *, bootstrap: str | None = None, prefix: str = "ehr", within: float = 120) -> Report:
    rng = random.Random(8)
    ehr = await FhirServer().start()
    billing = await BillingApi().start()
    codes = [c for c in FEES]
    for n in range(visits):
        status = "in-progress" if n == 1 else rng.choice(["finished", "finished", "finished", "cancelled"])
        ehr.save(encounter(n, rng, status, rng.sample(codes, rng.randint(1, 3))))
    ehr.save(encounter(visits, rng, "finished", ["99213", UNKNOWN_CODE]))  # one line bills, one is refused
    hub = RecipeHub(
        HERE / "bus.yaml",
        {
            "FHIR_BASE_URL": ehr.url,
            "FHIR_TOKEN": ehr.token,
            "BILLING_URL": billing.url,
            "BILLING_API_KEY": billing.api_key,
            "PSEUDONYM_KEY": PSEUDONYM_KEY,
        },
        bootstrap=bootstrap,
        prefix=prefix,
    )
    report = Report()
    try:
        await hub.start()
        report.encounters = ehr.encounters
        await wait_until(lambda: len(billing.lines) >= len(report.expected_lines()), within, "the first sync's invoice lines")
        # The visit in progress ends: the EHR stores a new version, the next poll picks it up.
        finished = dict(ehr.encounters["enc-00001"], status="finished")
        finished.pop("meta")
        ehr.save(finished)
        await wait_until(lambda: len(billing.lines) >= len(report.expected_lines()), within, "the finished visit's lines")
        for _ in range(int(within)):
            _, out = await hub.command("dlq", "list", "--subscriber", "billing", "--json")
            report.dead_letters = json.loads(out)
            if report.dead_letters:
                break
            await asyncio.sleep(1)
    finally:
        report.hub_exit = await hub.stop()
        await billing.stop()
        await ehr.stop()
    report.lines, report.raw = billing.lines, billing.raw
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visits", type=int, default=40)
    args = parser.parse_args()
    report = asyncio.run(run(args.visits))
    finished = sum(1 for e in report.encounters.values() if e["status"] == "finished")
    print(f"\n  encounters in the EHR      {len(report.encounters):5d}   ({finished} finished)")
    print(f"  invoice lines at billing   {len(report.lines):5d}   (expected {len(report.expected_lines())})")
    sample = next(iter(report.lines.values()), {})
    print(f"  a line as billing sees it: {sample}")
    print("\n$ bus dlq list --subscriber billing --json   (event id, error)")
    for letter in report.dead_letters:
        print(f"  {letter['event_id']}  {letter['error']}")
    return verdict(report.problems(), "every finished procedure billed once, no patient identity sent")


if __name__ == "__main__":
    sys.exit(main())
