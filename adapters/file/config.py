"""Config models of the file adapters: a drop folder in, rolling files out."""

from __future__ import annotations

__all__ = ["DropFolderConfig", "FileInboundConfig", "FileOutboundConfig", "RollingFilesConfig"]

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from bus.adapter_api import AdapterConfig, BodyMap, Duration, EmitSpec, OutboundConfig, TextEncoding, duration


class DropFolderConfig(AdapterConfig):
    """What every drop folder of CSV or JSON Lines files says, wherever the folder is (``file``:
    on this host's disk; ``sftp``: on an SFTP server)."""

    pattern: str = Field(default="*", description="Which files to take (glob).", examples=["*.csv"])
    format: Literal["auto", "csv", "jsonl"] = Field(default="auto", description="auto: by suffix (.csv, .jsonl/.ndjson).")
    encoding: TextEncoding = Field(
        default="utf-8",
        description="Text encoding of the files (legacy exports are often latin-1). UTF-8, Latin-1 and the like: a line that "
        "is not text in it is refused alone. UTF-16 and UTF-32: a file with a broken character is refused whole, before any row.",
    )
    delimiter: str = Field(default=",", min_length=1, max_length=1, description="csv: the field separator.")
    poll_interval: Duration = Field(default=duration("5s"), description="How often the folder is looked at.")
    settle: Duration = Field(
        default=duration("2s"), description="A file must be unchanged this long before it is read (still being written)."
    )
    duplicates: Literal["skip", "import"] = Field(
        default="skip",
        description="A file with the same content (SHA-256) as one already in done/: skip moves it to skipped/ with a "
        "manifest naming the earlier import (and logs a warning); import reads it again (its rows keep their ids, so a "
        "target that deduplicates sees repeats).",
    )
    emit: EmitSpec = Field(description="How a row (CSV: header -> value, as text) becomes a canonical event.")


class FileInboundConfig(DropFolderConfig):
    """Read every file that appears in a folder, row by row, into events. A file moves to `done/`
    only after every row is on Kafka or kept on the inbound dead-letter topic with its line
    number; a file that cannot be read at all moves to `failed/`. Each move leaves a manifest
    beside the file (`<name>.manifest.json`: sha256, rows, accepted, rejected, time)."""

    type: Literal["file"] = "file"
    path: Path = Field(description="The drop folder.", examples=["/data/inbox/orders"])


class RollingFilesConfig(OutboundConfig):
    """What rolling files written from events say, wherever their folder is (``file``: this host's
    disk; ``sftp``: an SFTP server)."""

    prefix: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]+$", description="File name prefix; default the adapter's name.")
    format: Literal["jsonl", "csv"] = Field(default="jsonl", description="jsonl: one JSON object per line; csv: a header, then rows.")
    body: BodyMap = Field(
        default=None, description="Field -> expression; the CSV columns in this order. None: the event's fields (jsonl only)."
    )
    delimiter: str = Field(default=",", min_length=1, max_length=1, description="csv: the field separator.")
    formulas: Literal["keep", "escape", "refuse"] = Field(
        default="keep",
        description="csv: what to do with a cell a spreadsheet would run as a formula (text starting with =, +, -, @, a tab "
        "or a carriage return, that is not a number: `=HYPERLINK(...)` in a customer's name). keep: write it as it is (for "
        "programs that read the file). escape: write it with a leading ' (OWASP's advice for files people open in Excel or "
        "LibreOffice; the reader sees the text). refuse: the event is a dead letter naming the column.",
    )
    roll_bytes: int = Field(default=64 * 1024 * 1024, ge=1, description="Start a new file once the current one is this large.")
    roll_every: Duration = Field(
        default=duration("1h"), description="Start a new file once the current one is this old (if it has a line)."
    )
    fsync: bool = Field(default=True, description="fsync before an event counts as delivered (false: flushed to the OS only).")

    @model_validator(mode="after")
    def _check(self) -> RollingFilesConfig:
        if self.format == "csv" and not self.body:
            raise ValueError("format csv needs `body`: its fields are the columns, in order")
        return self


class FileOutboundConfig(RollingFilesConfig):
    """Append each event as a line to a rolling file: JSON Lines or CSV, for batch consumers (a data
    lake loader, a legacy import job). A file is written as `<prefix>-<UTC time>-<n>.<ext>.part` and
    renamed to `.<ext>` when it rolls, so a reader only ever sees complete files. An event counts as
    delivered once its line is flushed and fsynced (one fsync per batch of events in flight)."""

    type: Literal["file"] = "file"
    path: Path = Field(description="The folder files are written to (created if missing).", examples=["/data/outbox/payments"])
