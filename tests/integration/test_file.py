"""The file drop folder over the real broker: CSV and JSON Lines in, bad rows kept with their line
numbers, files moved with a manifest only after every row is on Kafka, unreadable files failed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from bus.kafka.reader import read_topic
from tests.conftest import IN_CI
from tests.support.hub import build_hub, unique_prefix, write_config
from tests.support.lines import CountingText
from tests.support.target import Target
from tests.support.wait import health_saying, healthy, until


def config(bootstrap: str, folder: Path, target: Target) -> dict[str, Any]:
    return {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": unique_prefix(), "partitions": 3, "session_timeout_ms": 3000},
        "http": {"host": "127.0.0.1", "port": 0},
        "ops": {"host": "127.0.0.1", "port": 0},
        "inbound": [
            {
                "name": "exports",
                "type": "file",
                "path": str(folder),
                "encoding": "latin-1",
                "poll_interval": "200ms",
                "settle": "0s",
                "emit": {
                    "schema": "Payment",
                    "key": "account",
                    "map": {"payment_id": "ref", "amount": "int(cents)", "currency": "lower(cur)", "customer_id": "account"},
                },
            },
            {  # Excel's "CSV UTF-8": a byte order mark before the header
                "name": "exports-utf8",
                "type": "file",
                "path": str(folder.with_name("inbox-utf8")),
                "poll_interval": "200ms",
                "settle": "0s",
                "emit": {"schema": "Payment", "key": "ref", "map": {"payment_id": "ref", "amount": "int(cents)", "currency": "cur"}},
            },
        ],
        "routes": [{"name": "all", "from": "Payment", "to": ["erp"]}],
        "outbound": [{"name": "erp", "type": "http", "url": f"{target.url}/erp"}],
    }


async def wait_for_file(path: Path, timeout: float = 30) -> dict[str, Any]:
    for _ in range(int(timeout / 0.1)):
        manifest = path.with_name(path.name + ".manifest.json")
        if manifest.exists() and path.exists():
            return dict(json.loads(manifest.read_text()))
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} did not appear")


async def test_drop_folder_rows_to_events_with_manifests(tmp_path: Path, bootstrap: str) -> None:
    folder = tmp_path / "inbox"
    folder.mkdir()
    folder.with_name("inbox-utf8").mkdir()
    target = await Target().start()
    notes = "n" * 200_000  # a field over the csv module's default limit (128 KiB)
    csv_bytes = (
        "ref,cents,cur,account\nr1,100,EUR,Müller\nr2,oops,EUR,a2\nr3,300,EUR,a3,extra\nr4,400,USD,a4\n"
        f"r5,500\nr6,600,EUR,{notes}\n"  # r5 is cut short: refused, not read as nulls
    ).encode("latin-1")
    jsonl = (
        b'{"ref": "j1", "cents": "5", "cur": "USD", "account": "b1"}\n'
        b"{broken\n\n"
        b'{"ref": "j2", "cents": "6", "cur": "USD", "account": "b2"}\n'
    )
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config(bootstrap, folder, target))) as hub:
            (folder / "ledger.csv").write_bytes(csv_bytes)
            (folder / "events.jsonl").write_bytes(jsonl)
            (folder / "garbled.csv").write_bytes(b"")  # no header: the file as a whole is unreadable
            # Excel's export where "," is the decimal mark: read with ",", one column, every field but the first null.
            (folder / "semicolons.csv").write_bytes(b"ref;cents;cur;account\nr7;700;EUR;a7\n")
            (folder / "twice.csv").write_bytes(b"ref,cents,cur,ref\nr8,800,EUR,r9\n")  # one "ref" would hide the other
            (folder.with_name("inbox-utf8") / "bom.csv").write_bytes(b"\xef\xbb\xbfref,cents,cur\nu1,7,EUR\n")

            csv_manifest = await wait_for_file(folder / "done" / "ledger.csv")
            jsonl_manifest = await wait_for_file(folder / "done" / "events.jsonl")
            failed = await wait_for_file(folder / "failed" / "garbled.csv")
            assert {k: csv_manifest[k] for k in ("rows", "accepted", "rejected")} == {"rows": 6, "accepted": 3, "rejected": 3}
            bom_manifest = await wait_for_file(folder.with_name("inbox-utf8") / "done" / "bom.csv")
            assert {k: bom_manifest[k] for k in ("rows", "accepted", "rejected")} == {"rows": 1, "accepted": 1, "rejected": 0}
            assert csv_manifest["sha256"] == hashlib.sha256(csv_bytes).hexdigest()
            assert {k: jsonl_manifest[k] for k in ("rows", "accepted", "rejected")} == {"rows": 3, "accepted": 2, "rejected": 1}
            assert "no CSV header" in failed["error"]
            semicolons = await wait_for_file(folder / "failed" / "semicolons.csv")
            assert "its names look separated by ';', not ','; set delimiter: \";\"" in semicolons["error"], semicolons
            twice = await wait_for_file(folder / "failed" / "twice.csv")
            assert "names column 'ref' twice (columns 1 and 4)" in twice["error"], twice
            assert not (folder / "ledger.csv").exists()

            await target.wait_for(lambda: len(target.accepted) == 6)
            bodies = {c.body["payment_id"]: c.body for c in target.accepted}
            assert set(bodies) == {"r1", "r4", "r6", "j1", "j2", "u1"}
            assert bodies["r6"]["customer_id"] == notes and bodies["u1"]["amount"] == 7
            assert bodies["r1"]["customer_id"] == "Müller" and bodies["r1"]["amount"] == 100 and bodies["r4"]["currency"] == "usd"
            # Ids are stable per file and line, so a second reading of a file would change nothing downstream.
            ids = {c.body["payment_id"]: c.headers["Idempotency-Key"] for c in target.accepted}
            assert ids["r1"] == f"{csv_manifest['sha256'][:16]}:2"

            parked = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("exports"))
            where = sorted((dict(r.headers)["file_line"].decode(), dict(r.headers)["bus_origin"].decode().split(":")[1]) for r in parked)
            assert where == [("2", "events.jsonl"), ("3", "ledger.csv"), ("4", "ledger.csv"), ("6", "ledger.csv")]
            reasons = " | ".join(dict(r.headers)["bus_error"].decode() for r in parked)
            assert "invalid JSON" in reasons and "beyond the header" in reasons and "mapping failed" in reasons
            assert "2 field(s) fewer than the header names" in reasons
    finally:
        await target.stop()


async def test_a_file_dropped_twice_is_imported_once_unless_asked(tmp_path: Path, bootstrap: str) -> None:
    folder = tmp_path / "inbox"
    folder.mkdir()
    folder.with_name("inbox-utf8").mkdir()
    target = await Target().start()
    content = b"ref,cents,cur,account\nr1,100,EUR,a1\nr2,200,EUR,a2\n"
    raw = config(bootstrap, folder, target)
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", raw)):
            (folder / "monday.csv").write_bytes(content)
            first = await wait_for_file(folder / "done" / "monday.csv")
            (folder / "monday-again.csv").write_bytes(content)  # the same export, dropped a second time
            skipped = await wait_for_file(folder / "skipped" / "monday-again.csv")
            assert skipped["duplicate_of"]["file"] == "monday.csv" and skipped["sha256"] == first["sha256"]
            await target.wait_for(lambda: len(target.accepted) == 2)
            await asyncio.sleep(1.0)
            assert len(target.accepted) == 2  # imported once
        # After a restart done/ still says what was imported; `duplicates: import` reads it again.
        raw["inbound"][0]["duplicates"] = "import"
        async with build_hub(write_config(tmp_path / "bus.yaml", raw)):
            (folder / "monday-third.csv").write_bytes(content)
            again = await wait_for_file(folder / "done" / "monday-third.csv")
            assert again["accepted"] == 2
            await target.wait_for(lambda: len(target.calls) >= 4)
    finally:
        await target.stop()


async def test_a_line_in_another_encoding_is_refused_alone_with_its_bytes_and_the_file_streams(tmp_path: Path, bootstrap: str) -> None:
    """A UTF-8 export with one line in latin-1 (a legacy system's record pasted in) used to fail the
    whole file; now that row alone is refused, its exact bytes kept on the inbound dead letters,
    and the rest imported. The file is read as it streams, a batch at a time (memory: bench/file_memory.py)."""
    from adapters.file.rows import BATCH

    folder = tmp_path / "inbox"
    folder.mkdir()
    folder.with_name("inbox-utf8").mkdir()
    target = await Target().start()
    rows = 2 * BATCH + 7  # more than one batch
    lines = [b"ref,cents,cur\n"] + [f"r{i},{i},EUR\n".encode() for i in range(rows)]
    lines[6] = b"r5,5,EUR \xfc\n"  # \xfc: latin-1's u-umlaut, not UTF-8 (file line 7)
    data = b"".join(lines)
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config(bootstrap, folder, target))) as hub:
            (folder.with_name("inbox-utf8") / "mixed.csv").write_bytes(data)
            manifest = await wait_for_file(folder.with_name("inbox-utf8") / "done" / "mixed.csv", timeout=60)
            assert {k: manifest[k] for k in ("rows", "accepted", "rejected")} == {"rows": rows, "accepted": rows - 1, "rejected": 1}
            parked = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.inbound_dead_letter("exports-utf8"))
            assert len(parked) == 1
            headers = {k: v.decode() for k, v in parked[0].headers}
            assert headers["file_line"] == "7" and "not utf-8 text" in headers["bus_error"] and "set encoding" in headers["bus_error"]
            assert parked[0].value == lines[6].rstrip(b"\n")  # the bytes as they were in the file
            await target.wait_for(lambda: len(target.accepted) == rows - 1, timeout=60)
    finally:
        await target.stop()


async def test_a_utf16_file_with_a_broken_character_is_refused_whole_before_any_row(tmp_path: Path, bootstrap: str) -> None:
    """Excel's "Unicode Text" is UTF-16. A file cut at an odd byte, or holding a lone surrogate,
    cannot be refused a line at a time as a UTF-8 file can: the reader stopped at the broken
    character with a UnicodeDecodeError after the rows before it were on Kafka, and the file went
    to failed/ half imported. It is now checked whole first: failed/, no row published."""
    folder = tmp_path / "inbox"
    for name in ("inbox", "inbox-utf8", "inbox-utf16"):
        (tmp_path / name).mkdir()
    target = await Target().start()
    settings = config(bootstrap, folder, target)
    settings["inbound"].append(
        {**settings["inbound"][1], "name": "exports-utf16", "path": str(tmp_path / "inbox-utf16"), "encoding": "utf-16"}
    )
    good = "ref,cents,cur\n" + "".join(f"u{i},{i},EUR\n" for i in range(3))
    broken = ("ref,cents,cur\n" + "".join(f"b{i},{i},EUR\n" for i in range(50))).encode("utf-16")[:-1]  # cut at an odd byte
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", settings)):
            (tmp_path / "inbox-utf16" / "broken.csv").write_bytes(broken)
            failed = await wait_for_file(tmp_path / "inbox-utf16" / "failed" / "broken.csv")
            assert "not utf-16 text: the file ends inside a character" in failed["error"] and "no row was read" in failed["error"], failed
            (tmp_path / "inbox-utf16" / "good.csv").write_bytes(good.encode("utf-16"))
            manifest = await wait_for_file(tmp_path / "inbox-utf16" / "done" / "good.csv")
            assert {k: manifest[k] for k in ("rows", "accepted", "rejected")} == {"rows": 3, "accepted": 3, "rejected": 0}, manifest
            await target.wait_for(lambda: len(target.accepted) >= 3)
            await asyncio.sleep(1)  # anything from the broken file would have arrived by now
            assert sorted(call.body["payment_id"] for call in target.accepted) == ["u0", "u1", "u2"]
    finally:
        await target.stop()


def test_rows_are_read_as_the_file_streams() -> None:
    """Taking the first batch reads about a batch of the file, not all of it."""
    import itertools

    from adapters.file.rows import BATCH as _BATCH
    from adapters.file.rows import next_rows as _next_rows
    from adapters.file.rows import rows as _rows

    text = CountingText("ref,cents\n" + "".join(f"r{i},{i}\n" for i in range(10 * _BATCH)))
    rows = _rows(text, "csv", ",", "utf-8")
    first = _next_rows(rows)
    assert len(first) == _BATCH and first[0][1] == {"ref": "r0", "cents": "0"}
    assert text.lines_read <= _BATCH + 2  # the header, a batch (and no more)
    assert sum(1 for _ in itertools.chain(first, rows)) == 10 * _BATCH


def test_a_stray_quote_refuses_its_line_with_its_bytes_and_the_rows_after_it_are_read() -> None:
    """An export with `"Smith` in a name: the csv module read every line after it, up to the next
    quote, as one field. The drop folder imported none of those rows and parked them as one."""
    import io

    from adapters.file.rows import rows as _rows

    text = 'ref,cents\nr1,1\nr2,"Smith\nr3,3\nr4,4\nr5,"5"\nr6,6\n'
    rows = list(_rows(io.StringIO(text, newline=""), "csv", ",", "utf-8"))
    assert [(n, doc) for n, doc, _ in rows if not isinstance(doc, Exception)] == [
        (2, {"ref": "r1", "cents": "1"}),
        (4, {"ref": "r3", "cents": "3"}),
        (5, {"ref": "r4", "cents": "4"}),
        (6, {"ref": "r5", "cents": "5"}),
        (7, {"ref": "r6", "cents": "6"}),
    ]
    ((number, why, raw),) = [row for row in rows if isinstance(row[1], Exception)]
    assert number == 3 and raw == b'r2,"Smith' and "a quote opened on this line is not closed" in str(why)


async def test_a_link_or_a_fifo_in_the_drop_folder_is_refused_unread(tmp_path: Path, bootstrap: str) -> None:
    """A drop folder is often writable by others (an SFTP share). A symbolic link there was
    followed: whatever file it pointed at that the hub could read (its own credentials) was
    published, row by row, to every subscriber. A FIFO or a device was passed over in silence,
    and would be read for ever once anything opened it. Each is now moved to failed/, unread, with
    the reason; the files beside them are imported."""
    import os

    folder = tmp_path / "inbox"
    folder.mkdir()
    folder.with_name("inbox-utf8").mkdir()
    outside = tmp_path / "secrets.csv"
    outside.write_text("ref,cents,cur\nsecret,1,EUR\n")
    target = await Target().start()
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config(bootstrap, folder, target))) as hub:
            (folder / "link.csv").symlink_to(outside)
            os.mkfifo(folder / "pipe.csv")
            (folder / "real.csv").write_text("ref,cents,cur\nr1,100,EUR\n")
            await wait_for_file(folder / "done" / "real.csv")
            for name, says in (("link.csv", "is a symbolic link"), ("pipe.csv", "is not a regular file (a FIFO)")):
                manifest = folder / "failed" / f"{name}.manifest.json"
                for _ in range(100):
                    if manifest.exists():
                        break
                    await asyncio.sleep(0.1)
                assert says in json.loads(manifest.read_text())["error"], name
                assert os.path.lexists(folder / "failed" / name) and not os.path.lexists(folder / name)
            published = await read_topic(hub.config.kafka, hub.bootstrap, hub.topics.canonical("Payment"))
            assert len(published) == 1 and b"r1" in (published[0].value or b"")  # real.csv's row; nothing read through the link
            assert outside.read_text() == "ref,cents,cur\nsecret,1,EUR\n"  # the file it points at untouched
    finally:
        await target.stop()


async def test_a_manifest_planted_in_done_cannot_fail_the_files_that_come(tmp_path: Path, bootstrap: str) -> None:
    """done/ of a shared drop folder holds manifests anyone may have written. One nested too deep
    raised RecursionError out of the reader of manifests, and the file being taken went to failed/;
    one that never ends (a link to /dev/zero) was read until memory ran out."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    folder.with_name("inbox-utf8").mkdir()
    (folder / "done").mkdir()
    (folder / "done" / "evil.csv.manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    (folder / "done" / "endless.csv.manifest.json").symlink_to("/dev/zero")
    target = await Target().start()
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config(bootstrap, folder, target))):
            (folder / "real.csv").write_text("ref,cents,cur,account\nr1,100,EUR,a1\n")
            manifest = await wait_for_file(folder / "done" / "real.csv")
            assert manifest["accepted"] == 1 and not (folder / "failed" / "real.csv").exists()
    finally:
        await target.stop()


def test_a_line_too_long_is_one_failed_row_and_the_rows_after_it_are_read() -> None:
    """A drop folder's file with a line past the limit (no line end in sight) read it whole: one
    such file could exhaust the hub's memory, and again at every restart."""
    import io

    from adapters.file.rows import rows as _rows
    from bus.documents import MAX_LINE_CHARS

    text = io.StringIO('{"ref": "a"}\n' + "x" * (MAX_LINE_CHARS + 1) + '\n{"ref": "b"}\n', newline="")
    rows = list(_rows(text, "jsonl", ",", "utf-8"))
    assert [(number, row) for number, row, _ in rows if not isinstance(row, Exception)] == [(1, {"ref": "a"}), (3, {"ref": "b"})]
    number, error, raw = rows[1]
    assert number == 2 and "a line of 67,108,865 characters, more than" in str(error) and raw == b"x" * 200 + b"..."


def immutable(folder: Path, on: bool) -> bool:
    """``chattr +i`` (or ``-i``): nothing can be made, renamed or removed in ``folder``, not even by
    root, as on a read-only mount. False where the file system or the user cannot."""
    return subprocess.run(["chattr", "+i" if on else "-i", str(folder)], capture_output=True, check=False).returncode == 0


async def test_no_file_is_read_while_files_cannot_be_moved_out_and_done_may_be_on_another_disk(tmp_path: Path, bootstrap: str) -> None:
    """Moving a file out is what records it as imported. done/ linked to another file system (an
    archive volume) could not be renamed into, and a folder that cannot be written (a read-only
    mount) could not be moved out of: either way every file was imported again at every pass, the
    adapter healthy. done/ elsewhere is now written by a copy; while a folder cannot be written,
    nothing is read and the health says why."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    folder.with_name("inbox-utf8").mkdir()
    archive = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="bus-archive-"))  # tmpfs: not the file system of tmp_path
    assert os.stat(archive).st_dev != os.stat(folder).st_dev
    (folder / "done").symlink_to(archive)
    (folder / "failed").mkdir()
    if not immutable(folder / "failed", True):
        message = f"chattr +i is refused on {folder} (file system or capability): cannot make a folder read-only for root"
        if IN_CI:
            pytest.fail(f"{message}; CI must run every test", pytrace=False)
        pytest.skip(message)
    immutable(folder / "failed", False)
    target = await Target().start()
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", config(bootstrap, folder, target))) as hub:
            exports = hub.inbound[0]
            (folder / "monday.csv").write_bytes(b"ref,cents,cur,account\nr1,100,EUR,a1\nr2,200,EUR,a2\n")
            manifest = await wait_for_file(archive / "monday.csv")
            assert manifest["accepted"] == 2 and not (folder / "monday.csv").exists()
            await target.wait_for(lambda: len(target.accepted) == 2)

            assert immutable(folder / "failed", True)
            try:
                health = await health_saying(exports, "cannot write in", timeout=10)
                assert not health.ok and f"{folder / 'failed'}" in health.detail, health
                (folder / "tuesday.csv").write_bytes(b"ref,cents,cur,account\nr3,300,EUR,a3\n")
                await asyncio.sleep(1.5)  # several passes
                assert len(target.calls) == 2 and (folder / "tuesday.csv").exists()  # not read: it could not be moved out
            finally:
                immutable(folder / "failed", False)
            await wait_for_file(archive / "tuesday.csv")
            await target.wait_for(lambda: len(target.accepted) == 3)
            assert (await healthy(exports)).ok
            await asyncio.sleep(1.0)
            assert len(target.calls) == 3  # each row once
    finally:
        await target.stop()
        shutil.rmtree(archive, ignore_errors=True)


async def test_a_file_imported_that_cannot_be_moved_to_done_is_not_read_again_and_is_moved_when_it_can(
    tmp_path: Path, bootstrap: str
) -> None:
    """The folders can be written, but one file cannot be moved (the file itself immutable; owned by
    another user in a sticky folder). Imported, it stayed, and with `duplicates: import` it was
    imported again at every pass (564 deliveries of its 2 rows in a minute). Now it is not read again while the hub runs, the console's
    attention names it, and it is moved to done/ once it can be."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    folder.with_name("inbox-utf8").mkdir()
    export = folder / "wednesday.csv"
    export.write_bytes(b"ref,cents,cur,account\nr1,100,EUR,a1\nr2,200,EUR,a2\n")
    if not immutable(export, True):
        message = f"chattr +i is refused on {export} (file system or capability)"
        if IN_CI:
            pytest.fail(f"{message}; CI must run every test", pytrace=False)
        pytest.skip(message)
    target = await Target().start()
    raw = config(bootstrap, folder, target)
    raw["inbound"][0]["duplicates"] = "import"
    try:
        async with build_hub(write_config(tmp_path / "bus.yaml", raw)) as hub:
            exports = hub.inbound[0]
            try:
                await until(lambda: "wednesday.csv" in exports.attention(), "the stuck file said", timeout=20)
                assert "1 file(s) imported and not moved to done/: wednesday.csv" in exports.attention()
                await target.wait_for(lambda: len(target.accepted) == 2)
                await asyncio.sleep(1.5)  # several passes
                assert len(target.calls) == 2 and export.exists()  # imported once, though it stays
                assert (await healthy(exports)).ok  # other files are read on
            finally:
                immutable(export, False)
            manifest = await wait_for_file(folder / "done" / "wednesday.csv")
            assert manifest["accepted"] == 2 and "move_error" not in manifest
            await until(lambda: not exports.attention(), "the attention cleared", timeout=10)
            assert len(target.calls) == 2
    finally:
        immutable(export, False)
        await target.stop()
