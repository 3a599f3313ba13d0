"""Fault tests get a fresh broker each: they are the heaviest tests, and an embedded broker that
already holds every topic and group of the suite slows down (Tansu keeps everything in memory)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from bus.kafka.broker import EmbeddedBroker


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # One xdist worker runs the fault tests one after another (make test uses --dist loadgroup):
    # they are heavy, and two at once starve each other's heartbeats and timeouts.
    for item in items:
        if "tests/faults/" in str(item.path):
            item.add_marker(pytest.mark.xdist_group("faults"))


@pytest.fixture
def bootstrap() -> Iterator[str]:
    instance = EmbeddedBroker()
    asyncio.run(instance.start())
    try:
        yield instance.bootstrap
    finally:
        asyncio.run(instance.stop())
