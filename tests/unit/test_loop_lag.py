"""The event loop's lag: measured into the histogram, a hold-up said at WARNING once a minute."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest
from prometheus_client import REGISTRY

from bus.runtime import loop_lag
from bus.runtime.loop_lag import LoopLag


def _samples() -> tuple[float, float]:
    count = REGISTRY.get_sample_value("bus_event_loop_lag_seconds_count") or 0.0
    slow = count - (REGISTRY.get_sample_value("bus_event_loop_lag_seconds_bucket", {"le": "0.1"}) or 0.0)
    return count, slow


async def test_a_held_up_loop_is_measured_and_said_once_a_minute(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    lag = LoopLag(every_s=0.02, held_up_s=0.15)
    count, slow = _samples()
    lag.start()
    try:
        await asyncio.sleep(0.2)  # on time: measured, nothing said
        assert _samples()[0] > count
        assert not [r for r in caplog.records if r.name == "bus.runtime.loop_lag"]

        with caplog.at_level(logging.WARNING, logger="bus.runtime.loop_lag"):
            time.sleep(0.3)  # the whole loop held up
            await asyncio.sleep(0.1)
            said = [r for r in caplog.records if r.name == "bus.runtime.loop_lag"]
            assert len(said) == 1 and said[0].levelno == logging.WARNING, said
            held = re.search(r"event loop was held up for ([0-9.]+) s: nothing ran", said[0].getMessage())
            assert held and float(held[1]) >= 0.3, said[0].getMessage()
            assert _samples()[1] == slow + 1, "the hold-up is in the histogram above 0.1 s"
            assert lag.worst_s >= 0.28

            time.sleep(0.25)  # again within the minute: counted, not said
            await asyncio.sleep(0.1)
            assert len([r for r in caplog.records if r.name == "bus.runtime.loop_lag"]) == 1

            monkeypatch.setattr(loop_lag, "_SAY_EVERY_S", 0.0)
            time.sleep(0.2)  # the minute is over: said, with the one in between
            await asyncio.sleep(0.1)
            said = [r for r in caplog.records if r.name == "bus.runtime.loop_lag"]
            assert len(said) == 2 and "(1 more since the last line; the longest of all " in said[1].getMessage(), said[1].getMessage()
    finally:
        await lag.stop()
    assert lag._task is None
