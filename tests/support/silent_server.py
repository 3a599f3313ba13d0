"""A server that accepts connections and never says a word: a broker slow to greet its clients.
For tests of a start cancelled while it connects (a hub stopping meanwhile)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager


@asynccontextmanager
async def silent_server(accepted: list[object] | None = None) -> AsyncIterator[int]:
    """Yields the port of a server on loopback that accepts and never answers; each connection
    it accepts is added to ``accepted`` when given."""
    held: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        if accepted is not None:
            accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def left_running_after_cancelling(start: Awaitable[None], *, after_s: float = 0.5) -> list[asyncio.Task[object]]:
    """Run ``start``, cancel it ``after_s`` in (it must still be under way), and give the tasks
    it made as long again to end: the ones still running (a client left reconnecting)."""
    before = set(asyncio.all_tasks())
    starting = asyncio.ensure_future(start)
    await asyncio.sleep(after_s)
    assert not starting.done(), "the start should still be connecting"
    starting.cancel()
    try:
        await starting
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the start should have been cancelled")
    await asyncio.sleep(after_s)
    return [t for t in asyncio.all_tasks() - before if t is not asyncio.current_task() and not t.done()]
