"""Reaching a NATS server, for the ``nats`` inbound and outbound alike."""

from __future__ import annotations

__all__ = ["connect"]

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError

from bus.adapter_api import ClientTls, RetryableError

_NATS_LOG = logging.getLogger("nats.aio.client")


async def connect(url: str, what: str, tls: ClientTls | None = None) -> Any:
    # With reconnects allowed without limit, nats-py also retries the *first* connection without
    # limit: bound it, so a server that is down at start is a RetryableError, not a hang.
    try:
        context = tls.context() if tls is not None else None  # tls:// without it: the system's CAs
    except (OSError, ssl.SSLError) as exc:
        raise RetryableError(f"{what}: the TLS files cannot be used: {exc}") from exc
    client = NatsClient()
    last: list[Exception] = []  # what the last attempt met (a refused certificate): the timeout alone says nothing

    async def noted(error: Exception) -> None:
        last[:] = [error]  # the last only: the callback lives as long as the connection
        _NATS_LOG.error("nats: encountered error", exc_info=error)  # nats-py's own line, which a callback replaces

    try:
        await asyncio.wait_for(
            client.connect(servers=[url], connect_timeout=5, allow_reconnect=True, max_reconnect_attempts=-1, tls=context, error_cb=noted),
            timeout=10,
        )
    except (NatsError, OSError, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await client.close()
        host = url.rsplit("@", 1)[-1]  # never log a password
        met = f" (last: {last[0]!r})" if last and isinstance(exc, TimeoutError) else ""
        # A server that wants a client certificate ends the TLS connection after the handshake: the
        # client meets a TLS alert, or, as the timing falls, a broken pipe or a reset. Said plainly.
        if url.startswith("tls://") and last and isinstance(last[0], ssl.SSLError | BrokenPipeError | ConnectionResetError):
            met += (
                "; the server ended the TLS connection: it may want a client certificate (tls.cert_file, tls.key_file) or refuse this one"
            )
        raise RetryableError(f"{what}: cannot connect to NATS at {host}: {exc!r}{met}") from exc
    return client
