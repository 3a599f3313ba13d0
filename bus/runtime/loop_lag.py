"""How late the hub's event loop runs what is due: a process held up sends no heartbeat, answers
no webhook and delivers nothing meanwhile, whatever Kafka and the targets do.

A task sleeps ``EVERY_S`` and measures how much later than asked it woke; the lateness goes into
``bus_event_loop_lag_seconds``. A hold-up of ``HELD_UP_S`` or more is said at WARNING (at most one
line a minute; the ones in between are counted into the next): its causes are the process's own
(starved of CPU by its limit, a call that blocks the loop, a long garbage collection), and it is
what makes Kafka count a consumer out or a lease's holder stop reading (bus/kafka/lease.py) with
nothing wrong in Kafka. Four wake-ups a second cost nothing measurable.
"""

from __future__ import annotations

__all__ = ["EVERY_S", "HELD_UP_S", "LoopLag"]

import asyncio
import logging
import time

from bus.metrics import EVENT_LOOP_LAG

log = logging.getLogger("bus.runtime.loop_lag")

EVERY_S = 0.25
HELD_UP_S = 1.0
_SAY_EVERY_S = 60.0


class LoopLag:
    def __init__(self, *, every_s: float = EVERY_S, held_up_s: float = HELD_UP_S) -> None:
        self._every_s = every_s
        self._held_up_s = held_up_s
        self._task: asyncio.Task[None] | None = None
        self.worst_s = 0.0  # the longest hold-up seen since the start
        self._unsaid = 0  # hold-ups since the last line, not said yet
        self._unsaid_worst_s = 0.0
        self._said_at = float("-inf")

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name="event-loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _watch(self) -> None:
        while True:
            asleep = time.monotonic()
            await asyncio.sleep(self._every_s)
            woke = time.monotonic()
            late = max(0.0, woke - asleep - self._every_s)
            EVENT_LOOP_LAG.observe(late)
            if late >= self._held_up_s:
                self._held_up(late, woke)

    def _held_up(self, late: float, now: float) -> None:
        self.worst_s = max(self.worst_s, late)
        self._unsaid += 1
        self._unsaid_worst_s = max(self._unsaid_worst_s, late)
        if now - self._said_at < _SAY_EVERY_S:
            return
        more = ""
        if self._unsaid > 1:
            more = f" ({self._unsaid - 1} more since the last line; the longest of all {self._unsaid_worst_s:.1f} s)"
        log.warning(
            "this process's event loop was held up for %.1f s%s: nothing ran meanwhile (no heartbeat to Kafka, no "
            "webhook answered, no delivery); it is starved of CPU (look at its CPU limit and throttling) or a call "
            "blocks the loop",
            late,
            more,
        )
        self._said_at = now
        self._unsaid, self._unsaid_worst_s = 0, 0.0
