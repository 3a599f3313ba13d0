"""A running hub's OAuth2 connections: each one's tokens, its state, and the refresher that
renews the access token before it expires.

States: ``connected``; ``refresh failing`` (the token endpoint is unreachable or answers
something else: retried with backoff, calls go on while the access token lives); ``consent lost``
(the provider refused the refresh token: revoked, expired, or rotated and lost; calls wait,
retried, never dead-lettered, until someone runs ``bus auth login`` again, which this hub picks
up by itself); ``no consent`` (never logged in). Every change is a WARNING in the log, the
``bus_connection_state`` gauge and /readyz detail.

The order of a refresh is the whole point: ask the provider, **store the new tokens (Kafka
acknowledged)**, then use them. A crash after the provider rotated the refresh token and before
the store leaves the previous one stored; providers that rotate keep the previous refresh token
valid for a grace period (Okta, Xero, Auth0's reuse interval) exactly for this, and the restarted
hub refreshes with it. Before refreshing, the hub reads the store: a newer pair another replica
(or a new login) stored is adopted instead of refreshing again.
"""

from __future__ import annotations

__all__ = ["Connection", "Connections"]

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from bus.config.connections import ConnectionConfig
from bus.credentials.grant import ConsentLost, Grant, TokenEndpointError, Tokens
from bus.credentials.store import CredentialStore
from bus.errors import KafkaUnavailable, RetryableError
from bus.http_clients import async_client
from bus.metrics import CONNECTION_REFRESHES, CONNECTION_STATE
from bus.runtime.ending import cancel

log = logging.getLogger("bus.credentials")
STATES = ("connected", "refresh failing", "consent lost", "no consent")


class Connection:
    def __init__(self, config: ConnectionConfig, grant: Grant, store: CredentialStore) -> None:
        self.config = config
        self.name = config.name
        self._grant = grant
        self._store = store
        self.tokens: Tokens | None = None
        self._unsaved = False  # new tokens Kafka did not take yet: the refresher stores them first
        self.state, self.detail = "", ""
        self._lock = asyncio.Lock()
        self._set("no consent", f"run `bus auth login {self.name}`")

    def _set(self, state: str, detail: str) -> None:
        if state != self.state:
            level = logging.INFO if state == "connected" else logging.WARNING
            log.log(level, "connection %s: %s%s", self.name, state, f" ({detail})" if detail else "")
            for known in STATES:
                CONNECTION_STATE.labels(self.name, known).set(1 if known == state else 0)
        self.state, self.detail = state, detail

    def refresh_at(self) -> float:
        assert self.tokens is not None
        life = self.tokens.expires_at - self.tokens.obtained_at
        return self.tokens.expires_at - min(self.config.refresh_before.total_seconds(), life / 10)

    def adopt(self, stored: Tokens | str | None) -> None:
        """What the store holds, if newer than what this process has (a login, another replica's refresh)."""
        if isinstance(stored, str):
            if self.tokens is None:
                self._set("consent lost", stored)
            return
        if stored is not None and (self.tokens is None or stored.obtained_at > self.tokens.obtained_at):
            self.tokens, self._unsaved = stored, False
            self._set("connected", "")

    async def token(self) -> str:
        """A live access token; RetryableError (saying why) when there is none to give."""
        if self.tokens is None or self.state == "consent lost":
            raise RetryableError(f"connection {self.name}: {self.state} ({self.detail})")
        if time.time() >= self.refresh_at():
            await self.refresh()
        assert self.tokens is not None
        if time.time() >= self.tokens.expires_at:
            raise RetryableError(f"connection {self.name}: the access token expired and could not be refreshed ({self.detail})")
        return self.tokens.access_token

    async def rejected(self, token: str) -> None:
        """The API answered 401 to ``token``: refresh now, unless another call already did."""
        await self.refresh(stale=token)

    async def refresh(self, *, stale: str | None = None) -> None:
        async with self._lock:
            if self._unsaved:
                await self._save()
            with contextlib.suppress(KafkaUnavailable):
                self.adopt((await self._store.load_all()).get(self.name))
            if self.tokens is None:
                return
            if stale is not None and self.tokens.access_token != stale:
                return  # refreshed while this caller waited
            if stale is None and time.time() < self.refresh_at():
                return
            try:
                fresh = await self._grant.refresh(self.tokens)
            except ConsentLost as exc:
                CONNECTION_REFRESHES.labels(self.name, "consent lost").inc()
                self._set("consent lost", str(exc))
                raise RetryableError(str(exc)) from exc
            except TokenEndpointError as exc:
                CONNECTION_REFRESHES.labels(self.name, "failed").inc()
                self._set("refresh failing", str(exc))
                return  # the current access token serves while it lives; token() says when it does not
            # Stored before it is used: after this the provider may have forgotten the old pair.
            self.tokens, self._unsaved = fresh, True
            CONNECTION_REFRESHES.labels(self.name, "refreshed").inc()
            await self._save()

    async def _save(self) -> None:
        assert self.tokens is not None
        try:
            await self._store.save(self.name, self.tokens)
        except KafkaUnavailable as exc:
            self._set("refresh failing", f"the new tokens are not stored yet: {exc}")  # kept in memory, stored at the next try
            return
        self._unsaved = False
        self._set("connected", "")

    def status(self) -> dict[str, object]:
        found: dict[str, object] = {"state": self.state}
        if self.detail:
            found["detail"] = self.detail
        if self.tokens is not None:
            found["generation"] = self.tokens.generation
            found["expires_in_s"] = round(self.tokens.expires_at - time.time(), 1)
        return found


class Connections:
    """Every connection of a config, loaded from the store, refreshed in the background."""

    def __init__(self, configs: list[ConnectionConfig], store: CredentialStore) -> None:
        self._client = async_client(timeout=30)
        self._store = store
        self.by_name = {c.name: Connection(c, Grant(c, self._client), store) for c in configs}
        self._tasks: list[asyncio.Task[None]] = []

    async def load(self) -> None:
        stored = await self._store.load_all()
        for connection in self.by_name.values():
            connection.adopt(stored.get(connection.name))

    async def token(self, name: str) -> str:
        return await self.by_name[name].token()

    async def rejected(self, name: str, token: str) -> None:
        await self.by_name[name].rejected(token)

    async def keep_fresh(self, name: str) -> None:
        """The refresher of one connection: refreshes before expiry, retries with backoff, and
        while there is no consent, looks for a new login in the store every few seconds."""
        connection = self.by_name[name]
        delay = 1.0
        while True:
            if connection.tokens is None or connection.state == "consent lost":
                await asyncio.sleep(5)
                with contextlib.suppress(KafkaUnavailable):
                    connection.adopt((await self._store.load_all()).get(name))  # a new login, once there is one
                continue
            wait = connection.refresh_at() - time.time()
            if wait > 0 and connection.state == "connected":
                await asyncio.sleep(min(wait, 60))
                continue
            with contextlib.suppress(RetryableError):
                await connection.refresh()
            if connection.state == "connected":
                delay = 1.0
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def run(self, spawn: Callable[[str, Coroutine[Any, Any, None]], asyncio.Task[None]]) -> None:
        """Start each connection's refresher with ``spawn(component, coroutine)`` (the hub's supervisor)."""
        for name in self.by_name:
            self._tasks.append(spawn(f"connection:{name}", self.keep_fresh(name)))

    def status(self) -> dict[str, object]:
        return {name: c.status() for name, c in self.by_name.items()}

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await cancel(task)
        self._tasks.clear()
        await self._client.aclose()
