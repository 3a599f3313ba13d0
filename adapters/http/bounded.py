"""Answers read whole into memory, but never past a limit: for the adapters that poll APIs with
httpx (``http_poll``, ``graphql_poll``), and for SOAP's calls over aiohttp (``soap``, ``soap_poll``).

An API that ignores the page size it is asked for (and answers with every record it has), or
streams without end, would otherwise take the hub's memory: the inbound pod killed, restarted,
and killed again at the next poll, with every inbound adapter it runs. The limit counts the body
as decoded (a compressed answer cannot get round it) and is checked as it arrives.
"""

from __future__ import annotations

__all__ = ["AnswerTooLarge", "AnswerTooSlow", "answer_budget", "read_body_bounded", "read_bounded"]

import asyncio
from typing import Any

import aiohttp
import httpx

from bus.adapter_api import whole_number

# Headers of the answer as it came on the wire; the body handed on is already decoded.
_WIRE_ONLY = frozenset({"content-encoding", "content-length", "transfer-encoding"})


class AnswerTooLarge(Exception):
    """The answer's body is larger than the adapter's ``max_page_bytes``."""


class AnswerTooSlow(httpx.ReadTimeout):
    """The whole answer did not come within its budget, though each read did within the timeout."""


def answer_budget(timeout_s: float) -> float:
    """How long a whole call may take, its answer read to the end: six times the adapter's
    ``timeout_s``, at least a minute. The timeouts to connect and between reads never fire on an
    answer that comes a byte every few seconds (a broken proxy, or a service that means it); a
    budget as tight as ``timeout_s`` would also count the time the hub's own loop was busy."""
    return max(60.0, 6 * timeout_s)


async def read_bounded(
    client: httpx.AsyncClient, method: str, url: str, *, limit: int, within: float | None = None, **options: Any
) -> httpx.Response:
    """``client.request(method, url, **options)``, its body read only up to ``limit`` bytes, the
    whole of it within ``within`` seconds (AnswerTooSlow, an httpx timeout, after that)."""
    request = client.build_request(method, url, **options)
    try:
        async with asyncio.timeout(within):
            response = await client.send(request, stream=True)
            try:
                declared = whole_number(response.headers.get("Content-Length", ""))
                if declared is not None and declared > limit and "Content-Encoding" not in response.headers:
                    raise AnswerTooLarge(f"{method} {response.request.url} answers {declared:,} bytes; at most {limit:,} are read")
                parts: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise AnswerTooLarge(
                            f"{method} {response.request.url} answers more than {limit:,} bytes; at most {limit:,} are read"
                        )
                    parts.append(chunk)
            finally:
                await response.aclose()
    except TimeoutError:
        raise AnswerTooSlow(f"the answer did not end within {within:g}s (its bytes came slowly)", request=request) from None
    headers = [(name, value) for name, value in response.headers.multi_items() if name.lower() not in _WIRE_ONLY]
    return httpx.Response(response.status_code, headers=headers, content=b"".join(parts), request=response.request)


async def read_body_bounded(response: aiohttp.ClientResponse, *, limit: int) -> bytes:
    """An aiohttp answer's body (decoded), read only up to ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            response.close()  # the rest is never read: the connection cannot be reused
            raise AnswerTooLarge(f"{response.method} {response.url} answers more than {limit:,} bytes; at most {limit:,} are read")
        parts.append(chunk)
    return b"".join(parts)
