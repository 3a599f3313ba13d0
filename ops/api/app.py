"""The management API: ``/api/v1`` on the ops port, described by ``/api/v1/openapi.json``.

Every answer is a model of ``ops.api.models``; every error is an RFC 9457 problem
(``application/problem+json``), whatever went wrong: an unknown name (404), a bad body (400), a
missing or weak token (401, 403, from the ops server's guard), the hub's Kafka not answering
(503 with Retry-After, logged at WARNING), or a bug (500, logged with its traceback, the answer
saying only that). What the hub is doing comes from a ``HubView``, which
the composition root (``bus.app``) provides: this package reads the hub only through it.

Access: every call needs a token from ``ops.tokens`` (``Authorization: Bearer <token>``); a
``read`` token reads, a ``write`` token also changes things. Reads here include
``POST /config/validate``, which changes nothing.
"""

from __future__ import annotations

__all__ = ["PREFIX", "TOKEN_NAME", "HubView", "api_app", "problem"]

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from http import HTTPStatus
from typing import Any, Literal, Protocol

from aiohttp import web
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ValidationError

from bus.documents import parse_json
from bus.errors import BusError, Busy, ClaimLost, RetryableError, brief
from bus.logs import REDACTOR
from bus.numbers import whole_number
from ops.api.models import (
    BackfillDone,
    BackfillRequest,
    DeadLetterAction,
    DeadLetterDone,
    DeadLetterPage,
    EventLineage,
    EventSearch,
    InboundPauseState,
    MigrationRuns,
    PauseRequest,
    PauseState,
    PositionChange,
    PositionChanged,
    PositionState,
    Problem,
    ReconcileBalance,
    RedeliveryDone,
    RedeliveryRequest,
    SubscriberDetail,
    Topology,
    ValidationReport,
)
from ops.api.openapi import openapi_document

log = logging.getLogger("ops.api")
PREFIX = "/api/v1"
TOKEN_NAME = web.RequestKey("token_name", str)  # who made the request (set by the ops server's guard)
_MAX_OFFSET = 100_000  # a page is found in memory of offset + limit letters: deeper ones, narrowed by time or class
MAX_CONFIG_BYTES = 1_000_000


class HubView(Protocol):
    """What the API reads of a running hub."""

    async def topology(self) -> Topology: ...

    async def subscriber(self, name: str) -> SubscriberDetail | None: ...

    def validate(self, text: str) -> ValidationReport: ...

    def webhooks_openapi(self, server: str) -> dict[str, Any]: ...

    def asyncapi(self) -> dict[str, Any]: ...

    async def set_paused(self, name: str, paused: bool, by: str, reason: str = "") -> PauseState | None: ...

    async def set_inbound_paused(self, name: str, paused: bool, by: str, reason: str = "") -> InboundPauseState | None: ...

    async def positions(self) -> list[PositionState]: ...

    async def change_position(self, name: str, action: Literal["reset", "adopt"], *, force: bool = False) -> PositionChanged | None: ...

    async def dead_letters(self, where: DeadLetterAction, *, offset: int, limit: int) -> DeadLetterPage: ...

    async def dead_letter_action(self, action: Literal["replay", "purge"], where: DeadLetterAction) -> DeadLetterDone: ...

    async def reconcile(self, subscriber: str | None, window_s: int) -> list[ReconcileBalance]: ...

    async def redeliver(self, name: str, asked: RedeliveryRequest) -> RedeliveryDone | None: ...

    async def backfill(self, name: str, asked: BackfillRequest) -> BackfillDone | None: ...

    def running_config(self) -> dict[str, Any]: ...

    async def search_events(self, value: str) -> EventSearch: ...

    async def event(self, event_id: str) -> EventLineage | None: ...

    async def migrations(self) -> MigrationRuns: ...

    async def migration_report(self, run_id: str) -> str | None: ...


class ApiError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def problem(status: int, detail: str, instance: str | None = None, **headers: str) -> web.Response:
    body = Problem(title=HTTPStatus(status).phrase, status=status, detail=REDACTOR.redact(detail), instance=instance)
    return web.Response(
        text=body.model_dump_json(exclude_none=True), status=status, content_type="application/problem+json", headers=headers
    )


def _answer(model: BaseModel) -> web.Response:
    # Secrets are masked where the answer leaves, as /readyz does.
    return web.json_response(REDACTOR.redact_tree(model.model_dump(mode="json", by_alias=True)))


@web.middleware
async def _problems(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return problem(exc.status, exc.detail, request.path)
    except web.HTTPException as exc:  # aiohttp's own: no such path (404), method (405), ...
        if exc.status < 400:
            raise
        detail = exc.text if exc.text and exc.text != exc.reason else f"{request.method} {request.path}: {exc.reason.lower()}"
        return problem(exc.status, detail, request.path)
    except (KafkaError, RetryableError) as exc:  # the hub's Kafka does not answer: try again, not a bug of the hub
        log.warning("management API: %s %s: Kafka did not answer (%r)", request.method, request.path, exc)
        return problem(503, f"the hub's Kafka did not answer ({exc}): try again shortly", request.path, **{"Retry-After": "5"})
    except Exception:
        log.exception("management API: %s %s failed", request.method, request.path)
        return problem(500, "the hub failed to answer this request (its log has the details)", request.path)


def api_app(view: HubView) -> web.Application:
    """The API's aiohttp application, to mount at ``/api/v1`` on the ops server."""
    app = web.Application(middlewares=[_problems], client_max_size=MAX_CONFIG_BYTES)
    document = openapi_document()

    async def get_openapi(_: web.Request) -> web.Response:
        return web.json_response(document)

    async def get_topology(_: web.Request) -> web.Response:
        return _answer(await view.topology())

    async def get_subscribers(_: web.Request) -> web.Response:
        return web.json_response(REDACTOR.redact_tree([s.model_dump(mode="json") for s in (await view.topology()).subscribers]))

    async def get_subscriber(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        found = await view.subscriber(name)
        if found is None:
            known = ", ".join(s.name for s in (await view.topology()).subscribers) or "none"
            raise ApiError(404, f"no subscriber named {name!r} (subscribers: {known})")
        return _answer(found)

    async def post_validate(request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            text = raw.decode()
        except UnicodeDecodeError as exc:
            raise ApiError(400, f"the config is not UTF-8 text: {exc}") from exc
        if request.content_type == "application/json":
            try:
                text = json.dumps(parse_json(text))  # JSON is YAML: validated as the same document
            except ValueError as exc:
                raise ApiError(400, f"invalid JSON: {exc}") from exc
        if not text.strip():
            raise ApiError(400, "send the config (YAML or JSON) as the request body")
        return _answer(view.validate(text))

    app.router.add_get("/openapi.json", get_openapi)

    async def get_webhooks_openapi(request: web.Request) -> web.Response:
        return web.json_response(view.webhooks_openapi(server=""))

    async def get_asyncapi(_: web.Request) -> web.Response:
        return web.json_response(view.asyncapi())

    app.router.add_get("/webhooks.openapi.json", get_webhooks_openapi)
    app.router.add_get("/asyncapi.json", get_asyncapi)
    app.router.add_get("/topology", get_topology)
    app.router.add_get("/subscribers", get_subscribers)
    app.router.add_get("/subscribers/{name}", get_subscriber)

    async def pause_request(request: web.Request) -> PauseRequest:
        """The optional body of a pause or resume: ``{"reason": "..."}``."""
        raw = await request.read() if request.can_read_body else b""
        if not raw.strip():
            return PauseRequest()
        try:
            return PauseRequest.model_validate(parse_json(raw))
        except ValueError as exc:  # JSON that does not parse, and pydantic's ValidationError (a ValueError)
            raise ApiError(400, f'send nothing, or a JSON object {{"reason": "..."}}: {exc}') from None

    async def steer(request: web.Request, inbound: bool) -> web.Response:
        """Pause or resume a subscriber, or an inbound adapter (``inbound``): 202 once recorded."""
        name, paused = request.match_info["name"], request.match_info["action"] == "pause"
        by = request.get(TOKEN_NAME, "unknown")
        reason = (await pause_request(request)).reason
        state = await (view.set_inbound_paused if inbound else view.set_paused)(name, paused, by=by, reason=reason)
        what = "inbound adapter" if inbound else "subscriber"
        if state is None:
            topology = await view.topology()
            known = ", ".join(n.name for n in (topology.inbound if inbound else topology.subscribers)) or "none"
            raise ApiError(404, f"no {what} named {name!r} ({what}s: {known})")
        log.warning(
            "audit: %s %s %s %s%s",
            by,
            "paused" if paused else "resumed",
            "inbound" if inbound else "subscriber",
            name,
            f" ({REDACTOR.redact(reason)})" if reason else "",
        )
        return web.json_response(state.model_dump(mode="json"), status=202)

    async def post_pause(request: web.Request) -> web.Response:
        return await steer(request, inbound=False)

    async def post_inbound_pause(request: web.Request) -> web.Response:
        return await steer(request, inbound=True)

    async def get_positions(_: web.Request) -> web.Response:
        return web.json_response(REDACTOR.redact_tree([row.model_dump(mode="json") for row in await view.positions()]))

    async def post_position(request: web.Request) -> web.Response:
        """Forget (reset) or keep (adopt) a paused inbound's saved position, as `bus positions` does."""
        name, action = request.match_info["name"], request.match_info["action"]
        raw = await request.read() if request.can_read_body else b""
        try:
            asked = PositionChange.model_validate(parse_json(raw)) if raw.strip() else PositionChange()
        except ValueError as exc:  # JSON that does not parse, and pydantic's ValidationError (a ValueError)
            raise ApiError(400, f'send nothing, or a JSON object {{"force": true}}: {exc}') from None
        try:
            done = await view.change_position(name, "reset" if action == "reset" else "adopt", force=asked.force)
        except RetryableError:
            raise  # the hub's Kafka: 503, said by the middleware
        except BusError as exc:  # not paused, a source that keeps its own place, more than the filter changed
            raise ApiError(409, str(exc)) from None
        if done is None:
            known = ", ".join(n.name for n in (await view.topology()).inbound) or "none"
            raise ApiError(404, f"no inbound adapter named {name!r} (inbound adapters: {known})")
        if done.changed:
            log.warning("audit: %s %s the position of inbound %s: %s", request.get(TOKEN_NAME, "unknown"), action, name, done.said)
        return _answer(done)

    def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
        raw = request.query.get(name)
        if raw is None:
            return default
        number = whole_number(raw, high)
        if number is None or number < low:
            raise ApiError(400, f"{name} must be a whole number from {low} to {high}, not {brief(raw, 40)!r}")
        return number

    def filters(query: Mapping[str, str], body: Mapping[str, Any] | None = None) -> DeadLetterAction:
        given: dict[str, Any] = dict(body or {})
        for name in ("subscriber", "since", "until", "error_class"):
            if name in query:
                given[name] = query[name]
        if "id" in query:
            given["ids"] = [query["id"]]
        if "all" in query:
            if query["all"] not in ("true", "1", "false", "0"):
                raise ApiError(400, f"all must be true or false (1 or 0), not {query['all']!r}")
            given["all"] = query["all"] in ("true", "1")
        try:
            where = DeadLetterAction.model_validate(given)
            for moment in (where.since, where.until):
                if moment is not None:
                    datetime.fromisoformat(moment)
        except (ValidationError, ValueError) as exc:
            raise ApiError(400, f"bad filter: {exc}") from None
        return where

    async def get_dead_letters(request: web.Request) -> web.Response:
        where = filters(request.query)
        offset, limit = query_int(request, "offset", 0, 0, _MAX_OFFSET), query_int(request, "limit", 100, 1, 1000)
        try:
            return _answer(await view.dead_letters(where, offset=offset, limit=limit))
        except LookupError as exc:
            raise ApiError(404, str(exc)) from None

    async def post_dead_letters(request: web.Request) -> web.Response:
        action: Literal["replay", "purge"] = "replay" if request.match_info["action"] == "replay" else "purge"
        try:  # parse_json: JSON nested 100,000 deep raised RecursionError out of json.loads (a 500)
            body = parse_json(await request.read()) if request.can_read_body else {}
        except ValueError as exc:
            raise ApiError(400, f"invalid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "send a JSON object of filters (subscriber, ids, since, until, error_class, all, dry_run)")
        where = filters({}, body)
        try:
            done = await view.dead_letter_action(action, where)
        except LookupError as exc:
            raise ApiError(404, str(exc)) from None
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        if not done.dry_run:
            log.warning(
                "audit: %s %sd %d dead letter(s) (%s)",
                request.get(TOKEN_NAME, "unknown"),
                action,
                done.done,
                where.model_dump_json(exclude_defaults=True),
            )
        return _answer(done)

    async def copies_asked(
        request: web.Request,
        model: type[RedeliveryRequest] | type[BackfillRequest],
        act: Callable[[str, Any], Awaitable[RedeliveryDone | BackfillDone | None]],
        did: str,
    ) -> web.Response:
        """A redelivery or a backfill: copies written to a subscriber's delivery topic for a window
        of time, the request checked the same way, the outcome answered, and an audit line."""
        name = request.match_info["name"]
        try:
            asked = model.model_validate(parse_json(await request.read()) if request.can_read_body else {})
            for moment in (asked.since, asked.until):
                if moment is not None:
                    datetime.fromisoformat(moment)
        except ValueError as exc:  # JSON that does not parse, a ValidationError, a time that is not one
            raise ApiError(400, f'send a JSON object {{"since": "<RFC 3339 time>", "until": ..., "dry_run": ...}}: {exc}') from None
        try:
            done = await act(name, asked)
        except Busy as exc:  # another redelivery or backfill of the subscriber is writing
            raise ApiError(409, str(exc)) from None
        except ClaimLost as exc:  # this one stopped, its claim on the subscriber out of date: ask again
            raise ApiError(503, str(exc)) from None
        except ValueError as exc:  # a window that cannot hold anything, a subscriber no route can backfill
            raise ApiError(400, str(exc)) from None
        except LookupError as exc:
            raise ApiError(404, str(exc)) from None
        if done is None:
            known = ", ".join(n.name for n in (await view.topology()).subscribers) or "none"
            raise ApiError(404, f"no subscriber named {name!r} (subscribers: {known})")
        if not done.dry_run:
            log.warning(
                "audit: %s %s %d event(s) to subscriber %s (%s)",
                request.get(TOKEN_NAME, "unknown"),
                did,
                done.sent,
                name,
                asked.model_dump_json(exclude_defaults=True),
            )
        return _answer(done)

    async def post_redeliver(request: web.Request) -> web.Response:
        """Send a subscriber again what it was delivered in a window of time (`bus redeliver`)."""
        return await copies_asked(request, RedeliveryRequest, view.redeliver, "redelivered")

    async def post_backfill(request: web.Request) -> web.Response:
        """Give a subscriber the events routed before it could receive them (`bus backfill`)."""
        return await copies_asked(request, BackfillRequest, view.backfill, "backfilled")

    async def get_reconcile(request: web.Request) -> web.Response:
        window = query_int(request, "window_s", 900, 1, 31 * 86400)
        try:
            balances = await view.reconcile(request.query.get("subscriber"), window)
        except LookupError as exc:
            raise ApiError(404, str(exc)) from None
        return web.json_response(REDACTOR.redact_tree([b.model_dump(mode="json") for b in balances]))

    async def get_events(request: web.Request) -> web.Response:
        value = request.query.get("q", "")
        if not value:
            raise ApiError(400, "say what to look for: ?q=<event id, key or subject>")
        return _answer(await view.search_events(value))

    async def get_event(request: web.Request) -> web.Response:
        event_id = request.match_info["id"]
        found = await view.event(event_id)
        if found is None:
            raise ApiError(404, f"no event {event_id!r} is known: not in the lineage index nor on a dead-letter topic")
        return _answer(found)

    async def get_config(_: web.Request) -> web.Response:
        return web.json_response(REDACTOR.redact_tree(view.running_config()))

    async def get_migrations(_: web.Request) -> web.Response:
        return _answer(await view.migrations())

    async def get_migration_report(request: web.Request) -> web.Response:
        run_id = request.match_info["run"]
        page = await view.migration_report(run_id)
        if page is None:
            raise ApiError(404, f"no report of a migration run {run_id!r} (GET {PREFIX}/migrations lists the runs)")
        return web.Response(text=REDACTOR.redact(page), content_type="text/html")

    app.router.add_get("/migrations", get_migrations)
    app.router.add_get("/migrations/{run}/report", get_migration_report)
    app.router.add_get("/config", get_config)
    app.router.add_get("/events", get_events)
    app.router.add_get("/events/{id:.+}", get_event)
    app.router.add_get("/dead-letters", get_dead_letters)
    app.router.add_post(r"/dead-letters/{action:replay|purge}", post_dead_letters)
    app.router.add_get("/reconcile", get_reconcile)
    app.router.add_post("/config/validate", post_validate)
    app.router.add_post(r"/subscribers/{name}/{action:pause|resume}", post_pause)
    app.router.add_post(r"/subscribers/{name}/redeliver", post_redeliver)
    app.router.add_post(r"/subscribers/{name}/backfill", post_backfill)
    app.router.add_post(r"/inbound/{name}/{action:pause|resume}", post_inbound_pause)
    app.router.add_get("/positions", get_positions)
    app.router.add_post(r"/inbound/{name}/position/{action:reset|adopt}", post_position)
    return app
