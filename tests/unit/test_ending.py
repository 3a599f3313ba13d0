"""Ending a component's task (bus/runtime/ending.py): every wait bounded, a task that holds on to
its cancellation named and left, the caller's own cancellation passed on, a task's failure raised."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bus.runtime.ending import cancel, finish, finish_read


async def test_a_task_that_holds_on_to_its_cancellation_does_not_hold_the_stop(caplog: pytest.LogCaptureFixture) -> None:
    released = asyncio.Event()

    async def stubborn() -> None:  # as a driver's close that swallows a cancellation
        while not released.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn(), name="stubborn-reader")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="bus.tasks"):
        await asyncio.wait_for(finish(task, within=0.1, grace=0.2), timeout=5)  # the old idiom waited for good
    assert not task.done()
    assert "task stubborn-reader did not end within 0.2s of being cancelled" in caplog.text
    released.set()
    await task


async def test_a_cancellation_of_the_caller_is_passed_on_and_cancels_the_task() -> None:
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.sleep(60)

    task = asyncio.create_task(slow())
    await started.wait()
    stopping = asyncio.create_task(finish(task, within=30))
    await asyncio.sleep(0.05)
    stopping.cancel()  # whoever stops the component is stopped itself
    with pytest.raises(asyncio.CancelledError):
        await stopping
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled()


async def test_a_task_that_ends_by_itself_is_not_cancelled_and_its_failure_is_raised() -> None:
    stop = asyncio.Event()

    async def polite() -> str:
        await stop.wait()
        return "done"

    task = asyncio.create_task(polite())
    stop.set()
    await finish(task, within=5)
    assert task.result() == "done"

    async def broken() -> None:
        raise ValueError("the reader failed")

    failed = asyncio.create_task(broken())
    with pytest.raises(ValueError, match="the reader failed"):
        await finish(failed, within=5)
    with pytest.raises(ValueError, match="the reader failed"):
        await cancel(failed)


async def test_cancel_waits_for_a_task_that_cleans_up_after_its_cancellation() -> None:
    cleaned = []

    async def tidy() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.05)  # closing a connection
            cleaned.append(True)

    task = asyncio.create_task(tidy())
    await asyncio.sleep(0)
    await cancel(task, within=5)
    assert task.cancelled() and cleaned == [True]


async def test_a_read_holding_nothing_is_cancelled_where_it_waits_without_another_step() -> None:
    """The source's answer came just as the stop did: the read, holding nothing when told to stop,
    was given a turn first, handed the records to Kafka in it, and was cancelled before their
    acknowledgements and its position (a sql_poll restarted after a clean stop published a page
    twice; seen in CI on a loaded machine)."""
    answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    handed: list[str] = []

    async def read() -> None:
        await answer  # waiting for the source
        handed.append("records")  # what it would hand to Kafka
        await asyncio.sleep(10)

    task = asyncio.create_task(read())
    await asyncio.sleep(0)  # the read waits for its source
    answer.set_result(None)  # which answers now, as the stop comes
    await finish_read(task, holding=False)
    assert task.cancelled() and handed == []
