"""Run the recipe end to end on this machine: the bank's statement files on its SFTP server -> the
ERP's batch import folder on the company's SFTP server.

    .venv/bin/python examples/bank-statements-over-sftp/run.py

Starts two stand-in SFTP servers (the bank's and the company's; examples/kit/sftp_server.py) and
the hub. The bank drops two days of statements (LATIN1, `;`, German amounts such as `1.234,56`,
one booking whose amount is garbled), then the first day's file again under another name, then a
corrected statement that repeats a booking of the first day. Checks that the ERP's import folder
ends up holding every credit exactly once, to the cent, in whole files only; that the debits stay
out; that the garbled booking is on the inbound dead-letter topic with its file and line; and that
the bank's folder holds each statement in done/ (the repeated file in skipped/).
"""

from __future__ import annotations

import asyncio
import csv
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
from examples.kit.hub import RecipeHub, verdict, wait_until  # noqa: E402
from examples.kit.sftp_server import SftpStandIn  # noqa: E402

HEADER = "Buchungstag;Valuta;Auftraggeber/Empfänger;IBAN;Verwendungszweck;Betrag;Währung;Referenz"
# (day, payer, IBAN, purpose, amount as the bank writes it, reference); a minus is money paid out
DAY_1 = [
    ("01.12.2026", "Müller GmbH", "DE89370400440532013000", "Rechnung 2026-1001", "1.234,56", "BK-20261201-001"),
    ("01.12.2026", "Bäckerei Groß", "DE02120300000000202051", "Rechnung 2026-1002", "89,90", "BK-20261201-002"),
    ("01.12.2026", "Stadtwerke", "DE02500105170137075030", "Strom November", "-312,40", "BK-20261201-003"),
    ("01.12.2026", "Søren Østergård", "DK5000400440116243", "Invoice 2026-1003", "12.000,00", "BK-20261201-004"),
]
DAY_2 = [
    ("02.12.2026", "Café Zoë", "FR1420041010050500013M02606", "Facture 2026-1004", "45,00", "BK-20261202-001"),
    ("02.12.2026", "Müller GmbH", "DE89370400440532013000", "Rechnung 2026-1005", "12,3x", "BK-20261202-002"),  # garbled
    ("02.12.2026", "Lieferant AG", "DE75512108001245126199", "Wareneingang 4711", "-1.500,00", "BK-20261202-003"),
    ("02.12.2026", "José Muñoz", "ES9121000418450200051332", "Factura 2026-1006", "0,05", "BK-20261202-004"),
]
CORRECTED = [DAY_2[0], ("02.12.2026", "Müller GmbH", "DE89370400440532013000", "Rechnung 2026-1005", "12,30", "BK-20261202-002")]


def statement(rows: Sequence[tuple[str, ...]]) -> bytes:
    lines = [HEADER, *(f"{day};{day};{payer};{iban};{purpose};{amount};EUR;{ref}" for day, payer, iban, purpose, amount, ref in rows)]
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


def cents(amount: str) -> int:
    return int(Decimal(amount.replace(".", "").replace(",", ".")) * 100)


@dataclass
class Report:
    imported: list[dict[str, str]] = field(default_factory=list)  # the rows of the ERP's import files, in order
    import_files: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)  # .part files left in the ERP's folder
    bank_done: list[str] = field(default_factory=list)
    bank_skipped: list[str] = field(default_factory=list)
    dead_letters: str = ""
    hub_exit: int = -1

    @staticmethod
    def expected() -> dict[str, str]:
        """Reference -> the amount the ERP should import: every credit once, the garbled one as corrected."""
        rows = [r for r in [*DAY_1, *DAY_2, *CORRECTED] if not r[4].startswith("-") and r[4] != "12,3x"]
        return {ref: f"{cents(amount) // 100},{cents(amount) % 100:02d}" for *_, amount, ref in rows}

    def problems(self) -> list[str]:
        found = []
        got = {row["BELEGNR"]: row["BETRAG"] for row in self.imported}
        if got != self.expected():
            found.append(f"the ERP imports {got}, expected {self.expected()}")
        if len(self.imported) != len(got):
            found.append(f"{len(self.imported) - len(got)} booking(s) imported twice")
        if self.unfinished:
            found.append(f"files left unfinished in the ERP's folder: {self.unfinished}")
        if sorted(self.bank_done) != ["statement-20261201.csv", "statement-20261202-corrected.csv", "statement-20261202.csv"]:
            found.append(f"the bank's done/ holds {self.bank_done}")
        if self.bank_skipped != ["statement-20261201-resent.csv"]:
            found.append(f"the bank's skipped/ holds {self.bank_skipped}")
        if "sftp:statement-20261202.csv:3" not in self.dead_letters or "12,3x" not in self.dead_letters:
            found.append("the garbled booking is not on the inbound dead-letter topic with its file and line")
        if self.hub_exit != 0:
            found.append(f"hub exit code {self.hub_exit}")
        return found


def read_imports(folder: Path) -> tuple[list[str], list[dict[str, str]]]:
    files = sorted(p.name for p in folder.glob("*.csv"))
    rows = []
    for name in files:
        rows += list(csv.DictReader(io.StringIO((folder / name).read_text()), delimiter=";"))
    return files, rows


async def run(*, bootstrap: str | None = None, prefix: str = "bank", within: float = 120) -> Report:
    bank = await SftpStandIn("acme-hub", ("statements",)).start()
    erp = await SftpStandIn("erp-import", ("import",)).start()
    env = {
        "BANK_SFTP_PORT": str(bank.port), "BANK_SFTP_USER": bank.username, "BANK_SFTP_KEY": bank.private_key,
        "BANK_SFTP_HOST_KEY": bank.host_key, "BANK_POLL_INTERVAL": "300ms", "BANK_SETTLE": "0s",
        "ERP_SFTP_PORT": str(erp.port), "ERP_SFTP_USER": erp.username, "ERP_SFTP_KEY": erp.private_key,
        "ERP_SFTP_HOST_KEY": erp.host_key, "ERP_ROLL_EVERY": "1s",
    }  # fmt: skip
    hub = RecipeHub(HERE / "bus.yaml", env, bootstrap=bootstrap, prefix=prefix)
    report = Report()
    imports = erp.path("/import/bank")
    try:
        await hub.start()
        bank.drop("/statements/statement-20261201.csv", statement(DAY_1))
        await wait_until(lambda: bank.path("/statements/done/statement-20261201.csv").exists(), within, "day 1 taken")
        bank.drop("/statements/statement-20261202.csv", statement(DAY_2))
        await wait_until(lambda: bank.path("/statements/done/statement-20261202.csv").exists(), within, "day 2 taken")
        bank.drop("/statements/statement-20261201-resent.csv", statement(DAY_1))  # the bank's job ran twice
        bank.drop("/statements/statement-20261202-corrected.csv", statement(CORRECTED))  # the garbled amount, corrected
        want = len(Report.expected())
        await wait_until(lambda: len(read_imports(imports)[1]) >= want, within, f"the {want} credits in the ERP's import files")
        await asyncio.sleep(1.5)  # a booking imported twice would show by now
        _, report.dead_letters = await hub.command("dlq", "show", "--subscriber", "_in.bank-statements")
    finally:
        report.hub_exit = await hub.stop()
        await bank.stop()
        await erp.stop()
    report.import_files, report.imported = read_imports(imports)
    report.unfinished = sorted(p.name for p in imports.glob("*.part"))
    report.bank_done = sorted(p.name for p in bank.path("/statements/done").glob("*.csv"))
    report.bank_skipped = sorted(p.name for p in bank.path("/statements/skipped").glob("*.csv"))
    return report


def main() -> int:
    report = asyncio.run(run())
    print(f"\n  statements taken from the bank   {len(report.bank_done)}   (and {len(report.bank_skipped)} sent twice, skipped)")
    print(f"  ERP import files written         {len(report.import_files)}")
    print(f"  credits in them                  {len(report.imported)}")
    for row in report.imported[:3]:
        print(f"    {row['BELEGNR']}  {row['BETRAG']:>10} {row['WAEHRUNG']}  {row['TEXT']}")
    print("\n$ bus dlq show --subscriber _in.bank-statements")
    print(report.dead_letters)
    return verdict(report.problems(), "every credit imported once, to the cent, in whole files")


if __name__ == "__main__":
    sys.exit(main())
