"""The subscribers a migration feeds, as their own outbound adapters (built from the same config
as ``bus run`` builds them) and what each can do for a migration: be read back (verifiable) and be
put back (rollback). ``deliver`` is the adapter's own delivery with the subscriber's retry policy:
retryable errors are tried again with backoff until the policy gives up, permanent ones fail the
row at once, with the target's reason."""

from __future__ import annotations

__all__ = ["Target", "Targets"]

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from bus.adapter_api import AdapterRegistry, Context, Event, Outbound, OutboundConfig, TargetOptions, TargetState
from bus.config.loader import LoadedConfig
from bus.config.migrations import MigrationConfig
from bus.errors import BusError, PermanentError, RetryableError, TargetNotReady
from bus.logs import REDACTOR
from bus.runtime.retry import RetryPolicy

log = logging.getLogger("bus.migrate")
T = TypeVar("T")


@dataclass
class Target:
    name: str
    type: str
    outbound: Outbound[Any]
    state: TargetState | None
    policy: RetryPolicy
    in_flight: int

    @property
    def verifiable(self) -> bool:
        return self.state is not None and self.state.verifiable

    @property
    def why_no_rollback(self) -> str:
        if self.state is None:
            return f"a {self.type} target cannot be read back or restored (what is sent is sent)"
        return self.state.rollback

    async def deliver_all(self, events: list[Event]) -> list[str | None]:
        """Deliver every event, with retries; for each, None when the target took it, else why
        not. An adapter that writes batches (``delivers_many``: a SQL table) gets them in
        transactions of its ``batch_size``; a batch refused as a whole (one bad row among them)
        is delivered again one event at a time, so only that row fails. Others get up to
        ``in_flight`` single deliveries at once."""
        if self.outbound.delivers_many:
            size = max(1, int(getattr(self.outbound.config, "batch_size", 0) or 0))
            outcomes: list[str | None] = []
            for start in range(0, len(events), size):
                outcomes += await self._deliver_batch(events[start : start + size])
            return outcomes
        slots = asyncio.Semaphore(self.in_flight)

        async def one(event: Event) -> str | None:
            async with slots:
                return await self.deliver(event)

        return list(await asyncio.gather(*(one(event) for event in events)))

    async def _deliver_batch(self, events: list[Event]) -> list[str | None]:
        try:
            why = await self._attempts(f"a batch of {len(events)}", self.outbound.deliver_many, events)
        except Exception:  # noqa: BLE001 - a refused row (or one that cannot be written): find which, one by one
            return [await self.deliver(event) for event in events]
        return [why] * len(events)  # the target, not a row, when it gave up: every event alike

    async def deliver(self, event: Event) -> str | None:
        """Deliver with retries; None when the target took it, else why it did not (redacted)."""

        async def once() -> None:
            try:
                await self.outbound.deliver(event)
            except (PermanentError, RetryableError):
                raise
            except Exception as exc:  # an adapter bug: retried like the delivery worker does
                raise RetryableError(f"{type(exc).__name__}: {exc}") from exc

        try:
            return await self._attempts(event.key or event.id, once)
        except PermanentError as exc:
            return REDACTOR.redact(str(exc))

    async def _attempts(self, what: str, call: Callable[..., Awaitable[None]], *args: Any) -> str | None:
        """``call`` until it succeeds (None) or the policy gives up on its RetryableErrors (then
        why, redacted), with backoff between attempts; any other error is raised."""
        attempts, first = 0, time.monotonic()
        while True:
            attempts += 1
            try:
                await call(*args)
            except TargetNotReady as error:
                raise self._not_ready(error) from None
            except RetryableError as error:
                why = self.policy.give_up(attempts, time.monotonic() - first)
                if why is not None:
                    return REDACTOR.redact(f"gave up after {why}: {error}")
                if attempts == 1:
                    log.warning("migration target %s: retrying %s: %s", self.name, what, REDACTOR.redact(str(error)))
                await asyncio.sleep(self.policy.delay(attempts, error))
            else:
                return None

    async def with_retries(self, what: str, call: Callable[..., Awaitable[T]], *args: Any) -> T:
        """A read or restore call, retried like a delivery (then raised)."""
        attempts, first = 0, time.monotonic()
        while True:
            attempts += 1
            try:
                return await call(*args)
            except TargetNotReady as exc:
                raise self._not_ready(exc) from None
            except RetryableError as exc:
                if self.policy.give_up(attempts, time.monotonic() - first) is not None:
                    raise
                log.warning("migration target %s: %s failed, retrying: %s", self.name, what, REDACTOR.redact(str(exc)))
                await asyncio.sleep(self.policy.delay(attempts, exc))

    def _not_ready(self, error: TargetNotReady) -> BusError:
        """Waiting would not help a job someone is running: stop, saying what to fix (a run stays resumable)."""
        return BusError(f"target {self.name}: {REDACTOR.redact(str(error))}; fix the target or the config, then run the command again")

    async def read_each(self, addresses: list[Any]) -> list[dict[str, Any] | PermanentError | None]:
        """What the target holds at each address, read in one call; when that call is refused
        (one record the target will not answer for), each address on its own, so the refused one
        gets its error in its place and the others their records. A target that stays down
        raises (every record would fail alike)."""
        assert self.state is not None
        state = self.state
        try:
            found: list[dict[str, Any] | PermanentError | None] = list(await self.with_retries("reading", state.read, addresses))
        except PermanentError:
            found = []
            for address in addresses:
                try:
                    [one] = await self.with_retries("reading", state.read, [address])
                except PermanentError as exc:
                    log.warning("migration target %s: cannot read %s: %s", self.name, address, REDACTOR.redact(str(exc)))
                    found.append(PermanentError(REDACTOR.redact(str(exc))))
                else:
                    found.append(one)
        return found


class Targets:
    def __init__(self, loaded: LoadedConfig, migration: MigrationConfig, subscribers: list[str], registry: AdapterRegistry) -> None:
        configs = {c.name: c for c in loaded.outbound}
        self.registry = registry
        self.targets: dict[str, Target] = {}
        for name in subscribers:
            config = configs[name]
            cls = registry.get(config.type, "outbound")
            if cls is None:
                raise BusError(f"no outbound adapter type {config.type!r}")
            outbound = cls(config, Context(name=name, logger=logging.getLogger(f"adapters.{config.type}.{name}")))
            assert isinstance(outbound, Outbound)
            given = migration.targets.get(name)
            options = TargetOptions() if given is None else TargetOptions(given.read, given.delete, given.restore_method)
            assert isinstance(config, OutboundConfig)
            policy = config.delivery
            self.targets[name] = Target(
                name,
                config.type,
                outbound,
                outbound.target_state(options),
                RetryPolicy(policy, subscriber=name),
                max(policy.concurrency, int(getattr(config, "batch_size", 0) or 0)),
            )

    def __iter__(self) -> Any:
        return iter(self.targets.values())

    def __getitem__(self, name: str) -> Target:
        return self.targets[name]

    async def start(self) -> None:
        for target in self:
            try:
                await target.outbound.start()
            except RetryableError as exc:
                raise BusError(f"target {target.name} is not reachable: {REDACTOR.redact(str(exc))}") from None

    async def stop(self) -> None:
        for target in self:
            try:
                await target.outbound.stop()
            except Exception:
                log.exception("stopping target %s", target.name)
