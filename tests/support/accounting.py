"""A local stand-in for an accounting API (QuickBooks / Xero-like) that takes OAuth2 client credentials.

- ``POST /oauth2/token``: client credentials, with the id and secret as form fields or in HTTP
  Basic; tokens live ``token_ttl`` seconds. ``revoke_all()`` invalidates every token issued, as
  an administrator rotating credentials does.
- ``POST /v3/invoices``: needs a live bearer token (401 with WWW-Authenticate otherwise); records
  the invoice and the Idempotency-Key it came with.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from aiohttp import web

from examples.kit.standin import serve


@dataclass
class AccountingApi:
    client_id: str = "hub"
    client_secret: str = "s3cret"
    token_ttl: float = 3600.0
    expires_in: Callable[[float], Any] = lambda ttl: ttl  # what the token answer says of token_ttl (a provider's quirk)
    invoices: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (Idempotency-Key, body)
    unauthorised: int = 0
    tokens_issued: int = 0
    port: int = 0
    _tokens: dict[str, float] = field(default_factory=dict)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def revoke_all(self) -> None:
        self._tokens.clear()

    def _client(self, request: web.Request, form: Any) -> tuple[str, str]:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return unquote_plus(user), unquote_plus(password)
        return str(form.get("client_id", "")), str(form.get("client_secret", ""))

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if self._client(request, form) != (self.client_id, self.client_secret):
            return web.json_response({"error": "invalid_client"}, status=401)
        token = secrets.token_urlsafe(16)
        self._tokens[token] = time.monotonic() + self.token_ttl
        self.tokens_issued += 1
        return web.json_response({"access_token": token, "token_type": "bearer", "expires_in": self.expires_in(self.token_ttl)})

    async def _invoice(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self._tokens.get(token, 0) < time.monotonic():
            self.unauthorised += 1
            return web.json_response({"fault": "AuthenticationFailed"}, status=401, headers={"WWW-Authenticate": "Bearer"})
        self.invoices.append((request.headers.get("Idempotency-Key", ""), await request.json()))
        return web.json_response({"Invoice": {"Id": str(len(self.invoices))}}, status=201)

    async def start(self) -> AccountingApi:
        app = web.Application()
        app.router.add_post("/oauth2/token", self._token)
        app.router.add_post("/v3/invoices", self._invoice)
        self._runner, self.port = await serve(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
