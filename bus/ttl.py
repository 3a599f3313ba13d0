"""Keys remembered for a while, in memory: the route's ``dedup`` and the webhook's repeated
deliveries. Memory is bounded (the oldest entries go first) and expiry costs nothing per lookup
beyond dropping what has expired from the front: entries are kept in insertion order, which is
their expiry order.
"""

from __future__ import annotations

__all__ = ["TtlMap"]

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class TtlMap(Generic[V]):
    """``key -> value`` for ``ttl`` seconds from when it was put, at most ``max_size`` entries."""

    def __init__(self, ttl: float, *, max_size: int = 1_000_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._max = max_size
        self._clock = clock
        self._entries: OrderedDict[str, tuple[V | None, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            oldest, (_, at) = next(iter(entries.items()))
            if now - at < self._ttl and len(entries) < self._max:
                return
            del entries[oldest]

    def get(self, key: str) -> V | None:
        """The value put for ``key`` within the TTL, or None."""
        self._expire(self._clock())
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: str, value: V) -> None:
        now = self._clock()
        self._expire(now)
        self._entries[key] = (value, now)
        self._entries.move_to_end(key)

    def add(self, key: str) -> bool:
        """Remember ``key`` (as a set); True if it is new, not seen within the TTL."""
        now = self._clock()
        self._expire(now)
        if key in self._entries:
            return False
        self._entries[key] = (None, now)
        return True
