"""A stand-in for HubSpot's CRM contacts API and its webhooks, where the hub depends on them.

- ``POST /crm/v3/objects/contacts/batch/upsert`` with a private app's bearer token: upsert by
  ``idProperty: email``; 200 ``{"status": "COMPLETE", "results": [{"id", "properties", "new"}]}``.
  An ``hs_lead_status`` outside its options is 400 ``VALIDATION_ERROR``; ``throttle_next``
  answers that many calls 429 (``RATE_LIMIT``, ``policyName: SECONDLY``).
- Webhooks: every change, by a user in the UI (``edit``) or through the API, is sent to the
  subscribed URL in batches (a JSON array), signed with HubSpot's v3 scheme
  (``X-HubSpot-Signature-v3``: base64 HMAC-SHA256 of method + URL + body + timestamp, keyed with
  the app's client secret). Each event says who made the change: ``changeSource`` (``CRM_UI``,
  ``INTEGRATION``) and ``sourceId`` (the user, or the app's id). Changes made through the API by
  the hub's own app come back like any other: that is the loop the recipe must not close.

HubSpot-like, not HubSpot: a real ``contact.propertyChange`` event carries one property; these
carry the contact's properties too (as a workflow's webhook action does), so the hub needs no
second call to read the contact.
"""

from __future__ import annotations

__all__ = ["HubSpot"]

import asyncio
import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any, Self

import httpx
from aiohttp import web

from examples.kit.standin import StandIn

LEAD_STATUSES = {"NEW", "OPEN", "IN_PROGRESS", "OPEN_DEAL", "UNQUALIFIED", "ATTEMPTED_TO_CONTACT", "CONNECTED", "BAD_TIMING"}


def hubspot_signature(secret: str, method: str, url: str, body: bytes, timestamp_ms: int) -> str:
    message = method.encode() + url.encode() + body + str(timestamp_ms).encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


@dataclass
class HubSpot(StandIn):
    token: str = "pat-na1-demo-private-app-token"
    app_id: str = "4131917"
    client_secret: str = "hubspot-app-client-secret"
    webhook_url: str = ""
    throttle_next: int = 0
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> properties
    api_writes: list[dict[str, Any]] = field(default_factory=list)  # every upsert input
    webhook_answers: list[int] = field(default_factory=list)
    delivered: dict[str, int] = field(default_factory=dict)  # webhook events delivered, by changeSource
    _by_email: dict[str, str] = field(default_factory=dict)
    _events: list[dict[str, Any]] = field(default_factory=list)
    _event_id: int = 0
    _sender: asyncio.Task[None] | None = None

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/crm/v3/objects/contacts/batch/upsert", self._upsert)

    async def start(self) -> Self:
        await super().start()
        self._sender = asyncio.get_running_loop().create_task(self._send_webhooks())
        return self

    async def stop(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
        await super().stop()

    @property
    def pending_webhooks(self) -> int:
        return len(self._events)

    def _changed(self, contact_id: str, source: str, source_id: str) -> None:
        self._event_id += 1
        self._events.append(
            {
                "eventId": self._event_id,
                "subscriptionId": 2104,
                "portalId": 62515,
                "appId": int(self.app_id),
                "occurredAt": int(time.time() * 1000),
                "subscriptionType": "contact.propertyChange",
                "attemptNumber": 0,
                "objectId": int(contact_id),
                "changeSource": source,
                "sourceId": source_id,
                "properties": dict(self.contacts[contact_id]),
            }
        )

    def _save(self, email: str, properties: dict[str, Any]) -> tuple[str, bool]:
        contact_id = self._by_email.get(email)
        new = contact_id is None
        if contact_id is None:
            contact_id = self._by_email[email] = str(51000 + len(self._by_email))
            self.contacts[contact_id] = {"hs_object_id": contact_id}
        self.contacts[contact_id].update(properties, email=email, lastmodifieddate=str(int(time.time() * 1000)))
        return contact_id, new

    def edit(self, email: str, user: str = "userId:9120", **properties: Any) -> None:
        """A marketer changes a contact in HubSpot's UI."""
        contact_id, _ = self._save(email, properties)
        self._changed(contact_id, "CRM_UI", user)

    async def _upsert(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response(
                {"status": "error", "message": "Authentication credentials not found.", "category": "INVALID_AUTHENTICATION"}, status=401
            )
        if self.throttle_next:
            self.throttle_next -= 1
            body = {
                "status": "error",
                "message": "You have reached your secondly limit.",
                "errorType": "RATE_LIMIT",
                "policyName": "SECONDLY",
            }
            return web.json_response(body, status=429)
        inputs = (await request.json()).get("inputs") or []
        for item in inputs:
            status = (item.get("properties") or {}).get("hs_lead_status")
            if item.get("idProperty") != "email" or not item.get("id"):
                return web.json_response(
                    {"status": "error", "message": "idProperty must be email, with an id", "category": "VALIDATION_ERROR"}, status=400
                )
            if status is not None and status not in LEAD_STATUSES:
                problem = {"isValid": False, "message": f"{status} was not one of the allowed options", "name": "hs_lead_status"}
                message = f"Property values were not valid: {json.dumps([problem])}"
                return web.json_response({"status": "error", "message": message, "category": "VALIDATION_ERROR"}, status=400)
        results = []
        for item in inputs:
            self.api_writes.append(item)
            contact_id, new = self._save(item["id"], item.get("properties") or {})
            self._changed(contact_id, "INTEGRATION", self.app_id)  # HubSpot reports API changes too
            results.append({"id": contact_id, "properties": self.contacts[contact_id], "new": new})
        return web.json_response({"status": "COMPLETE", "results": results})

    async def _send_webhooks(self) -> None:
        """Batches of up to 100 events, signed, retried (as HubSpot does) until answered 2xx."""
        async with httpx.AsyncClient(timeout=10) as client:
            while True:
                await asyncio.sleep(0.2)
                if not self._events or not self.webhook_url:
                    continue
                batch = self._events[:100]
                body = json.dumps(batch).encode()
                stamp = int(time.time() * 1000)
                headers = {
                    "Content-Type": "application/json",
                    "X-HubSpot-Signature-v3": hubspot_signature(self.client_secret, "POST", self.webhook_url, body, stamp),
                    "X-HubSpot-Request-Timestamp": str(stamp),
                }
                try:
                    answer = await client.post(self.webhook_url, content=body, headers=headers)
                    self.webhook_answers.append(answer.status_code)
                    if answer.is_success:
                        del self._events[: len(batch)]
                        for event in batch:
                            self.delivered[event["changeSource"]] = self.delivered.get(event["changeSource"], 0) + 1
                    else:
                        for event in batch:
                            event["attemptNumber"] += 1
                except httpx.TransportError:
                    self.webhook_answers.append(0)
