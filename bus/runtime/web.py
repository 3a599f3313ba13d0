"""The hub's webhook server, shared by every inbound adapter that serves HTTP.

Routes are looked up per request in a table the adapters fill at ``start()``, so adapters can
start (and restart) in any order, before or after the server itself.

Stopping drains: new requests are answered 503 (Retry-After, Connection: close) at once, requests
in progress finish (up to ``drain_timeout``), and only then does aiohttp shut down. aiohttp's own
shutdown stops reading from connections, so a request still receiving its body would otherwise
hang until aiohttp's timeout.
"""

from __future__ import annotations

__all__ = ["WebServer"]

import asyncio
import errno
import logging

from aiohttp import web

from bus.adapter_api import Handler
from bus.errors import BusError, StartupError

log = logging.getLogger("bus.runtime.web")


async def listen(site: web.TCPSite, *, field: str, host: str, port: int) -> None:
    """Start listening, or raise StartupError naming ``field`` (``http``, ``ops``), the address
    and what to do."""
    try:
        await site.start()
    except OSError as exc:
        fixes = {
            errno.EADDRINUSE: f"another process listens there: stop it, or set {field}.port to a free port (0 picks one)",
            errno.EACCES: f"ports below 1024 need privileges: set {field}.port to 1024 or above",
            errno.EADDRNOTAVAIL: f"no network interface has that address: set {field}.host to 127.0.0.1 or 0.0.0.0",
        }
        what = fixes.get(exc.errno or 0, f"check {field}.host and {field}.port")
        culprit = f"{field}.host" if exc.errno == errno.EADDRNOTAVAIL else f"{field}.port"
        raise StartupError(f"{culprit}: cannot listen on {host}:{port}: {exc.strerror or exc}; {what}") from None


class WebServer:
    def __init__(self, host: str, port: int, *, name: str = "webhooks", drain_timeout: float = 8.0, idle_timeout_s: float = 75.0) -> None:
        self._idle_timeout_s = idle_timeout_s  # also bounds a client that sends its headers too slowly (aiohttp's keep-alive timer)
        self._host = host
        self._port = port
        self._name = name
        self._drain_timeout = drain_timeout
        self._stopping = False
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._routes: dict[tuple[str, str], Handler] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        key = (method.upper(), path)
        if key in self._routes and self._routes[key] is not handler:
            raise BusError(f"two inbound adapters serve {method} {path}")
        self._routes[key] = handler

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if self._stopping:
            return web.json_response(
                {"error": "the hub is shutting down; retry"}, status=503, headers={"Retry-After": "5", "Connection": "close"}
            )
        handler = self._routes.get((request.method, request.path))
        if handler is not None:
            self._inflight += 1
            self._idle.clear()
            try:
                response: web.StreamResponse = await handler(request)
            finally:
                self._inflight -= 1
                if self._inflight == 0:
                    self._idle.set()
            return response
        if any(path == request.path for _, path in self._routes):
            return web.json_response({"error": f"method {request.method} not allowed on {request.path}"}, status=405)
        return web.json_response({"error": f"no inbound adapter serves {request.path}"}, status=404)

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application(client_max_size=64 * 1024 * 1024)  # adapters enforce their own limits
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1, keepalive_timeout=self._idle_timeout_s)
        await self._runner.setup()
        await listen(web.TCPSite(self._runner, self._host, self._port), field="http", host=self._host, port=self._port)
        self.port = self._runner.addresses[0][1]
        log.info("%s server listening on http://%s:%d", self._name, self._host, self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=self._drain_timeout)
        except TimeoutError:
            log.warning(
                "%s server: %d request(s) still in progress after %.0fs; closing them", self._name, self._inflight, self._drain_timeout
            )
        await runner.cleanup()
