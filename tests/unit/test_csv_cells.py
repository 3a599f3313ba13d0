"""What the `file` outbound writes in a CSV cell: values as other programs read them (the hub's
JSON rules), and cells a spreadsheet would run as formulas kept, escaped or refused."""

from __future__ import annotations

import csv
import datetime as dt
import logging
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.file.config import FileOutboundConfig
from adapters.file.outbound import FileOutbound
from bus.adapter_api import Context, PermanentError
from bus.event import Event


def written(tmp_path: Path, data: dict[str, Any], **config: Any) -> list[str]:
    body = {name: name for name in data}
    settings = {"name": "books", "type": "file", "path": str(tmp_path), "format": "csv", "body": body, **config}
    outbound = FileOutbound(FileOutboundConfig.model_validate(settings), Context("books", logging.getLogger("test")))
    event = Event(schema="X", data=data, source="/t", key="k", id="evt_1", type="X")
    [row] = csv.reader(outbound._line(event).decode().splitlines())
    return row


def test_values_are_written_as_other_programs_read_them(tmp_path: Path) -> None:
    data = {
        "at": dt.datetime(2026, 12, 5, 10, 0, 0, 123000, tzinfo=dt.UTC),
        "day": dt.date(2026, 12, 5),
        "ok": True,
        "no": False,
        "count": 3,
        "amount": Decimal("12.30"),
        "ratio": 0.1,
        "raw": b"\x00\x01",
        "ref": uuid.UUID(int=1),
        "nested": {"k": [1, "two"], "none": None},
        "empty": None,
        "text": 'He said "hi", twice',
    }
    assert written(tmp_path, data) == [
        "2026-12-05T10:00:00.123Z", "2026-12-05", "true", "false", "3", "12.30", "0.1", "AAE=",
        "00000000-0000-0000-0000-000000000001", '{"k":[1,"two"],"none":null}', "", 'He said "hi", twice',
    ]  # fmt: skip
    with pytest.raises(PermanentError, match="column ratio"):  # NaN is no number another program reads
        written(tmp_path, {"ratio": float("nan")})


def test_cells_a_spreadsheet_would_run_are_kept_escaped_or_refused(tmp_path: Path) -> None:
    data = {"name": '=HYPERLINK("http://evil","x")', "plus": "+1 555 0100 call", "at": "@SUM(A1)", "tab": "\tx", "minus": "-12.5",
            "signed": "+3", "plain": "a=b"}  # fmt: skip
    assert written(tmp_path, data) == list(data.values())  # keep: what programs read
    assert written(tmp_path, data, formulas="escape") == [
        '\'=HYPERLINK("http://evil","x")',
        "'+1 555 0100 call",
        "'@SUM(A1)",
        "'\tx",
        "-12.5",
        "+3",
        "a=b",
    ]  # numbers are no formulas
    with pytest.raises(PermanentError, match=r"column name starts with '=', which a spreadsheet runs as a formula"):
        written(tmp_path, data, formulas="refuse")
    assert written(tmp_path, {"minus": "-12.5", "plain": "a=b"}, formulas="refuse") == ["-12.5", "a=b"]
