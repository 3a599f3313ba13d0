"""A local stand-in for a CRM's REST API (Salesforce / HubSpot-like), for the ``http_poll`` tests.

It behaves like the real thing where the hub depends on it, and is a real server on loopback:
- OAuth2 client credentials at ``POST /oauth/token`` (client id and secret in HTTP Basic, as RFC
  6749 prefers); tokens expire after ``token_ttl`` seconds and an expired or unknown token gets 401.
- ``GET /api/contacts``: records changed since ``updated_since`` (inclusive, as real APIs answer),
  sorted by (updated_at, id), in pages of ``per_page`` by ``page`` number; an ETag over the
  answer and 304 for ``If-None-Match``.
- ``GET /api/v2/contacts``: the same, walked by an opaque ``page_info`` cursor in a Link header
  (rel="next"), as Shopify and GitHub do.
- ``GET /api/v3/contacts``: the same, with the next cursor in the body (``meta.next_cursor``).
- Rate limits: every ``limit_every``-th request is answered 429 with Retry-After: 1; ``fail_next``
  answers that many requests 503.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from examples.kit.standin import serve


@dataclass
class CrmApi:
    client_id: str = "hub"
    client_secret: str = "s3cret"
    token_ttl: float = 3600.0
    limit_every: int = 0
    fail_next: int = 0
    delay: float = 0.0  # seconds before each API answer: a slow API, so a test can stop the hub mid-poll
    contacts: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)  # query and status of every API call
    tokens_issued: int = 0
    port: int = 0
    _tokens: dict[str, float] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _count: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, contact_id: str, updated_at: str, **fields: Any) -> None:
        self.contacts = [c for c in self.contacts if c["id"] != contact_id]
        self.contacts.append(
            {"id": contact_id, "updated_at": updated_at, "email": f"{contact_id}@example.com", "name": contact_id.title(), **fields}
        )

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        expected = "Basic " + base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": "invalid_client", "error_description": "client authentication failed"}, status=401)
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        token = secrets.token_urlsafe(16)
        self._tokens[token] = time.monotonic() + self.token_ttl
        self.tokens_issued += 1
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": self.token_ttl})

    async def _gate(self, request: web.Request) -> web.Response | None:
        """Authorisation and injected failures, before any data is read."""
        self._count += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self._tokens.get(token, 0) < time.monotonic():
            return web.json_response({"error": "invalid_token"}, status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.json_response({"error": "service unavailable"}, status=503)
        if self.limit_every and self._count % self.limit_every == 0:
            return web.json_response({"error": "rate limited"}, status=429, headers={"Retry-After": "1"})
        return None

    def _selected(self, request: web.Request) -> list[dict[str, Any]]:
        since = request.query.get("updated_since", "")
        rows = [c for c in self.contacts if c.get("updated_at", "") >= since]
        return sorted(rows, key=lambda c: (c.get("updated_at", ""), c["id"]))

    def _answer(self, request: web.Request, body: Any, headers: dict[str, str] | None = None) -> web.Response:
        text = json.dumps(body)
        etag = '"' + hashlib.sha256(text.encode()).hexdigest()[:16] + '"'
        status = 304 if request.headers.get("If-None-Match") == etag else 200
        self.requests.append({"path": request.path, "query": dict(request.query), "status": status, "at": time.monotonic()})
        if status == 304:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(text=text, content_type="application/json", headers={"ETag": etag, **(headers or {})})

    async def _contacts(self, request: web.Request) -> web.Response:
        if (refused := await self._gate(request)) is not None:
            self.requests.append({"path": request.path, "query": dict(request.query), "status": refused.status})
            return refused
        size = int(request.query.get("per_page", "100"))
        page = int(request.query.get("page", "1"))
        rows = self._selected(request)[(page - 1) * size : page * size]
        return self._answer(request, {"data": rows, "page": page})

    async def _contacts_linked(self, request: web.Request) -> web.Response:
        if (refused := await self._gate(request)) is not None:
            self.requests.append({"path": request.path, "query": dict(request.query), "status": refused.status})
            return refused
        size = int(request.query.get("limit", "50"))
        start = int(base64.urlsafe_b64decode(request.query["page_info"]).decode()) if "page_info" in request.query else 0
        selected = self._selected(request)
        rows = selected[start : start + size]
        headers = {}
        if start + size < len(selected):
            # Like Shopify: the next link carries only the cursor and limit, not the original filters.
            cursor = base64.urlsafe_b64encode(str(start + size).encode()).decode()
            since = request.query.get("updated_since", "")
            headers["Link"] = f'<{self.url}/api/v2/contacts?limit={size}&page_info={cursor}&updated_since={since}>; rel="next"'
        return self._answer(request, rows, headers)

    async def _contacts_cursor(self, request: web.Request) -> web.Response:
        if (refused := await self._gate(request)) is not None:
            self.requests.append({"path": request.path, "query": dict(request.query), "status": refused.status})
            return refused
        size = int(request.query.get("limit", "50"))
        start = int(request.query.get("cursor", "0") or 0)
        selected = self._selected(request)
        rows = selected[start : start + size]
        nxt = str(start + size) if start + size < len(selected) else None
        return self._answer(request, {"records": rows, "meta": {"next_cursor": nxt}})

    async def start(self) -> CrmApi:
        app = web.Application()
        app.router.add_post("/oauth/token", self._token)
        app.router.add_get("/api/contacts", self._contacts)
        app.router.add_get("/api/v2/contacts", self._contacts_linked)
        app.router.add_get("/api/v3/contacts", self._contacts_cursor)
        self._runner, self.port = await serve(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
