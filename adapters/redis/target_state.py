"""What ``bus migrate`` reads back from and puts back into a ``redis`` target (``set``, ``hset``).

A record's address is its key. ``read`` takes many keys in one round trip (a pipeline of GET or
HGETALL); ``restore`` puts a before-image back (SET of the JSON, or the hash deleted and written
again) and deletes a key the run created, a batch in one transaction. What is compared is what
Redis holds: for ``set`` the JSON document, for ``hset`` the hash's fields as text (a delivery
writes ``true``, a record as its JSON text, a time as RFC 3339). A key's TTL is not put back: a
restored key keeps none. A stream (``xadd``) can be neither read back by event nor rolled back.
In a Redis Cluster a transaction holds only keys of one slot: a batch is put back in one
transaction per slot (each key is put back whole, and a rollback that stops is resumed).
"""

from __future__ import annotations

__all__ = ["RedisTargetState"]

import json
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from redis.crc import key_slot
from redis.exceptions import ResponseError

from adapters.redis.connection import UNANSWERED
from bus.adapter_api import Event, PermanentError, RetryableError, parse_json, target_json

if TYPE_CHECKING:
    from adapters.redis.outbound import RedisOutbound

_TEXT = "(value)"  # a string key's value that is not a JSON object, as a record


class RedisTargetState:
    verifiable = True
    rollback = ""

    def __init__(self, outbound: RedisOutbound) -> None:
        self._out = outbound
        self._hash = outbound.config.command == "hset"

    def record(self, event: Event) -> tuple[list[str], dict[str, Any] | None]:
        key = self._out.key_of(event)
        if self._out.deletes(event):
            return [key], None
        if self._hash:
            return [key], self._out.hash_fields(event)
        document = json.loads(target_json(self._out.rendered(event), "value"))  # what GET gives back: times and decimals as text
        return [key], document

    async def read(self, addresses: list[Any]) -> list[dict[str, Any] | None]:
        client = self._out.client()
        try:
            async with client.pipeline(transaction=False) as pipe:
                for (key,) in addresses:
                    if self._hash:
                        pipe.hgetall(key)
                    else:
                        pipe.get(key)
                found = await pipe.execute(raise_on_error=False)
        except UNANSWERED as exc:
            raise RetryableError(f"reading back from Redis: {exc!r}") from exc
        return [self._record(key, held) for (key,), held in zip(addresses, found, strict=True)]

    def _record(self, key: str, held: Any) -> dict[str, Any] | None:
        if isinstance(held, ResponseError):
            raise PermanentError(f"the key {key!r} cannot be read as {'a hash' if self._hash else 'a string'}: {held}")
        if self._hash:
            return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in held.items()} or None
        if held is None:
            return None
        text = held.decode(errors="replace")
        try:
            document = parse_json(text, repeated_keys="last")
        except ValueError:
            return {_TEXT: text}
        return document if isinstance(document, dict) else {_TEXT: text}

    async def restore(self, items: list[tuple[Any, dict[str, Any] | None]]) -> None:
        client = self._out.client()
        try:
            for together in self._transactions(items):
                async with client.pipeline(transaction=True) as transaction:
                    for (key,), before in together:
                        if before is None:
                            transaction.delete(key)
                        elif self._hash:
                            transaction.delete(key)
                            if before:
                                transaction.hset(key, mapping={field: str(value) for field, value in before.items()})
                        elif set(before) == {_TEXT}:
                            transaction.set(key, before[_TEXT])
                        else:
                            transaction.set(key, target_json(before, "value"))
                    await transaction.execute()
        except ResponseError as exc:
            raise PermanentError(f"Redis refused to put the keys back: {exc}") from exc
        except UNANSWERED as exc:
            raise RetryableError(f"putting keys back into Redis: {exc!r}") from exc

    def _transactions(self, items: list[tuple[Any, dict[str, Any] | None]]) -> list[list[tuple[Any, dict[str, Any] | None]]]:
        """The batch in one transaction, or in a cluster one per slot its keys hash to."""
        if not self._out.config.cluster:
            return [items]
        by_slot: dict[int, list[tuple[Any, dict[str, Any] | None]]] = defaultdict(list)
        for item in items:
            by_slot[key_slot(item[0][0].encode())].append(item)
        return list(by_slot.values())
