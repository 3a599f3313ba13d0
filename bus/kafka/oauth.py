"""SASL/OAUTHBEARER tokens for the Kafka clients: the OAuth2 client credentials grant
(bus.credentials.client_credentials, the same as the HTTP adapters') against the configured OIDC
provider; one token shared by every client of the process, fetched again before it expires."""

from __future__ import annotations

__all__ = ["ClientCredentialsTokens"]

from aiokafka.abc import AbstractTokenProvider

from bus.config.models import KafkaOAuth
from bus.credentials.client_credentials import ClientCredentials, via_httpx
from bus.http_clients import async_client


class ClientCredentialsTokens(AbstractTokenProvider):  # type: ignore[misc]
    def __init__(self, config: KafkaOAuth, *, timeout_s: float = 10.0) -> None:
        self.config = config
        self._grant = ClientCredentials(config, what="kafka.security.oauth")
        self._timeout_s = timeout_s

    async def token(self) -> str:
        return await self._grant.token(self._post)

    async def _post(self, url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        # A client per token request (one per token lifetime): aiokafka gives a token provider no
        # close hook, so a client kept between requests would never be closed.
        async with async_client(timeout=self._timeout_s) as client:
            return await via_httpx(client)(url, form, headers)

    def extensions(self) -> dict[str, str]:
        return dict(self.config.extensions)
