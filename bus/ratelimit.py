"""A token bucket, shared by route throttling and per-subscriber delivery rate limits."""

from __future__ import annotations

__all__ = ["TokenBucket"]

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up. ``take`` waits; it never drops."""

    def __init__(self, rate: float, burst: int = 1, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def delay_for(self, n: int = 1) -> float:
        """Seconds until ``n`` tokens are available (0 if they are now); takes them."""
        self._refill()
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def take(self, n: int = 1) -> None:
        delay = self.delay_for(n)
        if delay > 0:
            await asyncio.sleep(delay)
