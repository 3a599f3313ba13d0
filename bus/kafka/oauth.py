"""SASL/OAUTHBEARER tokens for the Kafka clients: the OAuth2 client credentials grant
(bus.credentials.client_credentials, the same as the HTTP adapters') against the configured OIDC
provider; one token shared by every client of the process, fetched again before it expires."""

from __future__ import annotations

__all__ = ["ClientCredentialsTokens"]

import httpx
from aiokafka.abc import AbstractTokenProvider

from bus.config.models import KafkaOAuth
from bus.credentials.client_credentials import ClientCredentials, via_httpx


class ClientCredentialsTokens(AbstractTokenProvider):  # type: ignore[misc]
    def __init__(self, config: KafkaOAuth, *, timeout_s: float = 10.0) -> None:
        self.config = config
        self._grant = ClientCredentials(config, what="kafka.security.oauth")
        self._timeout_s = timeout_s
        self._client: httpx.AsyncClient | None = None

    async def token(self) -> str:
        if self._client is None:  # made on first use, inside the event loop that uses it
            self._client = httpx.AsyncClient(timeout=self._timeout_s)
        return await self._grant.token(via_httpx(self._client))

    def extensions(self) -> dict[str, str]:
        return dict(self.config.extensions)
