"""The ops server: ``/healthz`` (alive), ``/readyz`` (ready for traffic), ``/metrics`` (Prometheus),
and, when the registry is embedded, the schema registry's REST API under ``/registry``.

Who may do what: health, readiness and metrics are open (probes and Prometheus need them), and so
are reads of the registry (every Kafka consumer of the canonical topics needs the schemas; they
are not secret). Every write (register, delete, change a compatibility level, and every write
endpoint added later) needs a token of scope ``write`` from ``ops.tokens``: ``Authorization:
Bearer <token>``, or Basic with the token as password (what Confluent clients send). No token:
401; a ``read`` token: 403. Each write is logged at INFO with the token's name (the audit trail).
The management API (``/api/v1``, ``ops.api``) needs a token for reads too; its refusals are RFC
9457 problems.
"""

from __future__ import annotations

__all__ = ["OpsServer"]

import base64
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from bus.logs import REDACTOR
from bus.metrics import HTTP_REFUSED
from bus.runtime.web import listen
from ops.api.app import PREFIX as API_PREFIX
from ops.api.app import TOKEN_NAME, problem
from ops.console import add_console

log = logging.getLogger("ops.server")
Readiness = Callable[[], Awaitable[dict[str, bool]]]
Problems = Callable[[], Awaitable[dict[str, str]]]
Detail = Callable[[], dict[str, object]]
Scope = Literal["read", "write"]


@dataclass(frozen=True, slots=True)
class Token:
    name: str
    secret: str
    scope: Scope


class _ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]  # generic only in typeshed
    """aiohttp's server logs every request it cannot parse (a port scanner, TLS or HTTP/2 spoken to
    the plain port, a URL over 8 KiB) at ERROR with a traceback: anyone who could reach the ops port
    could fill the log and set off alerts that read it. Those are counted, as the webhook server's
    are (``bus_http_refused_total{server="ops"}``), and logged at DEBUG; a handler's own failure (a
    500) stays an ERROR with its traceback."""

    def exception(self, msg: object, *args: object, exc_info: object = True, **kwargs: object) -> None:
        if self._refused(exc_info):
            self.logger.debug(msg, *args, exc_info=exc_info, **kwargs)
        else:
            self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)

    def debug(self, msg: object, *args: object, exc_info: object = None, **kwargs: object) -> None:
        self._refused(exc_info)  # aiohttp says a first request that is not HTTP at all at DEBUG itself: counted too
        self.logger.debug(msg, *args, exc_info=exc_info, **kwargs)

    @staticmethod
    def _refused(exc: object) -> bool:
        if not (isinstance(exc, HttpProcessingError) and exc.code < 500):
            return False
        HTTP_REFUSED.labels("ops", "head_too_large" if isinstance(exc, LineTooLong) else "malformed").inc()
        return True


def _is_read(request: web.Request) -> bool:
    """GET and HEAD, and the registry's two POSTs that only read (a compatibility test, a lookup)."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return True
    path = request.path.removeprefix("/registry")
    return request.method == "POST" and (path.startswith("/compatibility/") or (path.startswith("/subjects/") and path.count("/") == 2))


def _offered(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    kind, _, value = header.partition(" ")
    if kind.lower() == "bearer":
        return value.strip()
    if kind.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return ""
    return ""


_OPEN = frozenset({"/healthz", "/readyz", "/metrics"})
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="bus ops", Basic realm="bus ops"'}


class OpsServer:
    def __init__(
        self,
        host: str,
        port: int,
        readiness: Readiness,
        *,
        problems: Problems | None = None,
        detail: Detail | None = None,
        tokens: list[Token] | None = None,
        idle_timeout_s: float = 75.0,
        metrics: CollectorRegistry = REGISTRY,
    ) -> None:
        self._idle_timeout_s = idle_timeout_s
        self._tokens = list(tokens or [])
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

    def add_token(self, token: Token) -> None:
        """A token the hub gives itself (its own registry client), beside the configured ones."""
        self._tokens.append(token)

    def _token(self, offered: str) -> Token | None:
        found = None
        for token in self._tokens:  # compare with every one: timing tells nothing about which nearly matched
            if hmac.compare_digest(offered.encode(), token.secret.encode()):
                found = token
        return found

    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.path.startswith(API_PREFIX + "/") or request.path == API_PREFIX:
            return await self._guard_api(request, handler)
        if request.path in _OPEN or _is_read(request):
            return await handler(request)
        offered = _offered(request)
        token = self._token(offered) if offered else None
        if token is None:
            # Not "Authorization: Bearer <token>": answers are redacted, and that reads as a header with its secret.
            reason = "this endpoint changes the hub: send a token of scope write, as the header Authorization with Bearer and the token"
            return web.json_response({"error_code": 40101, "message": reason}, status=401, headers=_CHALLENGE)
        if token.scope != "write":
            return web.json_response({"error_code": 40301, "message": f"token {token.name!r} may only read"}, status=403)
        response = await handler(request)
        log.info("ops write by token %s: %s %s -> %d", token.name, request.method, request.path, response.status)
        return response

    async def _guard_api(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        offered = _offered(request)
        token = self._token(offered) if offered else None
        if token is None:
            why = (
                "send a token from ops.tokens, as the header Authorization with Bearer and the token"
                if not offered
                else "the token is not one of ops.tokens"
            )
            return problem(401, why, request.path, **_CHALLENGE)
        request[TOKEN_NAME] = token.name  # who, for the audit record of a write
        reads = request.method in ("GET", "HEAD", "OPTIONS") or request.path == f"{API_PREFIX}/config/validate"
        if reads:
            return await handler(request)
        if token.scope != "write":
            return problem(403, f"token {token.name!r} may only read", request.path)
        response = await handler(request)
        log.info("api write by token %s: %s %s -> %d", token.name, request.method, request.path, response.status)
        return response

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
        # Reasons quote targets' answers and URLs: secrets are masked here, where the answer leaves.
        return web.json_response(REDACTOR.redact_tree(answer), status=200 if ready else 503)

    async def _metrics_page(self, _: web.Request) -> web.Response:
        body = generate_latest(self._metrics)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        add_console(app)
        for prefix, sub in self._subapps:
            app.add_subapp(prefix, sub)
        self._runner = web.AppRunner(
            app, access_log=None, keepalive_timeout=self._idle_timeout_s, logger=_ServerLog(logging.getLogger("aiohttp.server"))
        )
        await self._runner.setup()
        await listen(web.TCPSite(self._runner, self._host, self._port), field="ops", host=self._host, port=self._port)
        self.port = self._runner.addresses[0][1]
        log.info("ops server on http://%s:%d (/healthz /readyz /metrics /api/v1 /console/)", self._host, self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
