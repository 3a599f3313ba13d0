"""One message from a queue-like source (AMQP, MQTT, NATS, files) into the hub, in arrival order.

``Intake.submit(payload)`` parses the body as JSON, maps it with the adapter's ``emit:`` block and
hands the event to Kafka, returning an acknowledgement to await before the source message is
acknowledged. A body that cannot become an event (not JSON, a failed mapping, a schema mismatch)
is kept on the adapter's inbound dead-letter topic with the reason: the source message can then be
acknowledged, and nothing is lost. ``KafkaUnavailable`` (from either path) means: do not
acknowledge; let the source redeliver.
"""

from __future__ import annotations

__all__ = ["Intake", "stop_in_order"]

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

from bus.errors import EventRejected
from bus.mapping import Emitter

if TYPE_CHECKING:  # adapter_api re-exports Intake: adapters import it from there
    from bus.adapter_api import EmitSpec, EventSink


async def _done() -> None:
    return None


class Intake:
    def __init__(self, sink: EventSink, emit: EmitSpec, *, source: str) -> None:
        self._sink = sink
        self._emitter = Emitter(emit, source=source)
        self.parked = 0  # bodies kept on the inbound dead-letter topic so far (a file's manifest counts them)

    async def submit(self, payload: bytes, *, traceparent: str | None = None, origin: Mapping[str, str] | None = None) -> Awaitable[None]:
        """Returns the acknowledgement to await; rejected bodies are parked before this returns."""
        try:
            document: Any = json.loads(payload)
        except ValueError as exc:
            await self._sink.reject(payload, f"invalid JSON: {exc}", headers=origin)
            self.parked += 1
            return _done()
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
            return await self._sink.submit(event)
        except EventRejected as exc:
            await self._sink.reject(raw, str(exc), headers=origin)
            self.parked += 1
            return _done()


async def stop_in_order(
    consume: asyncio.Task[None], pending: asyncio.Queue[Any], acknowledge: asyncio.Task[None], *, grace_s: float = 5
) -> None:
    """Stop a consume task and its in-order acknowledger: no new messages, then the ones whose
    events Kafka already has are acknowledged (bounded by ``grace_s``); the source redelivers the rest."""
    consume.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consume
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(pending.join(), timeout=grace_s)
    acknowledge.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await acknowledge
