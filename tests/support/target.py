"""A local HTTP target that records what the hub delivers, standing in for an ERP or a SaaS API.

Its behaviour can be scripted per test: a status to answer (e.g. 503 with Retry-After), or a
function deciding per call. It is a real server on loopback, not a mock of the hub's code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from examples.kit.standin import serve


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)  # arrival, for rate checks
    answered: float = 0.0  # when the answer left: answered - at is how long the caller waited here


@dataclass
class Target:
    answer: Callable[[Call], tuple[int, dict[str, str]]] = field(default=lambda call: (200, {}))
    delay: Callable[[Call], float] = field(default=lambda call: 0.0)  # seconds before answering
    says: Callable[[Call], Any] | None = None  # the answer's JSON body (default: {"status": <status>})
    calls: list[Call] = field(default_factory=list)
    accepted: list[Call] = field(default_factory=list)
    port: int = 0
    in_flight: int = 0
    max_in_flight: int = 0  # the most calls the hub had open at once
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        call = Call(request.path, dict(request.headers), await request.json())
        self.calls.append(call)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if (pause := self.delay(call)) > 0:
                await asyncio.sleep(pause)  # a slow target: the hub's timeout may fire first
        finally:
            self.in_flight -= 1
        status, headers = self.answer(call)
        call.answered = time.monotonic()
        if 200 <= status < 300:
            self.accepted.append(call)
        body = {"status": status} if self.says is None else self.says(call)
        return web.json_response(body, status=status, headers=headers)

    async def start(self) -> Target:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.port = await serve(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 60.0) -> None:
        """Poll for a condition with a deadline (no sleeps as synchronisation)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"condition not met within {timeout}s; {len(self.accepted)} call(s) accepted so far")
            await asyncio.sleep(0.05)
