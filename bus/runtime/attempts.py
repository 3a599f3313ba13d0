"""One event of a subscriber, from its record to settled: read, called (through the gate, with
retries as the policy says), delivered or dead-lettered. The worker (``bus.runtime.delivery``)
runs one of these at a time per key, and any number of keys at once.
"""

from __future__ import annotations

__all__ = ["EventDelivery", "Stopping", "wait_unless"]

import asyncio
import dataclasses
import logging
import time
from typing import Any

from bus.adapter_api import Outbound
from bus.codec import Codec
from bus.errors import BusError, PermanentError, RetryableError
from bus.event import Event, now_rfc3339
from bus.logs import EVENT_TRACE, REDACTOR
from bus.metrics import DELIVERIES, DELIVERY_ATTEMPTS, DELIVERY_SECONDS, END_TO_END_SECONDS
from bus.runtime.commits import Bookkeeper
from bus.runtime.gate import TargetGate
from bus.runtime.retry import RetryPolicy, event_age
from bus.runtime.subscriber_state import SubscriberState
from bus.tracing import Tracing

log = logging.getLogger("bus.runtime.delivery")
Record = Any  # aiokafka's ConsumerRecord (aiokafka ships no type information)


class Stopping(Exception):
    """Raised inside a delivery when stop() or a rebalance interrupts a wait."""


async def wait_unless(seconds: float, closing: asyncio.Event) -> None:
    """Sleep, unless ``closing`` is set first (the partition is given up: stop, rebalance)."""
    try:
        async with asyncio.timeout(seconds):
            await closing.wait()
    except TimeoutError:
        return
    raise Stopping


def _id_of(record: Record) -> str:
    """The event id of a record that could not be read (from its CloudEvents header), else its position."""
    for name, value in record.headers or ():
        if name == "ce_id" and value:
            return str(value.decode(errors="replace"))
    return f"{record.topic}/{record.partition}/{record.offset}"


def _since_event(event: Event) -> float | None:
    return event_age(event.time, time.time())


class EventDelivery:
    def __init__(
        self,
        adapter: Outbound,  # type: ignore[type-arg]
        *,
        retry: RetryPolicy,
        gate: TargetGate,
        codec: Codec,
        books: Bookkeeper,
        health: SubscriberState,
        tracing: Tracing,
    ) -> None:
        self.adapter = adapter
        self.name = adapter.config.name
        self.retry = retry
        self.gate = gate
        self._codec = codec
        self._books = books
        self.health = health
        self._tracing = tracing
        self._delivered = DELIVERIES.labels(self.name, "delivered")
        self._retried = DELIVERIES.labels(self.name, "retried")
        self._attempts = DELIVERY_ATTEMPTS.labels(self.name)
        self._latency = DELIVERY_SECONDS.labels(self.name)
        self._end_to_end = END_TO_END_SECONDS.labels(self.name)
        self._bug_logged: set[str] = set()  # adapter exceptions already logged with a traceback, by type

    async def settle(self, record: Record, closing: asyncio.Event) -> bool:
        """Deliver or dead-letter one record; True when delivered."""
        where = (record.partition, record.offset)
        while True:
            try:
                if not self._codec.knows_value(record.value):
                    await self._codec.learn_ids((record.value,))  # a newer writer version: read as this hub's version
                schema, data = self._codec.decode(record.value or b"")
                event = Event.from_kafka(schema, data, record.key, record.headers)
                break
            except RetryableError as exc:  # the registry cannot answer yet: not the event's fault
                self.health.failed(where, str(exc))
                await wait_unless(1.0, closing)
            except PermanentError as exc:
                await self._dead_letter(record, exc, attempts=0, closing=closing)
                self._books.settled(record, _id_of(record), delivered=False, attempts=0, failures=[(now_rfc3339(), str(exc))])
                return False
            except Exception as exc:  # noqa: BLE001 - a record that cannot be read is that record's problem alone
                unreadable = PermanentError(f"cannot read the record: {exc!r}")
                await self._dead_letter(record, unreadable, attempts=0, closing=closing)
                self._books.settled(record, _id_of(record), delivered=False, attempts=0, failures=[(now_rfc3339(), str(unreadable))])
                return False
        token = EVENT_TRACE.set(event.traceparent)  # its log lines carry its trace and span ids
        try:
            return await self._settle_event(record, event, where, closing)
        finally:
            EVENT_TRACE.reset(token)

    async def _settle_event(self, record: Record, event: Event, where: tuple[int, int], closing: asyncio.Event) -> bool:
        first_attempt = time.monotonic()
        attempt = 0
        failures: list[tuple[str, str]] | None = None  # each failed attempt's answer, for the lineage (none on the happy path)
        while True:
            if not self.gate.flowing.is_set() and not await self.gate.until_flowing(closing):
                raise Stopping  # paused, then given up (stop, rebalance): not settled, redelivered
            delay = self.gate.rate_delay()
            if delay > 0:
                await wait_unless(delay, closing)
            started = time.perf_counter()
            error: BusError | None = None
            blocked = 0.0
            try:
                blocked = await self._call(event, closing)
            except Stopping:
                raise
            except (BusError, Exception) as exc:  # noqa: BLE001 - an adapter's bug is retried like an outage, never fatal
                error = exc if isinstance(exc, (PermanentError, RetryableError)) else self._adapter_bug(exc)
            if blocked <= 0:
                attempt += 1
                if isinstance(error, RetryableError):
                    self.gate.failed()
                    self.health.failed(where, str(error))
                else:  # delivered, or refused: either way the target answered
                    self.gate.answered()
                if error is not None:
                    failures = failures or []
                    if len(failures) < 1000:  # bounded however long it retries (the lineage keeps the first and last few)
                        failures.append((now_rfc3339(), REDACTOR.redact(str(error))))
                    else:
                        failures[-1] = (now_rfc3339(), REDACTOR.redact(str(error)))
            since = _since_event(event)
            step = self.retry.next_step(attempt, time.monotonic() - first_attempt if since is None else since, error=error, blocked=blocked)
            if step.kind == "done":
                self._latency.observe(time.perf_counter() - started)
                if since is not None:
                    self._end_to_end.observe(since)
                self._delivered.inc()
                self._books.settled(record, event.id, delivered=True, attempts=attempt, failures=failures)
                return True
            if step.kind == "dead_letter":
                assert step.error is not None
                await self._dead_letter(record, step.error, attempts=attempt, closing=closing)
                if step.error is not error:  # a reason of its own (too old, too many attempts): the last answer
                    failures = [*(failures or []), (now_rfc3339(), REDACTOR.redact(str(step.error)))]
                self._books.settled(record, event.id, delivered=False, attempts=attempt, failures=failures)
                return False
            if step.kind == "retry":
                self._retried.inc()  # counted when a retry follows: the last failure of a dead-lettered event is not one
                log.debug("delivery %s of %s failed (%s); retry in %.2fs", self.name, event.id, error, step.delay)
            await wait_unless(step.delay, closing)

    def _adapter_bug(self, exc: Exception) -> RetryableError:
        """An adapter raised neither RetryableError nor PermanentError: a bug. Logged with its
        traceback once per exception type (not per event), then retried like an outage."""
        kind = type(exc).__name__
        if kind not in self._bug_logged:
            self._bug_logged.add(kind)
            log.error("outbound %s raised %r, which is neither retryable nor permanent (a bug); retrying", self.name, exc, exc_info=exc)
        return RetryableError(f"adapter error: {exc!r}")

    async def _call(self, event: Event, closing: asyncio.Event) -> float:
        """One call to the target, unless the circuit is open: then how long to wait, and no call.

        The breaker is asked only once a slot is held, right before the call, so events queued
        for a slot when the circuit opens do not call the failing target.
        """
        async with self.gate.slots:
            if closing.is_set():
                raise Stopping  # waited for a slot past a stop or rebalance: not begun, leave it
            wait = self.gate.blocked()
            if wait > 0:
                return wait
            self._attempts.inc()
            try:
                if self._tracing.enabled:  # one span per attempt; the target gets its traceparent
                    with self._tracing.span(
                        f"deliver {self.name}", event.traceparent, kind="client", attributes={"bus.event_id": event.id}
                    ) as tp:
                        await self.adapter.deliver(dataclasses.replace(event, traceparent=tp or event.traceparent))
                else:
                    await self.adapter.deliver(event)
            except asyncio.CancelledError:
                self.gate.cut()  # a call cut (a stop): were it the half-open probe, none would ever go again
                raise
            return 0.0

    async def _dead_letter(self, record: Record, error: BusError, *, attempts: int, closing: asyncio.Event) -> None:
        await self._books.dead_letter(record, error, attempts=attempts, wait=lambda s: wait_unless(s, closing))
