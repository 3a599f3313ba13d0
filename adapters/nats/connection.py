"""Reaching a NATS server, for the ``nats`` inbound and outbound alike."""

from __future__ import annotations

__all__ = ["connect"]

import asyncio
import base64
import contextlib
import logging
import ssl
from pathlib import Path
from typing import Any

import nkeys
from nats.aio.client import Client as NatsClient
from nats.errors import AuthorizationError
from nats.errors import Error as NatsError

from adapters.nats.credentials import UserCredentials, check_seed_file, read_creds
from bus.adapter_api import ClientTls, RetryableError

_NATS_LOG = logging.getLogger("nats.aio.client")
_LOG = logging.getLogger("adapters.nats")


def _auth(credentials: Path | None, nkey_seed: Path | None, what: str) -> dict[str, Any]:
    """nats-py's options for a .creds file or an nkey seed, checked first (RetryableError saying
    what is wrong with the file: a Secret mounted late or rotated badly is tried again)."""
    try:
        if credentials is not None:
            kept = [read_creds(credentials)]

            def current() -> UserCredentials:  # read at every connection: a rotated file is taken up
                try:
                    kept[0] = read_creds(credentials)
                except ValueError as exc:  # half written while rotated, say: the last good ones, said
                    _LOG.warning("%s: %s; connecting with the credentials read before", what, exc)
                return kept[0]

            def user_jwt() -> bytearray:
                return bytearray(current().jwt)

            def sign(nonce: str) -> bytes:
                pair = nkeys.from_seed(bytearray(current().seed))
                try:
                    return base64.b64encode(pair.sign(nonce.encode()))
                finally:
                    pair.wipe()

            return {"user_jwt_cb": user_jwt, "signature_cb": sign}
        if nkey_seed is not None:
            check_seed_file(nkey_seed)
            return {"nkeys_seed": str(nkey_seed)}
    except ValueError as exc:
        raise RetryableError(f"{what}: {exc}") from None
    return {}


def _refused(error: BaseException) -> bool:
    """The server refused who the client said it is (nats-py says so as its own error class, or,
    on a first connection, as a plain error with the server's words)."""
    return isinstance(error, AuthorizationError) or "authorization violation" in str(error).lower()


async def connect(
    url: str, what: str, tls: ClientTls | None = None, *, credentials: Path | None = None, nkey_seed: Path | None = None
) -> Any:
    # With reconnects allowed without limit, nats-py also retries the *first* connection without
    # limit: bound it, so a server that is down at start is a RetryableError, not a hang.
    try:
        context = tls.context() if tls is not None else None  # tls:// without it: the system's CAs
    except (OSError, ssl.SSLError) as exc:
        raise RetryableError(f"{what}: the TLS files cannot be used: {exc}") from exc
    auth = _auth(credentials, nkey_seed, what)
    # Several servers of a cluster, comma-separated as the nats CLI takes them: the first start
    # needs one of them up, not a given one (once connected, the client learns the others).
    servers = [server.strip() for server in url.split(",") if server.strip()]
    client = NatsClient()
    last: list[Exception] = []  # what the last attempt met (a refused certificate): the timeout alone says nothing

    refused = asyncio.Event()  # the server said who we are is not welcome: no later attempt will do better

    async def noted(error: Exception) -> None:
        last[:] = [error]  # the last only: the callback lives as long as the connection
        if _refused(error):
            refused.set()
        _NATS_LOG.error("nats: encountered error", exc_info=error)  # nats-py's own line, which a callback replaces

    async def first_connection() -> None:
        connecting = asyncio.ensure_future(
            client.connect(
                servers=servers, connect_timeout=5, allow_reconnect=True, max_reconnect_attempts=-1, tls=context, error_cb=noted, **auth
            )
        )
        refusal = asyncio.ensure_future(refused.wait())
        try:
            await asyncio.wait({connecting, refusal}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            refusal.cancel()
            if not connecting.done():
                connecting.cancel()
            await asyncio.gather(refusal, connecting, return_exceptions=True)
        if not connecting.cancelled() and connecting.exception() is None:
            return
        if refused.is_set():
            raise AuthorizationError
        connecting.result()  # its error

    try:
        await asyncio.wait_for(first_connection(), timeout=10)
    except (NatsError, OSError, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await client.close()
        host = ", ".join(server.rsplit("@", 1)[-1] for server in servers)  # never log a password
        met = f" (last: {last[0]!r})" if last and isinstance(exc, TimeoutError) else ""
        # A server that wants a client certificate ends the TLS connection after the handshake: the
        # client meets a TLS alert, or, as the timing falls, a broken pipe or a reset. Said plainly.
        over_tls = any(server.startswith("tls://") for server in servers)
        if over_tls and last and isinstance(last[0], ssl.SSLError | BrokenPipeError | ConnectionResetError):
            met += (
                "; the server ended the TLS connection: it may want a client certificate (tls.cert_file, tls.key_file) or refuse this one"
            )
        if _refused(exc) or (last and _refused(last[0])):
            given = "the credentials file" if credentials else "the nkey seed" if nkey_seed else "the URL's user and password or token"
            met = f"; the server refused {given} (authorization violation): check that it is this server's user"
        raise RetryableError(f"{what}: cannot connect to NATS at {host}: {exc!r}{met}") from exc
    except BaseException:  # cancelled while connecting (the hub stopping): the client is closed, not left reconnecting
        with contextlib.suppress(Exception):
            await client.close()
        raise
    return client
