"""The hub's webhook server, shared by every inbound adapter that serves HTTP.

Routes are looked up per request in a table the adapters fill at ``start()``, so adapters can
start (and restart) in any order, before or after the server itself.
"""

from __future__ import annotations

__all__ = ["WebServer"]

import logging

from aiohttp import web

from bus.adapter_api import Handler
from bus.errors import BusError

log = logging.getLogger("bus.runtime.web")


class WebServer:
    def __init__(self, host: str, port: int, *, name: str = "webhooks") -> None:
        self._host = host
        self._port = port
        self._name = name
        self._routes: dict[tuple[str, str], Handler] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        key = (method.upper(), path)
        if key in self._routes and self._routes[key] is not handler:
            raise BusError(f"two inbound adapters serve {method} {path}")
        self._routes[key] = handler

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        handler = self._routes.get((request.method, request.path))
        if handler is not None:
            response: web.StreamResponse = await handler(request)
            return response
        if any(path == request.path for _, path in self._routes):
            return web.json_response({"error": f"method {request.method} not allowed on {request.path}"}, status=405)
        return web.json_response({"error": f"no inbound adapter serves {request.path}"}, status=404)

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application(client_max_size=64 * 1024 * 1024)  # adapters enforce their own limits
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=10)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("%s server listening on http://%s:%d", self._name, self._host, self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()  # waits for in-flight requests (up to shutdown_timeout)
