"""Outbound ``file`` through the real embedded broker: rolling JSON Lines and CSV files that a
reader only sees complete, every event once, and a ``.part`` left by a crash repaired at start."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from tests.integration.test_delivery import post
from tests.support.hub import build_hub, payment, payment_hub_config, write_config
from tests.support.target import Target
from tests.support.wait import until


def lines_in(folder: Path, pattern: str) -> list[str]:
    return [line for f in sorted(folder.glob(pattern)) for line in f.read_text().splitlines()]


async def test_rolling_json_lines_and_csv(tmp_path: Path, bootstrap: str) -> None:
    jsonl_dir, csv_dir = tmp_path / "lake", tmp_path / "legacy-import"
    jsonl_dir.mkdir()
    # What a crash left behind: two complete lines and a torn third.
    (jsonl_dir / "lake-20261101T000000-1-0001.jsonl.part").write_bytes(b'{"payment":"old_1"}\n{"payment":"old_2"}\n{"paym')
    target = await Target().start()
    config = payment_hub_config(bootstrap, target.url)
    config["routes"] = [{"name": "all", "from": "Payment", "to": ["lake", "legacy"]}]
    config["outbound"] = [
        {"name": "lake", "type": "file", "path": str(jsonl_dir), "roll_bytes": 1500, "delivery": {"concurrency": 16}},
        {
            "name": "legacy",
            "type": "file",
            "path": str(csv_dir),
            "format": "csv",
            "delimiter": ";",
            # A time and a flag as other programs read them; a status a spreadsheet would run, escaped.
            "body": {
                "PAYMENT_ID": "payment_id",
                "AMOUNT": "amount",
                "NOTE": '"paid; thanks"',
                "AT": "$time",
                "BIG": "amount > 50",
                "STATUS": "status",
            },
            "formulas": "escape",
            "roll_every": "1s",
        },
    ]
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            lake, legacy = hub.outbound
            await post(hub, *(payment(i, amount=i, status='=HYPERLINK("http://x")' if i == 7 else "succeeded") for i in range(60)))
            await until(lambda: int(legacy.progress()["files"]) >= 1, "the CSV file to roll by age (1s)", timeout=30)
            assert int(lake.progress()["files"]) >= 2  # ~100 bytes a line, 1,500 bytes a file
            # Readers see only complete files: every finished .jsonl parses line by line.
            for done in jsonl_dir.glob("*.jsonl"):
                for line in done.read_text().splitlines():
                    json.loads(line)
        assert not list(jsonl_dir.glob("*.part")) and not list(csv_dir.glob("*.part"))  # completed at stop
        recovered = (jsonl_dir / "lake-20261101T000000-1-0001.jsonl").read_text()
        assert recovered == '{"payment":"old_1"}\n{"payment":"old_2"}\n'  # the torn line cut, the rest kept
        events = [json.loads(line) for line in lines_in(jsonl_dir, "lake-2026*.jsonl") if '"payment_id"' in line]
        assert sorted(e["payment_id"] for e in events) == sorted(f"pi_{i}" for i in range(60))  # each once
        assert events[0].keys() >= {"payment_id", "amount", "currency"}
        rows = []
        for f in sorted(csv_dir.glob("*.csv")):
            with f.open(newline="") as handle:
                reader = list(csv.reader(handle, delimiter=";"))
            assert reader[0] == ["PAYMENT_ID", "AMOUNT", "NOTE", "AT", "BIG", "STATUS"]  # a header in every file
            rows += reader[1:]
        assert sorted(r[0] for r in rows) == sorted(f"pi_{i}" for i in range(60))
        assert {r[2] for r in rows} == {"paid; thanks"}  # quoted, so the delimiter inside survives
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r[3]) for r in rows), rows[0]  # not Python's str()
        assert {(r[0], r[4]) for r in rows if r[0] in ("pi_3", "pi_51")} == {("pi_3", "false"), ("pi_51", "true")}
        assert {r[0]: r[5] for r in rows}["pi_7"] == '\'=HYPERLINK("http://x")' and {r[5] for r in rows} >= {"succeeded"}
    finally:
        await target.stop()


async def test_links_planted_in_a_shared_outbox_are_never_written_through(tmp_path: Path) -> None:
    """An outbox is often writable by others (an SFTP share). A link planted at the name of the
    next file, or named like a .part a crash left, had the hub write, or cut, wherever it pointed
    (its own config, say). Now each file is created new, never opened through a link, and such a
    .part is left alone, said."""
    import logging
    import os
    from datetime import UTC, datetime, timedelta

    from adapters.file.config import FileOutboundConfig
    from adapters.file.outbound import FileOutbound
    from bus.adapter_api import Context, Event

    outbox, victim = tmp_path / "outbox", tmp_path / "bus.yaml"
    outbox.mkdir()
    victim.write_bytes(b"kafka: {bootstrap: kafka:9092}\nkeep: this line has no end")
    now = datetime.now(UTC)
    for second in range(15):  # every name the next files can take
        stamp = (now + timedelta(seconds=second)).strftime("%Y%m%dT%H%M%S")
        for seq in range(1, 4):
            (outbox / f"out-{stamp}-{os.getpid()}-{seq:04d}.jsonl.part").symlink_to(victim)
    (outbox / "out-20261101T000000-1-0001.jsonl.part").symlink_to(victim)  # "left by a crash": recovery would cut it
    adapter = FileOutbound(
        FileOutboundConfig.model_validate({"name": "out", "type": "file", "path": str(outbox)}), Context("out", logging.getLogger("t"))
    )
    await adapter.start()
    try:
        for i in range(3):
            await adapter.deliver(Event(schema="Payment", data={"payment_id": f"p{i}"}, source="/t", id=f"e{i}"))
    finally:
        await adapter.stop()
    assert victim.read_bytes() == b"kafka: {bootstrap: kafka:9092}\nkeep: this line has no end"
    written = [f for f in outbox.iterdir() if not f.is_symlink()]
    assert len(written) == 1 and [json.loads(line)["payment_id"] for line in written[0].read_text().splitlines()] == ["p0", "p1", "p2"]
    assert written[0].suffix == ".jsonl"  # completed: renamed from .part
