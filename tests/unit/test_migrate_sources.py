"""A migration's file source as exports really come: each record that cannot be read is refused
alone with its line and why, and the rest are read; the config checker reads a CSV's header as the
shape of its rows; the journal keeps text that is no Unicode (a lone surrogate) without failing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.file.config import FileInboundConfig
from bus.app.cli import main
from bus.app.migrate.sources import UnreadableRow, row_json, source_rows
from bus.config.migrations import FileSource, MigrationConfig
from bus.documents import CSV_MAX_FIELD
from bus.errors import BusError
from bus.migrate.journal import Entry, Journal
from tests.support.lines import CountingText


def migration(path: str, **file: Any) -> MigrationConfig:
    return MigrationConfig.model_validate(
        {"name": "m", "source": {"file": {"path": path, **file}}, "emit": {"schema": "Payment", "key": "ref", "map": {"payment_id": "ref"}}}
    )


def read(tmp_path: Path, name: str, data: bytes, **file: Any) -> list[tuple[str, Any]]:
    (tmp_path / name).write_bytes(data)

    async def collect() -> list[tuple[str, Any]]:
        return [item async for item in source_rows(migration(name, **file), tmp_path)]

    return asyncio.run(collect())


def test_a_csv_record_is_named_by_the_line_it_starts_on_and_a_bad_one_is_refused_alone(tmp_path: Path) -> None:
    data = (
        b"\xef\xbb\xbfref,note\r\n"  # Excel's "CSV UTF-8": a byte order mark first
        b'A,"two\r\nlines"\r\n'  # lines 2-3
        b"\r\n"  # 4: blank
        b"B,one,two\r\n"  # 5: a field too many
        b"C\r\n"  # 6: a field short
        b"D,caf\xe9\r\n"  # 7: latin-1 in a UTF-8 file
        b"E," + b"x" * (CSV_MAX_FIELD + 1) + b"\r\n"  # 8: over any sane field size
        b"F,ok\r\n"  # 9
    )
    rows = read(tmp_path, "e.csv", data)
    assert [where for where, _ in rows] == [f"e.csv:{n}" for n in (2, 5, 6, 7, 8, 9)]
    good = {where: row for where, row in rows if not isinstance(row, Exception)}
    assert good == {"e.csv:2": {"ref": "A", "note": "two\r\nlines"}, "e.csv:9": {"ref": "F", "note": "ok"}}
    bad: dict[str, Any] = {where: row for where, row in rows if isinstance(row, Exception)}
    assert all(isinstance(row, UnreadableRow) for row in bad.values())
    assert str(bad["e.csv:5"]).startswith("3 fields where the header has 2") and bad["e.csv:5"].text == ["B", "one", "two"]
    assert str(bad["e.csv:6"]).startswith("1 fields where the header has 2")
    assert str(bad["e.csv:7"]).startswith("not utf-8 text") and "set source.file.encoding" in str(bad["e.csv:7"])
    assert row_json(bad["e.csv:7"]) == json.dumps("D,caf\\xe9")  # the byte shown, as text that can be stored and printed
    too_long = f"a line of {CSV_MAX_FIELD + 3:,} characters, more than the {CSV_MAX_FIELD:,} a row may have; the line is skipped"
    assert str(bad["e.csv:8"]) == too_long
    assert bad["e.csv:8"].text == "E," + "x" * 198 + "..."  # its start, not the 64 MiB


def test_a_large_field_is_read(tmp_path: Path) -> None:
    rows = read(tmp_path, "e.csv", b"ref,note\nA," + b"n" * 500_000 + b"\n")
    assert rows == [("e.csv:2", {"ref": "A", "note": "n" * 500_000})]


def test_a_declared_encoding_reads_its_text_and_a_bom_is_only_skipped_in_utf8(tmp_path: Path) -> None:
    assert read(tmp_path, "l.csv", "ref\nCafé\n".encode("latin-1"), encoding="latin-1") == [("l.csv:2", {"ref": "Café"})]
    assert read(tmp_path, "u.csv", b"\xef\xbb\xbfref\nx\n", encoding="UTF8") == [("u.csv:2", {"ref": "x"})]


def test_json_lines_refuses_bytes_that_are_not_text_and_lines_that_are_not_json(tmp_path: Path) -> None:
    data = b'\xef\xbb\xbf{"ref": "A"}\n{"ref": "caf\xe9"}\n\n{"ref": \n{"ref": "\\ud800"}\n'
    rows = read(tmp_path, "e.jsonl", data)
    assert [where for where, _ in rows] == ["e.jsonl:1", "e.jsonl:2", "e.jsonl:4", "e.jsonl:5"]
    assert rows[0][1] == {"ref": "A"}
    assert str(rows[1][1]).startswith("not utf-8 text") and rows[1][1].text == '{"ref": "caf\\xe9"}'
    assert str(rows[2][1]).startswith("not JSON") and rows[2][1].text == '{"ref": '
    assert rows[3][1] == {"ref": "\ud800"}  # valid JSON; the schema's encoding refuses it later, with its reason
    assert row_json(rows[3][1]) == '{"ref":"\\\\ud800"}'  # and its sample can be stored and printed


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "has no header line"),
        (b"ref,amount,ref\n1,2,3\n", r"names column 'ref' twice \(columns 1 and 3\)"),
        (b"r\xe9f\n1\n", "the header of .* is not text in the file's encoding"),
        (b"ref;amount\n1;2\n", "its names look separated by ';', not ','; set delimiter"),
    ],
)
def test_a_header_that_cannot_serve_stops_before_any_row(tmp_path: Path, data: bytes, says: str) -> None:
    with pytest.raises(BusError, match=says):
        read(tmp_path, "e.csv", data)


@pytest.mark.parametrize("data", [b'[{"ref": "A"}, {"ref": "B"}]\n', b'\n[\n  {"ref": "A"}\n]\n'])
def test_a_json_array_is_not_taken_for_json_lines(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(BusError, match=r"holds a JSON array, not JSON Lines .* jq -c '\.\[\]' e\.json > e\.jsonl"):
        read(tmp_path, "e.json", data)


@pytest.mark.parametrize("encoding", ["latin9x", "base64", "rot13"])
def test_an_encoding_that_is_not_one_of_text_is_a_config_error(encoding: str) -> None:
    with pytest.raises(ValueError, match="text encodings: utf-8"):
        FileSource.model_validate({"path": "e.csv", "encoding": encoding})
    # A drop folder's too: it was a LookupError when the first file came (the sftp inbound shares the model).
    emit = {"schema": "Payment", "map": {"payment_id": "ref"}}
    with pytest.raises(ValueError, match="text encodings: utf-8"):
        FileInboundConfig.model_validate({"name": "x", "type": "file", "path": "/tmp", "encoding": encoding, "emit": emit})


def test_a_utf16_file_with_a_broken_character_stops_before_any_row(tmp_path: Path) -> None:
    """In UTF-16 a broken character cannot be refused on its line alone: the run stopped there with
    a UnicodeDecodeError, half done. The whole file is checked first; a sound one reads as any."""
    text = "ref,note\n" + "".join(f"R{i},caf\u00e9\n" for i in range(20))
    rows = read(tmp_path, "e.csv", text.encode("utf-16"), encoding="utf-16")
    assert len(rows) == 20 and rows[0][1] == {"ref": "R0", "note": "caf\u00e9"}
    with pytest.raises(BusError, match=r"e\.csv is not utf-16 text at byte [0-9,]+ \(illegal UTF-16 surrogate\); no row was read"):
        read(tmp_path, "e.csv", text.encode("utf-16")[:100] + b"\x00\xd8A\x00" + text.encode("utf-16-le")[100:], encoding="utf-16")
    with pytest.raises(BusError, match="without a byte order mark, name the order: utf-16-le or utf-16-be"):
        read(tmp_path, "e.csv", text.encode("utf-16-le"), encoding="utf-16")  # a UnicodeError, not a UnicodeDecodeError
    assert len(read(tmp_path, "e.csv", text.encode("utf-16-le"), encoding="utf-16-le")) == 20


def config_with_csv(tmp_path: Path, header: bytes, map_: dict[str, str]) -> Path:
    (tmp_path / "export.csv").write_bytes(header + b"\nA,1,eur\n")
    document = {
        "kafka": {"bootstrap": "127.0.0.1:1"},
        "routes": [{"name": "all", "from": "Payment", "to": ["archive"]}],
        "outbound": [{"name": "archive", "type": "file", "path": str(tmp_path / "out")}],
        "migrations": [{"name": "m", "source": {"file": {"path": "export.csv"}}, "emit": {"schema": "Payment", "key": "ref", "map": map_}}],
    }
    path = tmp_path / "bus.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def validate(config: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    capsys.readouterr()
    main(["validate", "--json", "-c", str(config)])
    return [f"{e['field']}: {e['message']}" for e in json.loads(capsys.readouterr().out)["errors"]]


def test_the_checker_reads_a_csv_header_as_the_rows_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = {"payment_id": "ref", "amount": "minor_units(amount, currency)", "currency": "currency", "customer_id": "ref"}
    assert validate(config_with_csv(tmp_path, b"\xef\xbb\xbfref,amount,currency", good), capsys) == []
    typo = {**good, "currency": "curency"}
    [error] = validate(config_with_csv(tmp_path, b"ref,amount,currency", typo), capsys)
    assert error.startswith("migrations[0].emit.map.currency:") and "'currency'" in error  # the closest column named
    as_text = {**good, "amount": "amount"}  # a CSV holds text: a number needs converting
    [error] = validate(config_with_csv(tmp_path, b"ref,amount,currency", as_text), capsys)
    assert error == "migrations[0].emit.map.amount: 'amount' is a string, and the field is an integer"


def test_a_file_separated_by_semicolons_is_said_and_then_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = {"payment_id": "ref", "amount": "minor_units(amount, currency)", "currency": "currency", "customer_id": "ref"}
    config = config_with_csv(tmp_path, b"ref;amount;currency", good)
    (tmp_path / "export.csv").write_bytes(b"ref;amount;currency\nA;1,50;eur\n")  # a European export: decimal commas
    [error] = validate(config, capsys)
    assert error == (
        "migrations[0].source.file.delimiter: the header of export.csv reads as one column 'ref;amount;currency': "
        "set source.file.delimiter to ';'"
    )
    document = yaml.safe_load(config.read_text())
    document["migrations"][0]["source"]["file"]["delimiter"] = ";"
    config.write_text(yaml.safe_dump(document))
    assert validate(config, capsys) == []
    assert read(tmp_path, "export.csv", b"ref;amount;currency\nA;1,50;eur\n", delimiter=";") == [
        ("export.csv:2", {"ref": "A", "amount": "1,50", "currency": "eur"})
    ]


def test_the_journal_keeps_text_that_is_no_unicode(tmp_path: Path) -> None:
    """A before-image a target answered with a lone surrogate is put back to the character; a
    reason or a target's error holding one is stored, shown as its escape."""
    journal = Journal(tmp_path)
    try:
        before = json.dumps({"customer": "Broken \ud800 Ltd"}, ensure_ascii=False)
        journal.journal("r", "crm", [Entry("crm", '["A"]', '["A"]', before, '{"customer":"ok"}', "d", "pending")])
        journal.mark("r", "crm", ['["A"]'], "failed", ["the target said \udc80"])
        journal.refuse("r", [("e.csv:2", "", "bad value <x\ud800>", None)])
        [[entry]] = list(journal.entries("r", "crm"))
        assert entry.before is not None and json.loads(entry.before) == {"customer": "Broken \ud800 Ltd"}
        assert entry.error == "the target said \\udc80"
        assert [reason for _, _, reason, _ in journal.refused("r")] == ["bad value <x\\ud800>"]
    finally:
        journal.close()


def test_a_state_folder_that_cannot_serve_is_said_plainly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "rows.jsonl").write_text('{"ref": "A", "cents": 1}\n')
    document = {
        "kafka": {"bootstrap": "127.0.0.1:1"},
        "routes": [{"name": "all", "from": "Payment", "to": ["archive"]}],
        "outbound": [{"name": "archive", "type": "file", "path": str(tmp_path / "out")}],
        "migrations": [
            {
                "name": "m",
                "source": {"file": {"path": "rows.jsonl"}},
                "emit": {"schema": "Payment", "key": "ref", "map": {"payment_id": "ref", "amount": "cents", "currency": '"eur"'}},
            }
        ],
    }
    config = tmp_path / "bus.yaml"
    config.write_text(yaml.safe_dump(document))
    (tmp_path / "a-file").write_text("")
    capsys.readouterr()
    assert main(["migrate", "run", "m", "-c", str(config), "--without-rollback", "--state", str(tmp_path / "a-file")]) == 1
    assert f"the migration state folder {tmp_path / 'a-file'} cannot be used" in capsys.readouterr().err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "journal.sqlite").write_bytes(b"not a database, " * 100)
    assert main(["migrate", "run", "m", "-c", str(config), "--without-rollback", "--state", str(tmp_path / "broken")]) == 1
    err = capsys.readouterr().err
    assert "the migration journal in" in err and "file is not a database" in err and "Traceback" not in err


def test_the_plan_counts_keys_seen_twice_and_checksums_as_a_dict_would() -> None:
    """The plan's keys live in a temporary database, flushed every SeenKeys.FLUSH rows: keys that
    come again in the same flush and across flushes are counted alike, and the checksum is the
    one of each key's latest digest (what `run` gives for the same rows)."""
    from bus.app.migrate.plan import SeenKeys
    from bus.migrate.canonical import overall_checksum

    seen, latest, again = SeenKeys(), dict[str, str](), 0
    try:
        for i in range(SeenKeys.FLUSH * 3 + 17):
            key = f"k{i % (SeenKeys.FLUSH + 333)}" if i % 7 else f"é{i % 11}\U0001f600"  # repeats within and across flushes
            digest = f"{i:032x}"
            again += key in latest
            latest[key] = digest
            seen.add(key, digest)
        assert seen.checksum() == overall_checksum(latest)
        assert seen.duplicates == again > SeenKeys.FLUSH
    finally:
        seen.close()


@pytest.mark.parametrize("field", ["read", "delete"])
def test_a_read_or_delete_url_for_every_record_alike_is_a_config_error(field: str) -> None:
    """A read URL naming no field of the event would answer the same record for every row: the
    run would compare, and roll back, every row against one."""
    from bus.config.migrations import MigrationTarget

    with pytest.raises(ValueError, match=f"{field} names no field of the event"):
        MigrationTarget.model_validate({"read": "https://crm.example/p/${payment_id}", field: "https://crm.example/payments"})
    assert MigrationTarget.model_validate({field: "https://crm.example/p/${payment_id}"}) is not None


def test_a_stray_quote_refuses_its_line_and_not_every_row_after_it(tmp_path: Path) -> None:
    """A field starting with a quote that is never closed (`"Smith` for Smith) made the csv
    module read every following line, up to the next quote or the end of the file, as that one
    field: thousands of rows became one refused record, its line number the last one's."""
    lines = ["ref,note\n", *(f"R{i},n{i}\n" for i in range(1, 6))]
    lines[2] = 'R2,"Smith\n'  # line 3
    lines.append('R6,"Doe, J"\n')  # line 7: the next quote, which used to close line 3's field
    lines.append('R7,"two\nlines"\n')  # lines 8-9: a field that really spans lines
    rows = read(tmp_path, "q.csv", "".join(lines).encode())
    good = {where: row for where, row in rows if not isinstance(row, Exception)}
    assert good == {
        "q.csv:2": {"ref": "R1", "note": "n1"},
        "q.csv:4": {"ref": "R3", "note": "n3"},
        "q.csv:5": {"ref": "R4", "note": "n4"},
        "q.csv:6": {"ref": "R5", "note": "n5"},
        "q.csv:7": {"ref": "R6", "note": "Doe, J"},
        "q.csv:8": {"ref": "R7", "note": "two\nlines"},
    }
    (bad,) = [(where, row) for where, row in rows if isinstance(row, Exception)]
    assert bad[0] == "q.csv:3" and str(bad[1]).startswith("a quote opened on this line is not closed where the field ends")
    assert bad[1].text == 'R2,"Smith'  # the line as it is in the file


def test_quotes_never_closed_on_every_line_are_read_in_one_pass_each() -> None:
    """Each line alone once taken apart: a file of stray quotes costs a pass, not a pass per line."""

    from bus.documents import csv_records

    n = 5000
    text = CountingText("ref,note\n" + "".join(f'R{i},"open {i}\n' for i in range(n)))
    records = list(csv_records(text))
    assert [r.line for r in records] == list(range(1, n + 2))
    assert all(r.values is None and r.text == f'R{r.line - 2},"open {r.line - 2}' for r in records[1:])  # each line refused alone
    assert text.lines_read <= n + 2


def test_a_json_line_nested_too_deep_or_holding_nan_is_refused_alone(tmp_path: Path) -> None:
    """Read with json.loads, one line of 100,000 brackets raised RecursionError out of the reader:
    `bus migrate plan` and `run` stopped there, every row after it unread. NaN was taken as a number."""
    data = b'{"ref": "a"}\n' + b"[" * 100_000 + b"]" * 100_000 + b'\n{"ref": NaN}\n{"ref": "b"}\n'
    rows = read(tmp_path, "deep.jsonl", data)
    assert [where for where, _ in rows] == [f"deep.jsonl:{n}" for n in (1, 2, 3, 4)]
    assert rows[0][1] == {"ref": "a"} and rows[3][1] == {"ref": "b"}
    assert str(rows[1][1]) == "not JSON: JSON nested more than 256 levels deep"
    assert str(rows[2][1]).startswith("not JSON: NaN is not JSON")


def test_a_line_too_long_is_refused_alone_and_never_held_whole(tmp_path: Path) -> None:
    """A file with no line end (a binary, an export minified onto one line) was read whole into
    memory, by `bus migrate` and by the drop folder (which met it again at every restart)."""
    import io
    import tracemalloc

    from bus.documents import MAX_LINE_CHARS, LineTooLong, bounded_lines

    text = io.StringIO("a\r\n" + "x" * 10_000_000 + "\r\nb\n" + "y" * 3000, newline="")
    tracemalloc.start()
    lines = list(bounded_lines(text, limit=1000))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4_000_000  # chunks of a million characters, not the line's ten
    assert lines[0] == "a\r\n" and lines[2] == "b\n"
    assert isinstance(lines[1], LineTooLong) and lines[1].chars == 10_000_000 and lines[1].head == "x" * 200
    assert isinstance(lines[3], LineTooLong) and lines[3].chars == 3000  # the last line, with no line end
    assert len(lines) == 4
    assert [type(line) for line in bounded_lines(io.StringIO("z" * 1000 + "\n" + "z" * 1000, newline=""), limit=1000)] == [str, str]

    # Both file kinds of a migration: that line refused with its length, the rows around it read.
    long = "x" * (MAX_LINE_CHARS + 5)
    rows = read(tmp_path, "e.jsonl", ('{"ref": "A"}\n{"ref": "' + long + '"}\n{"ref": "B"}\n').encode())
    assert [where for where, _ in rows] == ["e.jsonl:1", "e.jsonl:2", "e.jsonl:3"]
    assert rows[0][1] == {"ref": "A"} and rows[2][1] == {"ref": "B"}
    assert isinstance(rows[1][1], UnreadableRow) and str(rows[1][1]).startswith(f"a line of {MAX_LINE_CHARS + 16:,} characters")
    csv_rows = read(tmp_path, "e.csv", ("ref,note\nA,1\nB," + long + "\nC,3\n").encode())
    assert [row for _, row in csv_rows if not isinstance(row, Exception)] == [{"ref": "A", "note": "1"}, {"ref": "C", "note": "3"}]
    assert str(csv_rows[1][1]).endswith("a row may have; the line is skipped")
    # An array minified onto one line is still named for what it is.
    with pytest.raises(BusError, match="holds a JSON array"):
        read(tmp_path, "big.json", ('[{"ref": "' + long + '"}]').encode())
