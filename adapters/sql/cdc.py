"""``postgres_cdc``: every committed insert, update and delete of some PostgreSQL tables, as events.

The adapter reads a logical replication slot with the built-in ``pgoutput`` plugin through the SQL
interface (``pg_logical_slot_peek_binary_changes``: an ordinary connection, no replication
protocol), decodes the messages (adapters/sql/pgoutput.py), hands each change to Kafka in commit
order, and only once Kafka acknowledged them advances the slot past those transactions
(``pg_replication_slot_advance``). The slot is the position: a restart, or a crash before the
advance, reads the same transactions again with the same event ids; nothing committed is lost.

A slot keeps WAL on the server until it advances: a hub that stays down makes the server's disk
fill. Watch ``pg_replication_slots`` (the docs say how), and drop the slot of an adapter removed
for good.
"""

from __future__ import annotations

__all__ = ["PostgresCdcInbound"]

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable
from typing import Any, ClassVar, Literal, NamedTuple
from urllib.parse import urlsplit

from adapters.sql.config import PostgresCdcConfig
from adapters.sql.pgoutput import Change, Decoder, Relation, column_value, lsn_text
from adapters.sql.pool import describe, postgres_connection
from bus.adapter_api import Context, Health, Inbound, Intake, KafkaUnavailable, RetryableError, finish_read

_PEEK = "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2, 'proto_version', '1', 'publication_names', $3)"
_PREFETCH = 1000  # rows the cursor fetches at a time
_CHUNK = 1000  # a large transaction's changes handed to Kafka, and acknowledged, at a time
# The newest WAL a peek could decode: flushed WAL on a primary, replayed WAL on a standby
# (logical decoding on a standby, PostgreSQL 16 and later).
_DECODABLE = "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_flush_lsn() END)::text"
_FORMER_EVERY_S = 10.0  # how often a former name's slot still in use at a rename is tried again (_drop_former)
_PEEK_IDLE_AT_LEAST_EVERY_S = 60.0  # a slot dropped while the server is idle is still found within a minute
_TYPE_NAMES = "SELECT format_type(t, NULL) AS name FROM unnest($1::oid[]) WITH ORDINALITY AS x(t, n) ORDER BY n"


class _Slot(NamedTuple):
    at: str  # the slot's position
    publication: str  # the publication it is read with
    former: str = ""  # a former name's slot taken over while another process still read it: to drop once no one does


_PLAIN = re.compile(r"[a-z_][a-z0-9_]*")  # a slot's or publication's name read back from Kafka, written into statements


def _names(config: PostgresCdcConfig) -> tuple[str, str]:
    """The slot's and the publication's names: configured, or ``bus_<adapter name>``."""
    default = "bus_" + re.sub(r"[^a-z0-9_]", "_", config.name)
    return config.slot or default, config.publication or default


async def _ensure_slot(
    connection: Any, config: PostgresCdcConfig, where: str, logger: logging.Logger, *, read_before: dict[str, Any] | None = None
) -> _Slot:
    """The publication and the slot, created when missing (``create: true``); the slot's position
    and the publication read with it. Each statement on its own: a slot cannot be created in a
    transaction that has written.

    ``read_before``: where this adapter last left the slot (kept in Kafka). A slot that is missing
    although it was read is lost, not new: the changes since that position cannot be read, and
    making a new slot silently would pass over them (``lost_slot``). A position saved under a
    former name (a rename) names that name's slot, which is taken over (``_take_over``)."""
    slot_name, publication = _names(config)
    publication = _publication_kept(config, read_before, slot_name) or publication
    wal_level = await connection.fetchval("SHOW wal_level")
    if wal_level != "logical":
        raise RetryableError(
            f"{where}: the server has wal_level={wal_level}; logical decoding needs wal_level=logical "
            "(ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL)"
        )
    query = "SELECT plugin, confirmed_flush_lsn::text AS at FROM pg_replication_slots WHERE slot_name = $1"
    slot = await connection.fetchrow(query, slot_name)
    former = (read_before or {}).get("slot")
    renamed = slot is None and config.slot is None and isinstance(former, str) and former != slot_name
    in_use = ""
    if renamed and (taken := await _take_over(connection, config, str(former), slot_name, logger)):
        in_use = str(former) if taken == "in use" else ""
        slot = await connection.fetchrow(query, slot_name)
        # The copied slot's changes are decoded with the catalog of their day, when only the
        # former name's publication existed: one made now is "not found" for each of them.
        publication = _publication_kept(config, read_before, str(former)) or publication
    await _ensure_publication(connection, config, publication, where, logger)
    if slot is None:
        last = (read_before or {}).get("lsn") if (read_before or {}).get("slot") == slot_name else None
        lost = last is not None
        if lost and config.lost_slot == "refuse":
            raise RetryableError(
                f"{where}: replication slot {slot_name} is gone (dropped to free WAL, or a failover to a server without it); "
                f"this adapter had read up to {last}, and the changes committed since cannot be read. Nothing is "
                "read until you choose: `lost_slot: recreate` goes on from now (fill the gap with bus migrate)"
            )
        if not config.create:
            raise RetryableError(f"{where}: replication slot {slot_name} does not exist (create: false)")
        if lost:
            logger.warning(
                "postgres_cdc %s: replication slot %s was gone; made again (lost_slot: recreate): the changes committed "
                "after %s and before now were not read",
                config.name, slot_name, last,
            )  # fmt: skip
        created = await connection.fetchrow("SELECT lsn::text AS at FROM pg_create_logical_replication_slot($1, 'pgoutput')", slot_name)
        logger.info("postgres_cdc %s created slot %s at %s", config.name, slot_name, created["at"])
        return _Slot(str(created["at"]), publication)
    if slot["plugin"] != "pgoutput":
        raise RetryableError(f"{where}: slot {slot_name} uses the {slot['plugin']} plugin, not pgoutput")
    return _Slot(str(slot["at"]), publication, in_use)


def _publication_kept(config: PostgresCdcConfig, read_before: dict[str, Any] | None, slot_name: str) -> str | None:
    """The publication read with ``slot_name`` as the saved position says (a renamed adapter goes
    on with its former name's; ``bus_<former name>`` when a position saved before said none), when
    the config names none. Checked as a plain name: it is written into statements."""
    if config.publication is not None or not read_before or read_before.get("slot") != slot_name:
        return None
    kept = read_before.get("publication", slot_name)
    return kept if isinstance(kept, str) and _PLAIN.fullmatch(kept) and kept != _names(config)[1] else None


async def _ensure_publication(connection: Any, config: PostgresCdcConfig, publication: str, where: str, logger: logging.Logger) -> None:
    has_publication = await connection.fetchval("SELECT count(*) FROM pg_publication WHERE pubname = $1", publication)
    if not has_publication:
        if not config.create:
            raise RetryableError(f"{where}: publication {publication} does not exist (create: false)")
        if not config.tables:
            raise RetryableError(f"{where}: publication {publication} does not exist and no `tables` are given")
        # Identifiers are checked plain names (config.py).
        await connection.execute(f"CREATE PUBLICATION {publication} FOR TABLE {', '.join(config.tables)}")
        logger.info("postgres_cdc %s created publication %s", config.name, publication)
    elif config.tables:
        await _follow_tables(connection, config, publication, logger)


async def _take_over(
    connection: Any, config: PostgresCdcConfig, former: str, slot_name: str, logger: logging.Logger
) -> Literal["dropped", "in use", ""]:
    """A renamed adapter (its slot named after it by default) is given its former name's place
    (bus.runtime.checkpoints: the position the former name saved in the same database): the
    former slot is copied under the new name, at the same position, and dropped. A new slot made
    from now passed over every change committed since the former one's position, and the former
    slot, read by no one, kept the server's WAL until its disk filled."""
    import asyncpg

    if not await connection.fetchval("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND plugin = 'pgoutput'", former):
        return ""  # gone too: the new slot is made as for a new adapter
    copied = await connection.fetchval("SELECT lsn::text FROM pg_copy_logical_replication_slot($1, $2)", former, slot_name)
    try:
        await connection.execute("SELECT pg_drop_replication_slot($1)", former)
    except asyncpg.ObjectInUseError:  # a hub process still running under the former name (a rolling update)
        logger.warning(
            "postgres_cdc %s: renamed: replication slot %s (of its former name) copied to %s at %s; it is still read by "
            "another process (a hub still running under the former name, whose changes come twice meanwhile, under both "
            "names' event ids), and is dropped once no process reads it",
            config.name, former, slot_name, copied,
        )  # fmt: skip
        return "in use"
    logger.warning(
        "postgres_cdc %s: renamed: replication slot %s (of its former name) copied to %s at %s and dropped; reading goes on "
        "from there", config.name, former, slot_name, copied,
    )  # fmt: skip
    return "dropped"


async def _follow_tables(connection: Any, config: PostgresCdcConfig, publication: str, logger: logging.Logger) -> None:
    """An existing publication publishes the config's `tables`. It was made once, with the tables
    of its day: a table added to the config later was never published (its changes never came)
    and one taken out went on coming. With ``create: true`` the publication is the adapter's
    and is set to the config's tables; otherwise the difference is said."""
    published = await connection.fetch(
        "SELECT format('%I.%I', schemaname, tablename) AS name, format('%I.%I', schemaname, tablename)::regclass::oid AS id"
        " FROM pg_publication_tables WHERE pubname = $1",
        publication,
    )
    has = {int(row["id"]): str(row["name"]) for row in published}
    wanted = {}
    for table in config.tables:
        oid = await connection.fetchval("SELECT to_regclass($1)::oid", table)
        if oid is None:
            raise RetryableError(f"postgres_cdc {config.name}: table {table} (in `tables`) does not exist")
        wanted[int(oid)] = table
    if set(has) == set(wanted):
        return
    added = [name for oid, name in wanted.items() if oid not in has]
    removed = [name for oid, name in has.items() if oid not in wanted]
    if not config.create:
        logger.warning(
            "postgres_cdc %s: publication %s publishes %s, and the config's tables are %s; not changed (create: false): "
            "ALTER PUBLICATION %s SET TABLE %s", config.name, publication, ", ".join(has.values()) or "nothing",
            ", ".join(config.tables), publication, ", ".join(config.tables),
        )  # fmt: skip
        return
    await connection.execute(f"ALTER PUBLICATION {publication} SET TABLE {', '.join(config.tables)}")  # checked plain names
    logger.warning(
        "postgres_cdc %s: publication %s set to the config's tables (added: %s; taken out: %s); an added table's changes "
        "come from now on, its rows before are not read (bus migrate copies them)", config.name, publication,
        ", ".join(added) or "none", ", ".join(removed) or "none",
    )  # fmt: skip


class PostgresCdcInbound(Inbound[PostgresCdcConfig]):
    Config: ClassVar[type[PostgresCdcConfig]] = PostgresCdcConfig
    summary: ClassVar[str] = "PostgreSQL change data capture (logical replication, pgoutput): inserts, updates, deletes."
    one_reader: ClassVar[bool] = True  # a replication slot takes one reader

    @classmethod
    def position_of(cls, config: PostgresCdcConfig) -> dict[str, Any] | None:
        """The database, and the publication when one is named: what a renamed adapter's former
        position must be in for its slot to be taken over. Not the tables (one added keeps the
        slot) nor the host (an address changed after a failover)."""
        return {"database": urlsplit(config.dsn.get_secret_value()).path.lstrip("/"), "publication": config.publication}

    def __init__(self, config: PostgresCdcConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._slot, self._publication = _names(config)
        self._dsn = config.dsn.get_secret_value()
        self._where = describe(self._dsn, self._slot)
        self._intake = Intake(self.sink, config.emit, source=f"/inbound/{config.name}")
        self._interval = config.interval.total_seconds()
        self._connection: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._problem = "not started"
        self.changes = 0  # changes published since start
        self._large: dict[int, tuple[int, int]] = {}  # large transactions found, to stream at the next read (pgoutput.Decoder.known)
        self.position = ""  # the slot's position after the last advance, as PostgreSQL writes an LSN
        self._remembered = ""  # the position last saved in Kafka
        self._key_types: dict[Relation, tuple[str, ...]] = {}  # per table (as last described), its key columns' SQL types
        self._read_back_said: set[tuple[str, str]] = set()  # tables whose unchanged large values were read back: said once
        # Where the server's WAL ended when the last peek found the slot caught up, and when: while it
        # has not moved there is nothing to decode, and the peek is skipped (_read_once).
        self._caught_up_at: tuple[str, float] | None = None
        self._reading = False  # a read of the slot under way (changes may be in Kafka's hands): a stop lets it finish
        self._former = ""  # a former name's slot still read by another process when it was taken over (_drop_former)
        self._former_tried = 0.0  # when its drop was last tried (monotonic)

    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping.clear()
        # The database is reached from the task: a server that is down, or not set up for logical
        # decoding, shows in /readyz and is tried again, and the rest of the hub starts.
        self._task = self.ctx.spawn(self._run(), name=f"postgres-cdc:{self.config.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            # The transactions in flight are finished and the slot advanced; a connection still
            # being made (a server that does not answer) ends at once: it holds nothing.
            self._stopping.set()
            await finish_read(task, holding=self._reading)
        await self._disconnect()

    def progress(self) -> dict[str, int | str]:
        return {"changes": self.changes, "position": self.position}

    async def health(self) -> Health:
        return Health(not self._problem, self._problem)

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close(timeout=5)  # a server that does not answer: the connection is dropped after 5 s

    # -- the loop ------------------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if self._connection is None:
                    await self._connect()
                    self._problem = ""  # connected to the slot: ready while a long backlog is still being read
                self._reading = True
                try:
                    read = await self._read_once()
                finally:
                    self._reading = False
                self._problem = ""
                if self._former:
                    await self._drop_former()
                if read:
                    continue  # more may be waiting: read again at once
            except RetryableError as exc:
                self._problem = str(exc)
                self.ctx.logger.warning("postgres_cdc %s: %s", self.config.name, exc)
                await self._disconnect()
            except Exception as exc:  # noqa: BLE001 (the server refused something: shown in /readyz, tried again)
                self._problem = f"{self._where}: {type(exc).__name__}: {exc}"
                self.ctx.logger.warning("postgres_cdc %s: %s", self.config.name, self._problem)
                await self._disconnect()  # connected again from the start: a slot dropped meanwhile is found lost there
                await self._disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._interval if not self._problem else max(self._interval, 2.0))

    async def _connect(self) -> None:
        import asyncpg

        try:
            target, options = postgres_connection(self._dsn)
            connection = await asyncpg.connect(target, timeout=10, **options)
        except Exception as exc:  # any driver failure at connect
            raise RetryableError(f"{self._where}: cannot connect: {exc!r}") from exc
        try:
            await self._ensure(connection)
        except BaseException:
            await connection.close()
            raise
        self._connection = connection
        self._caught_up_at = None  # the slot may have moved, or been made again, while this process was away
        self.ctx.logger.info("postgres_cdc %s reading slot %s (publication %s)", self.config.name, self._slot, self._publication)

    async def _ensure(self, connection: Any) -> None:
        checkpoints = self.ctx.checkpoints
        if self._remembered:  # connected again: what this run saved last is the newest (one reader per slot)
            read_before: dict[str, Any] | None = {"slot": self._slot, "lsn": self._remembered, "publication": self._publication}
        else:  # the whole checkpoint topic is read, which the embedded broker never compacts
            read_before = await checkpoints.load(self.config.name) if checkpoints is not None else None
        slot = await _ensure_slot(connection, self.config, self._where, self.ctx.logger, read_before=read_before)
        self.position = slot.at
        if slot.publication != self._publication:  # a renamed adapter's former publication: saved with the position now
            self._publication, self._remembered = slot.publication, ""
        kept = (read_before or {}).get("former") if (read_before or {}).get("slot") == self._slot else None
        former = slot.former or kept
        if isinstance(former, str) and _PLAIN.fullmatch(former) and former != self._former:
            self._former, self._remembered = former, ""  # saved with the position: a restart goes on trying
        await self._remember()

    async def _drop_former(self) -> None:
        """The former name's slot, taken over while another process still read it (a rolling
        update: the pods of the old config stop after the new ones start): dropped once no process
        reads it, tried every ``_FORMER_EVERY_S``. Left, it kept the server's WAL for good."""
        if time.monotonic() - self._former_tried < _FORMER_EVERY_S:
            return
        self._former_tried = time.monotonic()
        import asyncpg

        try:
            found = await self._connection.fetchval("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", self._former)
            if found:
                await self._connection.execute("SELECT pg_drop_replication_slot($1)", self._former)
        except asyncpg.ObjectInUseError:
            return  # still read: tried again later
        except asyncpg.PostgresError as exc:  # refused (a role without the right): said, and left to an operator
            self.ctx.logger.warning(
                "postgres_cdc %s: replication slot %s (of its former name) could not be dropped (%s): it keeps the server's "
                "WAL until it is: SELECT pg_drop_replication_slot('%s')", self.config.name, self._former, exc, self._former,
            )  # fmt: skip
            found = False
        if found:
            self.ctx.logger.warning(
                "postgres_cdc %s: replication slot %s (of its former name) dropped: no process reads it any more",
                self.config.name, self._former,
            )  # fmt: skip
        self._former, self._remembered = "", ""  # the next save says no more of it
        await self._remember()

    async def _remember(self) -> None:
        """Where the slot is, in Kafka: a slot found missing later is known to be lost (``lost_slot``)."""
        if self.ctx.checkpoints is None or self.position == self._remembered:
            return
        try:
            saved = {"slot": self._slot, "lsn": self.position, "publication": self._publication}
            await self.ctx.checkpoints.save(self.config.name, saved | ({"former": self._former} if self._former else {}))
        except KafkaUnavailable as exc:
            raise RetryableError(f"saving the slot's position: {exc}") from exc
        self._remembered = self.position

    # -- a migration's hand-over (``migrations[].then``) ---------------------------------------------
    handover: ClassVar[bool] = True

    @classmethod
    async def position_now(cls, config: PostgresCdcConfig) -> dict[str, Any] | None:
        """The slot, created now if it is missing: from here on it keeps every change committed,
        and a migration that reads the tables afterwards has everything before. The position is
        the slot itself (nothing to save in Kafka): started after the migration, the adapter
        applies the changes since, in commit order, after the history."""
        import asyncpg

        slot, _ = _names(config)
        where = describe(config.dsn.get_secret_value(), slot)
        target, options = postgres_connection(config.dsn.get_secret_value())
        connection = await asyncpg.connect(target, timeout=10, **options)
        try:
            lsn = (await _ensure_slot(connection, config, where, logging.getLogger(f"adapters.postgres_cdc.{config.name}"))).at
        finally:
            await connection.close()
        return {"slot": slot, "lsn": lsn, "held_by": "source"}

    async def _read_once(self) -> bool:
        """Read up to ``batch`` changes (whole transactions), publish them, advance the slot.
        True when more may be waiting (a full batch came back, or a large transaction was found).

        The rows come through a cursor, a chunk at a time. A transaction of more than
        ``large_transaction`` changes is not held: the first read finds its Commit (its changes
        dropped as they come), and the next read publishes them as they are read, in chunks, with
        the same ids. Read with one fetch, a bulk UPDATE of millions of rows was held whole, the
        pod killed for its memory, and the same transaction read again at every start: the slot
        never moved, and the server kept its WAL until its disk was full."""
        try:
            decodable = str(await self._connection.fetchval(_DECODABLE))
        except (OSError, ConnectionError) as exc:
            raise RetryableError(f"{self._where}: connection lost: {exc!r}") from exc
        if self._caught_up_at is not None:
            at, since = self._caught_up_at
            if decodable == at and time.monotonic() - since < _PEEK_IDLE_AT_LEAST_EVERY_S:
                # Nothing written since the slot was caught up. Each peek starts a decoding session that
                # reads the WAL again from the slot's restart point and logs two LOG lines in the server's
                # log: every half second on an idle server, about 700,000 lines a day.
                return False
        decoder = Decoder(hold=self.config.large_transaction, known=self._large)  # a new decoding session per read
        changes: list[Change] = []
        rows = published = 0
        try:
            async with self._connection.transaction():
                cursor = self._connection.cursor(_PEEK, self._slot, self.config.batch, self._publication, prefetch=_PREFETCH)
                async for row in cursor:
                    rows += 1
                    committed = decoder.feed(bytes(row["data"]))
                    if committed:
                        changes.extend(committed)
                    if len(decoder.ready) >= _CHUNK:  # a large transaction's changes, on their way as they come
                        published += await self._publish([*changes, *decoder.ready])
                        changes, decoder.ready = [], []
                    if decoder.skimmed:
                        break  # its Commit is known: the slot is read again from the transactions before it on
        except (OSError, ConnectionError) as exc:
            raise RetryableError(f"{self._where}: connection lost: {exc!r}") from exc
        published += await self._publish([*changes, *decoder.ready])
        if decoder.skimmed:
            self.ctx.logger.info(
                "postgres_cdc %s: a transaction of more than %d changes (commit %s): published as it is read again",
                self.config.name, self.config.large_transaction, lsn_text(decoder.known[decoder.skimmed][0]),
            )  # fmt: skip
        if decoder.safe_lsn:
            # Safe now: every change up to this commit is on Kafka. Transactions without a change of the
            # published tables move the slot too, so the server can recycle their WAL.
            await self._connection.execute(
                "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)", self._slot, lsn_text(decoder.safe_lsn)
            )
            self.position = lsn_text(decoder.safe_lsn)
            await self._remember()
        if published:
            self.ctx.logger.info("postgres_cdc %s: %d change(s); slot at %s", self.config.name, published, self.position)
        more = bool(decoder.skimmed) or rows >= self.config.batch
        # Caught up: the peek decoded all WAL flushed before it started, ``decodable`` included.
        self._caught_up_at = None if more else (decodable, time.monotonic())
        return more

    async def _publish(self, changes: list[Change]) -> int:
        """Hand the changes to Kafka in order and wait for every acknowledgement; how many went."""
        await self._fill_unchanged(changes)
        acks: list[Awaitable[None]] = []
        for change in changes:
            if change.op == "t":
                self.ctx.logger.warning(
                    "postgres_cdc %s: TRUNCATE of %s.%s is not published (no row events)",
                    self.config.name, change.relation.schema, change.relation.table,
                )  # fmt: skip
                continue
            document = change.document()
            # surrogateescape: the bytes of a value that was not UTF-8 go to the dead letter as they came.
            raw = json.dumps(document, default=str, ensure_ascii=False).encode("utf-8", "surrogateescape")
            event_id = f"{self.config.name}:{lsn_text(change.commit_lsn)}:{change.ordinal}"
            try:
                if change.problem is not None:  # a value that could not be read: this change alone is parked
                    reason = f"{change.relation.schema}.{change.relation.table}: {change.problem}"
                    acks.append(await self._intake.park(raw, reason, {"ce_id": event_id}))
                    continue
                acks.append(await self._intake.submit_document(document, raw=raw, event_id=event_id))
            except KafkaUnavailable as exc:
                raise RetryableError(f"Kafka did not take the changes: {exc}") from exc
        for ack in acks:
            try:
                await ack
            except KafkaUnavailable as exc:  # the slot stays: the same transactions are read again
                raise RetryableError(f"Kafka did not acknowledge the changes: {exc}") from exc
        self.changes += len(acks)
        return len(acks)

    # -- values an update did not send ------------------------------------------------------------
    async def _fill_unchanged(self, changes: list[Change]) -> None:
        """Put into each update's ``after`` the large (TOASTed) values PostgreSQL did not send
        because the update left them as they were: from the whole old row where the table sends
        one (REPLICA IDENTITY FULL), else read from the table by the row's key, a query per table
        and chunk. Left out, such a value was mapped as null, and a target written by upsert lost
        it at every update of another column of the row.

        A value read back is the row's value now, not at the change: a later change of it was
        committed after, and its own event follows. A row deleted since has no value to read: the
        columns stay out (the delete follows), said at INFO."""
        by_table: dict[Relation, list[Change]] = {}
        for change in changes:
            if not change.unchanged or change.after is None or change.problem is not None:
                continue
            before = change.before or {}
            if all(name in before for name in change.unchanged):  # the whole old row came: they are in it
                change.after.update({name: before[name] for name in change.unchanged})
            else:
                by_table.setdefault(change.relation, []).append(change)
        for relation, waiting in by_table.items():
            for at in range(0, len(waiting), 1000):
                await self._read_back(relation, waiting[at : at + 1000])

    async def _read_back(self, relation: Relation, changes: list[Change]) -> None:
        table = f"{_quoted(relation.schema)}.{_quoted(relation.table)}"
        if not relation.key:  # nothing to find the row by (REPLICA IDENTITY NOTHING publishes no updates; this is defence)
            self.ctx.logger.warning(
                "postgres_cdc %s: %d update(s) of %s left large values unsent and the table has no key to read them by: "
                "published without them", self.config.name, len(changes), table,
            )  # fmt: skip
            return
        types = self._key_types.get(relation)
        if types is None:
            oids = [dict(relation.columns)[name] for name in relation.key]
            found = await self._connection.fetch(_TYPE_NAMES, oids)
            types = self._key_types[relation] = tuple(str(row["name"]) for row in found)
        wanted = sorted({name for change in changes for name in change.unchanged})
        keys = [f"k{i}" for i in range(len(relation.key))]
        arrays = ", ".join(f"${i + 1}::text[]" for i in range(len(keys)))
        match = " AND ".join(f"t.{_quoted(name)} = k.{k}::{kind}" for name, k, kind in zip(relation.key, keys, types, strict=True))
        query = (
            f"SELECT k.n, {', '.join(f'{_quoted(name)}::text' for name in wanted)} FROM {table} AS t "  # noqa: S608 (quoted identifiers; values bound)
            f"JOIN unnest({arrays}) WITH ORDINALITY AS k({', '.join(keys)}, n) ON {match}"
        )
        columns = [[_key_text(change.after.get(name) if change.after else None) for change in changes] for name in relation.key]
        try:
            rows = await self._connection.fetch(query, *columns)
        except (OSError, ConnectionError):
            raise
        except Exception as exc:  # noqa: BLE001 (a column renamed or dropped since the change: said, published without)
            self.ctx.logger.warning(
                "postgres_cdc %s: the large values %d update(s) of %s left unsent cannot be read from the table (%s): "
                "published without them", self.config.name, len(changes), table, exc,
            )  # fmt: skip
            return
        types_of = dict(relation.columns)
        got = {int(row["n"]): row for row in rows}
        gone = 0
        for n, change in enumerate(changes, start=1):
            row = got.get(n)
            if row is None or change.after is None:
                gone += 1
                continue
            for i, name in enumerate(wanted, start=1):
                if name in change.unchanged:
                    text = row[i]
                    value, problem = (None, None) if text is None else column_value(name, types_of[name], text.encode())
                    change.after[name] = value
                    change.problem = change.problem or problem
        said = (relation.schema, relation.table)
        if said not in self._read_back_said:
            self._read_back_said.add(said)
            self.ctx.logger.info(
                "postgres_cdc %s: updates of %s leave large values unsent that they did not change; they are read from the "
                "table by key (the row's value when read). ALTER TABLE %s REPLICA IDENTITY FULL sends them with each "
                "update instead", self.config.name, table, table,
            )  # fmt: skip
        if gone:
            self.ctx.logger.info(
                "postgres_cdc %s: %d update(s) of %s: the row was deleted since, so the large values the update left "
                "unsent cannot be read; published without them (the delete follows)", self.config.name, gone, table,
            )  # fmt: skip


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _key_text(value: Any) -> str | None:
    """A key column's value as PostgreSQL's text input takes it (the decoder turned some into Python values)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)
