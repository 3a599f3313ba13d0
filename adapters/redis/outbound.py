"""``redis`` outbound: append each event to a stream, or keep it under a key (a JSON string or a hash).

- ``xadd`` appends one entry per event. A delivery whose answer was lost is tried again by the
  runtime, and would append twice: within ``dedupe_window`` the event id is remembered in a key of
  its own (``<stream>:bus-ids:<id>``, expiring), and one script checks it, appends and marks it
  in one step on the server. ``maxlen`` trims the stream (``MAXLEN ~``).
- ``set`` and ``hset`` write the event's record under its key: an upsert, so a repeat is harmless.
  ``bus migrate`` reads them back and puts them back (adapters/redis/target_state.py).
  ``hset`` with ``replace`` (the default) deletes the hash and writes it again in one transaction,
  so a field the source dropped does not linger. ``delete_when`` deletes the key.

Permanent (dead letter, with the reason): the key holds another type of value (WRONGTYPE), a
key whose template gave an empty or control-character part, any other refusal of the command.
Retried: a lost connection, a timeout, Redis out of memory (``maxmemory`` with ``noeviction``),
a read-only replica (a failover under way), credentials or ACL permissions refused (fixed by
an operator, not by dead-lettering every event), a server loading its data or busy with a script.
"""

from __future__ import annotations

__all__ = ["RedisOutbound"]

import ast
import asyncio
import contextlib
from typing import Any, ClassVar

from redis.asyncio import Redis
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    AuthenticationError,
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

from adapters.redis.config import RedisOutboundConfig
from adapters.redis.connection import UNANSWERED, connect, where
from adapters.redis.target_state import RedisTargetState
from bus.adapter_api import (
    Body,
    Context,
    Event,
    Health,
    Outbound,
    PermanentError,
    RetryableError,
    TargetOptions,
    compile_expression,
    compile_template,
    target_json,
    text_cell,
)
from bus.cloudevents import prefixed_headers

# KEYS: the stream, the event id's marker. ARGV: the window in ms, MAXLEN or "", then the entry's
# field-value pairs. The marker is set after the append: a refused append leaves no marker that
# would make the retry look like a repeat.
_APPEND_ONCE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
local args = {'XADD', KEYS[1]}
if ARGV[2] ~= '' then
  args[#args + 1] = 'MAXLEN'; args[#args + 1] = '~'; args[#args + 1] = ARGV[2]
end
args[#args + 1] = '*'
for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
local id = redis.call(unpack(args))
redis.call('SET', KEYS[2], id, 'PX', ARGV[1])
return id
"""

# Refusals that an operator or time ends, the same for every event: retried, not dead-lettered.
# redis-py turns most into classes of their own (and takes the code off the message); the rest
# keep their code as the message's first word. In a cluster: a slot on the move (MOVED, ASK the
# client could not follow), a cluster without a quorum (CLUSTERDOWN), keys mid-migration (TRYAGAIN).
_PASSING = (
    OutOfMemoryError, ReadOnlyError, NoPermissionError, AuthenticationError, BusyLoadingError, MasterDownError, TryAgainError,
    ClusterDownError, AskError,
)  # fmt: skip
_PASSING_CODES = {"OOM", "BUSY", "MISCONF", "READONLY", "NOAUTH", "WRONGPASS", "NOPERM", "LOADING"}


def _hash_tag(key: str) -> str | None:
    """The part of ``key`` a Redis Cluster hashes to find its slot when it is not the whole key:
    between the first ``{`` and the first ``}`` after it, when not empty."""
    opened = key.find("{")
    closed = key.find("}", opened + 1) if opened >= 0 else -1
    return key[opened + 1 : closed] if closed > opened + 1 else None


def marker_key(stream: str, event_id: str, *, cluster: bool) -> str:
    """Where an appended event's id is kept for the dedupe window. The append script touches the
    stream and this key in one step, which a Redis Cluster runs only when both hash to one slot:
    there the stream's name is made the marker's hash tag (unless it has one of its own, which
    the marker, starting with it, shares)."""
    if not cluster or _hash_tag(stream) is not None:
        return f"{stream}:bus-ids:{event_id}"
    marker = f"{{{stream}}}:bus-ids:{event_id}"
    if key_slot(marker.encode()) != key_slot(stream.encode()):  # a "}" in the name ends the tag early
        raise PermanentError(
            f"the stream {stream!r}: in a Redis Cluster its dedupe marker cannot share its slot (a '}}' in its name without a "
            "'{' before it); name the stream without it, give it a hash tag ({orders}), or set dedupe_window: 0s"
        )
    return marker


def _key_part(value: str) -> str:
    """A value substituted into the key: never empty (every event missing the field would write
    one key, each over the last), never a control character."""
    if not value:
        raise PermanentError("the Redis key: a value in its template is empty (a missing field?), and every such event would write one key")
    bad = next((c for c in value if c < " " or c == "\x7f"), None)
    if bad is not None:
        shown = value if len(value) <= 80 else value[:80] + "..."
        raise PermanentError(f"the Redis key: the value {shown!r} holds the control character {bad!r}")
    return value


class RedisOutbound(Outbound[RedisOutboundConfig]):
    Config: ClassVar[type[RedisOutboundConfig]] = RedisOutboundConfig
    summary: ClassVar[str] = "Append each event to a Redis Stream (de-duplicated by event id), or keep it under a key as JSON or a hash."

    def __init__(self, config: RedisOutboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._body = Body(config.body)
        self._key = compile_template(config.key, escape=_key_part)
        self._delete_when = compile_expression(config.delete_when) if config.delete_when else None
        self._ttl_ms = int(config.ttl.total_seconds() * 1000) if config.ttl is not None else None
        self._window_ms = int(config.dedupe_window.total_seconds() * 1000)
        self._maxlen = str(config.maxlen) if config.maxlen is not None else ""
        self._where = where(config.url.get_secret_value(), config.sentinel, cluster=config.cluster)
        self._redis: Redis | None = None
        self._append_once: Any = None

    async def start(self) -> None:
        if self._redis is None:
            self._redis = await connect(
                self.config.url.get_secret_value(),
                f"redis outbound {self.config.name}",
                tls=self.config.tls,
                sentinel=self.config.sentinel,
                cluster=self.config.cluster,
                timeout_s=self.config.timeout_s,
                client_name=f"bus-{self.config.name}",
            )
            self._append_once = self._redis.register_script(_APPEND_ONCE)

    async def stop(self) -> None:
        client, self._redis = self._redis, None
        if client is not None:
            await asyncio.shield(client.aclose())

    async def health(self) -> Health:
        if self._redis is None:
            return Health(False, "not connected to Redis")
        try:
            await asyncio.wait_for(self._redis.ping(), timeout=2)
        except UNANSWERED as exc:
            return Health(False, f"Redis at {self._where} does not answer: {exc!r}")
        return Health(True)

    async def deliver(self, event: Event) -> None:
        if self._redis is None:
            raise RetryableError(f"redis outbound {self.config.name} is not started")
        key = self.key_of(event)
        try:
            if self.config.command == "xadd":
                await self._append(key, event)
            elif self.deletes(event):
                await self._redis.delete(key)
            elif self.config.command == "set":
                await self._redis.set(key, target_json(self.rendered(event), "value"), px=self._ttl_ms)
            else:
                await self._write_hash(key, self.hash_fields(event))
        except ResponseError as exc:
            raise self._refused(key, exc) from exc
        except UNANSWERED as exc:  # a lost connection, a timeout: the command may or may not have run
            raise RetryableError(f"Redis at {self._where} did not answer for {key!r}: {exc!r}") from exc

    # What a delivery writes, for ``deliver`` and for bus migrate (adapters/redis/target_state.py).
    def key_of(self, event: Event) -> str:
        return self._key(event.data, event.meta())

    def deletes(self, event: Event) -> bool:
        """Whether this event deletes its key (``delete_when`` holds)."""
        return self._delete_when is not None and bool(self._delete_when(event.data, event.meta()))

    def rendered(self, event: Event) -> dict[str, Any]:
        return self._body.render(event)

    def hash_fields(self, event: Event) -> dict[str, str]:
        """The hash ``hset`` writes: each of the body's fields as text, a null as no field."""
        return {name: text_cell(value, f"hash's {name}") for name, value in self.rendered(event).items() if value is not None}

    def client(self) -> Redis:
        if self._redis is None:
            raise RetryableError(f"redis outbound {self.config.name} is not started")
        return self._redis

    def target_state(self, options: TargetOptions) -> RedisTargetState | None:
        return RedisTargetState(self) if self.config.command in ("set", "hset") else None

    async def _append(self, stream: str, event: Event) -> None:
        assert self._redis is not None
        body = self._body.render(event)
        if self.config.entry == "json":
            fields = {**prefixed_headers(event, "ce_"), "data": target_json(body, "entry")}
        else:
            fields = {name: text_cell(value, f"entry's {name}") for name, value in body.items() if value is not None}
            fields.update(ce_id=event.id, traceparent=event.traceparent)
        if self._window_ms <= 0:
            await self._redis.xadd(stream, fields, maxlen=self.config.maxlen, approximate=True)  # type: ignore[arg-type]
            return
        pairs = [part for name, value in fields.items() for part in (name, value)]
        marker = marker_key(stream, event.id, cluster=self.config.cluster)
        await self._append_once(keys=[stream, marker], args=[self._window_ms, self._maxlen, *pairs])

    async def _write_hash(self, key: str, fields: dict[str, str]) -> None:
        assert self._redis is not None
        async with self._redis.pipeline(transaction=True) as transaction:
            if self.config.replace:
                transaction.delete(key)
            if fields:
                transaction.hset(key, mapping=fields)  # type: ignore[arg-type]
            if self._ttl_ms is not None and fields:
                transaction.pexpire(key, self._ttl_ms)
            await transaction.execute()

    def _refused(self, key: str, exc: ResponseError) -> Exception:
        said = _said(exc)
        if isinstance(exc, _PASSING) or said.split(" ", 1)[0] in _PASSING_CODES:
            return RetryableError(f"Redis at {self._where} refused the write to {key!r} for now: {said}")
        if said.startswith("WRONGTYPE"):
            wanted = {"xadd": "a stream", "set": "a string", "hset": "a hash"}[self.config.command]
            return PermanentError(f"the key {key!r} holds another type of value than {wanted}: {said}")
        return PermanentError(f"Redis refused the write to {key!r}: {said}")


def _said(exc: ResponseError) -> str:
    """Redis's words. In a transaction redis-py puts the command first and Redis's words after, as
    the repr of the original exception's arguments."""
    said = str(exc.args[0]) if exc.args else ""
    said = said.split(" script: ", 1)[0]  # the append script's sha and line: nothing for a reader
    _, found, after = said.partition("caused error: ")
    if not found:
        return said
    with contextlib.suppress(ValueError, SyntaxError):
        inner = ast.literal_eval(after)
        if isinstance(inner, tuple) and inner:
            return str(inner[0])
    return after
