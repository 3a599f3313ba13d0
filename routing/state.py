"""Small in-process state used by routes: a TTL set for dedup (throttling uses bus.ratelimit).

Both are per router process. Per-key order puts every event of a key (and so every duplicate
of an event) on one partition, hence one process at a time; after a rebalance the new owner
starts with an empty dedup memory, so a duplicate can pass then (at-least-once still holds,
and deliveries carry the idempotency key for the target to finish the job).
"""

from __future__ import annotations

__all__ = ["TtlSet"]

import time
from collections import OrderedDict
from collections.abc import Callable


class TtlSet:
    """Remembers keys for ``ttl`` seconds. Memory is bounded by ``max_size`` (oldest go first)."""

    def __init__(self, ttl: float, *, max_size: int = 1_000_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._max = max_size
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, key: str) -> bool:
        """Record ``key``; True if it is new (not seen within the TTL)."""
        now = self._clock()
        # Entries are in insertion order, which is expiry order: drop the expired from the front.
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if now - at < self._ttl and len(self._seen) < self._max:
                break
            del self._seen[oldest]
        if key in self._seen:
            return False
        self._seen[key] = now
        return True
