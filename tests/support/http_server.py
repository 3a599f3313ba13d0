"""Serve an aiohttp app on a free loopback port: the one way every local stand-in (targets, SaaS
APIs, key servers, webhook receivers) starts. The kernel picks the port at bind time, so two
servers can never race for the same one."""

from __future__ import annotations

from aiohttp import web


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    # A stand-in's stop does not wait for answers still being held back (a hung or slow target):
    # aiohttp's default waits up to 60 s for them.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, int(runner.addresses[0][1])
