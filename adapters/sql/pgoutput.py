"""A decoder of PostgreSQL's logical replication protocol, pgoutput version 1 (the format the
built-in ``pgoutput`` plugin writes; "Logical Replication Message Formats" in the PostgreSQL
manual). Only what change data capture needs: Begin, Commit, Relation, Insert, Update, Delete,
Truncate; Origin, Type and logical Message are skipped.

Column values arrive as text; the common types are turned into Python values by type oid
(integers, numeric as Decimal, floats, booleans, json and jsonb parsed); everything else
(timestamps, dates, uuids...) stays text, which ``emit.map`` can convert (``timestamp(...)``).

A value that cannot be read (text that is not UTF-8, a json document nested deeper than the hub
reads) never stops the decoder: the change carries the ``problem`` and is parked with it, and the
slot moves on. Raising here stopped the stream at that transaction for good, the slot holding the
server's WAL from then on.
"""

from __future__ import annotations

__all__ = ["Change", "Decoder", "Relation", "column_value", "lsn_int", "lsn_text"]

import struct
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bus.adapter_api import parse_json

_BOOL, _INT8, _INT2, _INT4, _OID, _JSON, _FLOAT4, _FLOAT8, _NUMERIC, _JSONB = 16, 20, 21, 23, 26, 114, 700, 701, 1700, 3802
_CONVERT: dict[int, Any] = {
    _BOOL: lambda s: s == "t",
    _INT8: int,
    _INT2: int,
    _INT4: int,
    _OID: int,
    _FLOAT4: float,
    _FLOAT8: float,
    _NUMERIC: Decimal,
    _JSON: parse_json,  # nested at most 256 deep, as every document the hub reads (PostgreSQL takes thousands)
    _JSONB: parse_json,
}
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970-01-01


@dataclass(frozen=True)
class Relation:
    oid: int
    schema: str
    table: str
    columns: tuple[tuple[str, int], ...]  # (name, type oid)
    key: tuple[str, ...]


@dataclass
class Change:
    """One row change, Debezium-like: op c (insert), u (update), d (delete), t (truncate)."""

    op: str
    relation: Relation
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    xid: int = 0
    commit_lsn: int = 0
    commit_ms: int = 0
    ordinal: int = 0  # position in its transaction
    problem: str | None = None  # a value that could not be read: the change is parked with this
    # Columns of an update's new row that PostgreSQL did not send: TOASTed values (large, stored
    # apart) the update left as they were. Filled in before the change is published (cdc.py).
    unchanged: tuple[str, ...] = ()

    def document(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "before": self.before,
            "after": self.after,
            "source": {
                "schema": self.relation.schema,
                "table": self.relation.table,
                "lsn": lsn_text(self.commit_lsn),
                "txId": self.xid,
                "ts_ms": self.commit_ms,
            },
        }


def lsn_text(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def lsn_int(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def byte(self) -> str:
        self.at += 1
        return chr(self.data[self.at - 1])

    def integer(self, size: int) -> int:
        fmt = {1: ">b", 2: ">h", 4: ">i", 8: ">q"}[size]
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += size
        return int(value)

    def string(self) -> str:
        end = self.data.index(b"\0", self.at)
        text = self.data[self.at : end].decode()
        self.at = end + 1
        return text

    def take(self, n: int) -> bytes:
        self.at += n
        return self.data[self.at - n : self.at]


@dataclass
class Decoder:
    """Feed messages in order; Insert/Update/Delete/Truncate come back as changes, stamped with
    their transaction once its Commit is read (``pending`` holds the open transaction's).

    A transaction larger than ``hold`` changes (a bulk UPDATE of millions of rows) is not held: its
    changes are dropped as they come (``skimming``) and only its Commit is kept, in ``known``, by
    the transaction's final LSN. Fed again with ``known`` (the next read of the slot), that
    transaction's changes come out stamped as they are read (``ready``), never all at once."""

    relations: dict[int, Relation] = field(default_factory=dict)
    pending: list[Change] = field(default_factory=list)
    xid: int = 0
    end_lsn: int = 0  # end of the last Commit read
    safe_lsn: int = 0  # end of the last transaction whose changes came out: where the slot may go once they are on Kafka
    hold: int = 1 << 62  # changes of one transaction held until its Commit, at most
    known: dict[int, tuple[int, int]] = field(default_factory=dict)  # final LSN -> (end LSN, commit ms) of large transactions
    ready: list[Change] = field(default_factory=list)  # a known large transaction's changes, stamped, as read
    skimming: bool = False  # the open transaction is too large: its changes are dropped until its Commit
    skimmed: int = 0  # the final LSN of the last transaction skimmed (0: none)
    _final_lsn: int = 0
    _streaming: tuple[int, int] | None = None  # (end LSN, commit ms) of the known transaction being read
    _ordinal: int = 0

    def feed(self, message: bytes) -> list[Change] | None:
        """Returns the transaction's changes at its Commit, else None."""
        r = _Reader(message)
        kind = r.byte()
        if kind == "B":
            self._final_lsn = r.integer(8)  # the transaction's commit LSN
            r.integer(8)  # commit time
            self.xid = r.integer(4)
            self.pending, self.skimming, self._ordinal = [], False, 0
            self._streaming = self.known.get(self._final_lsn)
        elif kind == "C":
            r.integer(1)  # flags
            r.integer(8)  # the commit's own LSN
            self.end_lsn, commit_us = r.integer(8), r.integer(8)
            commit_ms = (commit_us + _PG_EPOCH_US) // 1000
            if self.skimming:  # its changes were dropped: read again, with this, they come out as they are read
                self.known[self._final_lsn] = (self.end_lsn, commit_ms)
                self.skimmed, self.skimming = self._final_lsn, False
                return []
            if self._streaming is not None:
                self.known.pop(self._final_lsn, None)
                self._streaming = None
            self.safe_lsn = self.end_lsn
            done, self.pending = self.pending, []
            for change in done:
                change.commit_lsn, change.commit_ms = self.end_lsn, commit_ms
            return done
        elif kind == "R":
            oid, schema, table = r.integer(4), r.string(), r.string()
            r.integer(1)  # replica identity setting
            columns, key = [], []
            for _ in range(r.integer(2)):
                flags, name, type_oid = r.integer(1), r.string(), r.integer(4)
                r.integer(4)  # type modifier
                columns.append((name, type_oid))
                if flags & 1:
                    key.append(name)
            self.relations[oid] = Relation(oid, schema or "public", table, tuple(columns), tuple(key))
        elif kind == "I":
            relation = self.relations[r.integer(4)]
            r.byte()  # 'N'
            after, problem = self._tuple(r, relation)
            self._add(Change("c", relation, after=after, problem=problem))
        elif kind == "U":
            relation = self.relations[r.integer(4)]
            before, problem = None, None
            marker = r.byte()
            if marker in "KO":  # the old key (K) or whole old row (O, REPLICA IDENTITY FULL)
                before, problem = self._tuple(r, relation)
                marker = r.byte()
            after, later = self._tuple(r, relation)
            unchanged = tuple(name for name, _ in relation.columns if name not in after)
            self._add(Change("u", relation, before=before, after=after, problem=problem or later, unchanged=unchanged))
        elif kind == "D":
            relation = self.relations[r.integer(4)]
            r.byte()  # 'K' or 'O'
            before, problem = self._tuple(r, relation)
            self._add(Change("d", relation, before=before, problem=problem))
        elif kind == "T":
            count = r.integer(4)
            r.integer(1)  # options
            for _ in range(count):
                self._add(Change("t", self.relations[r.integer(4)]))
        return None  # Origin (O), Type (Y), Message (M): nothing to publish

    def _add(self, change: Change) -> None:
        change.xid, change.ordinal = self.xid, self._ordinal
        self._ordinal += 1
        if self._streaming is not None:
            change.commit_lsn, change.commit_ms = self._streaming
            self.ready.append(change)
        elif not self.skimming:
            self.pending.append(change)
            if len(self.pending) > self.hold:
                self.skimming, self.pending = True, []

    @staticmethod
    def _tuple(r: _Reader, relation: Relation) -> tuple[dict[str, Any], str | None]:
        """The row's values, and what could not be read of them (the first such column), if anything."""
        row: dict[str, Any] = {}
        problem = None
        for name, type_oid in relation.columns[: r.integer(2)]:
            kind = r.byte()
            if kind == "n":
                row[name] = None
            elif kind == "u":
                continue  # unchanged TOAST: PostgreSQL does not send it again
            else:
                row[name], trouble = column_value(name, type_oid, r.take(r.integer(4)))
                problem = problem or trouble
        return row, problem


def column_value(name: str, type_oid: int, data: bytes) -> tuple[Any, str | None]:
    """A column's value from PostgreSQL's text form of it, and what could not be read of it, if
    anything (then the value is the text, the bytes of one that is not UTF-8 kept)."""
    try:
        text = data.decode()
    except UnicodeDecodeError:  # a database in another encoding: the bytes kept, the row refused
        return data.decode("utf-8", "surrogateescape"), f"column {name} is not UTF-8 text (a database encoding other than UTF8?)"
    convert = _CONVERT.get(type_oid)
    if convert is None:
        return text, None
    try:
        return convert(text), None
    except ValueError as exc:
        return text, f"column {name}: {exc}"
