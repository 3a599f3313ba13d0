"""One redelivery or backfill per subscriber across every process of the hub: claims on the
control topic (bus.runtime.control).

Two copy jobs to the same subscriber at the same moment each write the window (neither sees the
other's copies, which are not settled yet), and the target gets the events twice. A hub process
refuses a second one it is asked for itself (bus.app.copy_jobs); this is what stops one asked of
another replica, or run by `bus redeliver -c` straight to Kafka.

A job that writes first claims the subscriber: it writes a record keyed
``copy/<subscriber>/<claimant>`` (the claimant a random id of this job) to the control topic,
reads the topic from its start to past that record, and looks at every claim of the subscriber
there that is live (neither released nor expired). The one written first, by its offset in the
topic's one partition, holds the subscriber; every other one releases its claim at once and is
refused (``Busy``, naming the holder). Two claims written at the same moment are ordered by the
broker, and each claimant reads past its own record, so both see the same first one: at most one
of them goes on.

The holder renews its claim every ``RENEW_S`` seconds (each renewal carrying the offset of its
first record, the claim's place in the order, and its progress) and releases it with a tombstone
when it ends, however it ends. A claim not renewed for ``EXPIRES_S`` seconds is dead (its process
was killed) and holds nothing. A holder that could not renew for ``GIVE_UP_S`` seconds stops
writing (``ClaimLost``): by then another process may be about to take the subscriber over.
"""

from __future__ import annotations

__all__ = ["EXPIRES_S", "GIVE_UP_S", "PREFIX", "RENEW_S", "Claim", "Holding", "claim_copies", "claim_of", "holders", "live_claims"]

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from bus.config.models import KafkaConfig
from bus.errors import Busy, ClaimLost, RetryableError
from bus.kafka.clients import make_producer
from bus.kafka.reader import Record, replay

log = logging.getLogger("bus.app.copy_claims")
PREFIX = "copy/"
RENEW_S = 5.0
EXPIRES_S = 30.0  # six renewals missed: a process that held the claim is gone
GIVE_UP_S = 20.0  # before EXPIRES_S, so a holder stops before another may start
_SEND_TIMEOUT_MS = 5000


@dataclass(frozen=True, slots=True)
class Holding:
    """A claim this process holds: its key, and what records the job's progress in it."""

    key: str
    progressed: Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Claim:
    key: str  # copy/<subscriber>/<claimant>
    place: int  # the offset of the claim's first record: the first one holds the subscriber
    what: str  # "a backfill to crm asked at ..."
    by: str  # the host and process that holds it
    progress: str
    renewed: float  # the claimant's clock, seconds since the epoch

    def says(self) -> str:
        """What the claim is, for a refusal or the subscriber's detail."""
        return f"{self.what} ({self.progress}) in {self.by}" if self.progress else f"{self.what} in {self.by}"


def live_claims(records: list[Record], subscriber: str, now: float) -> list[Claim]:
    """The claims on ``subscriber`` in the control topic's ``records`` (in offset order) that are
    neither released nor expired, the holder first."""
    prefix = f"{PREFIX}{subscriber}/"
    latest: dict[str, Claim | None] = {}
    for record in records:
        key = (record.key or b"").decode(errors="replace")
        if key.startswith(prefix):
            latest[key] = claim_of(key, _parsed(key, record.value), record.offset)
    return holders([c for c in latest.values() if c is not None], subscriber, now)


def holders(claims: Iterable[Claim], subscriber: str, now: float) -> list[Claim]:
    """Of ``claims`` (the latest of each key), the live ones on ``subscriber``, the holder first."""
    prefix = f"{PREFIX}{subscriber}/"
    return sorted((c for c in claims if c.key.startswith(prefix) and now - c.renewed < EXPIRES_S), key=lambda c: c.place)


def claim_of(key: str, value: dict[str, Any] | None, offset: int) -> Claim | None:
    """The claim a control record keyed ``key`` at ``offset`` holds (None: released, or not one)."""
    if value is None:
        return None
    try:
        place = value.get("place")
        return Claim(
            key=key,
            place=int(offset if place is None else place),
            what=str(value.get("what") or "a copy job"),
            by=str(value.get("by") or "another process"),
            progress=str(value.get("progress") or ""),
            renewed=float(value["renewed"]),
        )
    except (ValueError, TypeError, KeyError):
        log.warning("control record %s is not a claim this hub can read: ignored", key)
        return None


def _parsed(key: str, value: bytes | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):
        log.warning("control record %s is not JSON: ignored", key)
        return None
    return parsed if isinstance(parsed, dict) else None


@asynccontextmanager
async def claim_copies(kafka: KafkaConfig, bootstrap: str, topic: str, subscriber: str, what: str) -> AsyncIterator[Holding]:
    """Hold ``subscriber`` for a copy job across every process of the hub, for the body of the
    ``async with``; yields the claim's key and a callback that records the job's progress in it. Raises
    ``Busy`` when another claim holds it, and ``ClaimLost`` (in place of the body's cancellation)
    when this one could not be renewed."""
    key = f"{PREFIX}{subscriber}/{secrets.token_hex(8)}"
    by = f"{socket.gethostname()} (pid {os.getpid()})"
    state: dict[str, Any] = {"what": what, "by": by, "progress": "", "place": None}
    # A short timeout: with Kafka out of reach a renewal or the release is given up on soon, and
    # the stop at the end does not wait the hub's produce timeout for them.
    producer = make_producer(kafka, bootstrap, linger_ms=0, request_timeout_ms=_SEND_TIMEOUT_MS)
    try:
        await producer.start()
    except BaseException:
        await producer.stop()  # a start that failed (Kafka away) leaves its connections to close
        raise

    async def write(value: dict[str, Any] | None) -> int:
        body = None if value is None else json.dumps({**value, "renewed": time.time()}).encode()
        sent = await producer.send_and_wait(topic, body, key=key.encode(), partition=0)
        return int(sent.offset)

    async def first_holder() -> Claim | None:
        state["place"] = await write(state)
        records: list[Record] = []
        await replay(kafka, bootstrap, [TopicPartition(topic, 0)], lambda _tp, batch: records.extend(batch))
        live = live_claims(records, subscriber, time.time())
        return live[0] if live else None  # this job's own claim, unless one written before it is live

    try:
        holder = await first_holder()
        if holder is None or holder.key != key:
            await write(None)
    except KafkaError as exc:
        await producer.stop()
        raise RetryableError(
            f"could not claim {subscriber} for {what} on the control topic {topic}: Kafka did not answer ({exc!r})"
        ) from exc
    except BaseException:
        await producer.stop()
        raise
    if holder is None or holder.key != key:
        await producer.stop()
        raise Busy(f"{holder.says() if holder is not None else 'another copy job'} is under way; ask again once it is done")
    job = asyncio.current_task()
    lost: list[str] = []

    def progressed(line: str) -> None:
        state["progress"] = line

    async def renew() -> None:
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(RENEW_S)
            silent = time.monotonic() - renewed
            if silent > GIVE_UP_S:
                lost.append(
                    f"{what}: its claim on {subscriber} could not be renewed on the control topic {topic} for {silent:.0f} s; "
                    f"stopped writing so that another process taking it over does not write the same copies. Ask again: "
                    f"what was written is left out as delivered"
                )
                log.warning("%s", lost[0])
                if job is not None:
                    job.cancel()
                return
            try:
                await asyncio.wait_for(write(state), RENEW_S)
                renewed = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - Kafka away for a moment: try again, give up past GIVE_UP_S
                log.warning("%s: could not renew its claim on %s (%r); trying again", what, subscriber, exc)

    renewer = asyncio.create_task(renew(), name=f"claim {key}")
    try:
        yield Holding(key, progressed)
    except asyncio.CancelledError:
        if lost and job is not None and job.uncancel() == 0:
            raise ClaimLost(lost[0]) from None
        raise
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        try:
            await asyncio.wait_for(write(None), RENEW_S)
        except Exception as exc:  # noqa: BLE001 - the claim expires on its own after EXPIRES_S
            log.warning("%s: could not release its claim on %s (%r); it lapses in %.0f s", what, subscriber, exc, EXPIRES_S)
        finally:
            await producer.stop()
