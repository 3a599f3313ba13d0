"""``bus positions``: where each polling source reads from, seen and steered from a terminal.

    bus positions list -c bus.yaml               each inbound's saved position, and whether it is for what the config reads now
    bus positions reset NAME -c bus.yaml         forget it: the source is read again from its start
    bus positions adopt NAME -c bus.yaml         keep it for what the config reads now (a filter changed on purpose)

A poller's position (an ``sql_poll``'s watermark, an ``http_poll``'s) lives only on the checkpoint
topic, and says what it is a position in (``Inbound.position_of``: the table, the API's path, the
watermark, the filter). A config change that makes it another source's (a `where` changed, a
fixed query parameter dropped) gets the source read again from its start at the next start, and
the log says so then. This command says so before: ``list`` shows it, ``adopt`` keeps the position
across a change of the filter alone (records the new filter lets in that sit before it are not
read: the operator's call), ``reset`` reads a source again from its start on purpose.

A position changed while the source is being read would be overwritten by the reader's next save:
``reset`` and ``adopt`` refuse unless the inbound is paused (``bus pause inbound NAME`` waits until
every reader stopped), or ``--stopped`` says no process of the hub runs. Sources that keep their
place themselves (a durable consumer, a consumer group, a replication slot) are listed, not
changed: their saved position is a fallback.

Exit codes: 0 done (or nothing to do), 1 refused for what the hub's state is (not paused), 2 a
wrong name or a change that would misread the position.
"""

from __future__ import annotations

__all__ = ["Refused", "Standing", "adopt", "brief", "outcome", "reset", "view"]

import json
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import KafkaError

from bus.adapter_api import AdapterRegistry, Inbound
from bus.app.source_pauses import PAUSE_INBOUND
from bus.config.loader import LoadedConfig
from bus.errors import BusError, KafkaUnavailable
from bus.kafka.clients import make_producer
from bus.kafka.reader import read_topic
from bus.kafka.topics import TopicNames
from bus.runtime.checkpoints import KafkaCheckpoints, as_saved, same_source


class Refused(BusError):
    """Not done because of the hub's state (the inbound is being read): exit 1, not 2."""


@dataclass
class Standing:
    """One inbound's position as the checkpoint topic holds it, against the config."""

    name: str
    type: str
    kept_in_kafka: bool  # False: the source keeps its place, the saved one is a fallback
    reads: dict[str, Any] | None  # what the config reads now (position_of)
    saved: dict[str, Any] | None = None  # the position, without its "of"
    saved_in: dict[str, Any] | None = None  # what it is a position in, as saved (None: saved before positions said)
    state: str = ""  # current | none | another-source | renamed-from
    renamed_from: str | None = None
    paused_by: str | None = None
    differs: list[str] = field(default_factory=list)  # the parts of what is read that changed

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "kept_in": "kafka" if self.kept_in_kafka else "the source",
            "reads": self.reads,
            "state": self.state,
            "position": self.saved,
            "saved_in": self.saved_in,
            "differs": self.differs,
            "renamed_from": self.renamed_from,
            "paused_by": self.paused_by,
        }

    def line(self) -> str:
        head = f"{self.name} ({self.type}"
        head += ", paused by " + self.paused_by + ")" if self.paused_by else ")"
        kept = "" if self.kept_in_kafka else " [the source keeps its place; this is a fallback]"
        if self.state == "none":
            return f"{head}: no position saved: its next start reads from the start{kept}"
        if self.state == "renamed-from":
            return f"{head}: none under this name; takes {self.renamed_from}'s at its next start (a rename): {brief(self.saved)}"
        if self.state == "another-source":
            return (
                f"{head}: saved in another source ({', '.join(self.differs)} changed: was {brief(self.saved_in)}): NOT used, "
                f"its next start reads from the start; `bus positions adopt {self.name}` keeps it{kept}"
            )
        return f"{head}: {brief(self.saved)}{kept}"


def brief(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def _read(loaded: LoadedConfig, bootstrap: str) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The checkpoint topic's latest position per name, and the inbounds paused (by whom)."""
    topics = TopicNames(loaded.hub.kafka.topic_prefix)
    store = KafkaCheckpoints(None, loaded.hub.kafka, bootstrap, topics.checkpoints)  # read only: no producer
    saved = await store.load_all()
    paused: dict[str, str] = {}
    for record in await read_topic(loaded.hub.kafka, bootstrap, topics.control):
        key = (record.key or b"").decode(errors="replace")
        if not key.startswith(PAUSE_INBOUND):
            continue
        try:
            value = json.loads(record.value) if record.value is not None else None
        except (ValueError, RecursionError):
            continue
        name = key[len(PAUSE_INBOUND) :]
        if isinstance(value, dict) and value.get("paused"):
            paused[name] = str(value.get("by") or "someone")
        else:
            paused.pop(name, None)
    return saved, paused


def _inbound_class(registry: AdapterRegistry, kind: str) -> type[Inbound[Any]] | None:
    cls = registry.get(kind, "inbound")
    return cls if isinstance(cls, type) and issubclass(cls, Inbound) else None


def _standings(loaded: LoadedConfig, registry: AdapterRegistry, saved: dict[str, dict[str, Any]], paused: dict[str, str]) -> list[Standing]:
    configured = {c.name for c in loaded.inbound}
    found: list[Standing] = []
    for config in loaded.inbound:
        cls = _inbound_class(registry, config.type)
        reads = as_saved(cls.position_of(config)) if cls is not None else None
        if cls is None or reads is None:
            continue  # nothing it saves is a position in a source (a webhook, a queue's bindings)
        row = Standing(config.name, config.type, cls.position_in_kafka, reads, paused_by=paused.get(config.name))
        position = dict(saved.get(config.name) or {})
        if not position:
            former = [
                other for other, p in saved.items() if other not in configured and same_source(p.get("of"), reads)
            ]  # bus.runtime.checkpoints.SourceCheckpoints takes one such at start
            if len(former) == 1:
                row.state, row.renamed_from = "renamed-from", former[0]
                row.saved = {k: v for k, v in saved[former[0]].items() if k != "of"}
            else:
                row.state = "none"
            found.append(row)
            continue
        row.saved_in = position.pop("of", None)
        row.saved = position
        if row.saved_in is None or same_source(row.saved_in, reads):
            row.state = "current"
        else:
            row.state = "another-source"
            was = row.saved_in if isinstance(row.saved_in, dict) else {}
            row.differs = sorted(k for k in {*was, *reads} if was.get(k) != reads.get(k))
        found.append(row)
    return found


def outcome(action: str, before: Standing) -> tuple[bool, str]:
    """Whether a ``reset`` or an ``adopt`` of ``before`` changed the position, and what it did, in a sentence."""
    if action == "reset":
        if before.state == "none":
            return False, "had no position: its next start reads from the start"
        return True, f"position forgotten (was {brief(before.saved)}): its next start reads the source from its start"
    if before.state == "another-source":
        return True, f"position kept for what it reads now ({', '.join(before.differs)} changed): it goes on from {brief(before.saved)}"
    return False, f"nothing to adopt: {before.line()}"


async def view(loaded: LoadedConfig, registry: AdapterRegistry, bootstrap: str) -> list[Standing]:
    """Every inbound whose position says what source it is in, as the checkpoint topic holds it."""
    saved, paused = await _read(loaded, bootstrap)
    return _standings(loaded, registry, saved, paused)


async def _one(loaded: LoadedConfig, registry: AdapterRegistry, bootstrap: str, name: str, *, stopped: bool, verb: str) -> Standing:
    rows = {row.name: row for row in await view(loaded, registry, bootstrap)}
    row = rows.get(name)
    if row is None:
        known = ", ".join(sorted(rows)) or "none"
        raise BusError(f"no inbound named {name!r} in the config keeps a position (those that do: {known})")
    if not row.kept_in_kafka:
        raise BusError(
            f"inbound {name} ({row.type}) keeps its place in its source (a durable consumer, a consumer group, a replication "
            f"slot): the position saved in Kafka is a fallback, and to {verb} it would change nothing; move the source's own"
        )
    if row.paused_by is None and not stopped:
        raise Refused(
            f"inbound {name} is not paused: a process reading it would save its position over this one; pause it first "
            f"(bus pause inbound {name} --hub URL, which waits until every reader stopped), or say --stopped if no "
            "process of the hub runs"
        )
    return row


async def _write(loaded: LoadedConfig, bootstrap: str, name: str, value: dict[str, Any] | None) -> None:
    topics = TopicNames(loaded.hub.kafka.topic_prefix)
    producer = make_producer(loaded.hub.kafka, bootstrap)
    try:
        await producer.start()
        if value is None:  # a tombstone: the name has no position (what load_all gives for one deleted)
            await producer.send_and_wait(topics.checkpoints, None, key=name.encode())
        else:
            await KafkaCheckpoints(producer, loaded.hub.kafka, bootstrap, topics.checkpoints).save(name, value)
    except KafkaError as exc:
        raise KafkaUnavailable(f"the position of {name} was not written to {topics.checkpoints}: {exc!r}") from exc
    finally:
        await producer.stop()


async def reset(loaded: LoadedConfig, registry: AdapterRegistry, bootstrap: str, name: str, *, stopped: bool = False) -> Standing:
    """Forget ``name``'s position: its next start reads the source from its start."""
    row = await _one(loaded, registry, bootstrap, name, stopped=stopped, verb="reset")
    if row.state == "renamed-from":
        raise BusError(
            f"inbound {name} has no position of its own; it would take {row.renamed_from}'s (a rename) at its next start: "
            f"`bus positions reset {row.renamed_from}` to read from the start instead"
        )
    if row.state != "none":
        await _write(loaded, bootstrap, name, None)
    return row


async def adopt(
    loaded: LoadedConfig, registry: AdapterRegistry, bootstrap: str, name: str, *, stopped: bool = False, force: bool = False
) -> Standing:
    """Keep ``name``'s saved position for what the config reads now."""
    row = await _one(loaded, registry, bootstrap, name, stopped=stopped, verb="adopt")
    if row.state != "another-source":
        return row  # nothing to do: said by the caller
    cls = _inbound_class(registry, row.type)
    filters = cls.position_filters if cls is not None else frozenset()
    order = [k for k in row.differs if k not in filters]
    if order and not force:
        raise BusError(
            f"inbound {name}'s position was saved in {brief(row.saved_in)}, and it now reads {brief(row.reads)}: "
            f"{', '.join(order)} changed, not only its filter ({', '.join(sorted(filters)) or 'none'}), so the position would "
            "be read as a place in what it is not; --force if it is the same source under another name"
        )
    assert row.saved is not None and row.reads is not None
    await _write(loaded, bootstrap, name, {**row.saved, "of": row.reads})
    return row
