"""The hub stops its parts in turn (bus.app.hub._in_turn) and its delivery workers side by side
(bus.app.hub._together): a stop takes the slowest worker's drain, not the sum of all; one that
fails is logged by name and the rest finish, and only a cancellation of the stop itself ends it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bus.app.hub import _in_turn, _together
from bus.kafka.clients import stop_consumer


async def test_steps_run_side_by_side_and_a_failure_is_logged_while_the_rest_finish(caplog: pytest.LogCaptureFixture) -> None:
    finished: list[str] = []
    draining = [0, 0]  # now, most at once

    def drain(name: str, seconds: float, fail: bool = False) -> object:
        async def step() -> None:
            draining[0] += 1
            draining[1] = max(draining)
            await asyncio.sleep(seconds)
            draining[0] -= 1
            if fail:
                raise RuntimeError(f"{name} could not commit")
            finished.append(name)

        return step

    steps = [(f"delivery worker w{i}", drain(f"w{i}", 0.5)) for i in range(10)]
    steps.insert(3, ("delivery worker broken", drain("broken", 0.1, fail=True)))
    with caplog.at_level(logging.ERROR, logger="bus.app.hub"):
        await _together(steps)()
    assert sorted(finished) == sorted(f"w{i}" for i in range(10))
    assert draining[1] == 11  # every drain under way at once, not one after another
    [record] = caplog.records
    assert record.getMessage() == "stopping delivery worker broken failed; going on with the rest"
    # The traceback rides on the record (the process's redacting filter, when a test before this
    # one installed it, has already turned it into text).
    traceback = record.exc_text or (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
    assert "RuntimeError: broken could not commit" in traceback


async def test_a_cancelled_stop_is_not_swallowed() -> None:
    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await _together([("delivery worker w", cancelled)])()


async def test_a_step_that_raises_a_cancelled_error_of_its_own_does_not_end_the_stop(caplog: pytest.LogCaptureFixture) -> None:
    """aiokafka's consumer.stop() can raise a CancelledError that is its own (aio-libs/aiokafka#647:
    a fetch cancelled in its back-off while Kafka is away); it ended the hub's stop there, the
    embedded broker never stopped."""
    done: list[str] = []

    async def stray() -> None:
        raise asyncio.CancelledError

    async def broker() -> None:
        done.append("embedded broker")

    with caplog.at_level(logging.WARNING, logger="bus.app.hub"):
        await _in_turn([("control watcher", stray), ("embedded broker", broker)])
    assert done == ["embedded broker"]
    assert "stopping control watcher raised a CancelledError of its own" in caplog.text


async def test_a_stop_that_is_itself_cancelled_ends_there() -> None:
    done: list[str] = []
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.sleep(30)

    async def after() -> None:
        done.append("after")

    stop = asyncio.create_task(_in_turn([("slow", slow), ("after", after)]))
    await started.wait()
    stop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stop
    assert done == []


async def test_a_consumer_whose_stop_raises_its_own_cancelled_error_is_stopped_quietly() -> None:
    class Consumer:  # aiokafka's stop() as it behaves after a fetch cancelled in its back-off
        stopped = False

        async def stop(self) -> None:
            self.stopped = True
            raise asyncio.CancelledError

    consumer = Consumer()
    await stop_consumer(consumer)  # type: ignore[arg-type]
    assert consumer.stopped

    class Slow:
        async def stop(self) -> None:
            await asyncio.sleep(30)

    task = asyncio.create_task(stop_consumer(Slow()))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task  # the caller's own cancellation goes on up
