"""What every stand-in shares: a real aiohttp server on a free loopback port, started and stopped
the same way. A stand-in says only which routes it serves (``routes``)."""

from __future__ import annotations

__all__ = ["StandIn", "serve"]

from dataclasses import dataclass, field
from typing import Self

from aiohttp import web


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve an app on a free loopback port (the kernel picks it at bind time: no races)."""
    # A stand-in's stop does not wait for answers still being held back (a hung or slow target):
    # aiohttp's default waits up to 60 s for them.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, int(runner.addresses[0][1])


@dataclass
class StandIn:
    port: int = 0
    _runner: web.AppRunner | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> Self:
        app = web.Application()
        self.routes(app)
        self._runner, self.port = await serve(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
