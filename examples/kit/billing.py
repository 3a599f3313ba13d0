"""A stand-in for a medical billing system's REST API, where the hub depends on it.

``POST /v1/invoice-lines`` with ``X-Api-Key``: one line per billed procedure (a CPT code), priced
from the practice's fee schedule, which lives here, in the billing system. A repeated
``Idempotency-Key`` answers the first result (200) and creates nothing; a line without
``line_id``, ``visit`` or ``procedure`` is 422 with the field named, as is a procedure code not
on the fee schedule; a wrong key is 401. Everything received is kept, so a test can search it
for data that must not be there.
"""

from __future__ import annotations

__all__ = ["BillingApi"]

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from examples.kit.standin import StandIn

FEES = {"99213": 12_500, "99214": 18_500, "99283": 32_000, "93000": 4_500, "36415": 1_500, "85025": 2_800, "71046": 9_600}


@dataclass
class BillingApi(StandIn):
    api_key: str = "bill-demo-key"
    lines: dict[str, dict[str, Any]] = field(default_factory=dict)  # line_id -> line
    raw: list[bytes] = field(default_factory=list)  # every body as received
    _seen: dict[str, dict[str, Any]] = field(default_factory=dict)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/invoice-lines", self._line)

    async def _line(self, request: web.Request) -> web.Response:
        if request.headers.get("X-Api-Key") != self.api_key:
            return web.json_response({"error": "invalid api key"}, status=401)
        body = await request.read()
        self.raw.append(body)
        key = request.headers.get("Idempotency-Key", "")
        if key and key in self._seen:
            return web.json_response(self._seen[key], status=200)
        line = await request.json()
        for name in ("line_id", "visit", "procedure"):
            if not line.get(name):
                return web.json_response({"error": f"{name} is required"}, status=422)
        if line["procedure"] not in FEES:
            return web.json_response({"error": f"unknown procedure code {line['procedure']!r}: not on the fee schedule"}, status=422)
        self.lines[line["line_id"]] = {**line, "amount_cents": FEES[line["procedure"]]}
        answer = {"id": line["line_id"], "status": "open"}
        if key:
            self._seen[key] = answer
        return web.json_response(answer, status=201)
