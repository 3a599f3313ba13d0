"""Sources read by one hub process at a time, however many replicas run.

An inbound adapter whose class says ``one_reader = True`` (a poller, ``postgres_cdc``, a drop
folder, an MQTT session) runs inside ``LeasedInbound``: the adapter starts only in the process
that holds its lease (bus.kafka.lease), and the others stand by, ready (``/readyz``), shown as
``standby`` in the console and ``bus status``, ``bus_inbound_lease`` 0. When the holder stops,
another process takes over at once, from the position the holder saved; when it dies, within the
session timeout. Without it every replica of the inbound role read every such source: a poller
published each record once per replica (and spent the API's rate limit as many times), a second
``postgres_cdc`` failed for good on the slot the first held, and two MQTT clients with one id
took the session from each other in turn.

A holder that cannot read its source for ``leases.hand_over_after`` (its start keeps failing, or the
adapter is not healthy: the database unreachable from this pod's node, a firewall that lets only
some nodes through) hands the lease to another process that may reach it, and is given it back
only when no other could read it either, for ``leases.passed_by_for``: one bad pod does not stall a
source another could read, and while the source is down for all the lease stays put.

A holder cut off from Kafka's group coordinator stops reading before its session there could
have timed out (bus.kafka.lease): two processes never read the source at once, even when the
holder can still reach the source, or the partitions it publishes to.

A source an operator paused (``pause``: the management API, through the control topic, in every
replica) is not read while the lease is kept: a standby does not take it over, and ``resume``
starts it again where the lease is.
"""

from __future__ import annotations

__all__ = ["LeasedInbound"]

import asyncio
import contextlib
import time
from typing import Any

from bus.adapter_api import Health, Inbound, RetryableError
from bus.app.setup import BackgroundStarts
from bus.config.models import KafkaConfig, LeasesConfig
from bus.errors import KafkaUnavailable
from bus.kafka.lease import Lease, LeaseOutOfTouch
from bus.metrics import INBOUND_LEASE, INBOUND_LEASE_CHANGES
from bus.runtime.supervisor import Supervisor

_CHECK_EVERY_S = 5.0  # how often the holder looks at its source's health (more often with a short hand-over time)


class LeasedInbound(Inbound[Any]):
    """``inner`` runs while this process holds its lease, and stands by otherwise."""

    def __init__(
        self,
        inner: Inbound[Any],
        *,
        kafka: KafkaConfig,
        bootstrap: str,
        topic: str,
        group: str,
        starts: BackgroundStarts,
        supervisor: Supervisor,
        leases: LeasesConfig | None = None,
    ) -> None:
        super().__init__(inner.config, inner.ctx)
        self.inner = inner
        self._starts = starts
        self._supervisor = supervisor
        self._name = inner.config.name
        self._what = f"inbound {self._name}"  # BackgroundStarts' and /readyz's name for it
        self._component = f"inbound:{self._name}"  # the supervisor's, for the adapter's own tasks
        self._keeper_component = f"lease:{self._name}"
        self._lease = Lease(kafka, bootstrap, topic=topic, group=group, on_change=self._changed)
        leases = leases or LeasesConfig()
        self._hand_over_after = leases.hand_over_after.total_seconds() if leases.hand_over_after is not None else None
        self._passed_by_for = leases.passed_by_for.total_seconds()
        self._lock = asyncio.Lock()  # a loss waits for a start in progress: the source never runs twice here
        self._running = False  # the adapter was started (or is being started) here
        self._ran = False  # it was, at least once
        self._answered = False  # the group has answered once: later gains are takeovers
        self._keeper: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None  # the holder's look at its source's health
        self._able_again: asyncio.TimerHandle | None = None
        self._stopped = False  # stop() was called: no rejoin or hand-over joins again
        self._paused_by: str | None = None  # an operator paused the source: not read, the lease kept
        INBOUND_LEASE.labels(self._name).set(0)
        for change in ("gained", "lost", "handed_over"):  # at 0 from the start: a first change shows in increase()
            INBOUND_LEASE_CHANGES.labels(self._name, change)

    @property
    def standing_by(self) -> bool:
        return self._lease.held is False

    @property
    def paused_by(self) -> str | None:
        return self._paused_by

    async def pause(self, by: str) -> None:
        """Stop reading the source here, keeping the lease: no other process takes it over."""
        async with self._lock:
            self._paused_by = by
            await self._stop_reading()

    async def resume(self) -> None:
        """Read the source again, if this process holds its lease."""
        async with self._lock:
            self._paused_by = None
            if self._lease.held and not self._running:
                await self._start_reading()

    async def decided(self, within_s: float) -> None:
        """Wait until the group said whether this process reads the source (and, if it does, the
        adapter's first start was tried), for at most ``within_s``: the hub's start returns with
        its sources running, as without leases. Past that, ``health`` says what it waits for."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                await self._lease.answered.wait()

    async def start(self) -> None:
        try:
            await self._lease.start()
        except KafkaUnavailable as exc:
            raise RetryableError(str(exc)) from exc
        self._supervisor.watch(self._keeper_component, self._rejoin)
        self._keeper = self._supervisor.spawn(self._keeper_component, self._keep(), name=f"lease:{self._name}")

    async def _keep(self) -> None:
        try:
            await self._lease.keep()
        except LeaseOutOfTouch as exc:
            # Stopped here at once: the supervisor's rejoin comes after its back-off.
            async with self._lock:
                INBOUND_LEASE_CHANGES.labels(self._name, "lost").inc()  # the fence fires only in the holder
                self.inner.ctx.logger.warning("inbound %s: %s; stopping its reading here", self._name, exc)
                await self._release()
            raise  # the supervisor joins the group again with a new member

    async def restart(self) -> None:
        """The adapter's own task died: start it again, if this process still reads the source."""
        async with self._lock:
            if self._running:
                await self.inner.stop()
                await self.inner.start()

    async def _rejoin(self) -> None:
        """The lease's task died (a join that never completed): leave, stop the source, join anew."""
        await self._leave()
        self._answered = False  # the new membership's first answer is no takeover (the supervisor said why)
        if not self._stopped:
            await self.start()

    async def stop(self) -> None:
        self._stopped = True
        if self._able_again is not None:
            self._able_again.cancel()
        await self._leave()

    async def _leave(self) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            async with self._supervisor.stopping(self._keeper_component):
                keeper.cancel()
                await asyncio.gather(keeper, return_exceptions=True)
        await self._lease.quiet()  # a gain not yet acted on does not start the source after this
        async with self._lock:
            await self._release()
        await self._lease.stop()  # after the source stopped: the next holder starts from what it saved

    async def _changed(self, held: bool) -> None:
        log = self.inner.ctx.logger
        async with self._lock:
            if held:
                took_over = self._answered
                self._answered = True
                INBOUND_LEASE.labels(self._name).set(1)
                if took_over:
                    INBOUND_LEASE_CHANGES.labels(self._name, "gained").inc()
                    log.warning(
                        "inbound %s: this process takes over reading the source (lease group %s): the process that read it "
                        "stopped or was lost",
                        self._name,
                        self._lease.group,
                    )
                else:
                    log.info("inbound %s: this process reads the source (it holds lease group %s)", self._name, self._lease.group)
                if self._paused_by is None:
                    await self._start_reading()
                else:
                    log.info("inbound %s: paused by %s: not read until resumed", self._name, self._paused_by)
                return
            first = not self._answered
            self._answered = True
            if first:
                log.info("inbound %s: standing by; another hub process reads the source (lease group %s)", self._name, self._lease.group)
                return
            INBOUND_LEASE_CHANGES.labels(self._name, "lost").inc()
            log.warning(
                "inbound %s: another hub process took the source's lease (this one was cut off from Kafka for longer than "
                "kafka.session_timeout_ms); stopping its reading here",
                self._name,
            )
            await self._release()

    async def _watch(self) -> None:
        """While this process reads the source: hand it over when it cannot be read here for long."""
        failing_since: float | None = None
        assert self._hand_over_after is not None
        try:
            while True:
                await asyncio.sleep(min(_CHECK_EVERY_S, self._hand_over_after / 5))
                why = self._starts.why.get(self._what)
                if why is None and not (health := await self.inner.health()).ok:
                    why = health.detail or "not healthy"
                if why is None:
                    failing_since = None
                    continue
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since >= self._hand_over_after:
                    await self._hand_over(why)
                    return
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not pass unsaid; the source reads on meanwhile
            self.inner.ctx.logger.exception("inbound %s: watching the source failed", self._name)

    async def _hand_over(self, why: str) -> None:
        INBOUND_LEASE_CHANGES.labels(self._name, "handed_over").inc()
        self.inner.ctx.logger.warning(
            "inbound %s: the source could not be read from this process for %.0f s (%s); handing it to another hub "
            "process that may reach it (this one is given it back only if no other can read it, for %.0f s)",
            self._name,
            self._hand_over_after,
            why,
            self._passed_by_for,
        )
        self._lease.cannot_read(True)
        self._able_again = asyncio.get_running_loop().call_later(self._passed_by_for, self._able)
        await self._leave()  # the others' group gives it to one of them at once
        self._answered = False  # the new membership's first answer is no takeover
        if not self._stopped:
            await self._starts.start(self, self._what)  # joins again; while Kafka cannot answer, tried in the background

    def _able(self) -> None:
        """The time since this process handed the source over has passed: it may be given it again,
        and if it holds it now (no other could read it), it watches the source again."""
        self._able_again = None
        self._lease.cannot_read(False)
        if self._running and self._watcher is None:
            self._start_watching()

    async def _start_reading(self) -> None:
        self._running = self._ran = True
        try:
            await self._starts.start(self.inner, self._what)  # a system that is down is tried again in the background
        except Exception as exc:  # not retryable (a config the system refuses): said, and /readyz says it
            self.inner.ctx.logger.exception("inbound %s failed to start", self._name)
            self._starts.why[self._what] = f"failed to start: {exc!r}"
        if not self._lease.unable:  # handed over lately and given back: no other could read it either
            self._start_watching()

    def _start_watching(self) -> None:
        if self._hand_over_after is not None:  # null: a source is never handed over
            self._watcher = asyncio.create_task(self._watch(), name=f"lease-watch:{self._name}")

    async def _release(self) -> None:
        INBOUND_LEASE.labels(self._name).set(0)
        await self._stop_reading()

    async def _stop_reading(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        if not self._running:
            return
        self._running = False
        await self._starts.forget(self._what)
        async with self._supervisor.stopping(self._component):
            await self.inner.stop()

    async def health(self) -> Health:
        if self._paused_by is not None:
            return Health(True, f"paused by {self._paused_by}")
        if self._lease.held is None:
            return Health(False, f"waiting for the lease group {self._lease.group} to answer (which process reads the source)")
        if not self._lease.held:
            return Health(True, f"standby: another hub process reads the source (lease group {self._lease.group})")
        return await self.inner.health()

    def progress(self) -> dict[str, int | str]:
        # What it did while it ran here (kept after a stop, as any adapter's); nothing if it never did.
        return self.inner.progress() if self._ran else {}

    def attention(self) -> str:
        return self.inner.attention() if self._running else ""
