"""Group commit for outbound adapters: calls that arrive while a batch is being written wait and
go together in the next one, so a busy target pays one transaction (or one fsync) per batch and a
quiet one waits for nothing. The delivery loop calls ``deliver`` concurrently, up to
``delivery.concurrency``; that bounds a batch in practice.

Each caller gets its own outcome. When a batch fails and ``one_by_one`` says the error may be
about a single item (a refused row, not a lost connection), the items are written again one at a
time, so only the bad one fails.
"""

from __future__ import annotations

__all__ = ["GroupCommit"]

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    def __init__(
        self,
        write: Callable[[list[T]], Awaitable[None]],
        *,
        max_batch: int,
        name: str,
        one_by_one: Callable[[Exception], bool] | None = None,
    ) -> None:
        self._write = write
        self._max = max_batch
        self._name = name
        self._one_by_one = one_by_one
        self._queue: list[tuple[T, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> None:
        """Returns once ``item`` is written; raises what writing it raised."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((item, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name=self._name)
        await done

    async def idle(self) -> None:
        """Wait until everything submitted so far is written (for a clean stop)."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max], self._queue[self._max :]
            try:
                await self._write([item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 (every outcome goes to its caller)
                if len(batch) > 1 and self._one_by_one is not None and self._one_by_one(exc):
                    for item, done in batch:
                        try:
                            await self._write([item])
                        except Exception as single:  # noqa: BLE001
                            _settle(done, single)
                        else:
                            _settle(done, None)
                else:
                    for _, done in batch:
                        _settle(done, exc)
            else:
                for _, done in batch:
                    _settle(done, None)


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():  # the caller gave up (the hub is stopping): at least once still holds
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
