"""SASL/OAUTHBEARER tokens for the Kafka clients: the OAuth2 client credentials grant against the
configured OIDC provider, one token shared by every client of the process until shortly before
it expires."""

from __future__ import annotations

__all__ = ["ClientCredentialsTokens"]

import asyncio
import logging
import time
from typing import Any

import httpx
from aiokafka.abc import AbstractTokenProvider

from bus.config.models import KafkaOAuth
from bus.errors import RetryableError

log = logging.getLogger("bus.kafka.oauth")

# Renew this long before the provider's expiry, so a connection opened just before it still
# authenticates with a live token (brokers check expiry at login and, with KIP-368, re-login).
_EARLY_S = 60.0


class ClientCredentialsTokens(AbstractTokenProvider):  # type: ignore[misc]
    def __init__(self, config: KafkaOAuth, *, timeout_s: float = 10.0) -> None:
        self.config = config
        self._timeout_s = timeout_s
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        async with self._lock:  # one request at a time: every connection at start asks at once
            if self._token is None or time.monotonic() >= self._expires_at:
                self._token, lifetime = await self._fetch()
                self._expires_at = time.monotonic() + max(lifetime - _EARLY_S, lifetime / 2)
            return self._token

    def extensions(self) -> dict[str, str]:
        return dict(self.config.extensions)

    async def _fetch(self) -> tuple[str, float]:
        c = self.config
        form = {"grant_type": "client_credentials"}
        if c.scope:
            form["scope"] = c.scope
        if c.audience:
            form["audience"] = c.audience
        try:
            async with httpx.AsyncClient(timeout=self._timeout_s) as client:
                # client_secret_basic, which every provider takes (RFC 6749 section 2.3.1).
                response = await client.post(c.token_url, data=form, auth=(c.client_id, c.client_secret.get_secret_value()))
        except httpx.HTTPError as exc:
            raise RetryableError(f"kafka.security.oauth: token endpoint {c.token_url} unreachable: {exc!r}") from exc
        body: Any = None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            why = body.get("error_description") or body.get("error") if isinstance(body, dict) else response.text[:200]
            raise RetryableError(
                f"kafka.security.oauth: {c.token_url} refused the client credentials of {c.client_id!r}: HTTP {response.status_code} {why}"
            )
        lifetime = float(body.get("expires_in") or 300)
        log.info("kafka: OAUTHBEARER token for %s, valid %ds", c.client_id, int(lifetime))
        return body["access_token"], lifetime
