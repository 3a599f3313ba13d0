"""The ops port answers requests it cannot parse with 400 and counts them, without an ERROR and a
traceback per request: anyone who reaches the port (a scanner, TLS spoken to the plain port, a URL
over 8 KiB) filled the log with them, and log-based alerts fired."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import REGISTRY

from ops.server import OpsServer


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("bus_http_refused_total", {"server": "ops", "reason": reason}) or 0.0


async def ready() -> dict[str, bool]:
    return {"kafka": True}


async def answer_to(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        async with asyncio.timeout(10):
            return await reader.read()  # the server answers and closes
    finally:
        writer.close()


async def test_requests_that_are_not_http_are_answered_400_and_counted_not_logged_as_errors(caplog: pytest.LogCaptureFixture) -> None:
    server = OpsServer("127.0.0.1", 0, ready)
    await server.start()
    assert server.port is not None
    try:
        before = refused("head_too_large"), refused("malformed")
        caplog.set_level(logging.DEBUG)
        long_url = await answer_to(server.port, b"GET /readyz?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        broken = await answer_to(server.port, b"GET /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        not_http = await answer_to(server.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40)  # a TLS hello
        assert long_url.startswith(b"HTTP/1.0 400") and broken.startswith(b"HTTP/1.0 400"), (long_url[:80], broken[:80])
        assert not_http.startswith(b"HTTP/1.0 400"), not_http[:80]
        assert refused("head_too_large") == before[0] + 1 and refused("malformed") == before[1] + 2
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]
        # A good request on the same server is served as before.
        assert (await answer_to(server.port, b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).startswith(b"HTTP/1.1 200")
    finally:
        await server.stop()
