"""The supervisor: no component's background task can die unnoticed.

A *component* is something with a background task that must run for as long as the hub does: an
inbound adapter's consume loop, a delivery worker, the router. Its tasks are started through
``Supervisor.spawn`` (adapters reach it as ``ctx.spawn``). When such a task ends on its own (it
raised, or returned while no one asked the component to stop), the supervisor:

1. logs it at ERROR with the traceback (a task dying is a bug or an unforeseen condition; bad
   *input* never gets here, it is parked where it came in), or at WARNING without one when the
   task stopped itself with ``ComponentHalted`` (Kafka out of reach: foreseen, and said);
2. counts it in ``bus_component_restarts_total{component}`` and sets ``bus_component_up`` to 0;
3. restarts the component (its ``restart`` function: stop, then start again) after a backoff
   (1 s doubling to 30 s), and logs at WARNING when it runs again;
4. reports it in ``/readyz``: the component fails readiness while it is down, and while it keeps
   failing (``failing_after`` failures within ``window_s``), with the last error as the reason.

Stopping a component on purpose goes through ``stopping(name)``, so the tasks that end then are
not taken for failures.
"""

from __future__ import annotations

__all__ = ["ComponentState", "Supervisor"]

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from bus.errors import ComponentHalted
from bus.metrics import COMPONENT_RESTARTS as RESTARTS
from bus.metrics import COMPONENT_UP as UP

log = logging.getLogger("bus.runtime.supervisor")

Restart = Callable[[], Awaitable[None]]


@dataclass
class ComponentState:
    name: str
    restart: Restart | None
    up: bool = True
    stopping: bool = False
    restarts: int = 0
    last_error: str = ""
    failures: deque[float] = field(default_factory=lambda: deque(maxlen=32))


class Supervisor:
    def __init__(self, *, backoff_initial: float = 1.0, backoff_max: float = 30.0, failing_after: int = 3, window_s: float = 600) -> None:
        self._components: dict[str, ComponentState] = {}
        self._restarters: dict[str, asyncio.Task[None]] = {}
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._failing_after = failing_after
        self._window_s = window_s
        self._closed = False

    def watch(self, name: str, restart: Restart | None) -> None:
        """Register a component and how to restart it (None: report only; it cannot be restarted)."""
        state = self._components.get(name)
        if state is None:
            self._components[name] = ComponentState(name, restart)
            UP.labels(name).set(1)
        else:
            state.restart = restart

    def spawn(self, component: str, coro: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        """Start ``coro`` as a task of ``component``; its unexpected end restarts the component."""
        task = asyncio.create_task(coro, name=name)
        self.adopt(component, task)
        return task

    def adopt(self, component: str, task: asyncio.Task[Any]) -> None:
        """Watch a task a component started itself."""
        if component not in self._components:
            self.watch(component, None)
        task.add_done_callback(lambda t: self._ended(component, t))

    @contextlib.asynccontextmanager
    async def stopping(self, component: str) -> AsyncIterator[None]:
        """Around a deliberate stop: tasks of ``component`` that end meanwhile are not failures."""
        state = self._components.get(component)
        if state is not None:
            state.stopping = True
        try:
            yield
        finally:
            if state is not None:
                state.stopping = False

    def _ended(self, component: str, task: asyncio.Task[Any]) -> None:
        state = self._components.get(component)
        if state is None or state.stopping or self._closed or task.cancelled():
            return
        error = task.exception()
        why = f"{task.get_name()} ended on its own" if error is None else f"{task.get_name()} died: {error!r}"
        if isinstance(error, ComponentHalted):  # foreseen, and said where it happened: no traceback
            log.warning("%s: %s; starting it again", component, error)
        else:
            log.error("%s: %s; restarting it", component, why, exc_info=error)
        state.up = False
        state.last_error = why
        state.failures.append(time.monotonic())
        UP.labels(component).set(0)
        RESTARTS.labels(component).inc()
        if state.restart is not None and component not in self._restarters:
            self._restarters[component] = asyncio.create_task(self._restart(state), name=f"restart:{component}")

    async def _restart(self, state: ComponentState) -> None:
        assert state.restart is not None
        delay = self._backoff_initial * 2 ** min(self.recent_failures(state) - 1, 10)
        try:
            while True:
                await asyncio.sleep(min(delay, self._backoff_max))
                try:
                    async with self.stopping(state.name):
                        await state.restart()
                except Exception as exc:  # noqa: BLE001 - a restart that fails is retried, never allowed to end supervision
                    state.last_error = f"restart failed: {exc!r}"
                    log.warning("%s: restart failed (%r); trying again in %.0fs", state.name, exc, min(delay * 2, self._backoff_max))
                    delay *= 2
                    continue
                state.up = True
                state.restarts += 1
                UP.labels(state.name).set(1)
                log.warning("%s restarted (%d restart(s) so far; last failure: %s)", state.name, state.restarts, state.last_error)
                return
        finally:
            self._restarters.pop(state.name, None)

    def recent_failures(self, state: ComponentState) -> int:
        since = time.monotonic() - self._window_s
        return sum(1 for at in state.failures if at >= since)

    def status(self) -> dict[str, tuple[bool, str]]:
        """Per component: (ready, why not). A component is not ready while down, or while it keeps failing."""
        found: dict[str, tuple[bool, str]] = {}
        for name, state in self._components.items():
            failures = self.recent_failures(state)
            # "keeps failing" wins over "down": a component that dies at once is down nearly all the
            # time, and the operator needs to hear that it is a loop, not a single restart.
            if failures >= self._failing_after:
                now = "down, being restarted" if not state.up else "up"
                found[name] = (
                    False,
                    f"keeps failing: {failures} failure(s) in {self._window_s:.0f}s, {now}, last: {state.last_error}",
                )
            elif not state.up:
                found[name] = (False, f"down, being restarted: {state.last_error}")
            else:
                found[name] = (True, "")
        return found

    def detail(self) -> dict[str, dict[str, Any]]:
        """Components that were ever restarted, for /readyz's detail."""
        return {
            name: {"up": s.up, "restarts": s.restarts, "recent_failures": self.recent_failures(s), "last_error": s.last_error}
            for name, s in self._components.items()
            if s.failures
        }

    async def close(self) -> None:
        """No more restarts (the hub is stopping); restarts in progress are cancelled."""
        self._closed = True
        restarters = list(self._restarters.values())
        for task in restarters:
            task.cancel()
        await asyncio.gather(*restarters, return_exceptions=True)
