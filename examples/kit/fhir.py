"""A stand-in for an EHR's FHIR R4 REST API (Encounter search), where the hub depends on it.

``GET /fhir/Encounter?_lastUpdated=ge<instant>&_sort=_lastUpdated&_count=N`` answers a
``Bundle`` of type ``searchset``: ``entry[].resource`` sorted by ``meta.lastUpdated`` then id,
``total``, and ``link[]`` with ``relation: next`` pointing at the following page (an opaque
``_getpages`` token, as HAPI FHIR does). Content type ``application/fhir+json``. A bearer token
is required (401 with an ``OperationOutcome``), as is a well-formed ``_lastUpdated`` (400
``OperationOutcome`` otherwise).
"""

from __future__ import annotations

__all__ = ["FhirServer"]

import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from examples.kit.standin import StandIn


def _outcome(status: int, code: str, text: str) -> web.Response:
    body = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]}
    return web.Response(status=status, text=json.dumps(body), content_type="application/fhir+json")


@dataclass
class FhirServer(StandIn):
    token: str = "ehr-demo-token"
    encounters: dict[str, dict[str, Any]] = field(default_factory=dict)
    searches: int = 0
    _pages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _clock: datetime = field(default_factory=lambda: datetime(2026, 12, 1, 8, 0, tzinfo=UTC))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/fhir/Encounter", self._search)

    def save(self, encounter: dict[str, Any]) -> None:
        """Create or update an Encounter, stamping meta.lastUpdated and versionId as a server does."""
        self._clock += timedelta(seconds=1)
        old = self.encounters.get(encounter["id"])
        version = int(old["meta"]["versionId"]) + 1 if old else 1
        self.encounters[encounter["id"]] = {
            **encounter,
            "meta": {"versionId": str(version), "lastUpdated": self._clock.isoformat().replace("+00:00", "Z")},
        }

    async def _search(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _outcome(401, "login", "Authentication required")
        self.searches += 1
        token = request.query.get("_getpages")
        if token is not None:
            matches = self._pages.pop(token, None)
            if matches is None:
                return _outcome(410, "not-found", f"Search page {token} expired")
        else:
            since = request.query.get("_lastUpdated", "")
            if since and not since.startswith(("ge", "gt")):
                return _outcome(400, "invalid", f"_lastUpdated: unsupported prefix in {since!r}")
            try:
                floor = datetime.fromisoformat(since[2:].replace("Z", "+00:00")) if since else None
            except ValueError:
                return _outcome(400, "invalid", f"_lastUpdated: not an instant: {since!r}")
            matches = sorted(self.encounters.values(), key=lambda e: (e["meta"]["lastUpdated"], e["id"]))
            if floor is not None:
                strict = since.startswith("gt")
                matches = [
                    e
                    for e in matches
                    if (stamp := datetime.fromisoformat(e["meta"]["lastUpdated"].replace("Z", "+00:00"))) > floor
                    or (not strict and stamp == floor)
                ]
        count = int(request.query.get("_count", "20"))
        page, rest = matches[:count], matches[count:]
        links = [{"relation": "self", "url": str(request.url)}]
        if rest:
            nxt = secrets.token_hex(8)
            self._pages[nxt] = rest
            links.append({"relation": "next", "url": f"{self.url}/Encounter?_getpages={nxt}&_count={count}"})
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(matches),
            "link": links,
            "entry": [{"fullUrl": f"{self.url}/Encounter/{e['id']}", "resource": e, "search": {"mode": "match"}} for e in page],
        }
        return web.Response(text=json.dumps(bundle), content_type="application/fhir+json")
