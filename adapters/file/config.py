"""Config model of the file inbound adapter (a drop folder)."""

from __future__ import annotations

__all__ = ["FileInboundConfig"]

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from bus.adapter_api import AdapterConfig, EmitSpec, parse_duration


class FileInboundConfig(AdapterConfig):
    """Read every file that appears in a folder, row by row, into events. A file moves to `done/`
    only after every row is on Kafka or kept on the inbound dead-letter topic with its line
    number; a file that cannot be read at all moves to `failed/`. Each move leaves a manifest
    beside the file (`<name>.manifest.json`: sha256, rows, accepted, rejected, time)."""

    type: Literal["file"] = "file"
    path: Path = Field(description="The drop folder.", examples=["/data/inbox/orders"])
    pattern: str = Field(default="*", description="Which files to take (glob).", examples=["*.csv"])
    format: Literal["auto", "csv", "jsonl"] = Field(default="auto", description="auto: by suffix (.csv, .jsonl/.ndjson).")
    encoding: str = Field(default="utf-8", description="Text encoding of the files (legacy exports are often latin-1).")
    delimiter: str = Field(default=",", min_length=1, max_length=1, description="csv: the field separator.")
    poll_interval: str = Field(default="5s", description="How often the folder is looked at.")
    settle: str = Field(default="2s", description="A file must be unchanged this long before it is read (still being written).")
    emit: EmitSpec = Field(description="How a row (CSV: header -> value, as text) becomes a canonical event.")

    @field_validator("poll_interval", "settle")
    @classmethod
    def _check_duration(cls, text: str) -> str:
        parse_duration(text)  # raises ValueError with examples
        return text
