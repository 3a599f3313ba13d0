"""``bus migrate cutover RUN``: hand the source over from a finished migration to the live inbound
named by the migration's ``then`` (an ``sql_poll`` of the same table).

The run recorded, before it read the history, the position the live inbound would read from at
that moment (``Inbound.position_now``: for ``sql_poll``, the newest row within its settle horizon).
Every row up to it is in the migration; the cut-over saves it as the inbound's checkpoint in Kafka,
so the live inbound, started next, reads every row changed since, and none before. Rows the
migration also wrote (changed while it ran) are written again by their key: one row each in the
target, holding the newest version, because the live inbound writes after the migration.

Refused: a run that did not finish or was rolled back, an inbound that already has a position
(it has run: the saved position would skip or re-read rows; ``--force`` to replace it), and an
inbound whose config reads another source than when the run recorded the position (another table,
another watermark: the position would skip that source's rows before it). The checkpoint saved says
what it is a position in, as the inbound's own do.

A ``postgres_cdc`` inbound's position is its replication slot, which the run created (or found)
before reading: it keeps every change committed since, so there is nothing to save; the cut-over
says so, and the adapter, started after the migration, applies those changes after the history.
"""

from __future__ import annotations

__all__ = ["cutover"]

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bus.adapter_api import AdapterRegistry, Inbound
from bus.config.loader import LoadedConfig
from bus.errors import BusError
from bus.kafka.clients import make_producer
from bus.kafka.topics import TopicNames
from bus.migrate.journal import Journal
from bus.runtime.checkpoints import as_saved, same_source

_LOG = logging.getLogger("bus.migrate")


def _source_now(loaded: LoadedConfig, registry: AdapterRegistry, name: str, run_id: str, recorded: Any) -> Any:
    """What the inbound reads now (``Inbound.position_of``), refused when it is not what the run
    recorded its position in. A run recorded before runs said so (``recorded`` None) is taken as it is."""
    config = next((c for c in loaded.inbound if c.name == name), None)
    if config is None:
        raise BusError(f"run {run_id} hands over to inbound {name}, which the config no longer has")
    cls = registry.get(config.type, "inbound")
    now = as_saved(cls.position_of(config)) if isinstance(cls, type) and issubclass(cls, Inbound) else None
    if recorded is None:
        return now
    if not same_source(recorded, now):
        raise BusError(
            f"run {run_id} recorded its hand-over position in {_shown(recorded)}, and inbound {name} now reads "
            f"{_shown(now)}: that position would skip rows of what it reads now; run the migration again for it"
        )
    return now


def _shown(source: Any) -> str:
    if not isinstance(source, dict):
        return repr(source)
    return ", ".join(f"{k} {v}" for k, v in source.items() if v is not None) or "nothing"


async def cutover(
    loaded: LoadedConfig,
    run_id: str,
    *,
    state_dir: Path,
    bootstrap: Callable[[], str],
    registry: AdapterRegistry,
    force: bool = False,
) -> dict[str, Any]:
    """``bootstrap`` is asked only when the position goes to Kafka (a ``postgres_cdc`` slot is its own)."""
    from bus.app.setup import create_topics, topic_specs
    from bus.runtime.checkpoints import KafkaCheckpoints, SourceCheckpoints

    journal = Journal(state_dir)
    try:
        run = journal.run(run_id)
    finally:
        journal.close()
    if run is None:
        raise BusError(f"no run {run_id!r} in {state_dir / 'journal.sqlite'}")
    handover = run.options.get("handover")
    if handover is None:
        raise BusError(f"run {run_id} recorded no hand-over position: its migration names no live inbound (then:) or did when it ran")
    if run.status != "finished":
        raise BusError(f"run {run_id} is {run.status}: only a finished run hands over")
    name, position = handover["inbound"], handover["position"]
    source = _source_now(loaded, registry, name, run_id, handover.get("of"))
    if isinstance(position, dict) and position.get("held_by") == "source":  # a replication slot: it is the position
        return {"run": run_id, "inbound": name, "position": position, "replaced": None, "held_by_source": True}
    kafka = loaded.hub.kafka
    topics = TopicNames(kafka.topic_prefix)
    address = bootstrap()
    await create_topics(kafka, address, [s for s in topic_specs(loaded, topics) if s.name == topics.checkpoints])
    producer = make_producer(kafka, address)
    await producer.start()
    try:
        kept = KafkaCheckpoints(producer, kafka, address, topics.checkpoints)
        existing = await kept.load(name)
        if existing is not None and not force:
            raise BusError(
                f"inbound {name} already has a position ({existing}): it has run, and the hand-over would skip or re-read rows; "
                "--force replaces it"
            )
        if position is not None:
            await SourceCheckpoints(kept, source, _LOG).save(name, position)
    finally:
        await producer.stop()
    return {"run": run_id, "inbound": name, "position": position, "replaced": existing}
