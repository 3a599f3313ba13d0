"""Run the recipe end to end on this machine: a legacy LATIN1 PostgreSQL case table -> the case
platform's REST API, history first, then live changes.

    .venv/bin/python examples/legacy-db-to-cases/run.py [--history 600]

Creates the database `legacy_latin1` (ENCODING 'LATIN1') on the local PostgreSQL if it is
missing and fills `cs_mstr` with historical cases (names with accents, codes, YYYYMMDD dates,
one row with an impossible date), starts a Salesforce-like case API and the hub. When the
backfill has arrived it changes the table live (new cases, cases closed, a contact renamed) and
checks that the case platform ends up holding exactly what the legacy table holds, in words
instead of codes, with every accent intact, and the bad row on the inbound dead-letter topic.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import asyncpg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
from examples.kit.cases import CaseApi  # noqa: E402
from examples.kit.hub import RecipeHub, verdict, wait_until  # noqa: E402

DSN = "postgresql://postgres@127.0.0.1:5432/legacy_latin1"
NAMES = ["José Muñoz", "Zoë Ørsted", "François Lefèvre", "Jürgen Groß", "Ana Conceição", "Åsa Nyström", "Seán Ó Briain", "Ada Lovelace"]
SUBJECTS = ["Factura duplicada", "Lieferung beschädigt", "Accès refusé au portail", "Refund not received", "Câble défectueux"]
STATUS = {"OP": "New", "PN": "Working", "CL": "Closed"}
PRIORITY = {"1": "High", "2": "High", "3": "Medium", "4": "Low"}
CATEGORY = {"BIL": "billing", "TEC": "technical", "SHP": "shipping"}
BAD_ROW = 999_999  # opn_dt 20191399: no such date; the row cannot become an event


@dataclass
class Report:
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)  # the legacy table at the end
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)  # the case platform at the end
    backfill_calls: int = 0  # calls the platform had when the history was complete
    live_first_call: int = -1  # index of the first call that carried a live change
    dead_letters: str = ""
    hub_exit: int = -1

    def expected(self) -> dict[str, dict[str, Any]]:
        out = {}
        for row in self.rows.values():
            if row["cs_no"] == BAD_ROW:
                continue
            out[f"CS-{row['cs_no']}"] = {
                "Subject": row["subj_txt"].strip(),
                "Description": row["desc_txt"],
                "Status": STATUS[row["stat_cd"].strip()],
                "Priority": PRIORITY[row["prty_cd"]],
                "Origin": "Legacy CSM",
                "SuppliedName": row["cntct_nm"].strip(),
                "Account_Number__c": row["cust_no"].strip(),
                "Category__c": CATEGORY.get((row["cat_cd"] or "").strip()),
                "Legacy_Opened__c": f"{row['opn_dt'][:4]}-{row['opn_dt'][4:6]}-{row['opn_dt'][6:]}",
            }
        return out

    def problems(self) -> list[str]:
        found = []
        want = self.expected()
        if self.cases != want:
            wrong = sorted(k for k in set(want) | set(self.cases) if want.get(k) != self.cases.get(k))
            found.append(f"{len(wrong)} case(s) differ from the legacy table, e.g. {wrong[:3]}")
        if self.live_first_call < self.backfill_calls:
            found.append("a live change reached the platform before the history was complete")
        if f'"cs_no": {BAD_ROW}' not in self.dead_letters.replace('\\"', '"') or "mapping failed" not in self.dead_letters:
            found.append("the row with an impossible date is not on the inbound dead-letter topic")
        if self.hub_exit != 0:
            found.append(f"hub exit code {self.hub_exit}")
        return found


def _database(dsn: str, name: str) -> str:
    return urlunparse(urlparse(dsn)._replace(path=f"/{name}"))


async def prepare(dsn: str, history: int) -> None:
    """Create the LATIN1 database if missing, then the table with its historical rows."""
    name = urlparse(dsn).path.lstrip("/")
    admin = await asyncpg.connect(_database(dsn, "postgres"))
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f"CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    finally:
        await admin.close()
    rng = random.Random(5)
    rows: list[tuple[Any, ...]] = [
        (
            n,
            f"C{rng.randint(1000, 9999):07d}",
            rng.choice(NAMES),
            rng.choice(SUBJECTS) + f" #{n}",
            f"Ticket importé du système CSM ({n}).",
            rng.choice("1234"),
            rng.choice(["OP", "PN", "CL"]),
            rng.choice(["BIL", "TEC", "SHP", None]),
            f"20{rng.randint(10, 25)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
        )
        for n in range(1, history + 1)
    ]
    rows.append((BAD_ROW, "C0000001", "Nobody", "Bad date", None, "3", "OP", None, "20191399"))
    legacy = await asyncpg.connect(dsn)
    try:
        assert await legacy.fetchval("SHOW server_encoding") == "LATIN1", f"{name} is not a LATIN1 database"
        await legacy.execute("DROP TABLE IF EXISTS cs_mstr")
        await legacy.execute((HERE / "schema.sql").read_text())
        await legacy.executemany(
            "INSERT INTO cs_mstr (cs_no, cust_no, cntct_nm, subj_txt, desc_txt, prty_cd, stat_cd, cat_cd, opn_dt) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            rows,
        )
    finally:
        await legacy.close()


async def change_live(dsn: str, history: int) -> None:
    """What users of the old system keep doing while the hub runs."""
    legacy = await asyncpg.connect(dsn)
    try:
        async with legacy.transaction():
            await legacy.executemany(
                "INSERT INTO cs_mstr (cs_no, cust_no, cntct_nm, subj_txt, prty_cd, stat_cd, cat_cd, opn_dt) "
                "VALUES ($1, $2, $3, $4, '2', 'OP', 'TEC', '20261202')",
                [(history + n, f"C{n:07d}", NAMES[n % len(NAMES)], f"Nouveau ticket n° {n}") for n in range(1, 6)],
            )
        await legacy.execute("UPDATE cs_mstr SET stat_cd = 'CL' WHERE cs_no IN (1, 2, 3)")
        await legacy.execute("UPDATE cs_mstr SET cntct_nm = 'Søren Kierkegård' WHERE cs_no = 4")
    finally:
        await legacy.close()


async def read_rows(dsn: str) -> dict[int, dict[str, Any]]:
    legacy = await asyncpg.connect(dsn)
    try:
        return {r["cs_no"]: dict(r) for r in await legacy.fetch("SELECT * FROM cs_mstr")}
    finally:
        await legacy.close()


async def run(history: int = 600, *, bootstrap: str | None = None, prefix: str = "cases", dsn: str = DSN, within: float = 120) -> Report:
    await prepare(dsn, history)
    platform = await CaseApi().start()
    hub = RecipeHub(
        HERE / "bus.yaml",
        {"LEGACY_DB_URL": dsn, "CASES_URL": platform.url, "CASES_TOKEN": platform.token},
        bootstrap=bootstrap,
        prefix=prefix,
    )
    report = Report()
    try:
        await hub.start()
        await wait_until(lambda: len(platform.cases) >= history, within, f"the {history} historical cases at the platform")
        report.backfill_calls = len(platform.calls)
        await change_live(dsn, history)
        report.rows = await read_rows(dsn)
        want = report.expected()
        await wait_until(lambda: platform.cases == want, within, "the live changes at the platform")
        # the first call for a new case, or the second for a changed one, is the first live call
        seen: set[str] = set()
        for i, (ext, _) in enumerate(platform.calls):
            if int(ext[3:]) > history or ext in seen:
                report.live_first_call = i
                break
            seen.add(ext)
        _, report.dead_letters = await hub.command("dlq", "show", "--subscriber", "_in.legacy-cases")
    finally:
        report.hub_exit = await hub.stop()
        await platform.stop()
    report.cases = platform.cases
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", type=int, default=600, help="historical cases to backfill")
    parser.add_argument("--dsn", default=DSN, help="the legacy database (created with ENCODING 'LATIN1' if missing)")
    args = parser.parse_args()
    report = asyncio.run(run(args.history, dsn=args.dsn))
    print(f"\n  legacy rows                {len(report.rows):5d}   (one with an impossible date)")
    print(f"  backfilled to the platform {report.backfill_calls:5d}   calls before the first live change")
    print(f"  cases on the platform      {len(report.cases):5d}")
    sample = report.cases.get("CS-4", {})
    print(f"  CS-4 after a live rename:  {sample.get('SuppliedName')!r}, status {sample.get('Status')!r}")
    print("\n$ bus dlq show --subscriber _in.legacy-cases")
    print(report.dead_letters)
    return verdict(report.problems(), "history then live changes, in words, accents intact")


if __name__ == "__main__":
    sys.exit(main())
