"""The collector settings `bus run` applies once the hub has started (bus/runtime/collector.py),
checked in a fresh interpreter each: they are process-wide, and this one belongs to pytest."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import gc, json
from bus.runtime.collector import tune_after_start
garbage = []
garbage.append(garbage)  # a cycle made at start-up: collected before the freeze, not frozen for ever
del garbage
tuned = tune_after_start()
print(json.dumps({"tuned": tuned, "threshold": gc.get_threshold(), "frozen": gc.get_freeze_count(), "garbage": gc.garbage}))
"""


def probe(**env: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True, check=True, timeout=60)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_after_start_the_startup_objects_are_frozen_and_young_collections_are_rarer() -> None:
    found = probe()
    assert found["tuned"] is True
    assert found["threshold"][0] == 20_000  # type: ignore[index]
    assert found["frozen"] > 1_000  # type: ignore[operator]  # modules, classes, functions of the imports
    assert found["garbage"] == []


def test_bus_gc_default_keeps_pythons_own_settings() -> None:
    found = probe(BUS_GC="default")
    assert found["tuned"] is False
    assert found["threshold"][0] == 700  # type: ignore[index]
    assert found["frozen"] == 0


def test_an_unknown_bus_gc_value_is_said_and_tuned_anyway() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env={**os.environ, "BUS_GC": "defualt"}, capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(done.stdout)["tuned"] is True
    assert "BUS_GC='defualt' is neither 'tuned' nor 'default'" in done.stderr
