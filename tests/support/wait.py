"""Wait for a condition with a deadline, so a broken feature fails the test instead of hanging it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def until(condition: Callable[[], bool], what: str, timeout: float = 60.0, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(every)


async def until_true(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60.0, every: float = 0.2) -> None:
    """``until`` for a condition that must ask a server (a key in Redis, a record in a topic)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(every)


async def health_saying(adapter: Any, *texts: str, timeout: float = 10.0) -> Any:
    """The adapter's health once its detail says every one of ``texts`` (or, at the deadline, as
    it is then, for the test's assertion to show)."""
    return await _health_when(adapter, lambda health: all(text in health.detail for text in texts), timeout)


async def healthy(adapter: Any, timeout: float = 30.0) -> Any:
    """The health of a source read under a lease, waiting out a lease being joined again.

    The tests' sessions are 3 s: on a loaded machine a holder whose loop was held up past 80 % of
    one stops reading and joins again (bus/kafka/lease.py), which says "waiting for the lease
    group" for a few seconds. Any other detail is returned at once, for the test to assert on."""
    return await _health_when(adapter, lambda health: health.ok or "waiting for the lease group" not in health.detail, timeout)


async def _health_when(adapter: Any, done: Callable[[Any], bool], timeout: float) -> Any:
    """The adapter's health once ``done`` says so, or as it is at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        health = await adapter.health()
        if done(health) or time.monotonic() > deadline:
            return health
        await asyncio.sleep(0.1)
