"""Reaching a NATS server, for the ``nats`` inbound and outbound alike."""

from __future__ import annotations

__all__ = ["connect"]

import asyncio
import contextlib
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError

from bus.adapter_api import RetryableError


async def connect(url: str, what: str) -> Any:
    # With reconnects allowed without limit, nats-py also retries the *first* connection without
    # limit: bound it, so a server that is down at start is a RetryableError, not a hang.
    client = NatsClient()
    try:
        await asyncio.wait_for(
            client.connect(servers=[url], connect_timeout=5, allow_reconnect=True, max_reconnect_attempts=-1), timeout=10
        )
    except (NatsError, OSError, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await client.close()
        host = url.rsplit("@", 1)[-1]  # never log a password
        raise RetryableError(f"{what}: cannot connect to NATS at {host}: {exc!r}") from exc
    return client
