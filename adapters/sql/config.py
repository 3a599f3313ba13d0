"""Config model of the sql outbound adapter."""

from __future__ import annotations

__all__ = ["SqlOutboundConfig"]

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from bus.adapter_api import Body, OutboundConfig, compile_expression

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def _identifier(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"{name!r} is not a plain SQL identifier (letters, digits, _; optionally schema.table)")
    return name


class SqlOutboundConfig(OutboundConfig):
    """Write each event into a table of PostgreSQL or MariaDB/MySQL: upsert (the default), insert or
    delete by key. The key columns make a redelivery overwrite the same row, so the table gets each
    event once in effect. Constraint and data errors are permanent (dead letter, with the
    database's message); lost connections, deadlocks and serialization failures are retried."""

    type: Literal["sql"] = "sql"
    dsn: SecretStr = Field(
        description="postgresql://user:pass@host:5432/db or mysql://user:pass@host:3306/db (use ${ENV} for the password).",
        examples=["postgresql://bus@postgres:5432/erp"],
    )
    table: str = Field(description="Target table (schema.table allowed).", examples=["ledger_payments"])
    columns: dict[str, str] = Field(
        min_length=1,
        description="Column -> expression over the event's fields ($id, $time... for metadata).",
        examples=[{"payment_id": "payment_id", "amount_cents": "amount", "event_id": "$id"}],
    )
    key: list[str] = Field(min_length=1, description="Key columns: the upsert's conflict target (a unique index), the delete's WHERE.")
    operation: Literal["upsert", "insert", "delete"] = Field(default="upsert", description="What to do with each event.")
    delete_when: str | None = Field(
        default=None,
        description="With upsert: an expression; when true, the row with the event's key is deleted instead.",
        examples=['status == "cancelled"'],
    )
    pool_size: int = Field(default=4, ge=1, le=100, description="Connections kept open.")

    @field_validator("table")
    @classmethod
    def _check_table(cls, name: str) -> str:
        return _identifier(name)

    @field_validator("columns")
    @classmethod
    def _check_columns(cls, columns: dict[str, str]) -> dict[str, str]:
        for column in columns:
            _identifier(column)
        Body.check(columns)
        return columns

    @field_validator("delete_when")
    @classmethod
    def _check_delete_when(cls, text: str | None) -> str | None:
        if text is not None:
            compile_expression(text)
        return text

    @model_validator(mode="after")
    def _check_key(self) -> SqlOutboundConfig:
        missing = [k for k in self.key if k not in self.columns]
        if missing:
            raise ValueError(f"key column(s) {missing} must also be in columns")
        if not self.dsn.get_secret_value().startswith(("postgresql://", "postgres://", "mysql://", "mariadb://")):
            raise ValueError("dsn must start with postgresql://, postgres://, mysql:// or mariadb://")
        return self
