"""The web console: a page served by the ops server at ``/console/`` that reads and steers the hub
through the management API alone (``/api/v1``, with the token the operator types in).

Plain HTML, CSS and JavaScript shipped in the package (``static/``): nothing to build, no Node.js
for ``pip install``, no request leaves the hub (no CDN), and no library to keep up to date. The
page itself holds no data, so it is served without a token; every call it makes carries the
token. Its Content-Security-Policy allows scripts, styles and requests to this origin only, and
the script builds every element with ``textContent`` (event data is untrusted input).

A migration's report (bus/migrate/report.py) opens from the console as a page of its own (a blob
of this origin, which keeps this policy): its one inline stylesheet is allowed by its hash, and
nothing else inline is.
"""

from __future__ import annotations

__all__ = ["add_console"]

import base64
import hashlib
from pathlib import Path

from aiohttp import web

from bus.migrate.report import STYLE

STATIC = Path(__file__).parent / "static"
_REPORT_STYLE = "'sha256-" + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode() + "'"
_HEADERS = {
    "Content-Security-Policy": f"default-src 'self'; style-src 'self' {_REPORT_STYLE}; img-src 'self' data:; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def add_console(app: web.Application) -> None:
    """``/console/`` (the page) and its assets, on the ops server's application."""

    async def page(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers=_HEADERS)

    async def to_page(_: web.Request) -> web.Response:
        raise web.HTTPFound("/console/")

    async def asset(request: web.Request) -> web.FileResponse:
        name = request.match_info["name"]
        found = STATIC / name
        if name not in {p.name for p in STATIC.iterdir()} or found.name == "index.html":
            raise web.HTTPNotFound()
        return web.FileResponse(found, headers=_HEADERS)

    app.router.add_get("/console", to_page)
    app.router.add_get("/console/", page)
    app.router.add_get("/console/{name}", asset)
