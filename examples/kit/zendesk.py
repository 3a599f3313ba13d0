"""A stand-in for a support desk's tickets API (Zendesk-like), where the hub depends on it.

``POST /api/v2/tickets.json`` with HTTP Basic ``<agent email>/token:<api token>``, body
``{"ticket": {"subject", "comment": {"body"}, "priority", "external_id", "tags"}}``: 201 with the
ticket. A repeated ``Idempotency-Key`` answers the first ticket again and creates nothing (as
Zendesk does for ticket creation). A ticket without a subject or comment, or with a priority
other than urgent/high/normal/low, is 422 ``RecordInvalid`` with ``details`` per field; a wrong
token is 401 ``Couldn't authenticate you``.
"""

from __future__ import annotations

__all__ = ["SupportDesk"]

import base64
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from examples.kit.standin import StandIn


@dataclass
class SupportDesk(StandIn):
    agent: str = "alerts@example.com"
    api_token: str = "zd-demo-api-token"
    tickets: list[dict[str, Any]] = field(default_factory=list)
    _answers: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def basic(self) -> str:
        return base64.b64encode(f"{self.agent}/token:{self.api_token}".encode()).decode()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/v2/tickets.json", self._create)

    async def _create(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Basic {self.basic}":
            return web.json_response({"error": "Couldn't authenticate you"}, status=401)
        key = request.headers.get("Idempotency-Key", "")
        if key in self._answers:
            return web.json_response(self._answers[key], status=201, headers={"x-idempotency-lookup": "hit"})
        ticket = (await request.json()).get("ticket") or {}
        details: dict[str, list[dict[str, str]]] = {}
        if not ticket.get("subject"):
            details["subject"] = [{"description": "Subject: cannot be blank", "error": "BlankValue"}]
        if not (ticket.get("comment") or {}).get("body"):
            details["description"] = [{"description": "Description: cannot be blank", "error": "BlankValue"}]
        if ticket.get("priority") not in (None, "urgent", "high", "normal", "low"):
            details["priority"] = [{"description": f"Priority: {ticket.get('priority')} is not valid", "error": "InvalidValue"}]
        if details:
            return web.json_response({"error": "RecordInvalid", "description": "Record validation errors", "details": details}, status=422)
        created = {**ticket, "id": 35436 + len(self.tickets), "status": "new"}
        self.tickets.append(created)
        answer = {"ticket": created}
        if key:
            self._answers[key] = answer
        return web.json_response(answer, status=201)
