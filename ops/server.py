"""The ops server: ``/healthz`` (alive), ``/readyz`` (ready for traffic), ``/metrics`` (Prometheus),
and, when the registry is embedded, the schema registry's REST API under ``/registry``."""

from __future__ import annotations

__all__ = ["OpsServer"]

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

log = logging.getLogger("ops.server")
Readiness = Callable[[], Awaitable[dict[str, bool]]]
Problems = Callable[[], Awaitable[dict[str, str]]]
Detail = Callable[[], dict[str, object]]


class OpsServer:
    def __init__(
        self,
        host: str,
        port: int,
        readiness: Readiness,
        *,
        problems: Problems | None = None,
        detail: Detail | None = None,
        metrics: CollectorRegistry = REGISTRY,
    ) -> None:
        self._problems = problems
        self._detail = detail
        self._host = host
        self._port = port
        self._readiness = readiness
        self._metrics = metrics
        self._subapps: list[tuple[str, web.Application]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    def mount(self, prefix: str, app: web.Application) -> None:
        if self._runner is not None:
            raise RuntimeError("mount sub-apps before the ops server starts")
        self._subapps.append((prefix, app))

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, _: web.Request) -> web.Response:
        checks = await self._readiness()
        ready = bool(checks) and all(checks.values())
        answer: dict[str, object] = {"ready": ready, "checks": checks}
        if not ready and self._problems is not None:
            answer["problems"] = await self._problems()  # why, per failing check: what an operator reads first
        if self._detail is not None:
            answer.update(self._detail())  # restarted components, subscribers' states: shown even when ready
        return web.json_response(answer, status=200 if ready else 503)

    async def _metrics_page(self, _: web.Request) -> web.Response:
        body = generate_latest(self._metrics)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        for prefix, sub in self._subapps:
            app.add_subapp(prefix, sub)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        self.port = self._runner.addresses[0][1]
        log.info("ops server on http://%s:%d (/healthz /readyz /metrics)", self._host, self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
