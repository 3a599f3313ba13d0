"""A local stand-in for a SaaS API that grants access with OAuth2 authorization code (QuickBooks,
Xero, HubSpot-like), strict where the real ones are:

- ``GET /authorize``: the consent page; the test's "user" approves by following it: a 302 to the
  ``redirect_uri`` with ``code`` and ``state``. PKCE S256 is required (RFC 7636).
- ``POST /token`` (client id and secret in HTTP Basic): ``authorization_code`` (the code once,
  the same redirect_uri, the verifier matching the challenge) and ``refresh_token`` with
  rotation: every refresh returns a new refresh token; the one before it stays valid for
  ``grace`` seconds (as Okta and Xero keep it, so a client that crashed before storing the new
  one can refresh again), after that presenting it is reuse: the whole grant is revoked
  (OAuth 2.0 Security BCP 4.14). ``refresh_delay`` holds the answer after the rotation is made,
  so a test can kill the client in the middle of one.
- ``POST /admin/revoke``: the company withdraws its consent; every token of it stops working.
- ``POST /api/invoices`` and ``GET /api/contacts?updated_since=``: the API, for a live access
  token (``access_ttl`` seconds) only; 401 otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from examples.kit.standin import serve


@dataclass
class OAuthProvider:
    client_id: str = "hub-app"
    client_secret: str = "app-s3cret"
    access_ttl: float = 5.0
    grace: float = 30.0
    refresh_delay: float = 0.0
    port: int = 0
    invoices: list[dict[str, Any]] = field(default_factory=list)
    contacts: list[dict[str, Any]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)  # what happened: login, refresh, reuse, revoked...
    refreshing: int = 0  # refreshes answered to no one yet (held by refresh_delay)
    _codes: dict[str, dict[str, str]] = field(default_factory=dict)
    _refresh: dict[str, dict[str, Any]] = field(default_factory=dict)  # refresh token -> {grant, valid_until (None: current)}
    _access: dict[str, tuple[str, float]] = field(default_factory=dict)  # access token -> (grant, expires)
    _revoked: set[str] = field(default_factory=set)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, what: str) -> int:
        return sum(1 for e in self.events if e == what)

    async def _authorize(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("client_id") != self.client_id or q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return web.json_response({"error": "invalid_request", "error_description": "client_id and PKCE S256 are required"}, status=400)
        code = secrets.token_urlsafe(16)
        self._codes[code] = {"challenge": q["code_challenge"], "redirect_uri": q["redirect_uri"]}
        raise web.HTTPFound(f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q.get('state', '')})}")

    def _client_ok(self, request: web.Request) -> bool:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    def _issue(self, grant: str) -> dict[str, Any]:
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(32)
        self._access[access] = (grant, time.time() + self.access_ttl)
        self._refresh[refresh] = {"grant": grant, "valid_until": None}
        return {"access_token": access, "refresh_token": refresh, "token_type": "bearer", "expires_in": self.access_ttl}

    async def _token(self, request: web.Request) -> web.Response:
        if not self._client_ok(request):
            return web.json_response({"error": "invalid_client"}, status=401)
        form = await request.post()
        if form.get("grant_type") == "authorization_code":
            found = self._codes.pop(str(form.get("code", "")), None)
            verifier = str(form.get("code_verifier", ""))
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if found is None or found["redirect_uri"] != form.get("redirect_uri") or found["challenge"] != challenge:
                return web.json_response({"error": "invalid_grant", "error_description": "code, redirect_uri or verifier"}, status=400)
            self.events.append("login")
            return web.json_response(self._issue(secrets.token_hex(8)))
        if form.get("grant_type") != "refresh_token":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        presented = str(form.get("refresh_token", ""))
        entry = self._refresh.get(presented)
        if entry is None or entry["grant"] in self._revoked:
            self.events.append("refused")
            return web.json_response({"error": "invalid_grant", "error_description": "the refresh token is not valid"}, status=400)
        if entry["valid_until"] is not None and time.time() > entry["valid_until"]:
            self._revoked.add(entry["grant"])  # reuse of a rotated token: someone stole it, or lost the new one
            self.events.append("reuse")
            return web.json_response({"error": "invalid_grant", "error_description": "refresh token reused"}, status=400)
        if entry["valid_until"] is None:
            entry["valid_until"] = time.time() + self.grace  # rotated: the old one lives for the grace period
        answer = self._issue(entry["grant"])
        self.events.append("refresh" if entry["valid_until"] - time.time() >= self.grace - 0.001 else "refresh in grace")
        self.refreshing += 1
        try:
            await asyncio.sleep(self.refresh_delay)  # the rotation is made; the answer is still on its way
        finally:
            self.refreshing -= 1
        return web.json_response(answer)

    async def _revoke(self, _: web.Request) -> web.Response:
        self._revoked |= {e["grant"] for e in self._refresh.values()}
        self.events.append("revoked")
        return web.json_response({})

    def _authorized(self, request: web.Request) -> bool:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        grant, expires = self._access.get(token, ("", 0.0))
        if not grant or time.time() > expires or grant in self._revoked:
            self.events.append("api 401")
            return False
        return True

    async def _contacts(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "invalid_token"}, status=401)
        since = request.query.get("updated_since", "")
        return web.json_response(sorted((c for c in self.contacts if c["updated_at"] >= since), key=lambda c: (c["updated_at"], c["id"])))

    async def _invoices(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "invalid_token"}, status=401)
        self.invoices.append(await request.json())
        return web.json_response({"id": len(self.invoices)}, status=201)

    async def start(self) -> OAuthProvider:
        app = web.Application()
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        app.router.add_post("/admin/revoke", self._revoke)
        app.router.add_post("/api/invoices", self._invoices)
        app.router.add_get("/api/contacts", self._contacts)
        self._runner, self.port = await serve(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
