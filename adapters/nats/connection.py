"""Reaching a NATS server, for the ``nats`` inbound and outbound alike."""

from __future__ import annotations

__all__ = ["connect"]

import asyncio
import contextlib
import ssl
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError

from bus.adapter_api import ClientTls, RetryableError


async def connect(url: str, what: str, tls: ClientTls | None = None) -> Any:
    # With reconnects allowed without limit, nats-py also retries the *first* connection without
    # limit: bound it, so a server that is down at start is a RetryableError, not a hang.
    try:
        context = tls.context() if tls is not None else None  # tls:// without it: the system's CAs
    except (OSError, ssl.SSLError) as exc:
        raise RetryableError(f"{what}: the TLS files cannot be used: {exc}") from exc
    client = NatsClient()
    errors: list[Exception] = []  # what each attempt met (a refused certificate): the timeout alone says nothing

    async def noted(error: Exception) -> None:
        errors.append(error)

    try:
        await asyncio.wait_for(
            client.connect(servers=[url], connect_timeout=5, allow_reconnect=True, max_reconnect_attempts=-1, tls=context, error_cb=noted),
            timeout=10,
        )
    except (NatsError, OSError, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await client.close()
        host = url.rsplit("@", 1)[-1]  # never log a password
        met = f" (last: {errors[-1]!r})" if errors and isinstance(exc, TimeoutError) else ""
        raise RetryableError(f"{what}: cannot connect to NATS at {host}: {exc!r}{met}") from exc
    return client
