"""The hub's webhook server, shared by every inbound adapter that serves HTTP.

Routes are looked up per request in a table the adapters fill at ``start()``, so adapters can
start (and restart) in any order, before or after the server itself. HTTP/1.1 itself is in
``http1.py``.

Stopping drains: new requests are answered 503 (Retry-After, Connection: close) at once, requests
in progress finish (up to ``drain_timeout``), and only then are connections closed.

One sweeper task a second closes connections quiet for longer than ``idle_timeout_s``: kept-alive
ones with nothing to do, and clients sending a request head too slowly (slowloris).
"""

from __future__ import annotations

__all__ = ["WebServer"]

import asyncio
import errno
import logging
import time

from aiohttp import web

from bus.adapter_api import Handler
from bus.errors import BusError, StartupError
from bus.metrics import HTTP_REFUSED
from bus.runtime.ending import WEBHOOK_DRAIN_S, cancel
from bus.runtime.http1 import Connection, Request, Response, json_response

log = logging.getLogger("bus.runtime.web")


def cannot_listen(exc: OSError, *, field: str, host: str, port: int) -> StartupError:
    """The StartupError for a failed listen, naming ``field`` (``http``, ``ops``), the address and
    what to do."""
    fixes = {
        errno.EADDRINUSE: f"another process listens there: stop it, or set {field}.port to a free port (0 picks one)",
        errno.EACCES: f"ports below 1024 need privileges: set {field}.port to 1024 or above",
        errno.EADDRNOTAVAIL: f"no network interface has that address: set {field}.host to 127.0.0.1 or 0.0.0.0",
    }
    what = fixes.get(exc.errno or 0, f"check {field}.host and {field}.port")
    culprit = f"{field}.host" if exc.errno == errno.EADDRNOTAVAIL else f"{field}.port"
    return StartupError(f"{culprit}: cannot listen on {host}:{port}: {exc.strerror or exc}; {what}")


async def listen(site: web.TCPSite, *, field: str, host: str, port: int) -> None:
    """Start an aiohttp site (the ops server), or raise StartupError naming ``field``."""
    try:
        await site.start()
    except OSError as exc:
        raise cannot_listen(exc, field=field, host=host, port=port) from None


class WebServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        name: str = "webhooks",
        drain_timeout: float = WEBHOOK_DRAIN_S,
        idle_timeout_s: float = 75.0,
        max_connections: int = 10_000,
    ) -> None:
        self._idle_timeout_s = idle_timeout_s  # also bounds a client that sends its head too slowly
        self._max_connections = max_connections
        self._full = False  # at max_connections when the sweeper last looked: said once, and when it is not
        self._host = host
        self._port = port
        self._name = name
        self._drain_timeout = drain_timeout
        self._stopping = False
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._routes: dict[tuple[str, str], Handler] = {}
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._connections: set[Connection] = set()
        self.port = 0

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        key = (method.upper(), path)
        if key in self._routes and self._routes[key] != handler:  # ==: a bound method is a new object at each access
            raise BusError(f"two inbound adapters serve {method} {path}")
        self._routes[key] = handler

    async def _dispatch(self, request: Request) -> Response:
        if self._stopping:
            return json_response(
                {"error": "the hub is shutting down; retry"}, status=503, headers={"Retry-After": "5", "Connection": "close"}
            )
        path = request.path
        handler = self._routes.get((request.method, path))
        if handler is not None:
            self._inflight += 1
            self._idle.clear()
            try:
                return await handler(request)
            finally:
                self._inflight -= 1
                if self._inflight == 0:
                    self._idle.set()
        if allowed := ", ".join(sorted(m for m, p in self._routes if p == path)):
            HTTP_REFUSED.labels(self._name, "method_not_allowed").inc()
            return json_response({"error": f"method {request.method} not allowed on {path}"}, status=405, headers={"Allow": allowed})
        HTTP_REFUSED.labels(self._name, "no_route").inc()  # a sender pointed at the wrong path shows here
        near = self._near(path)
        return json_response({"error": f"no inbound adapter serves {path}" + (f"; did you mean {near}?" if near else "")}, status=404)

    def _near(self, path: str) -> str | None:
        """The path served that ``path`` differs from only by a trailing slash or by case: the most
        common slip where a sender's URL is typed in. Said in the 404, which the sender's delivery
        log shows; not served under both, which would make the path a sender uses a matter of luck."""
        wanted = path.rstrip("/").lower()
        return next((p for _, p in sorted(self._routes) if p.rstrip("/").lower() == wanted), None)

    async def start(self) -> None:
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: Connection(self._dispatch, self._connections, server=self._name, limit=self._max_connections),
                self._host,
                self._port,
                reuse_address=True,
                backlog=1024,
            )
        except OSError as exc:
            raise cannot_listen(exc, field="http", host=self._host, port=self._port) from None
        self.port = self._server.sockets[0].getsockname()[1]
        self._sweeper = asyncio.create_task(self._sweep(), name=f"{self._name}-sweeper")
        log.info("%s server listening on http://%s:%d", self._name, self._host, self.port)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self._idle_timeout_s / 2))
            cutoff = time.monotonic() - self._idle_timeout_s
            for connection in [c for c in self._connections if c.quiet_since is not None and c.quiet_since < cutoff]:
                connection.close()
            full = len(self._connections) >= self._max_connections
            if full != self._full:
                self._full = full
                if full:
                    log.warning("%s server: %d connections open, its http.max_connections: new ones are closed as they come",
                                self._name, len(self._connections))  # fmt: skip
                else:
                    log.warning("%s server: %d connections open, under http.max_connections: new ones are served again",
                                self._name, len(self._connections))  # fmt: skip

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping = True
        server.close()  # no new connections; the open ones are answered 503 from here on
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=self._drain_timeout)
        except TimeoutError:
            log.warning(
                "%s server: %d request(s) still in progress after %.0fs; closing them", self._name, self._inflight, self._drain_timeout
            )
        if self._sweeper is not None:
            await cancel(self._sweeper)
        for connection in list(self._connections):
            connection.abort()
        await server.wait_closed()
