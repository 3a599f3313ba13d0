"""``bus migrate cutover RUN``: hand the source over from a finished migration to the live inbound
named by the migration's ``then`` (an ``sql_poll`` of the same table).

The run recorded, before it read the history, the position the live inbound would read from at
that moment (``Inbound.position_now``: for ``sql_poll``, the newest row within its settle horizon).
Every row up to it is in the migration; the cut-over saves it as the inbound's checkpoint in Kafka,
so the live inbound, started next, reads every row changed since, and none before. Rows the
migration also wrote (changed while it ran) are written again by their key: one row each in the
target, holding the newest version, because the live inbound writes after the migration.

Refused: a run that did not finish or was rolled back, and an inbound that already has a position
(it has run: the saved position would skip or re-read rows; ``--force`` to replace it).

A ``postgres_cdc`` inbound's position is its replication slot, which the run created (or found)
before reading: it keeps every change committed since, so there is nothing to save; the cut-over
says so, and the adapter, started after the migration, applies those changes after the history.
"""

from __future__ import annotations

__all__ = ["cutover"]

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bus.config.loader import LoadedConfig
from bus.errors import BusError
from bus.kafka.clients import make_producer
from bus.kafka.topics import TopicNames
from bus.migrate.journal import Journal


async def cutover(
    loaded: LoadedConfig, run_id: str, *, state_dir: Path, bootstrap: Callable[[], str], force: bool = False
) -> dict[str, Any]:
    """``bootstrap`` is asked only when the position goes to Kafka (a ``postgres_cdc`` slot is its own)."""
    from bus.app.setup import create_topics, topic_specs
    from bus.runtime.checkpoints import KafkaCheckpoints

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
    if isinstance(position, dict) and position.get("held_by") == "source":  # a replication slot: it is the position
        return {"run": run_id, "inbound": name, "position": position, "replaced": None, "held_by_source": True}
    kafka = loaded.hub.kafka
    topics = TopicNames(kafka.topic_prefix)
    address = bootstrap()
    await create_topics(kafka, address, [s for s in topic_specs(loaded, topics) if s.name == topics.checkpoints])
    producer = make_producer(kafka, address)
    await producer.start()
    try:
        store = KafkaCheckpoints(producer, kafka, address, topics.checkpoints)
        existing = await store.load(name)
        if existing is not None and not force:
            raise BusError(
                f"inbound {name} already has a position ({existing}): it has run, and the hand-over would skip or re-read rows; "
                "--force replaces it"
            )
        if position is not None:
            await store.save(name, position)
    finally:
        await producer.stop()
    return {"run": run_id, "inbound": name, "position": position, "replaced": existing}
