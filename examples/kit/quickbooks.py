"""A stand-in for the QuickBooks Online Accounting API, where the hub depends on it.

- ``POST /oauth2/v1/tokens/bearer``: OAuth2 client credentials (client id and secret in HTTP
  Basic, as Intuit's token endpoint takes them); tokens live ``token_ttl`` seconds.
- ``POST /v3/company/{realm}/invoice?minorversion=75&requestid=...``: creates an invoice. Like
  QuickBooks, a repeated ``requestid`` returns the first answer and creates nothing (that is
  how QuickBooks makes retries safe). Validation answers 400 with a ``Fault`` body
  (``ValidationFault``: no lines, an unknown ``CustomerRef``, line amounts that do not add up);
  an unknown or expired token answers 401 (``AuthenticationFailed``); ``throttle_next`` answers
  that many requests 429 (``ThrottleExceeded``) and ``fail_next`` that many 503.
"""

from __future__ import annotations

__all__ = ["QuickBooks"]

import base64
import secrets
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aiohttp import web

from examples.kit.standin import StandIn


def _fault(kind: str, message: str, detail: str, code: str, status: int) -> web.Response:
    body = {
        "Fault": {"Error": [{"Message": message, "Detail": detail, "code": code}], "type": kind},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    return web.json_response(body, status=status)


@dataclass
class QuickBooks(StandIn):
    realm: str = "9341453050143621"
    client_id: str = "ABdemoClientId"
    client_secret: str = "demo-client-secret"
    token_ttl: float = 3600.0
    customers: dict[str, str] = field(default_factory=lambda: {"1": "Shopify sales", "58": "Ada Lovelace", "59": "Grace Hopper"})
    throttle_next: int = 0
    fail_next: int = 0
    invoices: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[str, Any] = field(default_factory=dict)  # requestid -> first answer
    requests: int = 0
    _tokens: dict[str, float] = field(default_factory=dict)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/oauth2/v1/tokens/bearer", self._token)
        app.router.add_post("/v3/company/{realm}/invoice", self._invoice)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        user, _, password = base64.b64decode(request.headers.get("Authorization", "Basic ")[6:] or b"").decode().partition(":")
        if (user, password) != (self.client_id, self.client_secret) or form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "invalid_client"}, status=401)
        token = secrets.token_urlsafe(24)
        self._tokens[token] = time.monotonic() + self.token_ttl
        return web.json_response({"access_token": token, "token_type": "bearer", "expires_in": int(self.token_ttl)})

    async def _invoice(self, request: web.Request) -> web.Response:
        self.requests += 1
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self._tokens.get(token, 0) < time.monotonic():
            return _fault("AUTHENTICATION", "message=AuthenticationFailed", "Token expired or invalid", "3200", 401)
        if request.match_info["realm"] != self.realm:
            return _fault("AUTHORIZATION", "message=ApplicationAuthorizationFailed", "Unknown realm", "003100", 403)
        if self.throttle_next:
            self.throttle_next -= 1
            return _fault("ThrottleExceeded", "message=ThrottleExceeded", "Throttle exceeded", "003001", 429)
        if self.fail_next:
            self.fail_next -= 1
            return web.Response(status=503, text="Service Unavailable")
        request_id = request.query.get("requestid", "")
        if request_id and request_id in self.answers:
            return web.json_response(self.answers[request_id])  # a retry: the first answer, nothing created
        try:
            invoice = await request.json()
        except ValueError:
            return _fault("ValidationFault", "Request has invalid or unsupported property", "Body is not JSON", "2010", 400)
        problem = self._problem(invoice)
        if problem:
            return _fault("ValidationFault", "A business validation error has occurred", problem, "6000", 400)
        created = {**invoice, "Id": str(len(self.invoices) + 1001), "TotalAmt": float(self._total(invoice)), "SyncToken": "0"}
        self.invoices.append(created)
        answer = {"Invoice": created, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if request_id:
            self.answers[request_id] = answer
        return web.json_response(answer)

    @staticmethod
    def _total(invoice: dict[str, Any]) -> Decimal:
        return sum((Decimal(str(line.get("Amount", 0))) for line in invoice.get("Line") or []), Decimal(0))

    def _problem(self, invoice: dict[str, Any]) -> str:
        customer = (invoice.get("CustomerRef") or {}).get("value")
        if customer not in self.customers:
            return f"Invalid Reference Id: CustomerRef {customer!r} does not exist"
        lines = invoice.get("Line") or []
        if not lines:
            return "Required param missing: Line"
        for n, line in enumerate(lines):
            detail = line.get("SalesItemLineDetail") or {}
            if line.get("DetailType") != "SalesItemLineDetail" or not (detail.get("ItemRef") or {}).get("value"):
                return f"Line {n}: SalesItemLineDetail with an ItemRef is required"
            if Decimal(str(detail.get("UnitPrice", 0))) * Decimal(str(detail.get("Qty", 0))) != Decimal(str(line.get("Amount"))):
                return f"Line {n}: Amount is not equal to UnitPrice * Qty"
        return ""
