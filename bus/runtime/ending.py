"""Ending a task a component started, each wait bounded.

The usual idiom, ``task.cancel()`` then ``await task`` under ``suppress(CancelledError)``, has two
faults. It waits without a bound, so a task that holds on to its cancellation (a driver's close
that swallows one) holds the stop, and the process's shutdown, for good. And it swallows a
cancellation of the caller too, so whoever is stopping the caller waits on it in turn. Here each
wait has a bound, a task that outlives it is said at WARNING by name and left, and a cancellation
of the caller is passed on (after cancelling the task). A task's own failure is raised, as
``await task`` would.
"""

from __future__ import annotations

__all__ = ["FINISH_HOLDING_S", "WEBHOOK_DRAIN_S", "cancel", "finish", "finish_read"]

import asyncio
import logging
from typing import Any

log = logging.getLogger("bus.tasks")

# What a hub's stop waits for before its deliveries drain (the config check adds them to each
# subscriber's delivery.drain_at_stop and compares the sum with the pod's grace period):
FINISH_HOLDING_S = 10.0  # a source's read that has handed records to Kafka: acknowledged, its position saved
WEBHOOK_DRAIN_S = 8.0  # webhook requests in progress


async def finish(task: asyncio.Task[Any], *, within: float, grace: float = 5.0) -> None:
    """Wait up to ``within`` seconds for ``task`` to end by itself (it was told to stop), then
    cancel it (``cancel``, bounded by ``grace``). ``within`` 0: cancelled where it waits now,
    without a turn first (a read waiting for its source whose answer just came would take that
    turn to hand the records to Kafka, and be cancelled before their acknowledgements and its
    position: every record read again at the next start)."""
    if within <= 0:
        await cancel(task, within=grace)
        return
    try:
        await asyncio.wait({task}, timeout=within)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not task.done():
        await cancel(task, within=grace)
        return
    _outcome(task)


async def finish_read(task: asyncio.Task[Any], *, holding: bool) -> None:
    """End a source's reading task, told to stop: a read that has handed records to Kafka
    (``holding``) is given ``FINISH_HOLDING_S`` to have them acknowledged and save its position;
    one still waiting for its source (a connection, a query, a page) holds nothing and ends now."""
    await finish(task, within=FINISH_HOLDING_S if holding else 0)


async def cancel(task: asyncio.Task[Any], *, within: float = 5.0) -> None:
    """Cancel ``task`` and wait up to ``within`` seconds for it to end."""
    task.cancel()
    await asyncio.wait({task}, timeout=within)  # a cancellation of the caller goes on from here
    if not task.done():
        log.warning(
            "task %s did not end within %gs of being cancelled (it holds on to its cancellation); left running", task.get_name(), within
        )
        return
    _outcome(task)


def _outcome(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (failure := task.exception()) is not None:
        raise failure
