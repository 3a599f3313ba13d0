"""A stand-in for a case-management REST API (Salesforce Service Cloud-like), where the hub
depends on it.

- ``PATCH /services/data/v59.0/sobjects/Case/Legacy_Case_No__c/{id}``: upsert by an external id,
  as Salesforce does: 201 ``{"id", "success": true, "created": true}`` for a new case, 200 with
  ``created: false`` for an update. Bearer token required (401 ``INVALID_SESSION_ID``).
- Restricted picklists: ``Status`` (New, Working, Escalated, Closed) and ``Priority`` (High,
  Medium, Low); another value is 400 ``INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST`` naming the
  field, as are a missing ``Subject`` (``REQUIRED_FIELD_MISSING``) and an unknown field
  (``INVALID_FIELD``).
"""

from __future__ import annotations

__all__ = ["CaseApi"]

import zlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from examples.kit.standin import StandIn

PICKLISTS = {"Status": {"New", "Working", "Escalated", "Closed"}, "Priority": {"High", "Medium", "Low"}}
FIELDS = {"Subject", "Description", "Status", "Priority", "Origin", "SuppliedName", "Account_Number__c", "Category__c", "Legacy_Opened__c"}


def _error(code: str, message: str, fields: list[str], status: int = 400) -> web.Response:
    return web.json_response([{"errorCode": code, "message": message, "fields": fields}], status=status)


@dataclass
class CaseApi(StandIn):
    token: str = "00Dcases!demo-session-token"
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)  # external id -> current fields
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (external id, body) in arrival order

    def routes(self, app: web.Application) -> None:
        app.router.add_patch("/services/data/v59.0/sobjects/Case/Legacy_Case_No__c/{external_id}", self._upsert)

    async def _upsert(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error("INVALID_SESSION_ID", "Session expired or invalid", [], 401)
        body = await request.json()
        unknown = sorted(set(body) - FIELDS)
        if unknown:
            return _error("INVALID_FIELD", f"No such column '{unknown[0]}' on sobject of type Case", unknown)
        for name, allowed in PICKLISTS.items():
            if body.get(name) not in allowed:
                return _error(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", f"{name}: bad value for restricted picklist field: {body.get(name)}", [name]
                )
        external_id = request.match_info["external_id"]
        created = external_id not in self.cases
        if created and not body.get("Subject"):
            return _error("REQUIRED_FIELD_MISSING", "Required fields are missing: [Subject]", ["Subject"])
        self.calls.append((external_id, body))
        self.cases[external_id] = {**self.cases.get(external_id, {}), **body}
        answer = {"id": f"5005g{zlib.crc32(external_id.encode()):010d}AAA", "success": True, "errors": [], "created": created}
        return web.json_response(answer, status=201 if created else 200)
