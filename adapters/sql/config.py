"""Config model of the sql outbound adapter."""

from __future__ import annotations

__all__ = ["PostgresCdcConfig", "SqlOutboundConfig", "SqlPollConfig", "Watermark"]

import re
import ssl
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from adapters.sql.pool import mysql_tls
from bus.adapter_api import (
    AdapterConfig,
    Body,
    ConfigModel,
    Duration,
    EmitSpec,
    Expression,
    Kind,
    OutboundConfig,
    check_dsn,
    duration,
    time_zone,
)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def _identifier(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"{name!r} is not a plain SQL identifier (letters, digits, _; optionally schema.table)")
    return name


def _dsn(dsn: SecretStr) -> SecretStr:
    text = dsn.get_secret_value()
    check_dsn(text)
    if text.startswith(("mysql://", "mariadb://")) and "${" not in text:
        try:
            mysql_tls(text)  # its TLS options (the files are read: a missing one is said at load)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"the dsn's TLS files cannot be used: {exc}") from exc
    return dsn


class SqlOutboundConfig(OutboundConfig):
    """Write each event into a table of PostgreSQL or MariaDB/MySQL: upsert (the default), insert or
    delete by key. The key columns make a redelivery overwrite the same row, so the table gets each
    event once in effect. Constraint and data errors are permanent (dead letter, with the
    database's message); lost connections, deadlocks and serialization failures are retried."""

    type: Literal["sql"] = "sql"
    dsn: SecretStr = Field(
        description="postgresql://user:pass@host:5432/db or mysql://user:pass@host:3306/db (use ${ENV} for the password). "
        "TLS: libpq's ?sslmode=... for PostgreSQL; ?ssl-mode=VERIFY_IDENTITY&ssl-ca=...&ssl-cert=...&ssl-key=... for "
        "MariaDB/MySQL (docs/adapters.md, sql). PostgreSQL may name several servers, tried in turn: "
        "host1:5432,host2:5432 with ?target_session_attrs=read-write writes to whichever is the primary now.",
        examples=[
            "postgresql://bus@postgres:5432/erp",
            "postgresql://bus@pg-1:5432,pg-2:5432/erp?target_session_attrs=read-write",
            "mysql://hub@db:3306/erp?ssl-mode=VERIFY_IDENTITY&ssl-ca=/certs/ca.pem",
        ],
    )
    table: str = Field(description="Target table (schema.table allowed).", examples=["ledger_payments"])
    columns: Annotated[dict[str, str], Kind("body")] = Field(
        min_length=1,
        description="Column -> expression over the event's fields ($id, $time... for metadata).",
        examples=[{"payment_id": "payment_id", "amount_cents": "amount", "event_id": "$id"}],
    )
    key: list[str] = Field(min_length=1, description="Key columns: the upsert's conflict target (a unique index), the delete's WHERE.")
    operation: Literal["upsert", "insert", "delete"] = Field(default="upsert", description="What to do with each event.")
    delete_when: Expression | None = Field(
        default=None,
        description="With upsert: an expression; when true, the row with the event's key is deleted instead.",
        examples=['status == "cancelled"'],
    )
    pool_size: int = Field(default=4, ge=1, le=100, description="Connections kept open.")
    statement_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="How long a write may wait (for a lock above all: another session's open transaction on the table) "
        "before it is given up and retried, with the reason in the log and /readyz. PostgreSQL's own default is to wait "
        "for ever, holding up the subscriber in silence.",
    )
    batch_size: int = Field(
        default=200,
        ge=1,
        le=10_000,
        description="Most events written in one transaction. Events that arrive while a transaction runs go in the next "
        "(group commit; delivery.concurrency bounds how many are in flight). 1: one transaction per event.",
    )
    timezone: str = Field(
        default="UTC",
        description="The zone of the table's date-time columns that hold no zone (PostgreSQL `timestamp`, MariaDB/MySQL "
        "`DATETIME`): a time is written as its wall-clock time there. An IANA name, as a legacy database that keeps "
        "local time needs (`Europe/Berlin`). Columns that hold a moment (`timestamptz`, MariaDB/MySQL `TIMESTAMP`) take "
        "the moment itself (MariaDB/MySQL: a time given without a zone is read in this one).",
        examples=["UTC", "Europe/Berlin"],
    )
    numbers: Literal["exact", "round"] = Field(
        default="exact",
        description="A number with more decimal places than its column keeps (1.005 into `numeric(12,2)`, 2.5 into an "
        "integer column), which the database would round (or the driver truncate) with nothing said. exact: the event is "
        "dead-lettered saying what it would have become. round: rounded half away from zero, as both databases round. "
        "Float noise (19.99 * 3 = 59.97000000000001) is taken as the number meant.",
    )

    @field_validator("table")
    @classmethod
    def _check_table(cls, name: str) -> str:
        return _identifier(name)

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, name: str) -> str:
        time_zone(name)  # raises naming it
        return name

    @field_validator("columns")
    @classmethod
    def _check_columns(cls, columns: dict[str, str]) -> dict[str, str]:
        for column in columns:
            _identifier(column)
        Body.check(columns)
        return columns

    @model_validator(mode="after")
    def _check_key(self) -> SqlOutboundConfig:
        missing = [k for k in self.key if k not in self.columns]
        if missing:
            raise ValueError(f"key column(s) {missing} must also be in columns")
        _dsn(self.dsn)
        return self


class Watermark(ConfigModel):
    """Which columns tell new and changed rows from the ones already read."""

    column: str | None = Field(
        default=None,
        description="A timestamp column the application sets on every insert and update (updated_at): changed rows are "
        "read again. Without it, only new rows are read, by `id`.",
        examples=["updated_at"],
    )
    id: str = Field(
        description="A unique, ordered column (the primary key): breaks ties between rows with the same `column` value, "
        "and is the whole watermark when `column` is not set.",
        examples=["id"],
    )

    @field_validator("column", "id")
    @classmethod
    def _plain(cls, name: str | None) -> str | None:
        return None if name is None else _identifier(name)


class SqlPollConfig(AdapterConfig):
    """Read new and changed rows of a table in PostgreSQL or MariaDB/MySQL, in watermark order, and
    publish each as an event; the watermark is kept in Kafka, so a restart resumes where it stopped.
    Rows that share a timestamp are told apart by `id`; rows committed late are waited for (`settle`,
    and on PostgreSQL and MariaDB the start of the oldest open transaction)."""

    type: Literal["sql_poll"] = "sql_poll"
    dsn: SecretStr = Field(
        description="postgresql://user:pass@host:5432/db or mysql://user:pass@host:3306/db (use ${ENV} for the password). "
        "PostgreSQL may name several servers, tried in turn (host1:5432,host2:5432; ?target_session_attrs=prefer-standby "
        "reads from a standby when one answers).",
        examples=["postgresql://bus@legacy-db:5432/crm"],
    )
    table: str = Field(description="Table or view to read (schema.table allowed).", examples=["customers"])
    columns: list[str] = Field(
        default_factory=lambda: ["*"], description="Columns to read; each row is a document of column -> value.", examples=[["id", "name"]]
    )
    where: str | None = Field(
        default=None,
        description="Extra SQL condition (trusted config text, not user input), ANDed with the watermark.",
        examples=["deleted = false"],
    )
    watermark: Watermark = Field(description="Columns that order the rows: `{column: updated_at, id: id}` or `{id: id}`.")
    interval: Duration = Field(default=duration("5s"), description="Time between polls once caught up.")
    batch_size: int = Field(default=1000, ge=1, le=100_000, description="Rows per query; a backfill reads batch after batch.")
    statement_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="How long a query may take (waiting for a lock, or reading a table without an index on the watermark) "
        "before it is given up and tried again at the next interval, with the reason in the log and /readyz.",
    )
    settle: Duration = Field(
        default=duration("2s"),
        description="With `column`: rows newer than the database's now() minus this are left for the next poll, so a row "
        "stamped just before a slow commit is not passed by. 0s leaves only the wait for open transactions. A column that "
        "holds no time (a version number) has no time horizon: found from the catalog and said at start.",
    )
    wait_for_transactions: bool = Field(
        default=True,
        description="With `column`: also leave rows at or after the start of the oldest open transaction (PostgreSQL: "
        "pg_stat_activity, full view needs pg_read_all_stats; MariaDB: information_schema.INNODB_TRX, needs PROCESS). "
        "Falls back to `settle` alone, with a warning, when the database refuses.",
    )
    stray_check: Duration | None = Field(
        default=duration("5m"),
        description="With `column`: how often to look for rows the watermark cannot reach: a NULL `column` (never read) "
        "and, with `settle` on, a time more than `stray_ahead` after the database's now (read only when it comes). What is "
        "found is logged at WARNING when it changes and shown in the adapter's progress (/readyz, the management API, the console, "
        '`bus_adapter_progress{measure="stray_rows"}`). null: never look.',
    )
    stray_ahead: Duration = Field(
        default=duration("1h"), description="With `stray_check`: how far after the database's now a row's time counts as stray."
    )
    emit: EmitSpec = Field(
        description="How a row becomes a canonical event. Without `id`, the id is `<name>:<id>@<column value>`, so a re-read "
        "of the same row version keeps it."
    )

    @field_validator("dsn")
    @classmethod
    def _check_dsn(cls, dsn: SecretStr) -> SecretStr:
        return _dsn(dsn)

    @field_validator("table")
    @classmethod
    def _check_table(cls, name: str) -> str:
        return _identifier(name)

    @field_validator("columns")
    @classmethod
    def _check_columns(cls, columns: list[str]) -> list[str]:
        for column in columns:
            if column != "*":
                _identifier(column)
        return columns


class PostgresCdcConfig(AdapterConfig):
    """Change data capture from PostgreSQL through logical replication (the built-in pgoutput
    plugin): every committed insert, update and delete of the published tables becomes an event,
    in commit order. The replication slot is the position: it moves only after Kafka acknowledged
    the events, so a restart resumes where it stopped and nothing committed is lost."""

    type: Literal["postgres_cdc"] = "postgres_cdc"
    dsn: SecretStr = Field(
        description="postgresql://user:pass@host:5432/db; the user needs the REPLICATION attribute (and to own the tables if "
        "the publication is created here). The server needs wal_level = logical. Several servers may be named "
        "(host1:5432,host2:5432?target_session_attrs=primary): the slot is read on the primary.",
        examples=["postgresql://cdc@legacy-db:5432/crm"],
    )
    tables: list[str] = Field(
        default_factory=list,
        description="Tables to publish (schema.table allowed); used when the publication is created here.",
        examples=[["cust_master", "billing.invoices"]],
    )
    publication: str | None = Field(default=None, description="Publication to read; default bus_<name>.")
    slot: str | None = Field(default=None, description="Logical replication slot; default bus_<name>.")
    create: bool = Field(default=True, description="Create the publication (FOR TABLE `tables`) and the slot if missing.")
    lost_slot: Literal["refuse", "recreate"] = Field(
        default="refuse",
        description="When the slot this adapter has read from is gone (dropped by hand to free the server's WAL, or a "
        "failover to a server without it), the changes committed since its last position cannot be read. `refuse`: nothing "
        "is read, /readyz and the log say so with that position, until an operator decides; `recreate`: a new slot is made "
        "at the server's current position and the gap is logged at WARNING (fill it with `bus migrate`).",
    )
    interval: Duration = Field(default=duration("500ms"), description="Wait between reads of the slot when there was nothing new.")
    batch: int = Field(default=1000, ge=1, description="Changes read at a time (whole transactions).")
    large_transaction: int = Field(
        default=10_000,
        ge=1,
        description="A transaction with more changes than this (a bulk UPDATE) is read twice: once to find its end, then "
        "published as it is read, in chunks, never held whole in memory.",
    )
    emit: EmitSpec = Field(
        description="How a change becomes a canonical event. The document is Debezium-like: op (c insert, u update, d delete), "
        "before, after, source {schema, table, lsn, txId, ts_ms}. Default id: <name>:<commit lsn>:<n>, stable across re-reads."
    )

    @field_validator("dsn")
    @classmethod
    def _check_dsn(cls, dsn: SecretStr) -> SecretStr:
        check_dsn(dsn.get_secret_value(), postgres_only=True)
        return dsn

    @field_validator("tables")
    @classmethod
    def _check_tables(cls, tables: list[str]) -> list[str]:
        return [_identifier(t) for t in tables]

    @field_validator("publication", "slot")
    @classmethod
    def _check_names(cls, name: str | None) -> str | None:
        if name is not None and not re.match(r"^[a-z_][a-z0-9_]*$", name):
            raise ValueError(f"{name!r}: use lower-case letters, digits and _")
        return name

    @model_validator(mode="after")
    def _check_create(self) -> PostgresCdcConfig:
        if self.create and not self.tables and self.publication is None:
            raise ValueError("name the `tables` to publish, or an existing `publication` (with create: false)")
        return self
