"""The pgoutput decoder on messages captured from a real PostgreSQL 15 (wal_level=logical):
``pg_logical_slot_peek_binary_changes(slot, NULL, NULL, 'proto_version', '1', 'publication_names', p)``
after ``INSERT (1,'a',1.5)``, ``UPDATE SET v='b'``, ``DELETE`` on
``t(id int primary key, v text, n numeric(10,2), ts timestamptz default now())``."""

from __future__ import annotations

import struct
from decimal import Decimal

from adapters.sql.pgoutput import Decoder, lsn_int, lsn_text

CAPTURED = [
    "4200000000015434380003040842e899a4000002d7",
    "52000040097075626c69630074006400040169640000000017ffffffff00760000000019ffffffff006e00000006a4000a000600747300000004a0ffffffff",
    "49000040094e00047400000001317400000001617400000004312e3530740000001d323032362d31312d32342031383a30303a35382e3932303836312b3030",
    "4300000000000154343800000000015434680003040842e899a4",
    "4200000000015434c80003040842e9143e000002d8",
    "55000040094e00047400000001317400000001627400000004312e3530740000001d323032362d31312d32342031383a30303a35382e3932303836312b3030",
    "430000000000015434c800000000015434f80003040842e9143e",
    "4200000000015435380003040842e99556000002d9",
    "44000040094b00047400000001316e6e6e",
    "4300000000000154353800000000015435680003040842e99556",
]


def test_insert_update_delete_as_committed_transactions() -> None:
    decoder = Decoder()
    transactions = [done for done in (decoder.feed(bytes.fromhex(m)) for m in CAPTURED) if done is not None]
    assert [[c.op for c in tx] for tx in transactions] == [["c"], ["u"], ["d"]]
    (insert,), (update,), (delete,) = transactions
    assert insert.relation.table == "t" and insert.relation.schema == "public" and insert.relation.key == ("id",)
    assert insert.after == {"id": 1, "v": "a", "n": Decimal("1.50"), "ts": "2026-11-24 18:00:58.920861+00"}
    assert update.before is None and update.after is not None and update.after["v"] == "b"  # default replica identity: no old row
    assert delete.before == {"id": 1, "v": None, "n": None, "ts": None}  # the key only
    assert [c.xid for c in (insert, update, delete)] == [727, 728, 729]
    assert lsn_text(insert.commit_lsn) == "0/1543468" and lsn_text(delete.commit_lsn) == "0/1543568"  # the end LSN of each commit
    assert insert.commit_ms > 1_700_000_000_000  # 2026, in ms since the Unix epoch
    document = delete.document()
    assert document["op"] == "d" and document["after"] is None and document["source"]["table"] == "t"


def test_lsn_text_round_trip() -> None:
    assert lsn_int("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert lsn_text(lsn_int("0/1543568")) == "0/1543568"


def _relation(oid: int, columns: list[tuple[str, int]]) -> bytes:
    body = b"R" + struct.pack(">I", oid) + b"public\0docs\0" + b"d" + struct.pack(">H", len(columns))
    for i, (name, type_oid) in enumerate(columns):
        body += struct.pack(">B", 1 if i == 0 else 0) + name.encode() + b"\0" + struct.pack(">Ii", type_oid, -1)
    return body


def _insert(oid: int, values: list[bytes]) -> bytes:
    body = b"I" + struct.pack(">I", oid) + b"N" + struct.pack(">H", len(values))
    for value in values:
        body += b"t" + struct.pack(">I", len(value)) + value
    return body


def test_a_value_that_cannot_be_read_marks_its_change_and_never_stops_the_decoder() -> None:
    """A jsonb nested thousands deep (PostgreSQL takes it; Python's parser overflowed) or text that
    is not UTF-8 made the decoder raise, and the adapter read the same transaction again for ever,
    the slot holding the server's WAL. Now each such change says what, and the rest decode."""
    begin, commit = bytes.fromhex(CAPTURED[0]), bytes.fromhex(CAPTURED[3])
    decoder = Decoder()
    decoder.feed(begin)
    decoder.feed(_relation(16393, [("id", 23), ("doc", 3802), ("name", 25)]))
    rows = [[b"1", b"[" * 5000 + b"]" * 5000, b"ok"], [b"2", b'{"a": [1]}', b"M\xfcller"], [b"3", b'{"a": [1]}', b"fine"]]
    for values in rows:
        decoder.feed(_insert(16393, values))
    deep, latin, good = decoder.feed(commit) or []
    assert deep.problem is not None and deep.problem.startswith("column doc: JSON nested more than 256 levels deep")
    assert latin.problem == "column name is not UTF-8 text (a database encoding other than UTF8?)"
    assert latin.after is not None and latin.after["name"].encode("utf-8", "surrogateescape") == b"M\xfcller"  # the bytes kept
    assert good.problem is None and good.after == {"id": 3, "doc": {"a": [1]}, "name": "fine"}
