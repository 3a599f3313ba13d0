"""``redis`` inbound: read a Redis Stream through a consumer group; acknowledge (XACK) each entry
once Kafka has its event.

The consume loop, the in-order acknowledgement and the dead letters are ``bus.queue_inbound``'s.
What Redis Streams add:

- Each process reads as its own consumer of the group (``<host>-<pid>``: a pod's name, so a
  restarted container finds its own unacknowledged entries at once and reads them first).
- An entry another consumer took and never acknowledged (its process died, or its pod was
  replaced by one of another name) stays pending for good: Redis never hands it out again by
  itself. Every ``claim_after / 2`` the adapter takes over the group's entries idle for longer
  than ``claim_after`` (XAUTOCLAIM) and reads them. Entries this process has held for a third of
  ``claim_after`` (while Kafka cannot take their events, say) are claimed afresh, so no other
  process takes them over while they are being worked on.
- Consumers a replaced pod left behind with nothing pending are removed from the group after an
  hour, so ``XINFO CONSUMERS`` does not grow with every deploy.
- An entry deleted from the stream before it was read (XDEL, trimming) is acknowledged and said.
"""

from __future__ import annotations

__all__ = ["RedisInbound"]

import asyncio
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from adapters.redis.config import RedisInboundConfig
from adapters.redis.connection import UNANSWERED, connect, where
from bus.adapter_api import Context, KafkaUnavailable, RetryableError, target_json
from bus.queue_inbound import QueueInbound

Entry = tuple[bytes, dict[bytes, bytes]]  # (entry id, fields)

_BLOCK_MS = 1000  # how long a read waits for new entries; a stop ends it at once (the read is cancelled)
SAVE_EVERY_S = 1.0  # how often, at most, where the hub is in the stream is saved in Kafka while entries come
_ENTRY_ID = re.compile(r"\d{1,20}-\d{1,20}")
_LEFT_BEHIND_MS = 3_600_000  # a consumer with nothing pending, unseen for this long, is removed from the group


class RedisInbound(QueueInbound[RedisInboundConfig]):
    Config: ClassVar[type[RedisInboundConfig]] = RedisInboundConfig
    summary: ClassVar[str] = "Read a Redis Stream through a consumer group; XACK only after Kafka acknowledged."
    family: ClassVar[str] = "redis"

    def __init__(self, config: RedisInboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._redis: Redis | None = None
        self._group = config.group or f"bus-{config.name}"
        self._consumer = f"{socket.gethostname()}-{os.getpid()}"
        self._stream = config.stream.encode()
        self._field = config.field.encode() if config.field is not None else None
        server = where(config.url.get_secret_value(), config.sentinel, cluster=config.cluster)
        self._where = f"{server} stream {config.stream!r} group {self._group!r}"
        # Entry ids read and not yet acknowledged here (never read twice), and when each was last
        # claimed: ``_keep_fresh`` claims those held a while afresh, so no other process takes them.
        self._in_flight: dict[bytes, float] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._claim_ms = int(config.claim_after.total_seconds() * 1000)
        # Where the hub is in the stream, also kept in Kafka: a group deleted, or an adapter renamed
        # (its group is bus-<name>), is made again from after the last entry acknowledged.
        self._acknowledged: bytes | None = None  # the newest entry id acknowledged
        self._saved: tuple[bytes | None, float] = (None, 0.0)  # the id last saved in Kafka, and when (monotonic)
        self._save_failing = False  # said once when saving stops working, and once when it works again
        self.claimed = 0  # entries taken over from consumers that left them unacknowledged
        self.deleted = 0  # entries deleted from the stream before they were read

    @classmethod
    def position_of(cls, config: RedisInboundConfig) -> dict[str, Any] | None:
        return {"stream": config.stream}

    def max_in_flight(self) -> int:
        return self.config.batch

    def progress(self) -> dict[str, int | str]:
        found: dict[str, int | str] = {"consumer": self._consumer}
        if self.claimed:
            found["claimed"] = self.claimed
        if self.deleted:
            found["deleted_before_read"] = self.deleted
        return found

    async def open(self) -> None:
        client = await connect(
            self.config.url.get_secret_value(),
            f"redis {self.config.name}",
            tls=self.config.tls,
            sentinel=self.config.sentinel,
            cluster=self.config.cluster,
            timeout_s=_BLOCK_MS / 1000 + 10,  # above the blocking read's wait
            client_name=f"bus-{self.config.name}",
        )
        try:
            await self._join(client)
        except BaseException:
            await client.aclose()
            raise
        self._redis = client
        self._in_flight.clear()
        self._refresher = self.ctx.spawn(self._keep_fresh(), name=f"redis-keep-fresh:{self.config.name}")
        self.ctx.logger.info("redis %s reading %s as consumer %s", self.config.name, self._where, self._consumer)

    async def _join(self, client: Redis) -> None:
        """The group exists (made when ``declare``), or RetryableError saying what is missing."""
        try:
            groups = await client.xinfo_groups(self._stream)
            stream_exists = True
        except ResponseError as exc:  # no such key
            if not self.config.declare:
                raise RetryableError(f"redis {self.config.name}: {self._where}: no such stream ({exc}); declare is off") from exc
            groups, stream_exists = [], False
        except UNANSWERED as exc:
            raise RetryableError(f"redis {self.config.name}: {self._where}: {exc!r}") from exc
        if any(g["name"] == self._group.encode() for g in groups):
            return
        if not self.config.declare:
            raise RetryableError(f"redis {self.config.name}: {self._where}: no such consumer group, and declare is off")
        try:
            start, said = await self._start_of_group(client, stream_exists)
        except UNANSWERED as exc:
            raise RetryableError(f"redis {self.config.name}: {self._where}: {exc!r}") from exc
        try:
            await client.xgroup_create(self._stream, self._group, id=start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):  # made meanwhile by another replica: fine
                raise RetryableError(f"redis {self.config.name}: cannot make the consumer group of {self._where}: {exc}") from exc
            return
        except UNANSWERED as exc:
            raise RetryableError(f"redis {self.config.name}: {self._where}: {exc!r}") from exc
        if self._acknowledged is None:
            name, group, stream = self.config.name, self._group, self.config.stream
            self.ctx.logger.info("redis %s: made consumer group %s on stream %r, %s", name, group, stream, said)
        else:
            self.ctx.logger.warning(
                "redis %s: consumer group %s of stream %r was missing though the hub read through it before (deleted by "
                "someone, a rename of the adapter, or a Redis that lost its data): made again, %s",
                self.config.name, self._group, self.config.stream, said,
            )  # fmt: skip

    async def _start_of_group(self, client: Redis, stream_exists: bool) -> tuple[str | bytes, str]:
        """Where a group made now starts, and why: after the last entry the hub acknowledged in
        this stream (kept in Kafka: a group deleted, or the adapter renamed), or at ``start_at``.
        Made from ``start_at`` instead, every entry the stream held would come again (or none
        added while the group was missing would come)."""
        if self._acknowledged is None:
            await self._load_position()
        if self._acknowledged is None:
            return ("0" if self.config.start_at == "oldest" else "$"), f"reading from its {self.config.start_at} entry"
        last = _id_of(self._acknowledged)
        if not stream_exists:
            return "0", "with the stream, which did not exist any more: every entry added to it is read"
        newest = (await client.xinfo_stream(self._stream))["last-generated-id"]
        if _id_of(newest) < last:  # its ids begin again: another stream under the same key
            return "0", "reading from its oldest entry: the stream was made again since (its ids begin again)"
        return self._acknowledged, f"reading from after entry {self._acknowledged.decode()}, the last the hub acknowledged"

    async def _load_position(self) -> None:
        checkpoints = self.ctx.checkpoints
        saved = await checkpoints.load(self.config.name) if checkpoints is not None else None
        if not saved:
            return
        entry = saved.get("entry")
        if not isinstance(entry, str) or _ENTRY_ID.fullmatch(entry) is None:
            self.ctx.logger.warning(
                "redis %s: the position saved for it in Kafka cannot be read (%.200r): not used", self.config.name, saved
            )
            return
        self._acknowledged = entry.encode()
        self._saved = (self._acknowledged, time.monotonic())

    async def _save_position(self) -> None:
        checkpoints = self.ctx.checkpoints
        if checkpoints is None or self._acknowledged is None or self._acknowledged == self._saved[0]:
            return
        self._saved = (self._acknowledged, time.monotonic())
        try:
            await checkpoints.save(self.config.name, {"entry": self._acknowledged.decode()})
        except KafkaUnavailable as exc:  # a fallback only (the group keeps the place): tried again at the next save
            if not self._save_failing:
                self._save_failing = True
                self.ctx.logger.warning(
                    "redis %s: where it is in stream %r cannot be saved in Kafka (%s): reading goes on, the consumer group "
                    "keeps the place; tried again at each save", self.config.name, self.config.stream, exc,
                )  # fmt: skip
            return
        if self._save_failing:
            self._save_failing = False
            self.ctx.logger.info("redis %s: where it is in the stream is saved in Kafka again", self.config.name)

    async def messages(self) -> AsyncIterator[Entry]:
        try:
            async for entry in self._own_pending():
                yield entry
            next_claim = 0.0
            while True:
                if time.monotonic() >= next_claim:
                    async for entry in self._claimed():
                        yield entry
                    await self._remove_left_behind()
                    next_claim = time.monotonic() + max(1.0, self._claim_ms / 2000)
                for entry in self._taking(await self._read(">", block=True)):
                    yield entry
        except ResponseError as exc:  # the group or the stream deleted under the hub, most likely
            raise RetryableError(f"redis {self.config.name}: reading {self._where}: {exc}") from exc
        except UNANSWERED as exc:
            raise RetryableError(f"redis {self.config.name}: lost {self._where}: {exc!r}") from exc

    async def _read(self, start: str | bytes, *, block: bool = False) -> list[Entry]:
        assert self._redis is not None
        found: Any = await self._redis.xreadgroup(
            self._group, self._consumer, {self._stream: start}, count=self.config.batch, block=_BLOCK_MS if block else None
        )
        entries: list[Entry] = found[0][1] if found else []
        return entries

    async def _own_pending(self) -> AsyncIterator[Entry]:
        """Entries given to this consumer before and never acknowledged (the process restarted
        in the same pod, or the connection was lost): read again first, in their order."""
        start: bytes = b"0-0"
        while True:
            entries = await self._read(start)
            if not entries:
                return
            start = entries[-1][0]
            gone = [entry_id for entry_id, fields in entries if not fields]  # deleted from the stream since they were read
            if gone:
                await self._gone(gone)
            for entry in self._taking([entry for entry in entries if entry[1]]):
                yield entry

    async def _claimed(self) -> AsyncIterator[Entry]:
        """The group's entries left unacknowledged for ``claim_after`` by any consumer, taken over."""
        assert self._redis is not None
        start: bytes | str = "0-0"
        while True:
            found = await self._redis.xautoclaim(self._stream, self._group, self._consumer, self._claim_ms, start, count=self.config.batch)
            start, entries = found[0], found[1]
            deleted = found[2] if len(found) > 2 else []
            if deleted:  # XAUTOCLAIM has taken them out of the pending list already
                self._said_gone(len(deleted))
            fresh = self._taking(entries)
            if fresh:
                self.claimed += len(fresh)
                count, idle = len(fresh), f"{self.config.claim_after.total_seconds():g}s"
                self.ctx.logger.warning(
                    "redis %s: took over %d %s of %s left unacknowledged for over %s (by a process that died, or an "
                    "acknowledgement that was lost); reading them now",
                    self.config.name, count, "entry" if count == 1 else "entries", self._where, idle,
                )  # fmt: skip
            for entry in fresh:
                yield entry
            if start in (b"0-0", "0-0"):
                return

    async def _remove_left_behind(self) -> None:
        """Consumers with nothing pending not seen for an hour (replaced pods) leave the group."""
        assert self._redis is not None
        for consumer in await self._redis.xinfo_consumers(self._stream, self._group):
            name = consumer["name"].decode(errors="replace")
            if consumer["pending"] == 0 and consumer["idle"] > _LEFT_BEHIND_MS and name != self._consumer:
                await self._redis.xgroup_delconsumer(self._stream, self._group, consumer["name"])
                self.ctx.logger.info("redis %s: consumer %s of group %s left nothing pending; removed", self.config.name, name, self._group)

    def _taking(self, entries: list[Entry]) -> list[Entry]:
        """Those of ``entries`` not already being worked on here, marked as being so now."""
        now = time.monotonic()
        taken = [entry for entry in entries if entry[0] not in self._in_flight]
        for entry_id, _ in taken:
            self._in_flight[entry_id] = now
        return taken

    async def _keep_fresh(self) -> None:
        """Entries held here for a third of ``claim_after`` (behind one Kafka cannot take yet, or
        waiting for its acknowledgement) are claimed afresh: idle again, so no other process's
        XAUTOCLAIM takes them over while this one works on them."""
        every = self._claim_ms / 3000
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            held: list[Any] = [entry_id for entry_id, at in self._in_flight.items() if now - at >= every]
            if not held or self._redis is None:
                continue
            try:
                await self._redis.xclaim(self._stream, self._group, self._consumer, 0, held, justid=True)
            except UNANSWERED as exc:  # the consume loop says so if the connection is lost
                self.ctx.logger.info("redis %s: could not claim the entries held afresh (%r)", self.config.name, exc)
                continue
            for entry_id in held:
                if entry_id in self._in_flight:
                    self._in_flight[entry_id] = now

    async def _gone(self, entry_ids: list[bytes]) -> None:
        assert self._redis is not None
        await self._redis.xack(self._stream, self._group, *entry_ids)
        self._said_gone(len(entry_ids))

    def _said_gone(self, count: int) -> None:
        self.deleted += count
        self.ctx.logger.warning(
            "redis %s: %d %s of %s deleted from the stream (XDEL, or trimmed by MAXLEN) before the hub read %s: nothing to read",
            self.config.name, count, "entry" if count == 1 else "entries", self._where, "it" if count == 1 else "them",
        )  # fmt: skip

    def refused(self, message: Entry) -> str | None:
        _, fields = message
        if self._field is not None:
            if self._field not in fields:
                names = ", ".join(sorted(k.decode(errors="replace") for k in fields))
                return f"the entry has no field {self.config.field!r} (it has {names})"
            return None
        for name, value in fields.items():
            for what, text in (("name", name), ("value", value)):
                try:
                    text.decode()
                except UnicodeDecodeError as exc:
                    field = name.decode(errors="replace")
                    return f"the entry's field {field!r}: its {what} is not UTF-8 text ({exc.reason} at byte {exc.start})"
        return None

    def payload(self, message: Entry) -> bytes:
        _, fields = message
        if self._field is not None:
            value = fields.get(self._field)
            if value is not None:
                return value  # even empty: parked as "invalid JSON"
        return target_json(_shown(fields), "entry").encode()

    def origin(self, message: Entry) -> Mapping[str, str]:
        return {"bus_origin": f"redis:{self.config.stream}", "redis_entry_id": message[0].decode()}

    def traceparent(self, message: Entry) -> str | None:
        value = message[1].get(b"traceparent")
        return value.decode(errors="replace") if value else None

    async def ack(self, message: Entry) -> None:
        assert self._redis is not None
        entry_id = message[0]
        try:
            await self._redis.xack(self._stream, self._group, entry_id)
        finally:
            self._in_flight.pop(entry_id, None)
        if self._acknowledged is None or _id_of(entry_id) > _id_of(self._acknowledged):
            self._acknowledged = entry_id
        if time.monotonic() - self._saved[1] >= SAVE_EVERY_S:
            await self._save_position()

    async def close(self) -> None:
        refresher, self._refresher = self._refresher, None
        if refresher is not None:
            refresher.cancel()
            await asyncio.wait({refresher})
        await self._save_position()
        client, self._redis = self._redis, None
        if client is not None:
            await asyncio.shield(client.aclose())

    def connected(self) -> bool:
        return self._redis is not None


def _id_of(entry_id: bytes | str) -> tuple[int, int]:
    """An entry id (``1700000000000-3``) in the stream's order."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _shown(fields: dict[bytes, bytes]) -> dict[str, Any]:
    """An entry's fields as a JSON object of strings (bytes that are not UTF-8 shown escaped)."""
    return {k.decode(errors="backslashreplace"): v.decode(errors="backslashreplace") for k, v in fields.items()}
