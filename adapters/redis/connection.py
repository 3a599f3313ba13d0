"""Reaching a Redis server, for the ``redis`` inbound and outbound alike."""

from __future__ import annotations

__all__ = ["connect", "where"]

import contextlib
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from bus.adapter_api import ClientTls, RetryableError


def where(url: str) -> str:
    """The server as logs may show it: host, port and database, never the password."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}/{parts.path.strip('/') or '0'}"


async def connect(url: str, what: str, *, tls: ClientTls | None, timeout_s: float, client_name: str) -> Redis:
    """A client whose server answered a PING, or RetryableError naming the server.

    The client's own retries are off: a command sent again after a lost answer could append to a
    stream twice, and the hub's runtime already backs off and retries (adapters never retry on
    their own). ``timeout_s`` bounds connecting and every answer: a server that takes the
    connection and never answers fails the call instead of holding it."""
    options: dict[str, Any] = {}
    if tls is not None:
        options.update(
            ssl_ca_certs=str(tls.ca) if tls.ca else None,
            ssl_certfile=str(tls.cert) if tls.cert else None,
            ssl_keyfile=str(tls.key) if tls.key else None,
            ssl_password=tls.key_password.get_secret_value() if tls.key_password else None,
        )
    client = Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        client_name=client_name,
        **options,
    )
    try:
        await client.ping()
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await client.aclose()
        if isinstance(exc, AuthenticationError) or (isinstance(exc, ResponseError) and "WRONGPASS" in str(exc)):
            raise RetryableError(f"{what}: Redis at {where(url)} refused the credentials: {exc}") from exc
        if isinstance(exc, RedisError | OSError | TimeoutError):
            raise RetryableError(f"{what}: cannot reach Redis at {where(url)}: {exc!r}") from exc
        raise
    return client
