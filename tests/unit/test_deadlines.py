"""bus/runtime/deadlines.py: waits of one length timed out by one sweep, with asyncio.timeout's
semantics (a TimeoutError for our own cancellation, any other cancellation passed on)."""

from __future__ import annotations

import asyncio
import time

import pytest

from bus.runtime.deadlines import Deadlines


async def test_a_wait_past_its_length_raises_timeout_error_soon_after() -> None:
    deadlines = Deadlines(0.2, tick=0.02)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"within 0\.2s"), deadlines():
        await asyncio.sleep(5)
    assert 0.2 <= time.monotonic() - started < 1.0
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]  # the task can go on


async def test_waits_that_finish_in_time_are_left_alone_and_the_sweeper_ends() -> None:
    deadlines = Deadlines(0.3, tick=0.02)

    async def quick(i: int) -> int:
        with deadlines():
            await asyncio.sleep(0.01 * (i % 5))
        return i

    assert await asyncio.gather(*(quick(i) for i in range(200))) == list(range(200))
    await asyncio.sleep(0.1)
    assert deadlines._sweeper is None  # nothing left to watch: no task runs for it


async def test_only_the_expired_waits_of_many_time_out_oldest_first() -> None:
    deadlines = Deadlines(0.15, tick=0.01)
    release = asyncio.Event()

    async def wait(hold: bool) -> str:
        try:
            with deadlines():
                if hold:
                    await asyncio.sleep(5)
                else:
                    await release.wait()
        except TimeoutError:
            return "timeout"
        return "done"

    stuck = [asyncio.create_task(wait(True)) for _ in range(3)]
    await asyncio.sleep(0.1)
    fine = [asyncio.create_task(wait(False)) for _ in range(3)]  # began later: not yet due
    await asyncio.sleep(0.1)
    release.set()
    assert await asyncio.gather(*stuck, *fine) == ["timeout"] * 3 + ["done"] * 3


async def test_a_cancellation_from_elsewhere_is_not_a_timeout() -> None:
    deadlines = Deadlines(5.0)

    async def waiting() -> None:
        with deadlines():
            await asyncio.sleep(5)

    task = asyncio.create_task(waiting())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not deadlines._waits


def test_a_new_event_loop_gets_a_sweeper_of_its_own() -> None:
    deadlines = Deadlines(0.1, tick=0.01)

    async def late() -> bool:
        try:
            with deadlines():
                await asyncio.sleep(1)
        except TimeoutError:
            return True
        return False

    async def abandon() -> None:
        asyncio.get_running_loop().create_task(late())
        await asyncio.sleep(0)

    # A loop closed with a wait still open and its sweeper still pending (never to run again).
    old = asyncio.new_event_loop()
    old.run_until_complete(abandon())
    stranded = deadlines._sweeper
    old.close()
    assert stranded is not None and not stranded.done()
    assert asyncio.run(late())
