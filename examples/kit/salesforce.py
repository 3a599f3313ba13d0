"""A stand-in for Salesforce's REST API (Lead records), where the hub depends on it.

- ``POST /services/oauth2/token``: the OAuth2 client-credentials flow of a connected app (id and
  secret in HTTP Basic or the form); the token acts as the app's integration user. Like
  Salesforce, the answer has no ``expires_in``.
- ``GET /services/data/v59.0/query?q=<SOQL>``: the one query shape the recipe sends,
  ``SELECT <fields> FROM Lead WHERE SystemModstamp >= <datetime> ORDER BY SystemModstamp, Id``;
  anything else is 400 ``MALFORMED_QUERY``. Pages of ``page_size`` records, with ``done`` and a
  ``nextRecordsUrl`` (``/services/data/v59.0/query/01g...-N``) while more remain. Datetimes are
  written as Salesforce writes them (``2026-12-02T10:00:00.000+0000``).
- ``PATCH /services/data/v59.0/sobjects/Lead/{Id}``: 204; unknown id 404 ``NOT_FOUND``; an
  invalid ``Status`` 400 ``INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST``.
- Every write stamps ``SystemModstamp`` and ``LastModifiedById``: a user's id for ``edit``, the
  integration user's for the API. That field is how the recipe tells the hub's own writes apart.
"""

from __future__ import annotations

__all__ = ["Salesforce"]

import base64
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from examples.kit.standin import StandIn

API = "/services/data/v59.0"
STATUSES = {"Open - Not Contacted", "Working - Contacted", "Closed - Converted", "Closed - Not Converted"}
QUERY = re.compile(
    r"^SELECT\s+(?P<fields>[\w\s,]+?)\s+FROM\s+Lead\s+WHERE\s+SystemModstamp\s*>=\s*(?P<since>\S+)\s+ORDER\s+BY\s+SystemModstamp,\s*Id$",
    re.IGNORECASE,
)


def _error(code: str, message: str, status: int) -> web.Response:
    return web.json_response([{"errorCode": code, "message": message}], status=status)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


@dataclass
class Salesforce(StandIn):
    client_id: str = "3MVG9demoConsumerKey"
    client_secret: str = "demo-consumer-secret"
    integration_user: str = "005INTEGRATION0001"
    page_size: int = 10
    leads: dict[str, dict[str, Any]] = field(default_factory=dict)
    api_writes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (Id, body) of every PATCH
    _tokens: set[str] = field(default_factory=set)
    _cursors: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _clock: datetime = field(default_factory=lambda: datetime(2026, 12, 2, 9, 0, tzinfo=UTC))

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/services/oauth2/token", self._token)
        app.router.add_get(f"{API}/query", self._query)
        app.router.add_get(f"{API}/query/{{cursor}}", self._more)
        app.router.add_patch(f"{API}/sobjects/Lead/{{id}}", self._patch)

    def _touch(self, lead: dict[str, Any], by: str) -> None:
        # Salesforce stamps with its own clock; a millisecond step keeps stamps distinct and ordered.
        self._clock = max(self._clock + timedelta(milliseconds=1), datetime.now(UTC))
        lead["SystemModstamp"] = _stamp(self._clock)
        lead["LastModifiedById"] = by

    def edit(self, lead_id: str, user: str = "005USERADA0001", **changes: Any) -> None:
        """A salesperson creates or changes a lead in Salesforce's own UI."""
        lead = self.leads.setdefault(lead_id, {"attributes": {"type": "Lead", "url": f"{API}/sobjects/Lead/{lead_id}"}, "Id": lead_id})
        lead.update(changes)
        self._touch(lead, user)

    def _caller(self, request: web.Request) -> bool:
        return request.headers.get("Authorization", "").removeprefix("Bearer ") in self._tokens

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        header = request.headers.get("Authorization", "")
        user, _, password = base64.b64decode(header[6:]).decode().partition(":") if header.startswith("Basic ") else ("", "", "")
        client = (user or str(form.get("client_id", "")), password or str(form.get("client_secret", "")))
        if form.get("grant_type") != "client_credentials" or client != (self.client_id, self.client_secret):
            return web.json_response({"error": "invalid_client", "error_description": "invalid client credentials"}, status=400)
        token = "00D" + secrets.token_urlsafe(24)
        self._tokens.add(token)
        return web.json_response({"access_token": token, "instance_url": self.url, "token_type": "Bearer", "issued_at": "0"})

    async def _query(self, request: web.Request) -> web.Response:
        if not self._caller(request):
            return _error("INVALID_SESSION_ID", "Session expired or invalid", 401)
        match = QUERY.match(request.query.get("q", "").strip())
        if match is None:
            return _error("MALFORMED_QUERY", f"unexpected query: {request.query.get('q', '')[:120]!r}", 400)
        try:
            since = datetime.fromisoformat(match["since"].replace("Z", "+00:00"))
        except ValueError:
            return _error(
                "MALFORMED_QUERY", f"value of filter criterion for field 'SystemModstamp' must be a datetime: {match['since']}", 400
            )
        fields = [f.strip() for f in match["fields"].split(",")]
        rows = sorted(
            (lead for lead in self.leads.values() if datetime.fromisoformat(lead["SystemModstamp"]) >= since),
            key=lambda lead: (lead["SystemModstamp"], lead["Id"]),
        )
        selected = [{"attributes": lead["attributes"], **{f: lead.get(f) for f in fields}} for lead in rows]
        return self._page(selected, len(selected))

    async def _more(self, request: web.Request) -> web.Response:
        if not self._caller(request):
            return _error("INVALID_SESSION_ID", "Session expired or invalid", 401)
        rest = self._cursors.pop(request.match_info["cursor"], None)
        if rest is None:
            return _error("INVALID_QUERY_LOCATOR", "invalid query locator", 400)
        return self._page(rest, int(request.match_info["cursor"].rsplit("-", 1)[1]))

    def _page(self, records: list[dict[str, Any]], total: int) -> web.Response:
        page, rest = records[: self.page_size], records[self.page_size :]
        body: dict[str, Any] = {"totalSize": total, "done": not rest, "records": page}
        if rest:
            cursor = f"01g{secrets.token_hex(6)}-{total}"
            self._cursors[cursor] = rest
            body["nextRecordsUrl"] = f"{API}/query/{cursor}"
        return web.json_response(body)

    async def _patch(self, request: web.Request) -> web.Response:
        if not self._caller(request):
            return _error("INVALID_SESSION_ID", "Session expired or invalid", 401)
        lead = self.leads.get(request.match_info["id"])
        if lead is None:
            return _error("NOT_FOUND", "The requested resource does not exist", 404)
        body = await request.json()
        if "Status" in body and body["Status"] not in STATUSES:
            return _error(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", f"Status: bad value for restricted picklist field: {body['Status']}", 400
            )
        self.api_writes.append((lead["Id"], body))
        lead.update(body)
        self._touch(lead, self.integration_user)
        return web.Response(status=204)
