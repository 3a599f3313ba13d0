"""One message from a queue-like source (AMQP, MQTT, NATS, files) into the hub, in arrival order.

``Intake.submit(payload)`` parses the body as JSON, maps it with the adapter's ``emit:`` block and
hands the event to Kafka, returning an acknowledgement to await before the source message is
acknowledged. A body that cannot become an event is kept on the adapter's inbound dead-letter
topic with the reason: the source message can then be acknowledged, and nothing is lost.

Isolation: *whatever* goes wrong with one message (larger than 16 MiB, not JSON, nested too deep,
a failed mapping, a schema mismatch, an event too large for Kafka, or an error no one foresaw)
parks that message and nothing else; the consume loop calling ``submit`` never sees it. Only
``KafkaUnavailable`` comes out, meaning: do not acknowledge; let the source redeliver.
"""

from __future__ import annotations

__all__ = ["MAX_MESSAGE_BYTES", "EventSink", "Intake", "Truncated", "stop_in_order"]

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Mapping
from typing import Any, Literal, Protocol

from bus.config.adapters import EmitSpec
from bus.deadletters import TRUNCATED_FROM
from bus.documents import parse_json
from bus.errors import EventRejected, EventTooLarge, KafkaUnavailable
from bus.event import Event
from bus.mapping import Emitter
from bus.runtime.ending import cancel

log = logging.getLogger("bus.intake")


class EventSink(Protocol):
    """Where inbound adapters publish. ``publish`` returns once Kafka has the event.

    ``submit`` hands the event over in call order and returns its acknowledgement to await later,
    for sources with many messages in flight. ``reject`` keeps a message that cannot become an
    event on the adapter's inbound dead-letter topic, with the reason, so the source can be
    acknowledged without losing it. Both raise ``KafkaUnavailable`` like ``publish``.
    ``refused`` only counts: sources that answer their sender (webhooks) call it for a 4xx.
    """

    async def publish(self, event: Event) -> None: ...

    async def submit(self, event: Event) -> Awaitable[None]: ...

    def check(self, event: Event) -> None:
        """Raise EventRejected if ``event`` does not fit its schema; produces nothing. For sources
        that must accept a whole batch or none of it: check every event, then submit them."""

    async def reject(self, payload: bytes, reason: str, *, headers: Mapping[str, str] | None = None) -> None: ...

    def refused(self, outcome: Literal["rejected", "unauthorized", "skipped"]) -> None:
        """Count a request answered with a refusal at the edge (4xx to its sender), or a message
        passed over as configured ("skipped"), so it shows in ``bus_inbound_events_total`` beside
        the accepted ones. Nothing is produced."""


# The largest message read. An event is at most 960 KiB (bus/kafka/clients.py), but a message may
# carry more than its event keeps (a large document of which a few fields are mapped).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class Truncated(bytes):
    """The start of a message too large to be read whole, with its ``size``: a source that can
    stop reading a message part-way (an MQTT packet, bus.queue_inbound's families) hands this
    instead of the whole, and it is parked as a message over ``MAX_MESSAGE_BYTES``."""

    size: int

    def __new__(cls, start: bytes, size: int) -> Truncated:
        made = super().__new__(cls, start)
        made.size = size
        return made


async def _done() -> None:
    return None


class Intake:
    def __init__(self, sink: EventSink, emit: EmitSpec, *, source: str) -> None:
        self._sink = sink
        self._emitter = Emitter(emit, source=source)
        self.parked = 0  # bodies kept on the inbound dead-letter topic so far (a file's manifest counts them)

    async def submit(self, payload: bytes, *, traceparent: str | None = None, origin: Mapping[str, str] | None = None) -> Awaitable[None]:
        """Returns the acknowledgement to await; rejected bodies are parked before this returns."""
        if isinstance(payload, Truncated):  # only its start was read: its size is marked, so it is never replayed
            marked = {**(origin or {}), TRUNCATED_FROM: str(payload.size)}
            return await self.park(payload, f"a message of {payload.size:,} bytes; at most {MAX_MESSAGE_BYTES:,} are read", marked)
        if len(payload) > MAX_MESSAGE_BYTES:
            # Parsed, it would take ten times its size in memory (a queue takes messages of 128 MiB
            # and more): parked unread, its start, size and digest kept (bus/runtime/publisher.py).
            return await self.park(payload, f"a message of {len(payload):,} bytes; at most {MAX_MESSAGE_BYTES:,} are read", origin)
        try:
            document: Any = parse_json(payload)
        except ValueError as exc:
            return await self.park(payload, f"invalid JSON: {exc}", origin)
        return await self.submit_document(document, raw=payload, traceparent=traceparent, origin=origin)

    async def submit_document(
        self,
        document: Any,
        *,
        raw: bytes,
        event_id: str | None = None,
        traceparent: str | None = None,
        origin: Mapping[str, str] | None = None,
    ) -> Awaitable[None]:
        """The same for a document already parsed (a CSV row). ``event_id`` is used when the
        ``emit:`` block has no ``id``: a stable id (file checksum and line) makes a re-read harmless."""
        try:
            event = self._emitter.build(document, traceparent=traceparent)
            if event_id is not None and not self._emitter.has_id:
                event.id = event_id
            return self._parked_if_refused(await self._sink.submit(event), raw, self._with_id(document, event_id, origin))
        except KafkaUnavailable:
            raise
        except EventRejected as exc:
            return await self.park(raw, str(exc), self._with_id(document, event_id, origin))
        except Exception as exc:  # noqa: BLE001 - one message's failure, whatever it is, stays that message's
            # Not foreseen, so worth a look (the park is said at WARNING, with this reason), but no reason to stop reading.
            reason = f"could not map the message: {type(exc).__name__}: {exc}"
            return await self.park(raw, reason, self._with_id(document, event_id, origin))

    async def _parked_if_refused(self, ack: Awaitable[None], raw: bytes, origin: Mapping[str, str] | None) -> None:
        """The acknowledgement, or the message parked when the broker refuses the event as too large
        (its own limit lower than the hub's): it would be refused again at every redelivery."""
        try:
            await ack
        except EventTooLarge as exc:
            await (await self.park(raw, str(exc), origin))

    def _with_id(self, document: Any, event_id: str | None, origin: Mapping[str, str] | None) -> Mapping[str, str] | None:
        """``origin`` plus ``ce_id``: the id the event would have had, when it can be told
        (``bus dlq show EVENT_ID`` then finds the refused message)."""
        found = self._emitter.id_of(document) or event_id
        return {"ce_id": found, **(origin or {})} if found is not None else origin

    async def park(self, raw: bytes, reason: str, origin: Mapping[str, str] | None = None) -> Awaitable[None]:
        """Keep ``raw`` on the inbound dead letters with ``reason``; an acknowledgement already done.
        Raises KafkaUnavailable when Kafka did not take it (the source must redeliver)."""
        await self._sink.reject(raw, reason, headers=origin)
        self.parked += 1
        return _done()


async def stop_in_order(
    consume: asyncio.Task[None], pending: asyncio.Queue[Any], acknowledge: asyncio.Task[None], *, grace_s: float = 5
) -> None:
    """Stop a consume task and its in-order acknowledger: no new messages, then the ones whose
    events Kafka already has are acknowledged (bounded by ``grace_s``); the source redelivers the rest."""
    await cancel(consume)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(pending.join(), timeout=grace_s)
    await cancel(acknowledge)
