"""What every polling inbound shares (``http_poll``, ``graphql_poll``, ``soap_poll``), whatever its
protocol: a task under
the hub's supervisor that polls, waits ``interval`` from the end of one poll to the start of the
next, keeps why the last poll failed (``/readyz`` shows it; the next interval tries again), and
on stop ends after the page in progress. A poller says how to open and close its client, how to
poll once, and where it is (for the log). Also the watermark position they keep (``Position``),
a record's stable id (``record_id``) and rate-limit waits (``wait_seconds``)."""

from __future__ import annotations

__all__ = ["Poller", "Position", "Walk", "record_id", "wait_seconds"]

import asyncio
import collections
import contextlib
import email.utils
import hashlib
import json
from abc import abstractmethod
from collections.abc import Awaitable
from typing import Any, ClassVar, TypeVar

from bus.adapter_api import (
    AdapterConfig,
    Context,
    ExpressionError,
    Health,
    Inbound,
    Intake,
    KafkaUnavailable,
    RetryableError,
    compile_expression,
)


def wait_seconds(value: str, now: float) -> float | None:
    """Retry-After / X-RateLimit-Reset: delta seconds, an epoch time, or an HTTP date."""
    value = value.strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        try:
            return email.utils.parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError):
            return None
    return number - now if number > 1_000_000_000 else number  # an epoch time, or a delta


def record_id(record: Any) -> str:
    """A hash of the record: the event id when ``emit.id`` gives none, stable across re-reads of
    the same version of a record and different for every change."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()[:24]


def _later(a: Any, b: Any) -> bool:
    """a > b for watermark values that may mix numbers and text (compared as text then)."""
    try:
        return bool(a > b)
    except TypeError:
        return str(a) > str(b)


class Position:
    """Watermark and the ids seen at exactly that watermark."""

    def __init__(self, since: Any, seen: set[str], etag: str | None) -> None:
        self.since, self.seen, self.etag = since, seen, etag

    def is_new(self, value: Any, ident: str) -> bool:
        """Whether a record is after this position: a later watermark, or the same one and an id not seen."""
        return self.since in (None, "") or _later(value, self.since) or (value == self.since and ident not in self.seen)

    def advance(self, value: Any, ident: str) -> None:
        """Move to a record if it is the newest yet (its id joins those seen at the same watermark)."""
        if self.since in (None, "") or _later(value, self.since):
            self.since, self.seen = value, {ident}
        elif value == self.since:
            self.seen.add(ident)

    def dump(self) -> dict[str, Any]:
        return {"since": self.since, "seen": sorted(self.seen), "etag": self.etag}


class Walk:
    """One poll's pass over a watermarked API's records. A record is new against where the poll
    began, not against the newest taken so far: an API that does not sort by the watermark (a
    GraphQL connection without its sortKey, a SOAP service in id order, newest first) gave an
    older record after a newer one, and it was dropped as "older". A record met twice in one walk
    (pages that shift while it is read) is taken once. ``position`` moves to the newest taken.

    ``disorder`` names the first record found older than one taken before it in the walk: the
    API does not sort by the watermark, so a position saved before the walk ends (per page, for
    a restart mid-backfill) may pass over older records on the pages not read yet.

    What was taken is remembered for the last ``REMEMBERED`` records only: pages shift by a few
    records (one deleted while the walk reads), and a first poll that backfills millions of
    records must not hold them all (a set of two million took about 300 MB)."""

    REMEMBERED = 10_000

    __slots__ = ("_order", "_taken", "began", "disorder", "position")

    def __init__(self, position: Position) -> None:
        self.began = Position(position.since, set(position.seen), position.etag)
        self.position = position
        self._taken: set[tuple[str, str]] = set()
        self._order: collections.deque[tuple[str, str]] = collections.deque()
        self.disorder = ""

    def take(self, value: Any, ident: str) -> bool:
        """Whether the record is new; if so it is taken and the position moves to it if it is the newest."""
        if not self.began.is_new(value, ident):
            return False
        mark = (str(value), ident)
        if mark in self._taken:
            return False
        self._taken.add(mark)
        self._order.append(mark)
        if len(self._order) > self.REMEMBERED:
            self._taken.discard(self._order.popleft())
        newest = self.position.since
        if not self.disorder and newest not in (None, "") and _later(newest, value):
            self.disorder = f"record {ident!r} at {value!r} came after one at {newest!r}"
        self.position.advance(value, ident)
        return True


C = TypeVar("C", bound=AdapterConfig)


class Poller(Inbound[C]):
    kind: ClassVar[str] = "poll"  # the adapter type, for messages ("http_poll")

    def __init__(self, config: C, ctx: Context, *, id_of: str | None = None) -> None:
        super().__init__(config, ctx)
        self.intake = Intake(self.sink, getattr(config, "emit"), source=f"/inbound/{config.name}")  # noqa: B009 - every poller emits
        self._id_of = compile_expression(id_of) if id_of else None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._problem = "not started"
        self._attention = ""  # what the last poll found to say while it worked (a page repeated, records out of order)
        # The first record this poller found out of watermark order (``Walk.disorder``), kept: from then
        # on it saves its position only after a poll reads to the end, as with ``since.ordered: false``.
        self.unsorted = ""
        self.polls = 0  # completed polls

    @property
    def interval(self) -> float:
        return float(getattr(self.config, "interval").total_seconds())  # noqa: B009 - every poller's config has one

    @abstractmethod
    async def open(self) -> None:
        """Load the saved position and make the client (RetryableError: not yet)."""

    @abstractmethod
    async def close(self) -> None:
        """Release the client."""

    @abstractmethod
    async def poll(self) -> tuple[int, int]:
        """One poll: (records published, pages read). RetryableError ends it with the reason."""

    @abstractmethod
    def where(self) -> str:
        """The position, for the log ("since='2026-05-01T00:00:00Z'")."""

    async def start(self) -> None:
        if self._task is not None:
            return
        if self.ctx.checkpoints is None:
            raise RuntimeError(f"{self.kind} {self.config.name} needs the hub's checkpoint store")
        await self.open()
        self._stopping.clear()
        self._task = self.ctx.spawn(self._run(), name=f"{self.kind}:{self.config.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            self._stopping.set()  # a poll in progress ends after its current page
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, timeout=10)
        await self.close()

    def progress(self) -> dict[str, int | str]:
        return {"polls": self.polls}

    async def health(self) -> Health:
        return Health(not self._problem, self._problem)

    def notice(self, notice: str) -> None:
        """What the last poll found to say (``attention``; empty: nothing): logged at WARNING when it changes."""
        if notice != self._attention:
            if notice:
                self.ctx.logger.warning("%s %s: %s", self.kind, self.config.name, notice)
            else:
                self.ctx.logger.warning(
                    "%s %s: its last poll found nothing wrong with the source's answers again", self.kind, self.config.name
                )
            self._attention = notice

    def attention(self) -> str:
        return self._attention

    def saves_per_page(self, ordered: bool) -> bool:
        """Whether a walk may save its position after each page: the config says the source sorts by
        the watermark (``since.ordered``) and no walk has found otherwise."""
        return ordered and not self.unsorted

    def found_unsorted(self, walk: Walk, ordered: bool, *, advice: str) -> str:
        """After a walk: what to say about a source that is not in watermark order although the
        config says it is (kept from the first walk that found it; empty when there is nothing)."""
        if walk.disorder and not self.unsorted:
            self.unsorted = walk.disorder
        if not (ordered and self.unsorted):
            return ""
        return (
            f"the records are not in watermark order ({self.unsorted}), so the position moves only after a poll reads "
            f"to its last page, and a poll cut short is read again: {advice}, or say since.ordered: false"
        )

    def ident(self, record: Any, digest: str) -> str:
        """A record's id at its watermark (``since.id``), else its digest."""
        if self._id_of is not None:
            with contextlib.suppress(ExpressionError):
                value = self._id_of(record)
                if value is not None:
                    return str(value)
        return digest

    async def publish(self, documents: list[tuple[Any, bytes, str]]) -> int:
        """Hand each (document, raw bytes, event id) to Kafka, then wait for every acknowledgement:
        the caller saves its position only after this returns. RetryableError when Kafka does not
        take them (the position is not saved, the next poll reads them again)."""
        acks: list[Awaitable[None]] = []
        for document, raw, event_id in documents:
            try:
                acks.append(await self.intake.submit_document(document, raw=raw, event_id=event_id))
            except KafkaUnavailable as exc:
                raise RetryableError(f"Kafka did not take the records: {exc}") from exc
        for ack in acks:
            try:
                await ack
            except KafkaUnavailable as exc:
                raise RetryableError(f"Kafka did not acknowledge the records: {exc}") from exc
        return len(acks)

    @property
    def connection(self) -> str | None:
        """The hub connection whose token this poller's calls carry (``auth: {type: oauth2_connection}``)."""
        auth = getattr(self.config, "auth", None)
        return getattr(auth, "connection", None) if getattr(auth, "type", "") == "oauth2_connection" else None

    async def connection_header(self) -> dict[str, str]:
        """The bearer header of the connection, if the config names one; RetryableError (why) when there is no live token."""
        name = self.connection
        if name is None:
            return {}
        if self.ctx.credentials is None:
            raise RetryableError(f"{self.kind} {self.config.name}: the hub has no connections (connections: in the config)")
        return {"Authorization": f"Bearer {await self.ctx.credentials.token(name)}"}

    async def connection_refused(self, headers: dict[str, str]) -> bool:
        """After a 401: refresh the connection's token (once, whoever saw it first); True if there is one to retry with."""
        name = self.connection
        if name is None or self.ctx.credentials is None or "Authorization" not in headers:
            return False
        await self.ctx.credentials.rejected(name, headers["Authorization"].removeprefix("Bearer "))
        return True

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def serving(self) -> None:
        """The source answers: ready while a first poll (a backfill) still walks its pages."""
        self._problem = ""

    async def _run(self) -> None:
        name = self.config.name
        while not self._stopping.is_set():
            try:
                taken, pages = await self.poll()
                self._problem = ""
                self.polls += 1
                if taken:
                    self.ctx.logger.info("%s %s: %d new record(s) on %d page(s); now at %s", self.kind, name, taken, pages, self.where())
            except RetryableError as exc:
                if self._stopping.is_set():
                    break
                self._problem = str(exc)
                self.ctx.logger.warning("%s %s: poll given up until the next interval: %s", self.kind, name, exc)
            except Exception as exc:  # a bug must not end polling silently; it shows in /readyz
                self._problem = f"unexpected error: {exc!r}"
                self.ctx.logger.exception("%s %s: unexpected error", self.kind, name)
            await self.sleep(self.interval)  # from the end of this poll to the start of the next, as documented

    async def sleep(self, seconds: float) -> None:
        """Wait, or less if the adapter is being stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def __repr__(self) -> str:
        return f"<{self.kind} {self.config.name}>"
