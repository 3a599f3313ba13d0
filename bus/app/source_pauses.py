"""Inbound adapters an operator paused: their sources are not read until resumed.

Asked through the management API (``POST /api/v1/inbound/NAME/pause``), kept on the control topic
(``pause-inbound/NAME``, bus.runtime.control), obeyed by every process of the inbound role within
a fetch, and by one that starts later. What a pause does is the adapter's stop: a poller, a
replication slot or a drop folder is not read (their positions kept), a queue's messages wait at
the broker, a webhook answers 503 with Retry-After so its sender sends again later. A source read
by one process at a time keeps its lease while paused (bus.app.leased_inbound): no standby takes
it over. A resume starts the adapter again from where it stopped.

Use it for a source's maintenance window, a partner sending what the hub should not take yet, or
an import to hold back; it is the inbound half of pausing a subscriber.
"""

from __future__ import annotations

__all__ = ["PAUSE_INBOUND", "SourcePauses"]

import asyncio
import logging
from typing import Any

from bus.adapter_api import Inbound
from bus.app.leased_inbound import LeasedInbound
from bus.app.setup import BackgroundStarts
from bus.metrics import INBOUND_PAUSED
from bus.runtime.supervisor import Supervisor

log = logging.getLogger("bus.app.source_pauses")
_FINISH_AT_STOP_S = 10.0
PAUSE_INBOUND = "pause-inbound/"  # a subscriber's pause is ``pause/NAME``: an inbound and a subscriber may share a name


class SourcePauses:
    def __init__(self, starts: BackgroundStarts, supervisor: Supervisor) -> None:
        self.asked: dict[str, str] = {}  # inbound name -> who paused it, as the control topic says now
        self._starts = starts
        self._supervisor = supervisor
        self._adapters: dict[str, Inbound[Any]] = {}
        self._stopped_here: set[str] = set()  # adapters (not leased) this process stopped for a pause
        # What this process has done, as shown (the topology, /readyz): an adapter reads paused once its stop is over,
        # and running once its start is, not while either is under way (a webhook's route, a queue's consumer).
        self._obeyed: dict[str, str] = {}
        self._lock = asyncio.Lock()  # one change at a time, in the order asked (the lock is first come, first served)
        self._tasks: set[asyncio.Task[None]] = set()

    def record(self, name: str, value: dict[str, Any] | None) -> None:
        """A control record: ``{"paused": bool, "by": name}``, or None (deleted: not paused)."""
        by = str(value.get("by") or "someone") if value and value.get("paused") else None
        if by == self.asked.get(name):
            return
        if by is None:
            self.asked.pop(name, None)
        else:
            self.asked[name] = by
        if name in self._adapters:  # running here: obey now (at start, ``start`` obeys what was read before)
            task = asyncio.get_running_loop().create_task(self._apply(name), name=f"pause:{name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def start(self, adapter: Inbound[Any]) -> None:
        """Start an inbound adapter of this process, unless it is paused."""
        name = adapter.config.name
        self._adapters[name] = adapter
        async with self._lock:
            by = self.asked.get(name)
            INBOUND_PAUSED.labels(name).set(0 if by is None else 1)
            if by is not None:
                log.warning("inbound %s is paused (by %s): not read until resumed", name, by)
            if isinstance(adapter, LeasedInbound):
                if by is not None:
                    await adapter.pause(by)  # before it joins: if the lease comes here, the source is not read
                    self._obeyed[name] = by
                await self._starts.start(adapter, f"inbound {name}")
            elif by is None:
                await self._starts.start(adapter, f"inbound {name}")
            else:
                self._stopped_here.add(name)
                await adapter.hold()
                self._obeyed[name] = by

    def paused_by(self, name: str) -> str | None:
        """Who paused it, once this process has obeyed (its stop over); None once a resume has
        started it again (or while it runs)."""
        return self._obeyed.get(name)

    async def _apply(self, name: str) -> None:
        by = None
        try:
            async with self._lock:
                adapter, by = self._adapters.get(name), self.asked.get(name)
                if adapter is None:  # the hub is stopping
                    return
                if isinstance(adapter, LeasedInbound):
                    if by == adapter.paused_by:
                        return
                    await (adapter.pause(by) if by is not None else adapter.resume())
                elif by is not None and name not in self._stopped_here:
                    self._stopped_here.add(name)
                    await self._starts.forget(f"inbound {name}")
                    async with self._supervisor.stopping(f"inbound:{name}"):
                        await adapter.stop()
                elif by is None and name in self._stopped_here:
                    self._stopped_here.discard(name)
                    await self._starts.start(adapter, f"inbound {name}")  # a system down now is tried in the background
                else:
                    return
                if by is None:
                    self._obeyed.pop(name, None)
                else:
                    self._obeyed[name] = by
                INBOUND_PAUSED.labels(name).set(0 if by is None else 1)
                if by is not None:
                    log.warning("inbound %s paused by %s: its source is not read until resumed", name, by)
                else:
                    log.warning("inbound %s resumed: its source is read again", name)
        except Exception:  # a start that fails for good: said here and in /readyz (BackgroundStarts)
            log.exception("inbound %s: obeying a pause or resume failed", name)
            if by is None:
                self._obeyed.pop(name, None)
                self._starts.why.setdefault(f"inbound {name}", "failed to resume (see the log)")
            else:
                self._obeyed[name] = by  # taken for stopped, as a resume will take it: what is left of it is not read

    async def close(self) -> None:
        """At the hub's stop: a pause or resume under way ends first (for a while), so no adapter is
        left half started or half stopped for the hub's stop of it; one that takes longer is cancelled."""
        self._adapters = {}  # records read from now on start nothing
        tasks, self._tasks = set(self._tasks), set()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=_FINISH_AT_STOP_S)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._stopped_here.clear()
        self._obeyed.clear()
