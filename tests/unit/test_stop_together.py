"""The hub stops its delivery workers side by side (bus.app.hub._together): a stop takes the
slowest worker's drain, not the sum of all; one that fails is logged by name and the rest finish."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bus.app.hub import _together


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
