"""The aggregator: per key, combine events over a tumbling window or a count, crash-safely.

State lives in memory and on a compacted changelog topic (one record per key, on the partition
the key's events come from). The router produces the changelog record in the same batch as
everything else and commits the batch only after Kafka acknowledged it, so:

- a crash loses nothing: the new owner of a partition reloads its keys' state from the changelog;
- a crash does not double-count: each key's state remembers the offset of the last event it
  applied, and a redelivered event at or below it is skipped (one key lives on one partition,
  so its offsets only grow);
- an emission carries a deterministic id (``<route>:<key>:<window>``): if a crash repeats it,
  the subscriber sees the same idempotency key twice.

Windows follow the router's clock (processing time), tumbling, aligned to multiples of their
length since the epoch; ``tick`` closes the ones whose end has passed. Aggregated values must be
numbers or strings (they are kept as JSON).

Change detection: ``previous`` gives each result the key's previous result, ``empty_windows``
reports the first window a key falls silent in (count 0), and ``emit_when`` lets through only
the results that matter ("usage fell by more than half"); the others still become ``previous``.
"""

from __future__ import annotations

__all__ = ["Aggregator", "Emission", "TooManyKeys"]

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bus.config.routes import AGGREGATE_FIELD, AggregateConfig
from bus.errors import PermanentError
from bus.expr import Compiled, compile_expression
from routing.router import RouteStats

log = logging.getLogger("routing.aggregate")


@dataclass(slots=True)
class _State:
    partition: int
    offset: int = -1  # last applied source offset
    window: int | None = None  # open time window's start (epoch seconds), or count window's number
    count: int = 0
    acc: dict[str, Any] = field(default_factory=dict)
    previous: dict[str, Any] | None = None  # the last result's count and fields (``previous: true``)

    def dump(self) -> bytes:
        raw = {"offset": self.offset, "window": self.window, "count": self.count, "acc": self.acc}
        if self.previous is not None:
            raw["previous"] = self.previous
        return json.dumps(raw).encode()


@dataclass(frozen=True, slots=True)
class Emission:
    key: str
    partition: int
    id: str
    record: dict[str, Any]  # key, window_start, window_end, count and the configured fields


class TooManyKeys(PermanentError):
    """An event of a new key when the aggregate already holds ``max_keys``: its dead letter's reason."""


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Aggregator:
    def __init__(self, route: str, config: AggregateConfig, stats: RouteStats | None = None) -> None:
        self.route = route
        self.max_keys = config.max_keys
        self._full = False  # at max_keys: said once, and once more when there is room again
        self.stats = stats if stats is not None else RouteStats()
        self.stats.keys = 0
        self.window_seconds = int(config.window.total_seconds()) if config.window else None
        self.count_limit = config.count
        self._fields: list[tuple[str, str, Compiled | None]] = []
        for name, text in config.fields.items():
            match = AGGREGATE_FIELD.match(text.strip())
            assert match is not None  # checked at config load
            fn = match.group(1) or match.group(2)
            self._fields.append((name, fn, compile_expression(match.group(3)) if match.group(3) else None))
        self.keep_previous = config.previous
        self.empty_windows = config.empty_windows
        self._emit_when = compile_expression(config.emit_when) if config.emit_when else None
        self.state: dict[str, _State] = {}
        # Time windows: the keys whose window starts at each start (aligned, so there are few), for
        # ``tick`` to visit only the windows that end. It visited every key the router had ever
        # seen, five times a second: a million keys kept a core busy. Entries can be stale (a key
        # moved on or dropped); ``tick`` checks each against the key's state.
        self._starting: dict[int, dict[str, None]] = {}
        # Keys left with no window open (time windows, without ``previous``), forgotten once their
        # last event is committed: before that a replay after a crash could count it again. Kept,
        # every key the router had ever seen stayed in memory (an order id: without end).
        self._closed: dict[str, None] = {}
        self._committed: dict[int, int] = {}  # partition -> the next offset to read, as committed
        self._new_commits = False

    def wanted(self, emission: Emission) -> bool:
        """Does ``emit_when`` let this result through? (An error in it counts as no.)"""
        if self._emit_when is None:
            return True
        try:
            return bool(self._emit_when(emission.record, {"key": emission.key, "id": emission.id}))
        except ValueError:
            return False

    # -- durability ------------------------------------------------------------------------
    def load(self, key: str, value: bytes | None, partition: int) -> None:
        """Apply one changelog record (the last one per key wins, as compaction would leave it)."""
        if value is None:
            self.state.pop(key, None)
            self._counted()
            return
        try:
            raw = json.loads(value)
            state = _State(partition, int(raw["offset"]), raw["window"], int(raw["count"]), dict(raw["acc"]), raw.get("previous"))
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            # Not a state the router wrote: skipped, said (raised, it stopped the router at every start).
            log.warning("aggregate %s: the state of key %r cannot be read (%r); the key starts anew", self.route, key, exc)
            self.state.pop(key, None)
            self._counted()
            return
        self.state[key] = state  # kept even past max_keys (after it was lowered): state is never dropped
        self._counted()
        self._track(key, state)
        if self._is_closed(state):
            self._closed[key] = None

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget keys of partitions this process no longer owns (their new owner reloads them)."""
        self.state = {k: s for k, s in self.state.items() if s.partition not in partitions}
        for partition in partitions:
            self._committed.pop(partition, None)
        self._counted()

    def committed(self, partition: int, offset: int) -> None:
        """The router committed ``partition`` up to ``offset`` (the next to read): no event below it comes again."""
        self._committed[partition] = offset
        self._new_commits = True

    def forget_settled(self) -> list[tuple[str, int]]:
        """Forget the closed keys whose last event is committed; (key, partition) of each, for the
        changelog's tombstone (so that a reload does not bring them back)."""
        if not self._new_commits or not self._closed:
            return []
        self._new_commits = False
        gone: list[tuple[str, int]] = []
        for key in list(self._closed):
            state = self.state.get(key)
            if state is None or not self._is_closed(state):  # reopened by an event, or already gone
                del self._closed[key]
            elif state.offset < self._committed.get(state.partition, -1):
                del self.state[key], self._closed[key]
                gone.append((key, state.partition))
        if gone:
            self._counted()
        return gone

    def _counted(self) -> None:
        """Keys held changed: the gauge, and the WARNING when the limit is reached or left."""
        held = self.stats.keys = len(self.state)
        if held >= self.max_keys and not self._full:
            self._full = True
            log.warning(
                "aggregate %s holds its max_keys (%s) keys: events of new keys are dead letters until keys are forgotten "
                "or aggregate.max_keys is raised",
                self.route,
                f"{self.max_keys:,}",
            )
        elif held < self.max_keys and self._full:
            self._full = False
            log.warning("aggregate %s holds %s keys, under its max_keys (%s): events of new keys are aggregated again",
                        self.route, f"{held:,}", f"{self.max_keys:,}")  # fmt: skip

    def _is_closed(self, state: _State) -> bool:
        return self.window_seconds is not None and not self.keep_previous and state.window is None and state.count == 0

    # -- events ----------------------------------------------------------------------------
    def add(
        self, key: str, *, partition: int, offset: int, folds: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]], now: float
    ) -> tuple[list[Emission], bytes] | None:
        """Fold one event in: its (scope, meta), or each of its split elements', as one step (one
        offset, one changelog value), so a replay neither loses nor repeats part of an event.
        Returns (emissions, changelog value), or None for a replayed event."""
        state = self.state.get(key)
        if state is None:
            if len(self.state) >= self.max_keys:
                raise TooManyKeys(
                    f"aggregate {self.route} holds its max_keys ({self.max_keys:,}) keys in this router process, and this "
                    "event's key is a new one: raise aggregate.max_keys (with the router's memory) and replay it"
                )
            state = self.state[key] = _State(partition)
            self._counted()
        if offset <= state.offset:
            return None  # already applied before a crash or rebalance: counting it again would be wrong
        emissions: list[Emission] = []
        if self.window_seconds is not None:
            start = int(now // self.window_seconds * self.window_seconds)
            if state.window is not None and state.window != start:
                emissions.append(self._close(key, state))
                state.window = start  # not the armed empty window _close may have set: this event opens its own
            if state.window is None:
                state.window = start
            self._track(key, state)
        elif state.window is None:
            state.window = 0
        for scope, meta in folds:
            self._fold(state, scope, meta)
            if self.count_limit is not None and state.count >= self.count_limit:
                emissions.append(self._close(key, state))  # a count window may end in the middle of an event's elements
        state.offset = offset
        return emissions, state.dump()

    def tick(self, now: float) -> list[tuple[Emission, bytes]]:
        """Close time windows that have ended; returns each emission with its key's new state."""
        if self.window_seconds is None:
            return []
        closed = []
        for start in [s for s in self._starting if now >= s + self.window_seconds]:
            for key in self._starting.pop(start):
                state = self.state.get(key)
                if state is None or state.window != start:
                    continue  # moved on to another window, or forgotten: not this window's any more
                # An open window with events, or (empty_windows) the window after one, armed by _close.
                if state.count or self.empty_windows:
                    closed.append((self._close(key, state), state.dump()))
                    self._track(key, state)  # the next window _close armed, if any
                    if self._is_closed(state):
                        self._closed[key] = None
        return closed

    def _track(self, key: str, state: _State) -> None:
        if self.window_seconds is not None and state.window is not None:
            self._starting.setdefault(state.window, {})[key] = None

    def _fold(self, state: _State, scope: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        state.count += 1
        acc = state.acc
        for name, fn, expr in self._fields:
            if expr is None:
                continue
            value = expr(scope, meta)
            if value is None:
                continue
            if fn == "sum":
                acc[name] = acc.get(name, 0) + value
            elif fn == "avg":
                total, n = acc.get(name, (0, 0))
                acc[name] = (total + value, n + 1)
            elif fn == "min":
                acc[name] = value if name not in acc else min(acc[name], value)
            elif fn == "max":
                acc[name] = value if name not in acc else max(acc[name], value)
            elif fn == "first":
                acc.setdefault(name, value)
            else:  # last
                acc[name] = value

    def _close(self, key: str, state: _State) -> Emission:
        window = state.window or 0
        record: dict[str, Any] = {"key": key, "count": state.count}
        if self.window_seconds is not None:
            record["window_start"], record["window_end"] = _iso(window), _iso(window + self.window_seconds)
            ident = f"{self.route}:{key}:{_iso(window)}"
        else:
            record["window_start"] = record["window_end"] = None
            ident = f"{self.route}:{key}:{window}"
        for name, fn, _ in self._fields:
            if fn == "count":
                record[name] = state.count
            elif fn == "sum":
                record[name] = state.acc.get(name, 0)  # a sum over no values is 0 (an empty window's usage)
            elif fn == "avg":
                total, n = state.acc.get(name, (0, 0))
                record[name] = total / n if n else None
            else:
                record[name] = state.acc.get(name)
        if self.keep_previous:
            record["previous"] = state.previous
            state.previous = {k: v for k, v in record.items() if k not in ("key", "previous")}
        emission = Emission(key, state.partition, ident, record)
        # Reset, keeping the offset (replay protection) and, for count windows, the window number.
        if self.window_seconds is None:
            state.window = window + 1
        else:
            # empty_windows: a window that had events arms the next one, which then closes even if
            # no event comes (count 0); an empty one does not, so a silent key reports once.
            state.window = window + self.window_seconds if self.empty_windows and state.count else None
        state.count = 0
        state.acc = {}
        return emission
