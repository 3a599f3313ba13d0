"""What every polling inbound shares (``http_poll``, ``graphql_poll``, ``soap_poll``), whatever its
protocol: a task under
the hub's supervisor that polls, waits ``interval`` from the end of one poll to the start of the
next, keeps why the last poll failed (``/readyz`` shows it; the next interval tries again), and
on stop ends after the page in progress. A poller says how to open and close its client, how to
poll once, and where it is (for the log). Also the watermark position they keep (``Position``),
a record's stable id (``record_id``) and rate-limit waits (``wait_seconds``)."""

from __future__ import annotations

__all__ = ["Poller", "Position", "Walk", "earlier_by", "record_id", "wait_seconds"]

import asyncio
import collections
import contextlib
import datetime as dt
import email.utils
import hashlib
import json
import math
import re
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
    finish_read,
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
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now)
        except (TypeError, ValueError, OverflowError):
            return None
    if not math.isfinite(number):  # "nan", "inf", 1e999: no wait a server meant; the caller's own backoff
        return None
    return max(0.0, number - now if number > 1_000_000_000 else number)  # an epoch time (past: none), or a delta


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


_TIME = re.compile(r"(\d{4}-\d{2}-\d{2})(?:([T ])(\d{2}:\d{2}(?::\d{2})?)(\.\d+)?)?(Z|[+-]\d{2}(?::?\d{2})?)?")


def earlier_by(value: Any, seconds: float) -> Any:
    """A watermark value ``seconds`` earlier, written as the API wrote it (an ISO 8601 time with
    its own separator, fraction and zone; a date; epoch seconds or milliseconds); None when it is
    not a time."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        scale = 1000 if abs(value) >= 100_000_000_000 else 1  # epoch milliseconds from 1973 on
        moved = value - seconds * scale
        return int(moved) if isinstance(value, int) else moved
    if not isinstance(value, str):
        return None
    parts = _TIME.fullmatch(value.strip())
    if parts is None:
        return None
    day, sep, clock, fraction, zone = parts.groups()
    try:  # a fraction finer than microseconds (.NET writes seven digits) is read to six, written back as long
        moment = dt.datetime.fromisoformat(f"{day}T{clock or '00:00'}{(fraction or '')[:7]}{_offset(zone)}")
    except ValueError:
        return None
    moment -= dt.timedelta(seconds=seconds)
    if clock is None:
        return moment.date().isoformat() + (zone or "")
    shown = moment.strftime("%H:%M:%S" if clock.count(":") == 2 else "%H:%M")
    if fraction:
        shown += f".{moment.microsecond:06d}"[: len(fraction)].ljust(len(fraction), "0")
    return f"{moment.date().isoformat()}{sep}{shown}{zone or ''}"


def _offset(zone: str | None) -> str:
    if zone is None:
        return ""
    if zone == "Z":
        return "+00:00"
    digits = zone[1:].replace(":", "")
    return f"{zone[0]}{digits[:2]}:{digits[2:] or '00'}"


def _in_order(mark: tuple[Any, str]) -> tuple[int, float, str, str]:
    """A (watermark, id) in watermark order: numbers by value, anything else as text."""
    value, ident = mark
    if isinstance(value, int | float) and not isinstance(value, bool):
        return 0, float(value), "", ident
    return 1, 0.0, str(value), ident


class Position:
    """Watermark and the ids seen at exactly that watermark; with an ``overlap``, also the records
    taken within that much before it (``recent``: (watermark, id)), which a poll asks for again.

    Many APIs make a record visible some time after records changed later (a search index that
    lags, a replica, a record stamped before its transaction commits: HubSpot's search, Salesforce's
    SystemModstamp). Asked from the last watermark seen, such a record came too late and was
    never read. With an overlap each poll asks from that much earlier; a record in that window
    not taken before is new, and one taken before (remembered in the position, the newest
    ``RECENT`` of them) is not published again."""

    RECENT = 5_000  # records remembered in the overlap window: the checkpoint stays well under a Kafka record's limit

    def __init__(
        self, since: Any, seen: set[str], etag: str | None, *, overlap: float = 0.0, recent: set[tuple[Any, str]] | None = None
    ) -> None:
        self.since, self.seen, self.etag = since, seen, etag
        self.overlap = overlap
        self.recent: set[tuple[Any, str]] = recent or set()
        self.crowded = False  # more records in the window than RECENT: some read again are published again

    def copy(self) -> Position:
        return Position(self.since, set(self.seen), self.etag, overlap=self.overlap, recent=set(self.recent))

    def asked(self) -> Any:
        """The watermark a poll asks from: the position, or ``overlap`` before it (when it is a time)."""
        if not self.overlap or self.since in (None, ""):
            return self.since
        earlier = earlier_by(self.since, self.overlap)
        return self.since if earlier is None else earlier

    def is_new(self, value: Any, ident: str) -> bool:
        """Whether a record is after this position: a later watermark, or the same one and an id not
        seen; with an overlap, also an earlier one in the window not taken before."""
        if self.since in (None, "") or _later(value, self.since):
            return True
        if value == self.since:
            return ident not in self.seen
        if not self.overlap or (value, ident) in self.recent:
            return False
        floor = self.asked()
        return floor != self.since and not _later(floor, value)

    def advance(self, value: Any, ident: str) -> None:
        """Move to a record if it is the newest yet (its id joins those seen at the same watermark);
        with an overlap, an earlier one is remembered as taken."""
        if self.since in (None, "") or _later(value, self.since):
            if self.overlap and self.since not in (None, ""):
                self.recent.update((self.since, seen) for seen in self.seen)
            self.since, self.seen = value, {ident}
        elif value == self.since:
            self.seen.add(ident)
        elif self.overlap:
            self.recent.add((value, ident))

    def dump(self) -> dict[str, Any]:
        found: dict[str, Any] = {"since": self.since, "seen": sorted(self.seen), "etag": self.etag}
        if self.overlap and self.recent:
            floor = self.asked()
            kept = [mark for mark in self.recent if floor == self.since or not _later(floor, mark[0])]  # the window's only
            if len(kept) > self.RECENT:
                self.crowded = True
                kept = sorted(kept, key=_in_order)[-self.RECENT :]
            self.recent = set(kept)
            found["recent"] = [[value, ident] for value, ident in sorted(kept, key=_in_order)]
        return found

    @classmethod
    def load(cls, saved: dict[str, Any], *, overlap: float = 0.0) -> Position:
        recent = {(value, str(ident)) for value, ident in saved.get("recent") or ()}
        return cls(saved.get("since"), set(saved.get("seen") or ()), saved.get("etag"), overlap=overlap, recent=recent)


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

    __slots__ = ("_newest", "_order", "_taken", "began", "disorder", "position")

    def __init__(self, position: Position) -> None:
        self.began = position.copy()
        self.position = position
        self._taken: set[tuple[str, str]] = set()
        self._order: collections.deque[tuple[str, str]] = collections.deque()
        self._newest: Any = None  # the newest watermark taken in this walk
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
        # Against the newest taken in this walk: one in an overlap's window (before the position)
        # comes first in a sorted answer, and is in order.
        newest = self._newest
        if newest is None or _later(value, newest):
            self._newest = value
        elif not self.disorder and _later(newest, value):
            self.disorder = f"record {ident!r} at {value!r} came after one at {newest!r}"
        self.position.advance(value, ident)
        return True


C = TypeVar("C", bound=AdapterConfig)


class Poller(Inbound[C]):
    kind: ClassVar[str] = "poll"  # the adapter type, for messages ("http_poll")
    one_reader: ClassVar[bool] = True  # one replica polls: each would publish every record, on the API's rate limit
    position_in_kafka: ClassVar[bool] = True  # the watermark: only the checkpoint topic keeps it

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
        # Records of the poll under way handed to Kafka: a stop lets that poll end (its position
        # saved), where one that holds none yet (waiting for the source to answer) ends at once.
        self._holding = False

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
            self._stopping.set()  # a poll that holds records ends after its current page; one waiting for the source, now
            await finish_read(task, holding=self._holding)
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

    @staticmethod
    def crowded(position: Position) -> str:
        """What to say about the overlap: a watermark it cannot move back (not a time), or a window
        that held more records than the position remembers."""
        if position.overlap and position.since not in (None, "") and position.asked() == position.since:
            return (
                f"since.overlap cannot ask from before the watermark {position.since!r}: it is not a time (ISO 8601, epoch "
                "seconds or milliseconds), so each poll asks from the watermark itself"
            )
        if not position.crowded:
            return ""
        return (
            f"more than {position.RECENT:,} records changed within since.overlap of the watermark: the oldest of them are not "
            "remembered, and a poll that reads them again publishes them again (with the same event ids); shorten the overlap"
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
        self._holding = True  # until the poll ends (_run)
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
            finally:
                self._holding = False
            await self.sleep(self.interval)  # from the end of this poll to the start of the next, as documented

    async def sleep(self, seconds: float) -> None:
        """Wait, or less if the adapter is being stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def __repr__(self) -> str:
        return f"<{self.kind} {self.config.name}>"
