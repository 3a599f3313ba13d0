"""``asyncio.timeout`` for many short waits of one length, checked by one sweep instead of a timer each.

``asyncio.timeout`` puts a TimerHandle on the loop's heap per wait and takes it off again, in two
coroutine calls: 3 % of a hub's CPU at 1,000 webhooks a second went on the one around each
publish (bench/RESULTS.md). Here a wait costs a dict insert and a pop. Every wait of a
``Deadlines`` has the same length, so they expire in the order they began: a sweeper task, alive
only while waits are, wakes every ``tick`` seconds, cancels the task of each wait past its
deadline (oldest first, stopping at the first that is not), and that wait raises TimeoutError,
as ``asyncio.timeout`` would. A wait ends at most ``tick`` later than its length.

    deadlines = Deadlines(5.0)
    with deadlines():  # a plain `with`: entering and leaving never suspend
        await something()
"""

from __future__ import annotations

__all__ = ["Deadlines"]

import asyncio
import time
from types import TracebackType


class Deadlines:
    def __init__(self, seconds: float, *, tick: float | None = None) -> None:
        self.seconds = seconds
        self.tick = tick if tick is not None else min(0.1, seconds / 10)
        self._waits: dict[_Wait, None] = {}  # an ordered set: the oldest (first to expire) first
        self._sweeper: asyncio.Task[None] | None = None

    def __call__(self) -> _Wait:
        return _Wait(self)

    def _begin(self, wait: _Wait) -> None:
        self._waits[wait] = None
        sweeper = self._sweeper
        if sweeper is None or sweeper.done() or sweeper.get_loop() is not wait.task.get_loop():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="deadlines")

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()  # asked now: the finally below may run with no loop (a loop closed with this pending)
        try:
            while self._waits:
                await asyncio.sleep(self.tick)
                now = time.monotonic()
                expired = []
                for wait in self._waits:
                    if wait.deadline > now:
                        break
                    expired.append(wait)
                for wait in expired:
                    del self._waits[wait]
                    if wait.task.get_loop() is loop:  # not a wait left behind by a loop that has gone
                        wait.expired = True
                        wait.task.cancel()
        finally:
            if self._sweeper is me:
                self._sweeper = None


class _Wait:
    __slots__ = ("_cancelling", "_owner", "deadline", "expired", "task")

    def __init__(self, owner: Deadlines) -> None:
        self._owner = owner
        self.expired = False

    def __enter__(self) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadlines are used inside a task")
        self.task = task
        self._cancelling = task.cancelling()
        self.deadline = time.monotonic() + self._owner.seconds
        self._owner._begin(self)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None) -> None:
        if not self.expired:
            self._owner._waits.pop(self, None)
            return
        # Ours was the cancellation (as asyncio.timeout tells its own from another's): a timeout.
        if self.task.uncancel() <= self._cancelling and kind is asyncio.CancelledError:
            raise TimeoutError(f"no answer within {self._owner.seconds:g}s") from error
