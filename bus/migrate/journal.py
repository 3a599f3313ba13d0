"""A migration's journal: what every run did, kept in one SQLite file in the state folder
(``--state``, default ``.bus-migrate/`` beside the config; in Kubernetes, a volume that outlives
the job's pod). SQLite commits survive a SIGKILL of the job, and the journal is what makes a run
resumable, verifiable and reversible:

- ``runs``: one row per run: its id, migration, status (running, interrupted, verifying,
  finished, rolling_back, rolled_back; abandoned: it stopped before writing anything and the
  config has changed since), who ran it, the config's digest, the source file's digest, counts,
  the checkpoint (rows done), the reports it wrote.
- ``entries``: per run, subscriber and record address: what the record held before the run (the
  before-image, typed JSON; NULL when it did not exist), what the run meant it to hold, and the
  entry's state: ``pending`` (about to be written: journaled before the write, so a crash
  between the two leaves the before-image known), ``written``, ``unchanged`` (it already held
  that: nothing written), ``failed`` (the target refused it), ``rolled_back``.
- ``refused``: rows that could not become events, or that a target refused, with the reason.
- ``batches``: the content checksum of each batch of source rows.
"""

from __future__ import annotations

__all__ = ["Entry", "Journal", "RunInfo", "migration_lock", "state_folder"]

import contextlib
import fcntl
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bus.errors import BusError
from bus.jsontext import escape_surrogates
from bus.migrate.canonical import checksum_in_order

_KEYS_PER_QUERY = 500  # keys per IN (...): far below SQLite's limit on bound values


def _in_parts(keys: list[str]) -> Iterator[tuple[list[str], str]]:
    """``keys`` in parts of _KEYS_PER_QUERY, each with its ``?, ?, ...`` for an IN (...)."""
    for start in range(0, len(keys), _KEYS_PER_QUERY):
        part = keys[start : start + _KEYS_PER_QUERY]
        yield part, ", ".join("?" * len(part))


def _storable(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``rows`` with every text SQLite can hold: a lone surrogate (a hostile target's ``"\\ud800"``,
    a reason quoting such a value) becomes its JSON escape, which a JSON column reads back as the
    same value and a text column shows."""
    return [tuple(escape_surrogates(v) if isinstance(v, str) else v for v in row) for row in rows]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, migration TEXT NOT NULL, status TEXT NOT NULL, started REAL NOT NULL, finished REAL,
    user TEXT, host TEXT, config_digest TEXT, source_digest TEXT, total INTEGER, position INTEGER NOT NULL DEFAULT 0,
    counts TEXT NOT NULL DEFAULT '{}', options TEXT NOT NULL DEFAULT '{}', reports TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS entries (
    run TEXT NOT NULL, subscriber TEXT NOT NULL, key TEXT NOT NULL, address TEXT NOT NULL,
    before TEXT, expected TEXT, digest TEXT, state TEXT NOT NULL, error TEXT, batch INTEGER,
    PRIMARY KEY (run, subscriber, key)
);
CREATE TABLE IF NOT EXISTS refused (
    run TEXT NOT NULL, row_where TEXT NOT NULL, subscriber TEXT NOT NULL, reason TEXT NOT NULL, row TEXT,
    PRIMARY KEY (run, row_where, subscriber)
);
CREATE TABLE IF NOT EXISTS batches (run TEXT NOT NULL, batch INTEGER NOT NULL, rows INTEGER, checksum TEXT, PRIMARY KEY (run, batch));
CREATE INDEX IF NOT EXISTS entries_by_key ON entries (subscriber, key);
-- Each source row's key and content digest, for the source checksum: kept here, read back in key
-- order at the end, and not in the job's memory (a run of millions of rows).
CREATE TABLE IF NOT EXISTS sources (run TEXT NOT NULL, key TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (run, key));
"""


def state_folder(config: Path, given: Path | None = None) -> Path:
    """``--state``, else ``$BUS_MIGRATE_STATE``, else ``.bus-migrate`` beside the config."""
    if given is not None:
        return given
    if os.environ.get("BUS_MIGRATE_STATE"):
        return Path(os.environ["BUS_MIGRATE_STATE"])
    return (config if config.is_dir() else config.parent) / ".bus-migrate"


@contextlib.contextmanager
def migration_lock(folder: Path, migration: str) -> Iterator[None]:
    """One process per migration at a time; the OS releases the lock when the process dies."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{migration}.lock").open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise BusError(f"migration {migration} is being run or rolled back by another process ({handle.read().strip()})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        yield


@dataclass
class RunInfo:
    id: str
    migration: str
    status: str
    started: float
    finished: float | None
    user: str
    host: str
    config_digest: str
    source_digest: str | None
    total: int | None
    position: int
    counts: dict[str, int] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    reports: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "migration": self.migration,
            "status": self.status,
            "started": self.started,
            "finished": self.finished,
            "user": self.user,
            "host": self.host,
            "config_digest": self.config_digest,
            "source_digest": self.source_digest,
            "total": self.total,
            "position": self.position,
            "counts": self.counts,
            "options": self.options,
            "reports": self.reports,
        }


@dataclass(frozen=True, slots=True)
class Entry:
    subscriber: str
    key: str
    address: str  # typed JSON
    before: str | None  # typed JSON; None: the record did not exist
    expected: str | None  # typed JSON; None: the run deletes it
    digest: str | None
    state: str
    error: str | None = None
    batch: int | None = None  # the batch of source rows it came from (the last, for a key seen twice)


class Journal:
    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "journal.sqlite"
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses nothing committed
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # -- runs ---------------------------------------------------------------------------------

    def new_run(self, run: RunInfo) -> None:
        self._db.execute(
            "INSERT INTO runs (id, migration, status, started, user, host, config_digest, source_digest, total, options)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run.id, run.migration, run.status, run.started, run.user, run.host, run.config_digest, run.source_digest, run.total,
             json.dumps(run.options)),
        )  # fmt: skip

    def _run(self, row: tuple[Any, ...]) -> RunInfo:
        (id_, migration, status, started, finished, user, host, config_digest, source_digest, total, position, counts, options,
         reports) = row  # fmt: skip
        return RunInfo(
            id_, migration, status, started, finished, user or "", host or "", config_digest or "", source_digest, total, position,
            json.loads(counts), json.loads(options), json.loads(reports),
        )  # fmt: skip

    _COLUMNS = (
        "id, migration, status, started, finished, user, host, config_digest, source_digest, total, position, counts, options, reports"
    )

    def run(self, run_id: str) -> RunInfo | None:
        row = self._db.execute(f"SELECT {self._COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()  # noqa: S608
        return None if row is None else self._run(row)

    def runs(self, migration: str | None = None) -> list[RunInfo]:
        if migration is None:
            rows = self._db.execute(f"SELECT {self._COLUMNS} FROM runs ORDER BY started").fetchall()  # noqa: S608
        else:
            rows = self._db.execute(f"SELECT {self._COLUMNS} FROM runs WHERE migration = ? ORDER BY started", (migration,)).fetchall()  # noqa: S608
        return [self._run(r) for r in rows]

    def set_status(self, run_id: str, status: str, *, finished: bool = False) -> None:
        self._db.execute("UPDATE runs SET status = ?, finished = ? WHERE id = ?", (status, time.time() if finished else None, run_id))

    def remember(self, run_id: str, **options: Any) -> None:
        """Add to the run's recorded options (the source checksum, the rollback's outcome)."""
        run = self.run(run_id)
        if run is not None:
            self._db.execute("UPDATE runs SET options = ? WHERE id = ?", (json.dumps({**run.options, **options}), run_id))

    def set_reports(self, run_id: str, reports: dict[str, str]) -> None:
        self._db.execute("UPDATE runs SET reports = ? WHERE id = ?", (json.dumps(reports), run_id))

    def checkpoint(
        self, run_id: str, *, position: int, counts: dict[str, int], batch: int, rows: int, checksum: str, digests: dict[str, str]
    ) -> None:
        """A batch is done: its rows' entries are settled, and its source rows' digests kept (a key
        read again, by a later batch or a resumed run, keeps its latest digest). One transaction."""
        with self._tx():
            self._db.execute("UPDATE runs SET position = ?, counts = ? WHERE id = ?", (position, json.dumps(counts), run_id))
            self._db.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?)", (run_id, batch, rows, checksum))
            self._db.executemany("INSERT OR REPLACE INTO sources VALUES (?, ?, ?)", [(run_id, k, d) for k, d in digests.items()])

    def source_checksum(self, run_id: str) -> str:
        """The checksum of every source row the run read (``overall_checksum`` of key -> digest),
        read in key order from the journal."""
        return checksum_in_order(self._db.execute("SELECT key, digest FROM sources WHERE run = ? ORDER BY key", (run_id,)))

    def batch_checksums(self, run_id: str) -> list[tuple[int, int, str]]:
        return self._db.execute("SELECT batch, rows, checksum FROM batches WHERE run = ? ORDER BY batch", (run_id,)).fetchall()

    # -- entries ------------------------------------------------------------------------------

    def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """One transaction; rows holding text that is not Unicode (rare) are made storable and
        written again (the first attempt was rolled back as a whole)."""
        try:
            with self._tx():
                self._db.executemany(sql, rows)
        except UnicodeEncodeError:
            with self._tx():
                self._db.executemany(sql, _storable(rows))

    def _tx(self) -> Any:
        db = self._db

        class _Tx:
            def __enter__(self) -> None:
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, kind: Any, *_: Any) -> None:
                db.execute("COMMIT" if kind is None else "ROLLBACK")

        return _Tx()

    def journal(self, run_id: str, subscriber: str, entries: list[Entry]) -> None:
        """Record entries before their writes. An entry already there (a resumed run, a key seen
        twice) keeps its first before-image and takes the new expected value."""
        self._executemany(
            "INSERT INTO entries (run, subscriber, key, address, before, expected, digest, state, batch)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (run, subscriber, key) DO UPDATE SET expected = excluded.expected, digest = excluded.digest,"
            " batch = excluded.batch,"
            # Found already holding what it should after an earlier attempt wrote it: written by us.
            " state = CASE WHEN excluded.state = 'unchanged' AND entries.state IN ('pending', 'written') THEN 'written'"
            " ELSE excluded.state END",
            [(run_id, subscriber, e.key, e.address, e.before, e.expected, e.digest, e.state, e.batch) for e in entries],
        )

    def mark(self, run_id: str, subscriber: str, keys: list[str], state: str, errors: list[str | None] | None = None) -> None:
        self._executemany(
            "UPDATE entries SET state = ?, error = ? WHERE run = ? AND subscriber = ? AND key = ?",
            [(state, (errors[i] if errors else None), run_id, subscriber, key) for i, key in enumerate(keys)],
        )

    def has_entries(self, run_id: str) -> bool:
        """Whether the run journaled anything yet (a run being resumed)."""
        return self._db.execute("SELECT 1 FROM entries WHERE run = ? LIMIT 1", (run_id,)).fetchone() is not None

    def states(self, run_id: str, subscriber: str, keys: list[str]) -> dict[str, tuple[str, str | None]]:
        """key -> (state, digest) of those of ``keys`` the run journaled for ``subscriber``: what a
        resumed run finds done, asked batch by batch (a whole run's would fill the job's memory)."""
        found: dict[str, tuple[str, str | None]] = {}
        for chunk, marks in _in_parts(keys):
            rows = self._db.execute(
                f"SELECT key, state, digest FROM entries WHERE run = ? AND subscriber = ? AND key IN ({marks})",  # noqa: S608
                [run_id, subscriber, *chunk],
            )
            found.update((k, (st, d)) for k, st, d in rows)
        return found

    def delivered_digests(self, migration: str, subscriber: str, keys: list[str], *, before_run: str) -> dict[str, str]:
        """key -> digest of those of ``keys`` that earlier finished runs of ``migration`` delivered
        to ``subscriber`` (the latest run's), and not rolled back: what a target that cannot be
        read already has from us."""
        found: dict[str, str] = {}
        for chunk, marks in _in_parts(keys):
            sql = (
                "SELECT e.key, e.digest FROM entries e JOIN runs r ON r.id = e.run WHERE r.migration = ? AND r.id != ?"  # noqa: S608
                " AND r.status = 'finished' AND e.subscriber = ? AND e.state IN ('written', 'unchanged')"
                f" AND e.key IN ({marks}) ORDER BY r.started"  # placeholders only
            )
            rows = self._db.execute(sql, [migration, before_run, subscriber, *chunk])
            found.update(rows.fetchall())
        return found

    def entries(self, run_id: str, subscriber: str, states: tuple[str, ...] = ()) -> Iterator[list[Entry]]:
        """A subscriber's entries of the run in chunks of 500, in key order. Each chunk starts after
        the last one's key, on the primary key's index (run, subscriber, key): linear in the run's
        size, nothing sorted (an earlier version sorted the whole run again for every chunk)."""
        last, after = "", ">="  # the first chunk from the smallest text there is, the empty one
        while True:
            sql = (
                "SELECT subscriber, key, address, before, expected, digest, state, error, batch"  # noqa: S608 - an operator of ours
                f" FROM entries WHERE run = ? AND subscriber = ? AND key {after} ?"
            )
            args: list[Any] = [run_id, subscriber, last]
            if states:
                sql += f" AND state IN ({', '.join('?' * len(states))})"
                args += states
            rows = self._db.execute(sql + " ORDER BY key LIMIT 500", args).fetchall()
            if not rows:
                return
            last, after = rows[-1][1], ">"
            yield [Entry(*r) for r in rows]

    def count_entries(self, run_id: str) -> dict[str, dict[str, int]]:
        """subscriber -> state -> how many."""
        out: dict[str, dict[str, int]] = {}
        for subscriber, state, n in self._db.execute(
            "SELECT subscriber, state, count(*) FROM entries WHERE run = ? GROUP BY subscriber, state", (run_id,)
        ):
            out.setdefault(subscriber, {})[state] = n
        return out

    # -- refused rows -------------------------------------------------------------------------

    def refuse(self, run_id: str, items: list[tuple[str, str, str, str | None]]) -> None:
        """(where, subscriber or "", reason, row JSON)."""
        if items:
            self._executemany("INSERT OR REPLACE INTO refused VALUES (?, ?, ?, ?, ?)", [(run_id, *item) for item in items])

    def refused(self, run_id: str) -> Iterator[tuple[str, str, str, str | None]]:
        """Every refused row of the run, in the order refused, read as it is used (a broad refusal
        can be every row of a large source)."""
        yield from self._db.execute("SELECT row_where, subscriber, reason, row FROM refused WHERE run = ? ORDER BY rowid", (run_id,))
