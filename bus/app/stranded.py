"""Subscribers taken out of the config while their topics still hold work: said at start.

A subscriber removed from the config, or renamed (``erp`` to ``erp-v2``: a new subscriber with
topics of its own), leaves its delivery topic and its dead-letter topic behind. Events routed to
it that it had not delivered yet (a backlog built while its target was down) and its open dead
letters were left there with nothing said: no worker reads them again, and ``bus dlq`` and the
console list only configured subscribers. Each process of the outbound role now looks once at
start, in the background, for delivery topics of this hub's prefix whose subscriber is not in
the config; for each one that still holds work it logs a WARNING with the counts and what to do,
sets ``bus_stranded_events{subscriber, kind}`` and shows it in ``/readyz``'s detail.

"Not delivered" is counted as the events past the delivery group's committed offsets (the end
of each partition minus its committed offset): what no worker settled and committed. A removed
subscriber whose backlog was delivered, and whose dead letters were handled, is said at INFO.

An inbound adapter taken out of the config leaves its inbound dead letters (``<prefix>.dlq._in.NAME``:
the raw messages it could not turn into events) the same way, and ``bus dlq`` lists only configured
names: each process of the inbound role looks for those too, named ``_in.NAME`` as ``bus dlq`` names them.
"""

from __future__ import annotations

__all__ = ["Stranded", "find_stranded", "report_stranded"]

import logging
from dataclasses import dataclass

from aiokafka import TopicPartition

from bus.config.models import KafkaConfig
from bus.deadletters import DeadLetters, Filter
from bus.kafka.clients import make_admin
from bus.kafka.topics import TopicNames
from bus.kafka.watermarks import Watermarks
from bus.ledger import Reconciler
from bus.metrics import STRANDED_EVENTS

log = logging.getLogger("bus.app.stranded")


@dataclass(frozen=True)
class Stranded:
    subscriber: str
    undelivered: int  # events on its delivery topic past its group's committed offsets
    dead_letters: int  # open ones (neither replayed nor purged)

    @property
    def holds_work(self) -> bool:
        return bool(self.undelivered or self.dead_letters)


async def find_stranded(
    kafka: KafkaConfig, bootstrap: str, topics: TopicNames, configured: set[str] | None, inbound: set[str] | None = None
) -> list[Stranded]:
    """Each subscriber of this prefix that has a delivery topic and is not in ``configured``, and
    each inbound adapter that has an inbound dead-letter topic and is not in ``inbound`` (as
    ``_in.NAME``). None: not looked for (a process that does not run that role)."""
    admin = make_admin(kafka, bootstrap)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    found = []
    reconciler, ends, letters = Reconciler(kafka, bootstrap, topics), Watermarks(kafka, bootstrap), DeadLetters(kafka, bootstrap, topics)
    try:
        if inbound is not None:
            start = topics.inbound_dead_letter("")
            for adapter in sorted({name.removeprefix(start) for name in existing if name.startswith(start)} - inbound):
                dead = sum([len(batch) async for batch in letters.scan([f"_in.{adapter}"], Filter())])
                found.append(Stranded(f"_in.{adapter}", 0, dead))
        start = topics.delivery("")
        removed = (
            sorted({name.removeprefix(start) for name in existing if name.startswith(start)} - configured) if configured is not None else []
        )
        for name in removed:
            committed = await reconciler.committed(name)
            partitions = {TopicPartition(topics.delivery(name), p) for p in committed}
            end = await ends.ends(partitions)
            undelivered = sum(max(0, end.get(tp, 0) - committed[tp.partition]) for tp in partitions)
            dead = 0
            if topics.dead_letter(name) in existing:
                dead = sum([len(batch) async for batch in letters.scan([name], Filter())])
            found.append(Stranded(name, undelivered, dead))
    finally:
        await ends.stop()
    return found


async def report_stranded(
    kafka: KafkaConfig, bootstrap: str, topics: TopicNames, configured: set[str] | None, inbound: set[str] | None = None
) -> list[Stranded]:
    """``find_stranded``, said: a WARNING and the gauge for each one that holds work."""
    found = await find_stranded(kafka, bootstrap, topics, configured, inbound)
    for item in found:
        STRANDED_EVENTS.labels(item.subscriber, "dead_letters").set(item.dead_letters)
        if item.subscriber.startswith("_in."):
            adapter = item.subscriber.removeprefix("_in.")
            if item.dead_letters:
                log.warning(
                    "inbound adapter %s is no longer in the config, but %s holds %d open dead letter(s): messages it could not "
                    "read, kept raw, that nothing lists now (bus dlq takes configured names). Put it back in the config to list "
                    "and purge them (bus dlq list --subscriber _in.%s) or read that topic; fix them at their source and send "
                    "them again; once they are done with, delete the topic",
                    adapter,
                    topics.inbound_dead_letter(adapter),
                    item.dead_letters,
                    adapter,
                )
            else:
                log.info("inbound adapter %s is no longer in the config; its inbound dead letters are all handled", adapter)
            continue
        STRANDED_EVENTS.labels(item.subscriber, "undelivered").set(item.undelivered)
        if not item.holds_work:
            log.info("subscriber %s is no longer in the config; its topics hold nothing left to deliver", item.subscriber)
            continue
        log.warning(
            "subscriber %s is no longer in the config, but its topics hold %d event(s) it never delivered (%s) and %d open "
            "dead letter(s) (%s): nothing reads them now. Put it back in the config (its name as it was) to deliver them and "
            "to replay or purge its dead letters; once they are done with, delete those topics",
            item.subscriber,
            item.undelivered,
            topics.delivery(item.subscriber),
            item.dead_letters,
            topics.dead_letter(item.subscriber),
        )
    return found
