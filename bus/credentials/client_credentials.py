"""OAuth2 client credentials (RFC 6749 section 4.4), shared by the HTTP family's adapters
(``http``, ``http_poll``, ``graphql``, ``graphql_poll``) and the Kafka clients' SASL/OAUTHBEARER.

One token per adapter, fetched on first use, cached, and fetched again ``refresh_before_s`` before
it expires, so calls never carry a token about to lapse. One fetch at a time: concurrent calls that
find no valid token wait for the same request. A 401 from the API invalidates the cached token
(it was revoked or rotated) and the call is retried once with a fresh one.
"""

from __future__ import annotations

__all__ = ["ClientCredentials", "ClientCredentialsGrant", "OAuth2ClientCredentials", "Post", "Unreachable", "via_httpx"]

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from typing import Literal
from urllib.parse import quote_plus

import httpx
from pydantic import Field, SecretStr

from bus.config.base import ConfigModel
from bus.credentials.expiry import lifetime as token_lifetime
from bus.documents import parse_json
from bus.errors import RetryableError


class ClientCredentialsGrant(ConfigModel):
    """OAuth2 client-credentials grant: the hub fetches a bearer token with its client id and secret."""

    token_url: str = Field(pattern=r"^https?://", description="Token endpoint.", examples=["https://login.example.com/oauth2/token"])
    client_id: str = Field(min_length=1, description="Client id.")
    client_secret: SecretStr = Field(description="Client secret (use ${ENV} or ${file:...}).")
    scope: str | None = Field(default=None, description="Space-separated scopes to ask for.", examples=["invoices.write"])
    audience: str | None = Field(default=None, description="Audience parameter, for providers that need one (Auth0, Okta).")
    client_auth: Literal["basic", "body"] = Field(
        default="basic", description="basic: id and secret in an Authorization header (RFC 6749's default); body: as form fields."
    )
    refresh_before_s: float = Field(
        default=60.0,
        ge=0,
        description="Fetch a new token this long before the old one expires, or a tenth of the token's lifetime if that is "
        "shorter (a token that lives 5 s is used for 4.5 s, not fetched again for every call).",
    )


class OAuth2ClientCredentials(ClientCredentialsGrant):
    """``auth: {type: oauth2, ...}`` of an HTTP-family adapter."""

    type: Literal["oauth2"] = "oauth2"


# The token request goes through the adapter's own HTTP client (docs/architecture.md: one client
# per adapter): a form POST answering (status, body text), or Unreachable.
Post = Callable[[str, dict[str, str], dict[str, str]], Awaitable[tuple[int, str]]]


class Unreachable(Exception):
    pass


def via_httpx(client: httpx.AsyncClient) -> Post:
    async def post(url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
        try:
            response = await client.post(url, data=form, headers=headers)
        except httpx.HTTPError as exc:
            raise Unreachable(repr(exc)) from exc
        return response.status_code, response.text

    return post


class ClientCredentials:
    def __init__(self, config: ClientCredentialsGrant, *, what: str) -> None:
        self.config = config
        self._what = what
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        self.fetched = 0  # tokens fetched so far (tests and the debug log use it)

    def invalidate(self, token: str | None = None) -> None:
        """Drop the cached token. Given the token a 401 came back for, drop it only if it is still
        the cached one: many concurrent calls fail with the same revoked token, and the first to
        refetch must not have its fresh token thrown away by the others."""
        if token is None or token == self._token:
            self._token = None

    async def header(self, post: Post) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(post)}"}

    async def token(self, post: Post) -> str:
        if self._valid():
            assert self._token is not None
            return self._token
        async with self._lock:
            if not self._valid():  # another caller may have fetched it while this one waited
                await self._fetch(post)
            assert self._token is not None
            return self._token

    def _valid(self) -> bool:
        return self._token is not None and time.monotonic() < self._refresh_at

    async def _fetch(self, post: Post) -> None:
        c = self.config
        form = {"grant_type": "client_credentials"}
        if c.scope:
            form["scope"] = c.scope
        if c.audience:
            form["audience"] = c.audience
        # Explicit, so a client whose default headers say JSON still sends the form the endpoint expects.
        headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
        if c.client_auth == "basic":
            # RFC 6749 2.3.1: id and secret are form-encoded, then joined and base64-encoded.
            pair = f"{quote_plus(c.client_id)}:{quote_plus(c.client_secret.get_secret_value())}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form |= {"client_id": c.client_id, "client_secret": c.client_secret.get_secret_value()}
        try:
            status, text = await post(c.token_url, form, headers)
        except Unreachable as exc:
            raise RetryableError(f"{self._what}: token endpoint {c.token_url} unreachable: {exc}") from exc
        if status != 200:
            # 400/401 invalid_client or invalid_scope: the credentials are wrong. Still retryable: once
            # the secret is fixed the next attempt succeeds, and events wait in Kafka meanwhile.
            raise RetryableError(f"{self._what}: token endpoint {c.token_url} refused the client credentials: {status} {_error_of(text)}")
        try:
            answer = parse_json(text, repeated_keys="last")
            token = str(answer["access_token"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RetryableError(f"{self._what}: token endpoint answered without an access_token: {text[:200]}") from exc
        lifetime = token_lifetime(answer.get("expires_in") if isinstance(answer, dict) else None)
        self._token = token
        self._refresh_at = time.monotonic() + lifetime - min(self.config.refresh_before_s, lifetime / 10)
        self.fetched += 1


def _error_of(text: str) -> str:
    try:
        body = parse_json(text, repeated_keys="last")
        return f"{body.get('error', '')} {body.get('error_description', '')}".strip() or text[:200]
    except (ValueError, AttributeError):
        return text[:200]
