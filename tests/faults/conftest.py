"""Fault tests get a fresh broker each: they are the heaviest tests, and an embedded broker that
already holds every topic and group of the suite slows down (Tansu keeps everything in memory)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from bus.kafka.broker import EmbeddedBroker


@pytest.fixture
def bootstrap() -> Iterator[str]:
    instance = EmbeddedBroker()
    asyncio.run(instance.start())
    try:
        yield instance.bootstrap
    finally:
        asyncio.run(instance.stop())
