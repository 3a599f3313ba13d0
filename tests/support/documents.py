"""A stand-in for an HTTP API that stores JSON documents by URL, as a REST API does: the target
`bus migrate` writes to, reads back from and restores (tests/integration/test_migrate_*.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import Callable
from typing import Any, Self

from aiohttp import web

from examples.kit.standin import serve


class DocumentService:
    """PUT stores (with a field of its own, as services add), GET answers, DELETE removes; 404 for
    what is not there. ``refuse``: paths answered 400, read or written (a record the service will
    not show); ``delay``: seconds each PUT takes (a slow target); ``keeps``: how the service keeps
    a document it is given (its own layout of times, say), applied to each PUT's body."""

    def __init__(
        self,
        *,
        refuse: frozenset[str] = frozenset(),
        delay: float = 0.0,
        keeps: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self._keeps = keeps
        self.documents: dict[str, dict[str, Any]] = {}
        self.calls: Counter[str] = Counter()  # by method
        self.writes: Counter[str] = Counter()  # PUTs by path
        self.port = 0
        self._refuse = refuse
        self._delay = delay
        self._runner: web.AppRunner | None = None

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner, self.port = await serve(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def handle(self, request: web.Request) -> web.Response:
        self.calls[request.method] += 1
        path = request.path
        if path in self._refuse:
            return web.json_response({"error": "record locked by another user"}, status=400)
        if request.method == "PUT":
            await asyncio.sleep(self._delay)
            self.writes[path] += 1
            document = await request.json()
            if self._keeps is not None:
                document = self._keeps(document)
            self.documents[path] = {**document, "stored_by": "stand-in"}
            return web.json_response({"ok": True})
        if request.method == "DELETE":
            found = self.documents.pop(path, None)
            return web.json_response({"deleted": True}, status=200 if found else 404)
        found = self.documents.get(path)
        return web.json_response(found) if found is not None else web.json_response({"error": "not found"}, status=404)

    def checksum(self) -> str:
        return hashlib.sha256(json.dumps(self.documents, sort_keys=True).encode()).hexdigest()
