"""Config of ``migrations:``: jobs that move what a source already holds (a SQL table or query, a
CSV or JSON Lines file) through the hub's own mapping and routes (``bus migrate``)."""

from __future__ import annotations

__all__ = ["FileSource", "MigrationConfig", "MigrationSource", "MigrationTarget", "SqlSource"]

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from bus.config.adapters import EmitSpec
from bus.config.base import ConfigModel
from bus.config.fields import TemplateText, TextEncoding
from bus.dsn import check_dsn

# What a source query starts with, after blanks and comments: a read. (It also runs in a read-only
# transaction; this says it at `bus validate`, before anything is contacted.)
_READING = re.compile(r"(?:\s+|--[^\n]*\n|/\*.*?\*/)*\(*\s*(?:SELECT|WITH|TABLE|VALUES)\b", re.IGNORECASE | re.DOTALL)


class SqlSource(ConfigModel):
    dsn: SecretStr = Field(description="postgresql://... or mysql://... (MariaDB); a secret: use ${ENV} or ${file:...}.")
    table: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$", description="Read every row of this table.")
    query: str | None = Field(default=None, description="Or read what this SELECT returns (the source's own filter goes here).")
    batch_size: int = Field(default=1000, ge=1, le=100_000, description="Rows fetched at a time (a server-side cursor).")

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, dsn: SecretStr) -> SecretStr:
        check_dsn(dsn.get_secret_value())
        return dsn

    @field_validator("query")
    @classmethod
    def _reads(cls, value: str | None) -> str | None:
        if value is not None and not _READING.match(value):
            raise ValueError("a migration only reads its source: the query must be a SELECT (or WITH ... SELECT)")
        return value

    @model_validator(mode="after")
    def _one(self) -> SqlSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("give either table or query")
        return self


class FileSource(ConfigModel):
    path: Path = Field(description="The file (relative to the config file's folder).")
    format: Literal["csv", "jsonl"] | None = Field(default=None, description="Default: by the file's suffix (.csv, .jsonl, .ndjson).")
    encoding: TextEncoding = Field(
        default="utf-8",
        description="The file's text encoding (e.g. latin-1 for an old export). A line that is not text in it is refused, "
        "not the whole file; a UTF-8 file may start with a byte order mark.",
    )
    delimiter: str = Field(
        default=",",
        min_length=1,
        max_length=1,
        description="A CSV file's field separator: `;` for many European exports, a tab for .tsv.",
    )

    @property
    def kind(self) -> Literal["csv", "jsonl"]:
        """``format``, or by the file's suffix: .csv is CSV, anything else JSON Lines."""
        return self.format or ("csv" if self.path.suffix.lower() == ".csv" else "jsonl")


class MigrationSource(ConfigModel):
    sql: SqlSource | None = None
    file: FileSource | None = None

    @model_validator(mode="after")
    def _one(self) -> MigrationSource:
        if (self.sql is None) == (self.file is None):
            raise ValueError("give either sql or file")
        return self


class MigrationTarget(ConfigModel):
    """How `bus migrate` reads back and restores one target that has no key of its own to read
    by (an HTTP API). SQL targets need nothing here: they are read by their key columns."""

    read: TemplateText | None = Field(
        default=None,
        pattern=r"^https?://",
        description="GET here answers the target's record for an event as JSON (404: none); a ${} template over the "
        "delivered event. Without it the target is unverifiable and a run into it cannot be rolled back.",
        examples=["https://crm.example.com/api/customers/${customer_id}"],
    )
    delete: TemplateText | None = Field(
        default=None, pattern=r"^https?://", description="Rollback deletes a record the run created here (default: `read`)."
    )
    restore_method: Literal["PUT", "POST", "PATCH"] = Field(
        default="PUT", description="Rollback sends a record the run replaced back to `read` as it was before, with this method."
    )

    @field_validator("read", "delete")
    @classmethod
    def _per_record(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and "${" not in value:  # one URL for every record: each read would answer the same one
            raise ValueError(
                f"{info.field_name} names no field of the event (e.g. .../payments/$${{payment_id}} in YAML): "
                "every record would be read at the same URL"
            )
        return value


class MigrationConfig(ConfigModel):
    """A migration: a source's rows mapped by ``emit`` (an inbound's mapping, over one row as the
    document), then routed by ``routes`` exactly as live events are."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Its name: `bus migrate plan NAME`, `bus migrate run NAME`.")
    source: MigrationSource
    emit: EmitSpec = Field(description="How a row becomes a canonical event; `key` identifies the row in reports.")
    routes: list[str] = Field(default_factory=list, description="The routes it feeds (default: every route of emit.schema).")
    targets: dict[str, MigrationTarget] = Field(
        default_factory=dict, description="Per outbound adapter it feeds: how to read back and restore it (HTTP targets)."
    )
    batch_size: int = Field(
        default=500, ge=1, le=10_000, description="Rows a run maps, journals and writes together (one checkpoint per batch)."
    )
    then: str | None = Field(
        default=None,
        description="The live inbound that takes over after the migration (an sql_poll or postgres_cdc of the same tables): "
        "a run takes its position before reading; `bus migrate cutover RUN` hands it over (docs/migrations.md).",
        examples=["legacy-customers"],
    )
