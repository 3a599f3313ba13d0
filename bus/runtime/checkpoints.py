"""Where polling sources keep their position: a compacted Kafka topic keyed by adapter name.

Keeping it in Kafka (not a local file) means any pod can take over a source, and the position
lives beside the events it describes. A source saves only after Kafka acknowledged every event
up to that position, so a restart resumes there: events after the last save are read again
(at least once), none are skipped.
"""

from __future__ import annotations

__all__ = ["KafkaCheckpoints", "SourceCheckpoints", "as_saved", "same_source"]

import asyncio
import json
import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from bus.config.models import KafkaConfig
from bus.errors import KafkaUnavailable
from bus.kafka.reader import read_topic

log = logging.getLogger("bus.checkpoints")


class KafkaCheckpoints:
    def __init__(self, producer: AIOKafkaProducer | None, kafka: KafkaConfig, bootstrap: str, topic: str) -> None:
        """``producer`` None: read only (``bus positions list``)."""
        self._producer = producer
        self._kafka = kafka
        self._bootstrap = bootstrap
        self.topic = topic

    async def load(self, name: str) -> dict[str, Any] | None:
        """The last position saved under ``name``, or None if it never saved one."""
        return (await self._latest({name.encode()})).get(name)

    async def load_all(self) -> dict[str, dict[str, Any]]:
        """The last position saved under each name."""
        return await self._latest(None)

    async def _latest(self, keys: set[bytes] | None) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for record in await read_topic(self._kafka, self._bootstrap, self.topic):
            if record.key is None or (keys is not None and record.key not in keys):
                continue
            name = record.key.decode(errors="replace")
            if record.value is None:
                found.pop(name, None)
                continue
            try:
                position = json.loads(record.value)
            except (ValueError, RecursionError) as exc:
                position = exc
            if not isinstance(position, dict):
                # Not a position the adapter saved (by hand, another program): the one before it is
                # used (read again from there, events keep their ids), and said. Raised, the adapter
                # never started.
                log.warning(
                    "checkpoint of %s at %s/%d/%d cannot be read (%.200s); the one before it is used",
                    name,
                    record.topic,
                    record.partition,
                    record.offset,
                    position,
                )
                continue
            found[name] = position
        return found

    async def save(self, name: str, position: dict[str, Any]) -> None:
        """Store ``position``; returns once Kafka acknowledged it. Raises KafkaUnavailable."""
        if self._producer is None:
            raise RuntimeError(f"checkpoint of {name}: this store was opened read only")
        value = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
        try:
            await asyncio.wait_for(
                self._producer.send_and_wait(self.topic, value, key=name.encode()), timeout=self._kafka.produce_timeout_s
            )
        except (KafkaError, TimeoutError) as exc:
            raise KafkaUnavailable(f"checkpoint of {name} not stored: {exc!r}") from exc


class SourceCheckpoints:
    """One inbound's view of the store: each position saved says what source it is a position in
    (``Inbound.position_of``), and one saved for another source is not used. A poller whose
    config changed to read another table (or by another column) applied the old table's position
    to the new one and passed over every row before it, with nothing said."""

    def __init__(
        self, store: KafkaCheckpoints, source: dict[str, Any] | None, logger: logging.Logger, *, configured: frozenset[str] | None = None
    ) -> None:
        self._store = store
        self._source = as_saved(source)
        self._logger = logger
        self._configured = configured  # the config's inbound names: a position of another name may be a rename's

    async def load(self, name: str) -> dict[str, Any] | None:
        saved = await self._store.load(name)
        if saved is None and self._source is not None and self._configured is not None:
            saved = await self._renamed(name)
        if saved is None or self._source is None:
            return saved
        of = saved.pop("of", None)
        if of == self._source:
            return saved
        if of is None or same_source(of, self._source):  # a position saved before positions said what of (or said less)
            await self._taken_as_now(name, saved)
            return saved
        self._logger.warning(
            "%s: its saved position is in %s, and the config now reads %s: that position is not used, and reading starts "
            "again from the beginning (records read before come again, with the same event ids where the source gives them)",
            name, _shown(of, self._source), _shown(self._source, self._source),
        )  # fmt: skip
        return None

    async def save(self, name: str, position: dict[str, Any]) -> None:
        await self._store.save(name, {**position, "of": self._source} if self._source is not None else position)

    async def _taken_as_now(self, name: str, position: dict[str, Any]) -> None:
        """Saved again as a position in what the config reads now: a poller saves only when its
        position moves, and until then the next change of the config (a `where` added now, changed
        later) would be judged against the older, shorter description, which agrees with any."""
        try:
            await self.save(name, position)
        except KafkaUnavailable as exc:  # the position is still good to use; the next save says what of
            self._logger.warning("%s: its saved position could not be saved again with what it is in (%s)", name, exc)

    async def _renamed(self, name: str) -> dict[str, Any] | None:
        """The position of an adapter no longer in the config that read this very source (the same
        ``position_of``): the one this adapter was before a rename. Without it a renamed poller
        found no position under its new name and read its source again from the start, every
        record published again (with new event ids where they carry the adapter's name)."""
        assert self._configured is not None and self._source is not None
        former = {
            other: position
            for other, position in (await self._store.load_all()).items()
            if other != name and other not in self._configured and same_source(position.get("of"), self._source)
        }
        if len(former) > 1:
            self._logger.warning(
                "%s: no saved position under this name; %s, no longer in the config, each saved one in the same source: "
                "none is taken, and reading starts from the beginning",
                name, ", ".join(sorted(former)),
            )  # fmt: skip
            return None
        if not former:
            return None
        ((old, position),) = former.items()
        self._logger.warning(
            "%s: no saved position under this name, but %s, no longer in the config, saved one in the same source (%s): "
            "taken as this adapter's own (a rename), and reading goes on from there",
            name, old, _shown(self._source, self._source),
        )  # fmt: skip
        return dict(position)


def as_saved(source: dict[str, Any] | None) -> dict[str, Any] | None:
    """``source`` as it comes back from the store (JSON: tuples become lists, a YAML date its text),
    so that one read back compares equal to the one the config gives now."""
    return None if source is None else json.loads(json.dumps(source, default=str))


def same_source(saved: Any, now: dict[str, Any] | None) -> bool:
    """Whether a position saved in ``saved`` (what ``position_of`` said then) is one in ``now``.
    Equal, or saved by an earlier version of the adapter whose ``position_of`` said less (a poller's
    filter joined it later): every part it said agrees with now. Without that, every saved position
    would be dropped by the upgrade that made ``position_of`` say more, and each source read again
    from its start."""
    if saved == now:
        return True
    if not isinstance(saved, dict) or not isinstance(now, dict) or not saved.keys() < now.keys():
        return False
    return all(saved[k] == now[k] for k in saved)


def _shown(source: Any, order: dict[str, Any]) -> str:
    """``source`` as text, its keys in ``order``'s order (a saved one comes back sorted)."""
    if not isinstance(source, dict):
        return repr(source)
    keys = [*(k for k in order if k in source), *(k for k in source if k not in order)]
    return ", ".join(f"{k} {source[k]}" for k in keys if source[k] is not None) or "nothing"
